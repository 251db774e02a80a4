//! Receipt files given to `akashi-audit verify-receipt` (proto3 JSON or tlog-proof): parsing
//! never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    let _ = auditor::receipt::Receipt::parse(data);
});

//! Leaves and bodies from outside: decoding never panics, and only canonical bytes decode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = ledger::entry::Leaf::decode(data) {
        assert_eq!(leaf.encode(), data);
    }
    if let Ok(body) = ledger::entry::Body::decode(data) {
        assert_eq!(body.encode(), data);
    }
});

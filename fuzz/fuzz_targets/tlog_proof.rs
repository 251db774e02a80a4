//! Proof files from outside (c2sp.org/tlog-proof): parsing never panics; what parses round-trips.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    if let Ok(proof) = ledger::TlogProof::parse(data) {
        assert_eq!(ledger::TlogProof::parse(&proof.to_text()).ok(), Some(proof));
    }
});

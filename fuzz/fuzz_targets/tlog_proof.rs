//! Proof files from outside (c2sp.org/tlog-proof): parsing never panics; what parses round-trips.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    if let Ok(proof) = ledger::tlog_proof::TlogProof::parse(data) {
        assert_eq!(
            ledger::tlog_proof::TlogProof::parse(&proof.to_text()).ok(),
            Some(proof)
        );
    }
});

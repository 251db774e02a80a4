//! Checkpoint text from outside (c2sp.org/tlog-checkpoint): parsing never panics, and whatever
//! parses prints back to the same text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    if let Ok(cp) = ledger::checkpoint::Checkpoint::parse(data) {
        assert_eq!(cp.to_text(), data);
    }
});

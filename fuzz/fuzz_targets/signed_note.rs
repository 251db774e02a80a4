//! Signed notes from outside (c2sp.org/signed-note): parsing and verifying never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    let _ = ledger::note::parse_note(data);
    if let Ok(verifier) = ledger::note::NoteVerifier::from_vkey(
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ) {
        let _ = ledger::note::open_note(data, &[verifier]);
    }
    let _ = ledger::note::NoteVerifier::from_vkey(data);
    let _ = ledger::note::NoteSigner::from_skey(data);
});

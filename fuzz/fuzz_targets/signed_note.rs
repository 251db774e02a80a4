//! Signed notes from outside (c2sp.org/signed-note): parsing and verifying never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    let _ = ledger::parse_note(data);
    if let Ok(verifier) =
        ledger::NoteVerifier::from_vkey("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    {
        let _ = ledger::open_note(data, &[verifier]);
    }
    let _ = ledger::NoteVerifier::from_vkey(data);
    let _ = ledger::NoteSigner::from_skey(data);
});

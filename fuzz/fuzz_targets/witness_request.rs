//! An `add-checkpoint` body from outside (c2sp.org/tlog-witness), as a witness receives it, and
//! a witness's answer, as the log receives it: parsing and the witness's checks never panic, and
//! a request that parses encodes back to the same bytes.
#![no_main]

use std::sync::LazyLock;

use auditor::witness::Cosigner;
use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    cosignature::WitnessSigner,
    hash::{Hash, TreeSize},
    note::{KeyName, NoteSigner},
    witness::{AddCheckpoint, parse_cosignatures, parse_size_body},
};

/// A witness of `fuzz.example/log` that has cosigned a checkpoint of size 5, so that requests
/// reach the consistency check.
static COSIGNER: LazyLock<Option<Cosigner>> = LazyLock::new(|| {
    let log = NoteSigner::from_seed(KeyName::new("fuzz.example/log").ok()?, &[1; 32]);
    let witness = WitnessSigner::from_seed(KeyName::new("fuzz.example/w").ok()?, &[2; 32]);
    let cp = Checkpoint::new("fuzz.example/log", TreeSize(5), Hash::sha256(b"five"));
    let state = SignedCheckpoint::sign(cp, &log).ok()?;
    Cosigner::with_state(witness, log.verifier(), state.note()).ok()
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(request) = AddCheckpoint::parse(data) {
        assert_eq!(request.to_body().as_bytes(), data);
    }
    if let Some(cosigner) = COSIGNER.as_ref() {
        let _ = cosigner.check(data);
    }
    let _ = parse_cosignatures(data);
    let _ = parse_size_body(data);
});

use std::sync::Arc;

use ledger::log::Log;
use ledger::store::MemoryStore;
use ledger::{checkpoint::SignedCheckpoint, hash::TreeSize};

use super::{Advance, TrustError, Witness};
use crate::testing;

/// Two logs sharing their first `prefix` entries, then each with its own entries up to `size`.
fn forked(prefix: u64, size: u64) -> (Log, Log) {
    let a = Log::open(Arc::new(MemoryStore::new()), testing::signer()).unwrap();
    let b = Log::open(Arc::new(MemoryStore::new()), testing::signer()).unwrap();
    for log in [&a, &b] {
        testing::append(log, 0..prefix, 4, "shared");
    }
    testing::append(&a, prefix..size, 4, "a");
    testing::append(&b, prefix..size, 4, "b");
    (a, b)
}

fn at(log: &Log, size: u64) -> SignedCheckpoint {
    let note = log.checkpoint_at(TreeSize(size)).unwrap().unwrap();
    SignedCheckpoint::verify(&note, log.verifier()).unwrap()
}

fn witness_at(log: &Log, size: u64) -> Witness {
    Witness::with_state(testing::signer().verifier(), at(log, size).note()).unwrap()
}

fn step(w: &mut Witness, log: &Log, size: u64) -> Result<Advance, TrustError> {
    let new = w.verify_note(at(log, size).note())?;
    let proof = w
        .proof_needed(new.checkpoint())
        .map(|(old, new)| log.consistency_proof(old, new).unwrap());
    w.advance(new, proof.as_ref())
}

#[test]
fn consistent_growth_is_accepted_and_becomes_the_state() {
    let log = testing::log(40, 4);
    let mut w = Witness::new(log.verifier().clone());
    assert_eq!(
        step(&mut w, &log, 4).unwrap(),
        Advance::First { size: TreeSize(4) }
    );
    for (from, to) in [(4, 8), (8, 12), (12, 40)] {
        assert_eq!(
            step(&mut w, &log, to).unwrap(),
            Advance::Grown {
                from: TreeSize(from),
                to: TreeSize(to)
            }
        );
    }
    assert_eq!(
        step(&mut w, &log, 40).unwrap(),
        Advance::Unchanged { size: TreeSize(40) }
    );
    let reloaded = Witness::with_state(log.verifier().clone(), w.state_text().unwrap()).unwrap();
    assert_eq!(reloaded.trusted().unwrap().checkpoint().size, TreeSize(40));
}

#[test]
fn growth_from_the_empty_tree_needs_no_proof() {
    let log = testing::log(5, 5);
    let mut w = witness_at(&log, 0);
    let new = w.verify_note(at(&log, 5).note()).unwrap();
    assert_eq!(w.proof_needed(new.checkpoint()), None);
    assert_eq!(
        w.advance(new, None).unwrap(),
        Advance::Grown {
            from: TreeSize(0),
            to: TreeSize(5)
        }
    );
}

#[test]
fn rollback_is_detected_with_both_sizes_and_roots() {
    let log = testing::log(20, 4);
    let mut w = witness_at(&log, 20);
    let err = step(&mut w, &log, 16).unwrap_err();
    let TrustError::Rollback(d) = &err else {
        panic!("{err}");
    };
    assert_eq!((d.trusted_size, d.new_size), (TreeSize(20), TreeSize(16)));
    assert_eq!(d.trusted_root, at(&log, 20).checkpoint().root);
    assert_eq!(d.new_root, at(&log, 16).checkpoint().root);
    assert!(err.is_inconsistency());
    // The trusted checkpoint did not move.
    assert_eq!(w.trusted().unwrap().checkpoint().size, TreeSize(20));
    let message = err.to_string();
    assert!(
        message.starts_with("rollback: trusted size 20 root "),
        "{message}"
    );
}

#[test]
fn fork_at_the_same_size_is_detected() {
    let (a, b) = forked(12, 20);
    let mut w = witness_at(&a, 20);
    let err = step(&mut w, &b, 20).unwrap_err();
    let TrustError::Fork(d) = &err else {
        panic!("{err}");
    };
    assert_eq!((d.trusted_size, d.new_size), (TreeSize(20), TreeSize(20)));
    assert_ne!(d.trusted_root, d.new_root);
    assert_eq!(d.proof_error, None);
}

#[test]
fn fork_at_a_larger_size_fails_the_consistency_proof() {
    let (a, b) = forked(12, 24);
    // Trusted a size that both logs share: b's growth is consistent with it.
    let mut w = witness_at(&a, 12);
    assert!(matches!(step(&mut w, &b, 24), Ok(Advance::Grown { .. })));
    // Trusted a size past the fork point: b's larger tree does not extend it.
    for trusted in [16, 20] {
        let mut w = witness_at(&a, trusted);
        let err = step(&mut w, &b, 24).unwrap_err();
        let TrustError::Fork(d) = &err else {
            panic!("{err}");
        };
        assert_eq!(d.trusted_size, TreeSize(trusted));
        assert_eq!(d.new_size, TreeSize(24));
        assert!(d.proof_error.is_some());
        assert!(err.to_string().contains("consistency proof"), "{err}");
    }
}

#[test]
fn tampered_proofs_and_checkpoints_are_rejected() {
    let log = testing::log(30, 3);
    let w = witness_at(&log, 9);
    let new = at(&log, 30);
    let proof = log.consistency_proof(TreeSize(9), TreeSize(30)).unwrap();
    for h in 0..proof.path.len() {
        let mut bad = proof.clone();
        bad.path[h].0[h % 32] ^= 4;
        let err = w.clone().advance(new.clone(), Some(&bad)).unwrap_err();
        assert!(matches!(err, TrustError::Fork(_)), "{err}");
    }
    let err = w.clone().advance(new.clone(), None).unwrap_err();
    assert!(matches!(err, TrustError::MissingProof { .. }) && !err.is_inconsistency());
    let other = log.consistency_proof(TreeSize(8), TreeSize(30)).unwrap();
    assert!(matches!(
        w.clone().advance(new.clone(), Some(&other)),
        Err(TrustError::MissingProof { .. })
    ));
    let forged =
        SignedCheckpoint::sign(new.checkpoint().clone(), &testing::other_signer()).unwrap();
    let err = w.verify_note(forged.note()).unwrap_err();
    assert!(matches!(err, TrustError::BadCheckpoint(_)) && err.is_inconsistency());
    let err = Witness::with_state(log.verifier().clone(), "garbage\n").unwrap_err();
    assert!(matches!(err, TrustError::BadState(_)) && !err.is_inconsistency());
}

use ledger::{
    checkpoint::Checkpoint,
    cosignature::{WitnessedCheckpoint, append_signatures},
    hash::TreeSize,
    note::KeyName,
    proof::{MemoryTree, prove_consistency},
};

use super::*;
use crate::testing::{ORIGIN, other_signer, signer};

fn tree(n: u64, tag: &str) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for i in 0..n {
        tree.push_leaf(format!("{tag} {i}").as_bytes());
    }
    tree
}

fn checkpoint(tree: &MemoryTree, size: u64) -> SignedCheckpoint {
    let root = tree.root_at(TreeSize(size)).unwrap();
    SignedCheckpoint::sign(Checkpoint::new(ORIGIN, TreeSize(size), root), &signer()).unwrap()
}

fn body(old: u64, proof: &[Hash], note: &str) -> Vec<u8> {
    AddCheckpoint {
        old_size: TreeSize(old),
        proof: proof.to_vec(),
        note: note.to_owned(),
    }
    .to_body()
    .into_bytes()
}

fn proof(tree: &MemoryTree, old: u64, new: u64) -> Vec<Hash> {
    prove_consistency(tree, TreeSize(old), TreeSize(new))
        .unwrap()
        .path
}

fn witness_key() -> WitnessSigner {
    WitnessSigner::from_seed(KeyName::new("witness.test/w1").unwrap(), &[3; 32])
}

fn cosigner() -> Cosigner {
    Cosigner::new(witness_key(), signer().verifier())
}

fn add(c: &mut Cosigner, body: &[u8]) -> Result<NoteSignature, AddError> {
    c.add_checkpoint(body, 1_764_547_200, |_| Ok(()))
}

fn refusal(result: Result<NoteSignature, AddError>) -> Refusal {
    match result {
        Err(AddError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn cosigns_a_first_checkpoint_then_a_consistent_one() {
    let t = tree(10, "a");
    let mut c = cosigner();
    let cp4 = checkpoint(&t, 4);
    let line = add(&mut c, &body(0, &[], cp4.note())).unwrap();
    assert_eq!(c.latest_size(), TreeSize(4));
    // The answer is a valid cosignature of exactly that checkpoint.
    let note = append_signatures(cp4.note(), &[line]);
    let witnessed =
        WitnessedCheckpoint::verify(&note, &signer().verifier(), &[witness_key().verifier()])
            .unwrap();
    assert_eq!(witnessed.cosignatures()[0].timestamp(), 1_764_547_200);

    let cp10 = checkpoint(&t, 10);
    add(&mut c, &body(4, &proof(&t, 4, 10), cp10.note())).unwrap();
    assert_eq!(c.latest().unwrap().note(), cp10.note());
    // The same checkpoint again is cosigned again (a fresh timestamp).
    add(&mut c, &body(10, &[], cp10.note())).unwrap();
}

#[test]
fn each_refusal_has_the_spec_status() {
    let t = tree(10, "a");
    let mut c = cosigner();
    add(&mut c, &body(0, &[], checkpoint(&t, 4).note())).unwrap();
    let cp10 = checkpoint(&t, 10);

    // 400: not a request; not a checkpoint; old size beyond the checkpoint.
    let r = refusal(add(&mut c, b"hello"));
    assert!(matches!(
        r,
        Refusal::Malformed(WitnessProtocolError::OldSizeLine)
    ));
    assert_eq!(r.status(), 400);
    let r = refusal(add(
        &mut c,
        &body(4, &[], "not\na checkpoint\n\n\u{2014} x AAAAAAAA\n"),
    ));
    assert!(matches!(r, Refusal::MalformedCheckpoint(_)), "{r:?}");
    assert_eq!(r.status(), 400);
    let r = refusal(add(&mut c, &body(11, &[], cp10.note())));
    assert!(matches!(
        r,
        Refusal::OldSizeTooLarge {
            old: TreeSize(11),
            size: TreeSize(10)
        }
    ));
    assert_eq!(r.status(), 400);

    // 403: the log's origin, signed by another key.
    let forged = SignedCheckpoint::sign(cp10.checkpoint().clone(), &other_signer()).unwrap();
    let r = refusal(add(&mut c, &body(4, &proof(&t, 4, 10), forged.note())));
    assert!(matches!(r, Refusal::BadSignature(_)), "{r:?}");
    assert_eq!(r.status(), 403);

    // 404: another log.
    let stranger =
        ledger::note::NoteSigner::from_seed(KeyName::new("other.test/log").unwrap(), &[9; 32]);
    let theirs = SignedCheckpoint::sign(
        Checkpoint::new("other.test/log", TreeSize(10), t.root()),
        &stranger,
    )
    .unwrap();
    let r = refusal(add(&mut c, &body(4, &proof(&t, 4, 10), theirs.note())));
    assert!(matches!(r, Refusal::UnknownOrigin { ref origin } if origin == "other.test/log"));
    assert_eq!(r.status(), 404);

    // 409: the old size is not the latest cosigned one, and the answer names it.
    let r = refusal(add(&mut c, &body(0, &[], cp10.note())));
    assert!(matches!(
        r,
        Refusal::OldSizeMismatch {
            latest: TreeSize(4)
        }
    ));
    assert_eq!(r.status(), 409);

    // 422: a proof that does not connect 4 to 10, and a proof from 0 that is not empty.
    let mut bad = proof(&t, 4, 10);
    bad[0].0[0] ^= 1;
    let r = refusal(add(&mut c, &body(4, &bad, cp10.note())));
    assert!(matches!(r, Refusal::InvalidProof(_)));
    assert_eq!(r.status(), 422);
    let mut fresh = cosigner();
    let r = refusal(add(&mut fresh, &body(0, &proof(&t, 4, 10), cp10.note())));
    assert!(matches!(r, Refusal::ProofFromZero));
    assert_eq!(r.status(), 422);

    // Nothing refused changed the state.
    assert_eq!(c.latest_size(), TreeSize(4));
    assert_eq!(fresh.latest_size(), TreeSize(0));
}

#[test]
fn a_fork_is_refused_with_both_checkpoints_as_evidence() {
    let (a, b) = (tree(10, "a"), tree(10, "b"));
    let mut c = cosigner();
    let ours = checkpoint(&a, 6);
    add(&mut c, &body(0, &[], ours.note())).unwrap();

    // Same size, another root.
    let theirs = checkpoint(&b, 6);
    let r = refusal(add(&mut c, &body(6, &[], theirs.note())));
    assert_eq!(r.status(), 409);
    let Refusal::Fork(evidence) = &r else {
        panic!("expected a fork, got {r:?}")
    };
    assert_eq!(evidence.cosigned, ours.note());
    assert_eq!(evidence.presented, theirs.note());
    assert_eq!(
        evidence.request_body().into_bytes(),
        body(6, &[], theirs.note())
    );

    // A larger tree of the other branch, with its own (valid for it) proof from 6.
    let grown = checkpoint(&b, 10);
    let offered = proof(&b, 6, 10);
    let r = refusal(add(&mut c, &body(6, &offered, grown.note())));
    assert_eq!(r.status(), 422);
    let evidence = r.evidence().unwrap();
    assert_eq!(evidence.cosigned, ours.note());
    assert_eq!(evidence.presented, grown.note());
    assert_eq!(evidence.proof, offered);
    assert_eq!(c.latest().unwrap().note(), ours.note());
}

#[test]
fn nothing_changes_when_the_state_cannot_be_stored() {
    let t = tree(4, "a");
    let mut c = cosigner();
    let result = c.add_checkpoint(&body(0, &[], checkpoint(&t, 4).note()), 1, |_| {
        Err(std::io::Error::other("disk full"))
    });
    assert!(matches!(result, Err(AddError::Store(_))));
    assert_eq!(c.latest_size(), TreeSize(0));
    let result = c.add_checkpoint(&body(0, &[], checkpoint(&t, 4).note()), u64::MAX, |_| {
        panic!("must not store what it cannot cosign")
    });
    assert!(matches!(result, Err(AddError::Cosign(_))));
    assert_eq!(c.latest_size(), TreeSize(0));
}

#[test]
fn the_stored_state_is_what_a_restart_loads() {
    let t = tree(10, "a");
    let mut c = cosigner();
    let mut stored = String::new();
    c.add_checkpoint(&body(0, &[], checkpoint(&t, 7).note()), 1, |accepted| {
        stored = accepted.state_text().to_owned();
        Ok(())
    })
    .unwrap();
    let again = Cosigner::with_state(witness_key(), signer().verifier(), &stored).unwrap();
    assert_eq!(again.latest_size(), TreeSize(7));
    assert!(matches!(
        Cosigner::with_state(witness_key(), other_signer().verifier(), &stored),
        Err(TrustError::BadState(_))
    ));
}

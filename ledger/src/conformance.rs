//! The storage conformance suite: one set of checks every [`Store`] must pass through the log.
//!
//! Each check takes a [`Harness`] that can open the store again (as a restarted process would),
//! and drives the real [`Log`] over it: appends, reopen, proofs against an independent
//! reference tree, state writes, redaction, and tampering. `ledger/tests/store_conformance.rs`
//! runs it against the sled store and the in-memory store. It is test code: it panics on the
//! first failed check, with a message saying what differed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test utility: a failed check must stop the test with its message"
)]

use std::sync::Arc;

use rand::rngs::OsRng;

use crate::{
    checkpoint::SignedCheckpoint,
    chunk::Record,
    entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf},
    hash::{LeafIndex, TreeSize, hash_leaf},
    layout,
    log::{FsckError, Log, NewEntry, OpenError, Position, ReadError, StateWrite},
    note::{KeyName, NoteSigner},
    proof::MemoryTree,
    store::Store,
};

/// A store under test that can be reopened.
pub trait Harness {
    /// The store as a freshly started process would open it (same data).
    fn open(&self) -> Arc<dyn Store>;
}

/// A test signing key with origin `akashi.test/log`.
pub fn test_signer() -> NoteSigner {
    NoteSigner::generate(KeyName::new("akashi.test/log").unwrap(), &mut OsRng)
}

/// A deterministic test entry with index-dependent content.
pub fn test_entry(i: u64) -> NewEntry {
    let body = Body::new(format!("private body {i}").into_bytes(), &mut OsRng);
    let leaf = Leaf {
        kind: EntryKind::new("test.entry").unwrap(),
        day: Day::parse("2026-11-24").unwrap(),
        attributes: vec![(
            AttrName::new("n").unwrap(),
            AttrValue::new(&i.to_string()).unwrap(),
        )],
        commitment: body.commitment(),
    };
    NewEntry {
        leaf,
        body,
        seal: None,
    }
}

/// Runs every check. Each gets a fresh harness from `make`.
pub fn run_all<H: Harness>(make: impl Fn() -> H) {
    appends_reopen_and_proofs(&make());
    state_writes_commit_with_entries(&make());
    redaction_keeps_proofs(&make());
    tampered_recent_entry_refuses_open(&make());
    tampered_old_entry_is_never_served(&make());
    tampered_tile_refuses_open(&make());
    wrong_key_refuses_open(&make());
}

/// Appends batches of varied sizes across tile boundaries, reopens, and checks roots, every
/// checkpoint and inclusion and consistency proofs against an independent reference tree.
pub fn appends_reopen_and_proofs(h: &impl Harness) {
    let signer = test_signer();
    let verifier = signer.verifier();
    let mut reference = MemoryTree::new();
    let mut checkpoints = Vec::new();
    {
        let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
        assert_eq!(log.size(), TreeSize(0));
        for batch in [1usize, 2, 253, 1, 256, 600, 3] {
            let first = reference.size().get();
            let entries: Vec<NewEntry> = (first..first + batch as u64).map(test_entry).collect();
            let committed = log.append_batch(&entries, Vec::new()).unwrap();
            assert_eq!(committed.first, LeafIndex(first));
            for entry in &entries {
                reference.push_leaf(&entry.leaf.encode());
            }
            let cp = SignedCheckpoint::verify(committed.checkpoint.note(), &verifier).unwrap();
            assert_eq!(cp.checkpoint().size, reference.size());
            assert_eq!(cp.checkpoint().root, reference.root());
            checkpoints.push(cp.into_checkpoint());
        }
    }
    // A restarted process sees the same log and can extend it.
    let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
    let size = reference.size();
    assert_eq!(log.size(), size);
    assert_eq!(log.checkpoint().checkpoint().root, reference.root());
    for old in &checkpoints {
        let stored = log.checkpoint_at(old.size).unwrap().unwrap();
        assert_eq!(
            SignedCheckpoint::verify(&stored, &verifier)
                .unwrap()
                .checkpoint(),
            old
        );
        let proof = log.consistency_proof(old.size, size).unwrap();
        proof.verify(&old.root, &reference.root()).unwrap();
    }
    for index in [0, 1, 255, 256, 257, 511, 512, size.get() - 1] {
        let proof = log.inclusion_proof(LeafIndex(index), size).unwrap();
        proof
            .verify(&reference.leaf_hashes()[index as usize], &reference.root())
            .unwrap();
        assert_eq!(
            log.leaf_hash(LeafIndex(index)).unwrap(),
            reference.leaf_hashes()[index as usize]
        );
    }
    let leaves = log.leaves(LeafIndex(250), 20).unwrap();
    assert_eq!(leaves.len(), 20);
    for (offset, leaf) in leaves.iter().enumerate() {
        assert_eq!(hash_leaf(leaf), reference.leaf_hashes()[250 + offset]);
    }
    assert!(matches!(
        log.leaves(LeafIndex(size.get()), 1),
        Err(ReadError::OutOfRange {
            what: Position::Start,
            ..
        })
    ));
    assert!(matches!(
        log.inclusion_proof(LeafIndex(0), TreeSize(size.get() + 1)),
        Err(ReadError::OutOfRange {
            what: Position::TreeSize,
            ..
        })
    ));
    let more: Vec<NewEntry> = (size.get()..size.get() + 10).map(test_entry).collect();
    log.append_batch(&more, Vec::new()).unwrap();
    for entry in &more {
        reference.push_leaf(&entry.leaf.encode());
    }
    assert_eq!(log.checkpoint().checkpoint().root, reference.root());
    let report = log.fsck().unwrap();
    assert_eq!(report.leaves, reference.size().get());
}

/// State writes become visible with their batch and survive a reopen.
pub fn state_writes_commit_with_entries(h: &impl Harness) {
    let signer = test_signer();
    {
        let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
        let writes = vec![
            StateWrite::Put(b"consent/a".to_vec(), b"1".to_vec()),
            StateWrite::Put(b"consent/b".to_vec(), b"2".to_vec()),
            StateWrite::Put(b"other".to_vec(), b"3".to_vec()),
        ];
        log.append_batch(&[test_entry(0)], writes).unwrap();
        log.append_batch(
            &[test_entry(1)],
            vec![StateWrite::Delete(b"consent/a".to_vec())],
        )
        .unwrap();
    }
    let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
    assert_eq!(log.state_get(b"consent/a").unwrap(), None);
    assert_eq!(log.state_get(b"consent/b").unwrap(), Some(b"2".to_vec()));
    let scanned = log.state_range(b"consent/", Some(b"consent0"), 10).unwrap();
    assert_eq!(scanned, vec![(b"consent/b".to_vec(), b"2".to_vec())]);
    // Without an end bound the scan runs to the last state key and never into the log's own
    // keys (entries, tiles, checkpoints).
    let scanned = log.state_range(b"consent/", None, 10).unwrap();
    assert_eq!(
        scanned,
        vec![
            (b"consent/b".to_vec(), b"2".to_vec()),
            (b"other".to_vec(), b"3".to_vec())
        ]
    );
}

/// A redacted body is gone; the leaf, its commitment and every proof stay valid.
pub fn redaction_keeps_proofs(h: &impl Harness) {
    let signer = test_signer();
    let entries: Vec<NewEntry> = (0..5).map(test_entry).collect();
    {
        let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
        log.append_batch(&entries, Vec::new()).unwrap();
        let Record::Present(body) = log.body(LeafIndex(2)).unwrap() else {
            panic!("body 2 should be present before redaction");
        };
        assert_eq!(body, entries[2].body.encode());
        assert!(log.redact_body(LeafIndex(2)).unwrap());
        assert!(!log.redact_body(LeafIndex(2)).unwrap());
    }
    let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
    assert_eq!(log.body(LeafIndex(2)).unwrap(), Record::Redacted);
    assert!(matches!(
        log.body(LeafIndex(3)).unwrap(),
        Record::Present(_)
    ));
    let leaf = Leaf::decode(&log.leaves(LeafIndex(2), 1).unwrap()[0]).unwrap();
    assert_eq!(leaf.commitment, entries[2].body.commitment());
    let proof = log.inclusion_proof(LeafIndex(2), TreeSize(5)).unwrap();
    proof
        .verify(
            &hash_leaf(&entries[2].leaf.encode()),
            &log.checkpoint().checkpoint().root,
        )
        .unwrap();
    log.fsck().unwrap();
}

/// Changing a leaf of the newest, partial tile makes the tree differ from the signed checkpoint.
pub fn tampered_recent_entry_refuses_open(h: &impl Harness) {
    let signer = test_signer();
    {
        let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
        let entries: Vec<NewEntry> = (0..300).map(test_entry).collect();
        log.append_batch(&entries, Vec::new()).unwrap();
    }
    let store = h.open();
    // The chunk holding entries 256..300 starts at 256.
    let key = layout::indexed(layout::ENTRIES, 256);
    let mut chunk = store.get(&key).unwrap().unwrap().to_vec();
    let last = chunk.len() - 2;
    chunk[last] ^= 0x01;
    store.put(&key, &chunk).unwrap();
    store.sync().unwrap();
    drop(store);
    match Log::open(h.open(), signer_clone(&signer)) {
        Err(OpenError::CheckpointMismatch { size: 300, .. }) => {}
        Err(other) => panic!("wrong error for a tampered entry: {other}"),
        Ok(_) => panic!("a tampered entry was not detected on open"),
    }
}

/// Changing a leaf inside an old full tile is caught on every read and by fsck.
pub fn tampered_old_entry_is_never_served(h: &impl Harness) {
    let signer = test_signer();
    {
        let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
        let entries: Vec<NewEntry> = (0..600).map(test_entry).collect();
        log.append_batch(&entries, Vec::new()).unwrap();
    }
    let store = h.open();
    let key = layout::indexed(layout::ENTRIES, 0);
    let mut chunk = store.get(&key).unwrap().unwrap().to_vec();
    chunk[10] ^= 0x01;
    store.put(&key, &chunk).unwrap();
    store.sync().unwrap();
    drop(store);
    let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
    assert!(matches!(
        log.leaves(LeafIndex(0), 1),
        Err(ReadError::LeafMismatch { index: 0 })
    ));
    assert!(matches!(log.fsck(), Err(FsckError::Entry { index: 0 })));
    drop(log);

    // With entry 0 restored, fsck names the first bad entry further on: a changed leaf, then a
    // chunk that no longer decodes.
    let store = h.open();
    chunk[10] ^= 0x01;
    store.put(&key, &chunk).unwrap();
    let key = layout::indexed(layout::ENTRIES, 256);
    let mut chunk = store.get(&key).unwrap().unwrap().to_vec();
    chunk[10] ^= 0x01;
    store.put(&key, &chunk).unwrap();
    store.sync().unwrap();
    drop(store);
    let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
    match log.fsck() {
        Err(FsckError::Entry { index: 256 }) => {}
        other => panic!("fsck of a changed entry 256: {other:?}"),
    }
    drop(log);
    let store = h.open();
    store.put(&key, b"not a chunk").unwrap();
    store.sync().unwrap();
    drop(store);
    let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
    match log.fsck() {
        Err(FsckError::Entry { index: 256 }) => {}
        other => panic!("fsck of an undecodable chunk at 256: {other:?}"),
    }
}

/// Changing a stored hash in the newest full tile refuses open.
pub fn tampered_tile_refuses_open(h: &impl Harness) {
    let signer = test_signer();
    {
        let log = Log::open(h.open(), signer_clone(&signer)).unwrap();
        let entries: Vec<NewEntry> = (0..520).map(test_entry).collect();
        log.append_batch(&entries, Vec::new()).unwrap();
    }
    let store = h.open();
    let key = layout::tile(0, 1);
    let mut tile = store.get(&key).unwrap().unwrap().to_vec();
    tile[40] ^= 0x80;
    store.put(&key, &tile).unwrap();
    store.sync().unwrap();
    drop(store);
    match Log::open(h.open(), signer_clone(&signer)) {
        Err(OpenError::TileMismatch { level: 0, index: 1 }) => {}
        Err(other) => panic!("wrong error for a tampered tile: {other}"),
        Ok(_) => panic!("a tampered tile was not detected on open"),
    }
}

/// A log opened with another key refuses: its checkpoints do not verify.
pub fn wrong_key_refuses_open(h: &impl Harness) {
    {
        let log = Log::open(h.open(), test_signer()).unwrap();
        log.append_batch(&[test_entry(0)], Vec::new()).unwrap();
    }
    assert!(matches!(
        Log::open(h.open(), test_signer()),
        Err(OpenError::CheckpointSignature(_))
    ));
}

fn signer_clone(signer: &NoteSigner) -> NoteSigner {
    NoteSigner::from_skey(&signer.to_skey()).unwrap()
}

use std::{os::unix::fs::PermissionsExt as _, sync::Arc};

use super::*;
use crate::{
    checkpoint::Checkpoint,
    conformance::{test_entry, test_signer},
    hash::TreeSize,
    log::{CommitError, Log, NewEntry, OpenError},
    note::NoteSigner,
    store::MemoryStore,
};

fn signed(signer: &NoteSigner, size: u64) -> SignedCheckpoint {
    let checkpoint = Checkpoint::new(
        signer.name().to_string(),
        TreeSize(size),
        Hash::sha256(&size.to_be_bytes()),
    );
    SignedCheckpoint::sign(checkpoint, signer).unwrap()
}

fn size_of(anchor: &Anchor) -> Option<u64> {
    anchor.checkpoint().map(|c| c.checkpoint().size.get())
}

fn flip(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).unwrap();
}

#[test]
fn a_missing_file_is_an_empty_anchor_and_the_first_advance_creates_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let signer = test_signer();
    let mut anchor = Anchor::open(&path, &signer.verifier()).unwrap();
    assert_eq!(size_of(&anchor), None);
    assert!(!path.exists(), "opening creates nothing");

    anchor.advance(&signed(&signer, 3)).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::metadata(&path).unwrap().len(), 2 * SLOT_LEN as u64);
    for size in [7, 9, 12] {
        anchor.advance(&signed(&signer, size)).unwrap();
        let reopened = Anchor::open(&path, &signer.verifier()).unwrap();
        assert_eq!(size_of(&reopened), Some(size));
    }
}

#[test]
fn an_older_checkpoint_never_moves_the_anchor_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let signer = test_signer();
    let mut anchor = Anchor::open(&path, &signer.verifier()).unwrap();
    anchor.advance(&signed(&signer, 9)).unwrap(); // slot 0
    anchor.advance(&signed(&signer, 12)).unwrap(); // slot 1
    anchor.advance(&signed(&signer, 7)).unwrap(); // older: written nowhere
    assert_eq!(size_of(&anchor), Some(12));
    // Slot 0 still holds 9: should slot 1 be torn, the anchor falls back to 9, not to 7.
    flip(&path, SLOT_LEN as u64 + HEADER_LEN as u64 + 10);
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(9)
    );
}

#[test]
fn a_torn_newer_slot_leaves_the_older_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let signer = test_signer();
    let mut anchor = Anchor::open(&path, &signer.verifier()).unwrap();
    anchor.advance(&signed(&signer, 5)).unwrap(); // slot 0
    anchor.advance(&signed(&signer, 8)).unwrap(); // slot 1
    // A write of slot 1 that stopped halfway: a byte of the note differs from its digest.
    flip(&path, SLOT_LEN as u64 + HEADER_LEN as u64 + 10);
    let mut reopened = Anchor::open(&path, &signer.verifier()).unwrap();
    assert_eq!(size_of(&reopened), Some(5));
    // The next write goes over the torn slot, not over the valid one.
    reopened.advance(&signed(&signer, 9)).unwrap();
    flip(&path, SLOT_LEN as u64 + HEADER_LEN as u64 + 10);
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(5)
    );
}

#[test]
fn both_slots_damaged_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let signer = test_signer();
    let mut anchor = Anchor::open(&path, &signer.verifier()).unwrap();
    anchor.advance(&signed(&signer, 5)).unwrap();
    anchor.advance(&signed(&signer, 8)).unwrap();
    flip(&path, HEADER_LEN as u64 + 3);
    flip(&path, SLOT_LEN as u64 + 2);
    let err = Anchor::open(&path, &signer.verifier()).unwrap_err();
    assert!(
        matches!(&err, AnchorError::Damaged { path: p } if *p == path),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the checkpoint anchor `{}` is damaged: neither slot holds a whole checkpoint",
            path.display()
        )
    );

    // A truncated file too.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(100).unwrap();
    let err = Anchor::open(&path, &signer.verifier()).unwrap_err();
    assert!(
        matches!(err, AnchorError::Length { len: 100, expected, .. } if expected == 2 * SLOT_LEN as u64),
        "{err}"
    );
}

#[test]
fn an_anchor_signed_by_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let signer = test_signer();
    let mut anchor = Anchor::open(&path, &signer.verifier()).unwrap();
    anchor.advance(&signed(&signer, 5)).unwrap();
    let other = test_signer();
    let err = Anchor::open(&path, &other.verifier()).unwrap_err();
    assert!(
        matches!(&err, AnchorError::Signature { path: p, .. } if *p == path),
        "{err}"
    );
}

fn entries(range: std::ops::Range<u64>) -> Vec<NewEntry> {
    range.map(test_entry).collect()
}

fn clone_signer(signer: &NoteSigner) -> NoteSigner {
    NoteSigner::from_skey(&signer.to_skey()).unwrap()
}

fn open_log(store: &MemoryStore, signer: &NoteSigner, path: &Path) -> Result<Log, OpenError> {
    let anchor = Anchor::open(path, &signer.verifier())?;
    Log::open_anchored(Arc::new(store.clone()), clone_signer(signer), anchor)
}

#[test]
fn every_finished_batch_is_anchored_before_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = open_log(&store, &signer, &path).unwrap();
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(0),
        "the new log's empty checkpoint is anchored"
    );
    for end in [1, 300, 301] {
        let start = log.size().get();
        let committed = log.append_batch(&entries(start..end), Vec::new()).unwrap();
        let anchored = Anchor::open(&path, &signer.verifier()).unwrap();
        assert_eq!(
            anchored.checkpoint().unwrap().note(),
            committed.checkpoint.note()
        );
    }
    let report = log.fsck().unwrap();
    assert_eq!(report.anchored_size, Some(301));
}

#[test]
fn a_store_behind_the_anchor_or_empty_is_refused_and_left_as_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let store = MemoryStore::new();
    let signer = test_signer();
    {
        let log = open_log(&store, &signer, &path).unwrap();
        log.append_batch(&entries(0..10), Vec::new()).unwrap();
        log.append_batch(&entries(10..20), Vec::new()).unwrap();
    }
    // The same key signs a shorter log in another store (a restored backup, a store that lost
    // its tail).
    let shorter = MemoryStore::new();
    {
        let log = Log::open(Arc::new(shorter.clone()), clone_signer(&signer)).unwrap();
        log.append_batch(&entries(0..10), Vec::new()).unwrap();
    }
    let before = shorter.dump();
    let Err(err) = open_log(&shorter, &signer, &path) else {
        panic!("a store behind the anchor must be refused");
    };
    assert!(
        matches!(
            err,
            OpenError::StoreBehindAnchor {
                store_size: 10,
                anchored_size: 20
            }
        ),
        "{err}"
    );
    assert_eq!(err.first_bad_entry(), Some(10));
    assert_eq!(
        err.to_string(),
        "the store holds 10 entries, but this log has signed and acknowledged a checkpoint of \
         size 20: entries from 10 on are missing"
    );
    assert!(shorter.dump() == before, "a refused store is not written");

    let Err(err) = open_log(&MemoryStore::new(), &signer, &path) else {
        panic!("an empty store with an anchor must be refused");
    };
    assert!(
        matches!(err, OpenError::StoreEmpty { anchored_size: 20 }),
        "{err}"
    );
}

#[test]
fn a_store_that_differs_from_the_anchor_at_its_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let signer = test_signer();
    {
        let log = open_log(&MemoryStore::new(), &signer, &path).unwrap();
        log.append_batch(&entries(0..10), Vec::new()).unwrap();
    }
    let anchored_root = Anchor::open(&path, &signer.verifier())
        .unwrap()
        .checkpoint()
        .unwrap()
        .checkpoint()
        .root;
    // Another log under the same key, at the same size and beyond, with other entries.
    for size in [10, 12] {
        let other = MemoryStore::new();
        let log = Log::open(Arc::new(other.clone()), clone_signer(&signer)).unwrap();
        log.append_batch(&entries(100..100 + size), Vec::new())
            .unwrap();
        let stored = log.root(TreeSize(10)).unwrap();
        drop(log);
        let Err(err) = open_log(&other, &signer, &path) else {
            panic!("a forked store must be refused");
        };
        assert!(
            matches!(err, OpenError::AnchorMismatch { size: 10, stored: s, anchored }
                if s == stored && anchored == anchored_root),
            "{err}"
        );
    }
}

#[test]
fn a_store_ahead_of_the_anchor_advances_it_and_one_without_an_anchor_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = open_log(&store, &signer, &path).unwrap();
    log.append_batch(&entries(0..10), Vec::new()).unwrap();
    let at_ten = fs::read(&path).unwrap();
    log.append_batch(&entries(10..15), Vec::new()).unwrap();
    drop(log);
    // As if the process died after the store's sync of the second batch, before its anchor.
    fs::write(&path, &at_ten).unwrap();
    let log = open_log(&store, &signer, &path).unwrap();
    assert_eq!(log.size().get(), 15);
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(15)
    );
    // The second batch was durable but never acknowledged, and stays known as such.
    assert_eq!(log.unacknowledged().unwrap(), vec![10..15]);
    drop(log);
    let log = open_log(&store, &signer, &path).unwrap();
    assert_eq!(log.unacknowledged().unwrap(), vec![10..15]);
    drop(log);

    // A data dir from before anchors: the store's checkpoint becomes the anchor.
    fs::remove_file(&path).unwrap();
    let log = open_log(&store, &signer, &path).unwrap();
    assert_eq!(log.size().get(), 15);
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(15)
    );
}

#[test]
fn a_batch_synced_while_an_earlier_one_is_anchored_stays_unacknowledged_until_its_own_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = open_log(&store, &signer, &path).unwrap();
    assert!(log.is_anchored());
    // The sequencer's pipeline: batch 1's anchor is written while batch 2's store sync runs.
    let first = log
        .sync_batch(log.stage_batch(&entries(0..4), Vec::new()).unwrap())
        .unwrap();
    let second = log
        .sync_batch(log.stage_batch(&entries(4..9), Vec::new()).unwrap())
        .unwrap();
    assert_eq!((first.size(), second.size()), (4, 9));
    assert_eq!(
        log.size().get(),
        0,
        "nothing is published before its anchor"
    );
    let committed = log.anchor_batch(first).unwrap();
    assert_eq!(committed.checkpoint.checkpoint().size.get(), 4);
    assert_eq!(log.size().get(), 4);
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(4),
        "anchoring batch 1 does not anchor batch 2"
    );
    // The process dies before batch 2's anchor: batch 2 is durable, and known as never
    // acknowledged once the log is opened again.
    drop(second);
    drop(log);
    let log = open_log(&store, &signer, &path).unwrap();
    assert_eq!(log.size().get(), 9);
    assert_eq!(log.unacknowledged().unwrap(), vec![4..9]);
}

#[test]
fn a_failed_store_sync_poisons_the_log_before_any_later_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.anchor");
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = open_log(&store, &signer, &path).unwrap();
    let first = log
        .sync_batch(log.stage_batch(&entries(0..3), Vec::new()).unwrap())
        .unwrap();
    let staged = log.stage_batch(&entries(3..5), Vec::new()).unwrap();
    store.fail_syncs(true);
    assert!(matches!(log.sync_batch(staged), Err(CommitError::Poisoned)));
    // Batch 1 synced before the failure, but its anchor comes after it: the log no longer
    // acknowledges anything, so batch 1 is refused too and the anchor stays where it was.
    assert!(matches!(
        log.anchor_batch(first),
        Err(CommitError::Poisoned)
    ));
    assert_eq!(
        size_of(&Anchor::open(&path, &signer.verifier()).unwrap()),
        Some(0)
    );
    assert_eq!(log.size().get(), 0);
}

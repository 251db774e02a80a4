use std::sync::Arc;

use super::*;
use crate::{
    conformance::{test_entry, test_signer},
    store::MemoryStore,
};

fn reopen(store: &MemoryStore, signer: &NoteSigner) -> Result<Log, OpenError> {
    Log::open(
        Arc::new(store.clone()),
        NoteSigner::from_skey(&signer.to_skey()).unwrap(),
    )
}

/// A log with 300 entries and one state key, then a second batch whose sync fails (so all of
/// its writes are unsynced). Returns the store, the signer and the number of unsynced writes.
fn setup_unsynced_second_batch() -> (MemoryStore, NoteSigner, usize) {
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = reopen(&store, &signer).unwrap();
    let first: Vec<NewEntry> = (0..300).map(test_entry).collect();
    log.append_batch(
        &first,
        vec![StateWrite::Put(b"k".to_vec(), b"old".to_vec())],
    )
    .unwrap();
    store.fail_syncs(true);
    let second: Vec<NewEntry> = (300..600).map(test_entry).collect();
    let writes = vec![
        StateWrite::Put(b"k".to_vec(), b"new".to_vec()),
        StateWrite::Put(b"k2".to_vec(), b"x".to_vec()),
    ];
    assert!(matches!(
        log.append_batch(&second, writes),
        Err(CommitError::Poisoned)
    ));
    assert!(log.is_poisoned());
    assert!(matches!(
        log.append_batch(&[test_entry(600)], Vec::new()),
        Err(CommitError::Poisoned)
    ));
    store.fail_syncs(false);
    let unsynced = store.unsynced_writes();
    (store, signer, unsynced)
}

#[test]
fn power_loss_at_every_point_of_a_batch_recovers_old_or_new_state() {
    let (_, _, writes) = setup_unsynced_second_batch();
    assert!(
        writes > 5,
        "the batch should span several writes, got {writes}"
    );
    let mut saw_old = false;
    let mut saw_new = false;
    for keep in 0..=writes {
        let (store, signer, _) = setup_unsynced_second_batch();
        store.crash(keep);
        let log = reopen(&store, &signer)
            .unwrap_or_else(|e| panic!("reopen after losing writes after #{keep}: {e}"));
        let size = log.size().get();
        let k = log.state_get(b"k").unwrap();
        let k2 = log.state_get(b"k2").unwrap();
        match size {
            300 => {
                saw_old = true;
                assert_eq!(k.as_deref(), Some(&b"old"[..]), "keep {keep}");
                assert_eq!(k2, None, "keep {keep}");
            }
            600 => {
                saw_new = true;
                assert_eq!(k.as_deref(), Some(&b"new"[..]), "keep {keep}");
                assert_eq!(k2.as_deref(), Some(&b"x"[..]), "keep {keep}");
            }
            other => panic!("size {other} after losing writes after #{keep}"),
        }
        log.fsck().unwrap();
        // No stray data from the lost batch: the log extends cleanly.
        let next: Vec<NewEntry> = (size..size + 10).map(test_entry).collect();
        log.append_batch(&next, Vec::new()).unwrap();
        log.fsck().unwrap();
        let reopened = reopen(&store, &signer).unwrap();
        assert_eq!(reopened.size().get(), size + 10);
    }
    assert!(saw_old && saw_new);
}

#[test]
fn a_failure_before_the_commit_point_leaves_the_log_usable() {
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = reopen(&store, &signer).unwrap();
    log.append_batch(&(0..10).map(test_entry).collect::<Vec<_>>(), Vec::new())
        .unwrap();
    let checkpoint = log.checkpoint();
    for allowed in 0..4 {
        store.fail_writes_after(allowed);
        let batch: Vec<NewEntry> = (10..400).map(test_entry).collect();
        let result = log.append_batch(&batch, vec![StateWrite::Put(b"k".to_vec(), b"v".to_vec())]);
        assert!(
            matches!(result, Err(CommitError::Store(_))),
            "allowed {allowed}"
        );
        store.fail_writes_after(u64::MAX);
        assert!(!log.is_poisoned());
        assert_eq!(log.checkpoint().note(), checkpoint.note());
        assert_eq!(log.state_get(b"k").unwrap(), None);
        // Readers never see the failed batch's data.
        assert!(matches!(
            log.leaves(LeafIndex(10), 1),
            Err(ReadError::OutOfRange {
                what: Position::Start,
                ..
            })
        ));
    }
    // While the store still fails, the next batch fails too, without poisoning the log.
    store.fail_writes_after(0);
    assert!(matches!(
        log.append_batch(&[test_entry(10)], Vec::new()),
        Err(CommitError::Store(_))
    ));
    assert!(!log.is_poisoned());
    store.fail_writes_after(u64::MAX);
    // A short batch after a long failed one: the failed batch's strays are gone before it.
    log.append_batch(&(10..20).map(test_entry).collect::<Vec<_>>(), Vec::new())
        .unwrap();
    for (key, _) in store.dump() {
        if key.first() == Some(&layout::ENTRIES) || key.first() == Some(&layout::BODIES) {
            assert!(layout::index_of(&key).unwrap() < 20, "stray chunk {key:?}");
        }
    }
    assert_eq!(log.size(), TreeSize(20));
    assert_eq!(log.leaves(LeafIndex(10), 10).unwrap().len(), 10);
    log.fsck().unwrap();
    let reopened = reopen(&store, &signer).unwrap();
    assert_eq!(reopened.size(), TreeSize(20));
}

#[test]
fn data_without_a_commit_record_refuses_open() {
    let store = MemoryStore::new();
    let signer = test_signer();
    reopen(&store, &signer)
        .unwrap()
        .append_batch(&[test_entry(0)], Vec::new())
        .unwrap();
    store.delete(layout::COMMIT).unwrap();
    assert!(matches!(
        reopen(&store, &signer),
        Err(OpenError::DataWithoutCommit)
    ));
}

#[test]
fn a_damaged_commit_record_refuses_open() {
    let store = MemoryStore::new();
    let signer = test_signer();
    reopen(&store, &signer).unwrap();
    store.tamper(layout::COMMIT, b"akashi-commit/v1 garbage");
    assert!(matches!(
        reopen(&store, &signer),
        Err(OpenError::BadCommitRecord)
    ));
}

#[test]
fn tiles_are_served_only_up_to_the_committed_size() {
    let store = MemoryStore::new();
    let log = reopen(&store, &test_signer()).unwrap();
    log.append_batch(&(0..300).map(test_entry).collect::<Vec<_>>(), Vec::new())
        .unwrap();
    assert_eq!(log.tile(0, 0, 256).unwrap().unwrap().len(), 256 * 32);
    assert_eq!(log.tile(0, 1, 44).unwrap().unwrap().len(), 44 * 32);
    assert_eq!(log.tile(0, 1, 45).unwrap(), None);
    assert_eq!(log.tile(0, 2, 1).unwrap(), None);
    assert_eq!(log.tile(1, 0, 1).unwrap().unwrap().len(), 32);
    assert_eq!(log.tile(1, 0, 2).unwrap(), None);
    assert_eq!(log.tile(0, 0, 0).unwrap(), None);
    assert_eq!(log.tile(0, u64::MAX, 256).unwrap(), None);
}

#[test]
fn commit_record_round_trips_and_rejects_trailing_bytes() {
    let record = CommitRecord {
        size: 42,
        checkpoint: "note\n".into(),
        writes: vec![
            StateWrite::Put(b"a".to_vec(), b"1".to_vec()),
            StateWrite::Delete(b"b".to_vec()),
        ],
    };
    let bytes = record.encode();
    let back = CommitRecord::decode(&bytes).unwrap();
    assert_eq!(back.size, 42);
    assert_eq!(back.writes, record.writes);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(CommitRecord::decode(&longer).is_none());
    assert!(CommitRecord::decode(&bytes[..bytes.len() - 1]).is_none());
}

#[test]
fn a_staged_batch_is_visible_to_state_reads_but_not_in_the_tree_until_finished() {
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = reopen(&store, &signer).unwrap();
    let first = log
        .stage_batch(
            &[test_entry(0), test_entry(1)],
            vec![StateWrite::Put(b"k".to_vec(), b"1".to_vec())],
        )
        .unwrap();
    // The second batch builds on the first before the first is synced.
    let second = log
        .stage_batch(
            &[test_entry(2)],
            vec![StateWrite::Put(b"k".to_vec(), b"2".to_vec())],
        )
        .unwrap();
    assert_eq!((first.size(), second.size()), (2, 3));
    assert_eq!(
        log.state_get(b"k").unwrap().as_deref(),
        Some(b"2".as_slice())
    );
    assert_eq!(log.size().get(), 0, "nothing published before its sync");
    assert!(matches!(
        log.leaves(LeafIndex(0), 1),
        Err(ReadError::OutOfRange {
            what: Position::Start,
            ..
        })
    ));
    let syncs = store.syncs();
    let committed = log.finish_batch(first).unwrap();
    assert_eq!(store.syncs(), syncs + 1);
    assert_eq!(log.size().get(), 2);
    assert_eq!(committed.first, LeafIndex(0));
    let committed = log.finish_batch(second).unwrap();
    assert_eq!(committed.first, LeafIndex(2));
    assert_eq!(log.size().get(), 3);
    // Every entry is provable against the last checkpoint, and the earlier one is consistent.
    let receipt = log
        .receipt(
            LeafIndex(1),
            committed.leaf_hashes[0],
            committed.checkpoint.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(receipt.leaf_index, LeafIndex(1));
    drop(log);
    let reopened = reopen(&store, &signer).unwrap();
    assert_eq!(reopened.size().get(), 3);
}

#[test]
fn a_failed_sync_poisons_the_log_and_no_batch_staged_behind_it_is_acknowledged() {
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = reopen(&store, &signer).unwrap();
    log.append_batch(&[test_entry(0)], Vec::new()).unwrap();
    let first = log.stage_batch(&[test_entry(1)], Vec::new()).unwrap();
    let second = log.stage_batch(&[test_entry(2)], Vec::new()).unwrap();
    store.fail_syncs(true);
    assert!(matches!(
        log.finish_batch(first),
        Err(CommitError::Poisoned)
    ));
    store.fail_syncs(false);
    // The disk works again, but the second batch came after an unknown outcome: refused.
    assert!(matches!(
        log.finish_batch(second),
        Err(CommitError::Poisoned)
    ));
    assert!(matches!(
        log.stage_batch(&[test_entry(3)], Vec::new()),
        Err(CommitError::Poisoned)
    ));
    assert_eq!(log.size().get(), 1);
}

#[test]
fn power_loss_with_two_batches_in_flight_recovers_a_prefix() {
    // Crash after every write of two staged, unsynced batches: the store reopens at 1, 2 or 3
    // entries, always with a verifying checkpoint and the state of that prefix.
    let run = |keep: Option<usize>| {
        let store = MemoryStore::new();
        let signer = test_signer();
        let log = reopen(&store, &signer).unwrap();
        log.append_batch(
            &[test_entry(0)],
            vec![StateWrite::Put(b"n".to_vec(), b"1".to_vec())],
        )
        .unwrap();
        let _first = log
            .stage_batch(
                &[test_entry(1)],
                vec![StateWrite::Put(b"n".to_vec(), b"2".to_vec())],
            )
            .unwrap();
        let _second = log
            .stage_batch(
                &[test_entry(2)],
                vec![StateWrite::Put(b"n".to_vec(), b"3".to_vec())],
            )
            .unwrap();
        let unsynced = store.unsynced_writes();
        if let Some(keep) = keep {
            store.crash(keep);
        }
        (store, signer, unsynced)
    };
    let (_, _, writes) = run(None);
    let mut sizes = std::collections::BTreeSet::new();
    for keep in 0..=writes {
        let (store, signer, _) = run(Some(keep));
        let log = reopen(&store, &signer).unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        let size = log.size().get();
        let n = log.state_get(b"n").unwrap().unwrap();
        assert_eq!(n, size.to_string().into_bytes(), "keep {keep}");
        log.fsck().unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        sizes.insert(size);
    }
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn a_failed_redaction_sync_poisons_the_log_so_no_batch_it_covered_is_acknowledged() {
    let store = MemoryStore::new();
    let signer = test_signer();
    let log = reopen(&store, &signer).unwrap();
    log.append_batch(&[test_entry(0)], Vec::new()).unwrap();
    let staged = log.stage_batch(&[test_entry(1)], Vec::new()).unwrap();
    store.fail_syncs(true);
    assert!(matches!(
        log.redact_body(LeafIndex(0)),
        Err(ReadError::Store(_))
    ));
    store.fail_syncs(false);
    assert!(log.is_poisoned());
    assert!(
        matches!(log.finish_batch(staged), Err(CommitError::Poisoned)),
        "a batch a failed sync covered was acknowledged"
    );
    assert!(matches!(
        log.append_batch(&[test_entry(2)], Vec::new()),
        Err(CommitError::Poisoned)
    ));
}

#[test]
fn a_creation_interrupted_before_its_commit_record_is_created_again() {
    let store = MemoryStore::new();
    let signer = test_signer();
    // The empty tree's checkpoint is written; the commit record is not.
    store.fail_writes_after(1);
    assert!(matches!(reopen(&store, &signer), Err(OpenError::Store(_))));
    store.fail_writes_after(u64::MAX);
    store.crash(usize::MAX);
    let log = reopen(&store, &signer).unwrap();
    assert_eq!(log.size(), TreeSize(0));
    log.append_batch(&[test_entry(0)], Vec::new()).unwrap();
    let log = reopen(&store, &signer).unwrap();
    assert_eq!(log.size(), TreeSize(1));
    // Anything more than that checkpoint is still refused.
    let other = MemoryStore::new();
    {
        let log = reopen(&other, &signer).unwrap();
        log.append_batch(&[test_entry(0)], Vec::new()).unwrap();
    }
    other.delete(layout::COMMIT).unwrap();
    other.sync().unwrap();
    assert!(matches!(
        reopen(&other, &signer),
        Err(OpenError::DataWithoutCommit)
    ));
}

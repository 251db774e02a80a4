use std::sync::Arc;

use super::*;
use crate::store::{
    MemoryStore,
    conformance::{test_entry, test_signer},
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
        assert_eq!(log.checkpoint().note, checkpoint.note);
        assert_eq!(log.state_get(b"k").unwrap(), None);
        // Readers never see the failed batch's data.
        assert!(matches!(
            log.leaves(LeafIndex(10), 1),
            Err(ReadError::OutOfRange { .. })
        ));
    }
    // While the store still fails, the next batch fails too, without poisoning the log.
    store.fail_writes_after(0);
    assert!(log.append_batch(&[test_entry(10)], Vec::new()).is_err());
    assert!(!log.is_poisoned());
    store.fail_writes_after(u64::MAX);
    // A short batch after a long failed one: the failed batch's strays are gone before it.
    log.append_batch(&(10..20).map(test_entry).collect::<Vec<_>>(), Vec::new())
        .unwrap();
    for (key, _) in store.dump() {
        if key.first() == Some(&keys::ENTRIES) || key.first() == Some(&keys::BODIES) {
            assert!(keys::index_of(&key).unwrap() < 20, "stray chunk {key:?}");
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
    store.delete(keys::COMMIT).unwrap();
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
    store.tamper(keys::COMMIT, b"akashi-commit/v1 garbage");
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

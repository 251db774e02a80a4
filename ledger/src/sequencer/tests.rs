use std::sync::{Arc, atomic::AtomicUsize};

use super::*;
use crate::{
    checkpoint::SignedCheckpoint,
    conformance::{test_entry, test_signer},
    store::MemoryStore,
};

/// Counts: every command increments the counter in state and returns the value it saw.
struct Counter {
    rollbacks: Arc<AtomicUsize>,
}

enum Cmd {
    Increment,
    Refuse,
    /// Increments, but a group holding it is refused as a whole.
    Veto,
}

impl StateMachine for Counter {
    type Command = Cmd;
    type Output = u64;
    type Rejection = &'static str;

    fn apply(&mut self, command: Cmd, tx: &mut Tx<'_>) -> Result<Applied<u64>, &'static str> {
        if let Cmd::Refuse = command {
            tx.put(b"refused-write", b"must not persist");
            return Err("refused");
        }
        let current = tx
            .get(b"counter")
            .map_err(|_| "store")?
            .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
            .unwrap_or(0);
        let next = current + 1;
        tx.put(b"counter", &next.to_be_bytes());
        Ok(Applied {
            entry: test_entry(tx.index().get()),
            output: next,
        })
    }

    fn check_group(&mut self, commands: &[Cmd], _tx: &Tx<'_>) -> Result<(), &'static str> {
        if commands.iter().any(|c| matches!(c, Cmd::Veto)) {
            return Err("vetoed");
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.rollbacks.fetch_add(1, Ordering::SeqCst);
    }
}

fn start(store: &MemoryStore, options: SequencerOptions) -> (Sequencer<Counter>, Arc<AtomicUsize>) {
    let signer = test_signer();
    let log = Arc::new(Log::open(Arc::new(store.clone()), signer).unwrap());
    let rollbacks = Arc::new(AtomicUsize::new(0));
    let machine = Counter {
        rollbacks: rollbacks.clone(),
    };
    (Sequencer::start(log, machine, options).unwrap(), rollbacks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_get_distinct_indices_and_valid_receipts() {
    let store = MemoryStore::new();
    let (sequencer, _) = start(&store, SequencerOptions::default());
    let verifier = sequencer.log().verifier().clone();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let sequencer = sequencer.clone();
        tasks.push(tokio::spawn(async move {
            sequencer.submit(Cmd::Increment).await
        }));
    }
    let mut indices = Vec::new();
    let mut outputs = Vec::new();
    for task in tasks {
        let (receipt, output) = task.await.unwrap().unwrap();
        let checkpoint = SignedCheckpoint::verify(receipt.checkpoint.note(), &verifier).unwrap();
        receipt
            .inclusion_proof
            .verify(&receipt.leaf_hash, &checkpoint.checkpoint().root)
            .unwrap();
        assert!(checkpoint.checkpoint().size.contains(receipt.leaf_index));
        // Commands are applied in sequence order: the value seen is the index plus one.
        assert_eq!(output, receipt.leaf_index.get() + 1);
        indices.push(receipt.leaf_index.get());
        outputs.push(output);
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..200).collect::<Vec<_>>());
    assert_eq!(sequencer.log().size().get(), 200);
    let batches = sequencer.stats().batches.load(Ordering::Relaxed);
    assert!((1..=200).contains(&batches));
    // Each batch ends with exactly one sync (plus the one made when the log was created).
    assert_eq!(store.syncs(), batches + 1);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_rejected_command_appends_nothing_and_keeps_no_writes() {
    let store = MemoryStore::new();
    let (sequencer, _) = start(&store, SequencerOptions::default());
    let (first, _) = sequencer.submit(Cmd::Increment).await.unwrap();
    assert!(matches!(
        sequencer.submit(Cmd::Refuse).await,
        Err(SubmitError::Rejected("refused"))
    ));
    let (second, output) = sequencer.submit(Cmd::Increment).await.unwrap();
    assert_eq!(second.leaf_index.get(), first.leaf_index.get() + 1);
    assert_eq!(output, 2);
    assert_eq!(sequencer.log().state_get(b"refused-write").unwrap(), None);
    assert_eq!(sequencer.stats().rejected.load(Ordering::Relaxed), 1);
    sequencer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_logged_at_consecutive_positions_among_other_commands() {
    let store = MemoryStore::new();
    let (sequencer, rollbacks) = start(&store, SequencerOptions::default());
    let verifier = sequencer.log().verifier().clone();
    let mut singles = Vec::new();
    for _ in 0..20 {
        let sequencer = sequencer.clone();
        singles.push(tokio::spawn(async move {
            sequencer.submit(Cmd::Increment).await
        }));
    }
    let group = sequencer
        .submit_group((0..50).map(|_| Cmd::Increment).collect())
        .await
        .unwrap();
    let mut single_indices = Vec::new();
    for single in singles {
        single_indices.push(single.await.unwrap().unwrap().0.leaf_index.get());
    }
    let first = group.first.get();
    assert_eq!(group.leaf_hashes.len(), 50);
    // In order, one after another: the counter a command saw is its index plus one.
    let expected: Vec<u64> = (first + 1..=first + 50).collect();
    assert_eq!(group.outputs, expected);
    assert!(
        single_indices.iter().all(|&i| i < first || i >= first + 50),
        "no other command lands inside the group"
    );
    let checkpoint = SignedCheckpoint::verify(group.checkpoint.note(), &verifier).unwrap();
    assert!(checkpoint.checkpoint().size.get() >= first + 50);
    for (offset, leaf_hash) in group.leaf_hashes.iter().enumerate() {
        let index = LeafIndex(first + offset as u64);
        assert_eq!(sequencer.log().leaf_hash(index).unwrap(), *leaf_hash);
        let receipt = sequencer
            .log()
            .receipt(index, *leaf_hash, group.checkpoint.clone())
            .unwrap();
        receipt
            .inclusion_proof
            .verify(leaf_hash, &checkpoint.checkpoint().root)
            .unwrap();
    }
    assert_eq!(rollbacks.load(Ordering::SeqCst), 0);
    assert!(matches!(
        sequencer.submit_group(Vec::new()).await,
        Err(SubmitError::Unavailable(_))
    ));
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_group_refused_before_it_is_applied_appends_nothing_and_fails_nothing_else() {
    let store = MemoryStore::new();
    let (sequencer, rollbacks) = start(&store, SequencerOptions::default());
    sequencer.submit(Cmd::Increment).await.unwrap();
    // Refused by `check_group`, and by its first command: nothing of either is kept.
    let vetoed = sequencer
        .submit_group(vec![Cmd::Increment, Cmd::Veto, Cmd::Increment])
        .await;
    assert!(matches!(vetoed, Err(SubmitError::Rejected("vetoed"))));
    let refused = sequencer
        .submit_group(vec![Cmd::Refuse, Cmd::Increment])
        .await;
    assert!(matches!(refused, Err(SubmitError::Rejected("refused"))));
    assert_eq!(rollbacks.load(Ordering::SeqCst), 0);
    let (receipt, output) = sequencer.submit(Cmd::Increment).await.unwrap();
    assert_eq!((receipt.leaf_index.get(), output), (1, 2));
    assert_eq!(sequencer.log().state_get(b"refused-write").unwrap(), None);
    sequencer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_refused_midway_fails_its_whole_batch_and_leaves_no_trace() {
    let store = MemoryStore::new();
    // The batch closes once the single command and the five of the group are in, whichever
    // comes first: both are in the same batch.
    let options = SequencerOptions {
        max_batch: 6,
        max_wait: Duration::from_secs(30),
        ..SequencerOptions::default()
    };
    let (sequencer, rollbacks) = start(&store, options);
    let single = {
        let sequencer = sequencer.clone();
        tokio::spawn(async move { sequencer.submit(Cmd::Increment).await })
    };
    let group = sequencer
        .submit_group(vec![
            Cmd::Increment,
            Cmd::Increment,
            Cmd::Increment,
            Cmd::Refuse,
            Cmd::Increment,
        ])
        .await;
    assert!(matches!(group, Err(SubmitError::Rejected("refused"))));
    assert!(matches!(
        single.await.unwrap(),
        Err(SubmitError::Unavailable(_))
    ));
    assert_eq!(rollbacks.load(Ordering::SeqCst), 1);
    assert_eq!(sequencer.log().size().get(), 0);
    assert_eq!(sequencer.log().state_get(b"counter").unwrap(), None);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_group_in_a_failed_batch_is_answered_unavailable() {
    let store = MemoryStore::new();
    let (sequencer, rollbacks) = start(&store, SequencerOptions::default());
    store.fail_writes_after(0);
    assert!(matches!(
        sequencer
            .submit_group(vec![Cmd::Increment, Cmd::Increment])
            .await,
        Err(SubmitError::Unavailable(_))
    ));
    assert_eq!(rollbacks.load(Ordering::SeqCst), 1);
    store.fail_writes_after(u64::MAX);
    let group = sequencer
        .submit_group(vec![Cmd::Increment, Cmd::Increment])
        .await
        .unwrap();
    assert_eq!((group.first.get(), group.outputs), (0, vec![1, 2]));
    sequencer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_never_makes_a_batch_larger_than_a_batch_may_be() {
    let store = MemoryStore::new();
    let options = SequencerOptions {
        max_batch: crate::log::MAX_BATCH_ENTRIES,
        max_wait: Duration::from_millis(200),
        ..SequencerOptions::default()
    };
    let (sequencer, rollbacks) = start(&store, options);
    let too_big = (0..=crate::log::MAX_BATCH_ENTRIES)
        .map(|_| Cmd::Increment)
        .collect();
    assert!(matches!(
        sequencer.submit_group(too_big).await,
        Err(SubmitError::Unavailable(_))
    ));
    // A few single commands, then a group as large as a batch may be: the group does not fit in
    // their batch, so it opens the next one, and every command is logged.
    let mut singles = Vec::new();
    for _ in 0..3 {
        let sequencer = sequencer.clone();
        singles.push(tokio::spawn(async move {
            sequencer.submit(Cmd::Increment).await
        }));
    }
    tokio::task::yield_now().await;
    let group = sequencer
        .submit_group(
            (0..crate::log::MAX_BATCH_ENTRIES)
                .map(|_| Cmd::Increment)
                .collect(),
        )
        .await
        .unwrap();
    for single in singles {
        single.await.unwrap().unwrap();
    }
    assert_eq!(group.outputs.len(), crate::log::MAX_BATCH_ENTRIES);
    assert_eq!(
        sequencer.log().size().get(),
        crate::log::MAX_BATCH_ENTRIES as u64 + 3
    );
    assert_eq!(rollbacks.load(Ordering::SeqCst), 0);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_failed_batch_answers_unavailable_and_rolls_back() {
    let store = MemoryStore::new();
    let (sequencer, rollbacks) = start(&store, SequencerOptions::default());
    sequencer.submit(Cmd::Increment).await.unwrap();
    store.fail_writes_after(0);
    assert!(matches!(
        sequencer.submit(Cmd::Increment).await,
        Err(SubmitError::Unavailable(_))
    ));
    assert_eq!(rollbacks.load(Ordering::SeqCst), 1);
    store.fail_writes_after(u64::MAX);
    // The failed command left no trace: the counter continues from 1.
    let (receipt, output) = sequencer.submit(Cmd::Increment).await.unwrap();
    assert_eq!(output, 2);
    assert_eq!(receipt.leaf_index.get(), 1);
    sequencer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_queued_commands_then_refuses_new_ones() {
    let store = MemoryStore::new();
    let options = SequencerOptions {
        max_batch: 4,
        ..SequencerOptions::default()
    };
    let (sequencer, _) = start(&store, options);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let sequencer = sequencer.clone();
        tasks.push(tokio::spawn(async move {
            sequencer.submit(Cmd::Increment).await
        }));
    }
    // Close only once every task's command is in the queue (or already done).
    while sequencer.stats().submitted.load(Ordering::Relaxed) < 50 {
        tokio::task::yield_now().await;
    }
    sequencer.shutdown().await;
    let mut done = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            done += 1;
        }
    }
    assert_eq!(done, 50);
    assert_eq!(sequencer.log().size().get(), 50);
    assert!(matches!(
        sequencer.submit(Cmd::Increment).await,
        Err(SubmitError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_holds_a_batch_open_until_it_is_full_or_the_wait_ends() {
    let store = MemoryStore::new();
    let wait = Duration::from_millis(50);
    let options = SequencerOptions {
        max_batch: 8,
        max_wait: wait,
        ..SequencerOptions::default()
    };
    let (sequencer, _) = start(&store, options);
    // A lone command waits for company until the wait ends.
    let started = Instant::now();
    sequencer.submit(Cmd::Increment).await.unwrap();
    assert!(started.elapsed() >= wait);
    sequencer.shutdown().await;

    // With a long wait, eight concurrent commands fill the batch, which is cut at once.
    let store = MemoryStore::new();
    let options = SequencerOptions {
        max_batch: 8,
        max_wait: Duration::from_secs(30),
        ..SequencerOptions::default()
    };
    let (sequencer, _) = start(&store, options);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let sequencer = sequencer.clone();
        tasks.push(tokio::spawn(async move {
            sequencer.submit(Cmd::Increment).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(sequencer.stats().batches.load(Ordering::Relaxed), 1);
    assert!(started.elapsed() < Duration::from_secs(30));
    sequencer.shutdown().await;
}

fn tx_at<'a>(
    log: &'a Log,
    batch: &'a Overlay,
    reads: &'a std::cell::RefCell<std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>>,
    recent: &'a RecentWrites,
    index: u64,
) -> Tx<'a> {
    Tx {
        log,
        batch,
        reads,
        local: BTreeMap::new(),
        recent,
        index: LeafIndex(index),
        time_millis: 0,
    }
}

#[test]
fn a_primed_value_is_kept_only_when_no_later_batch_wrote_its_key() {
    let store = MemoryStore::new();
    let log = Log::open(Arc::new(store), test_signer()).unwrap();
    let mut recent = RecentWrites::new(10);
    recent.record(15, vec![recent.fingerprint(b"a")]);
    let batch = Overlay::new();
    let reads = std::cell::RefCell::new(std::collections::HashMap::new());
    let tx = tx_at(&log, &batch, &reads, &recent, 20);
    // Read at 12, written at 15: stale, not kept (the store is read instead).
    tx.prime(b"a".to_vec(), Some(b"old".to_vec()), 12);
    assert_eq!(
        tx.get(b"a").unwrap(),
        None,
        "the empty store, not the stale value"
    );
    // Read at 15 (the batch's base): kept, and the store is not asked.
    tx.prime(b"b".to_vec(), Some(b"primed".to_vec()), 15);
    assert_eq!(tx.get(b"b").unwrap(), Some(b"primed".to_vec()));
    // Older than the horizon, or beyond the last batch committed: ignored.
    tx.prime(b"c".to_vec(), Some(b"x".to_vec()), 9);
    tx.prime(b"d".to_vec(), Some(b"x".to_vec()), 16);
    assert_eq!(tx.get(b"c").unwrap(), None);
    assert_eq!(tx.get(b"d").unwrap(), None);
    // A value the batch has read already stays.
    tx.prime(b"b".to_vec(), Some(b"other".to_vec()), 15);
    assert_eq!(tx.get(b"b").unwrap(), Some(b"primed".to_vec()));
    // The batch's own writes and the command's hide a primed value.
    let mut batch = Overlay::new();
    batch.insert(b"e".to_vec(), Some(b"batch".to_vec()));
    let mut tx = tx_at(&log, &batch, &reads, &recent, 20);
    tx.prime(b"e".to_vec(), Some(b"primed".to_vec()), 15);
    tx.prime(b"f".to_vec(), Some(b"primed".to_vec()), 15);
    tx.put(b"f", b"mine");
    assert_eq!(tx.get(b"e").unwrap(), Some(b"batch".to_vec()));
    assert_eq!(tx.get(b"f").unwrap(), Some(b"mine".to_vec()));
}

#[test]
fn unchanged_since_sees_later_batches_the_own_batch_and_the_horizon() {
    let store = MemoryStore::new();
    let log = Log::open(Arc::new(store), test_signer()).unwrap();
    let mut recent = RecentWrites::new(10);
    recent.record(12, vec![recent.fingerprint(b"a")]);
    recent.record(15, vec![recent.fingerprint(b"b"), recent.fingerprint(b"a")]);
    let mut batch = Overlay::new();
    batch.insert(b"c".to_vec(), Some(b"new".to_vec()));
    let reads = std::cell::RefCell::new(std::collections::HashMap::new());
    let mut tx = tx_at(&log, &batch, &reads, &recent, 20);
    // `a` was last written by the batch that ended at 15, this batch's base.
    assert!(!tx.unchanged_since(b"a", 12));
    assert!(!tx.unchanged_since(b"a", 14));
    assert!(tx.unchanged_since(b"a", 15));
    // `b` only at 15; `z` never.
    assert!(!tx.unchanged_since(b"b", 11));
    assert!(tx.unchanged_since(b"z", 10));
    // Older than the horizon: unknown, so changed.
    assert!(!tx.unchanged_since(b"z", 9));
    // Written earlier in this batch, or by this command.
    assert!(!tx.unchanged_since(b"c", 20));
    tx.put(b"d", b"mine");
    assert!(!tx.unchanged_since(b"d", 20));
    // A size beyond the last batch committed cannot have been read.
    assert!(!tx.unchanged_since(b"z", 16));
}

#[test]
fn recent_writes_forget_the_oldest_batches_and_move_the_horizon() {
    let mut recent = RecentWrites::new(0);
    let per_batch = 1000;
    let batches = RecentWrites::MAX_KEYS / per_batch + 5;
    for b in 0..batches {
        let size = (b as u64 + 1) * 10;
        let keys = (0..per_batch)
            .map(|k| recent.fingerprint(format!("{b}/{k}").as_bytes()))
            .collect();
        recent.record(size, keys);
    }
    recent.record(100_000, vec![recent.fingerprint(b"0/0")]);
    assert!(recent.keys <= RecentWrites::MAX_KEYS);
    assert!(recent.horizon > 0);
    assert_eq!(
        recent.by_key.len(),
        recent.keys,
        "one entry per remembered key"
    );
    // A key of a forgotten batch is gone from the map; a re-written one keeps its newest size.
    assert_eq!(
        recent.by_key.get(&recent.fingerprint(b"0/0")),
        Some(&100_000)
    );
    assert!(!recent.by_key.contains_key(&recent.fingerprint(b"0/1")));
}

/// Prepared off the writer: a command carrying the size it read at and the key it read.
struct Checker;

impl StateMachine for Checker {
    type Command = (Option<u64>, &'static [u8]);
    type Output = bool;
    type Rejection = &'static str;

    fn apply(
        &mut self,
        (read_at, key): Self::Command,
        tx: &mut Tx<'_>,
    ) -> Result<Applied<bool>, &'static str> {
        // A write command (`read_at` none) writes `key`; a check reports whether it is unchanged.
        let output = match read_at {
            None => {
                tx.put(key, b"x");
                true
            }
            Some(size) => tx.unchanged_since(key, size),
        };
        Ok(Applied {
            entry: test_entry(tx.index().get()),
            output,
        })
    }
}

#[tokio::test]
async fn prepared_commands_are_checked_against_writes_committed_since() {
    let store = MemoryStore::new();
    let log = Arc::new(Log::open(Arc::new(store), test_signer()).unwrap());
    let sequencer = Sequencer::start(log.clone(), Checker, SequencerOptions::default()).unwrap();
    sequencer.submit((None, &b"k"[..])).await.unwrap();
    let read_at = log.size().get();
    // Nothing wrote `k` since: unchanged; a write to another key does not matter.
    sequencer.submit((None, &b"other"[..])).await.unwrap();
    assert!(
        sequencer
            .submit((Some(read_at), &b"k"[..]))
            .await
            .unwrap()
            .1
    );
    // `k` written after the read: changed.
    sequencer.submit((None, &b"k"[..])).await.unwrap();
    assert!(
        !sequencer
            .submit((Some(read_at), &b"k"[..]))
            .await
            .unwrap()
            .1
    );
    assert!(
        sequencer
            .submit((Some(log.size().get()), &b"k"[..]))
            .await
            .unwrap()
            .1
    );
    sequencer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_answers_unavailable_and_nothing_after_it_is_acknowledged() {
    let store = MemoryStore::new();
    let (sequencer, _) = start(&store, SequencerOptions::default());
    sequencer.submit(Cmd::Increment).await.unwrap();
    store.fail_syncs(true);
    assert!(matches!(
        sequencer.submit(Cmd::Increment).await,
        Err(SubmitError::Unavailable(_))
    ));
    store.fail_syncs(false);
    // Whether the failed batch reached the disk is unknown, so the log stays closed.
    for _ in 0..3 {
        assert!(matches!(
            sequencer.submit(Cmd::Increment).await,
            Err(SubmitError::Unavailable(_))
        ));
    }
    assert_eq!(sequencer.log().size().get(), 1);
    assert_eq!(sequencer.stats().entries.load(Ordering::Relaxed), 1);
    sequencer.shutdown().await;
}

/// Answers each command with its sequencing time.
struct Clock;

impl StateMachine for Clock {
    type Command = ();
    type Output = i64;
    type Rejection = &'static str;

    fn apply(&mut self, (): (), tx: &mut Tx<'_>) -> Result<Applied<i64>, &'static str> {
        Ok(Applied {
            entry: test_entry(tx.index().get()),
            output: tx.time_millis(),
        })
    }
}

#[tokio::test]
async fn a_started_sequencer_never_dates_an_entry_before_the_newest_entrys_day() {
    let store = MemoryStore::new();
    let log = Arc::new(Log::open(Arc::new(store), test_signer()).unwrap());
    // The newest entry is dated far ahead of the wall clock, as after the clock was set back
    // between two runs.
    let future = crate::entry::Day::parse("2100-01-01").unwrap();
    let mut entry = test_entry(0);
    entry.leaf.day = future;
    log.append_batch(&[entry], Vec::new()).unwrap();
    let sequencer = Sequencer::start(log, Clock, SequencerOptions::default()).unwrap();
    let (_, time) = sequencer.submit(()).await.unwrap();
    assert!(
        time >= future.to_unix_seconds() * 1000,
        "sequenced at {time}, before the newest entry's day"
    );
    let (_, later) = sequencer.submit(()).await.unwrap();
    assert!(later >= time);
    sequencer.shutdown().await;
}

/// A log on `store` whose checkpoint anchor is a file in `dir`, and that file's path.
fn anchored_log(dir: &std::path::Path, store: &MemoryStore) -> (Arc<Log>, std::path::PathBuf) {
    let path = dir.join("ledger.anchor");
    let signer = test_signer();
    let anchor = crate::anchor::Anchor::open(&path, &signer.verifier()).unwrap();
    let log = Log::open_anchored(Arc::new(store.clone()), signer, anchor).unwrap();
    (Arc::new(log), path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_anchored_log_every_acknowledged_entry_is_anchored_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let (log, path) = anchored_log(dir.path(), &store);
    let verifier = log.verifier().clone();
    let machine = Counter {
        rollbacks: Arc::new(AtomicUsize::new(0)),
    };
    let sequencer = Sequencer::start(log, machine, SequencerOptions::default()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let sequencer = sequencer.clone();
        let path = path.clone();
        let verifier = verifier.clone();
        tasks.push(tokio::spawn(async move {
            let (receipt, _) = sequencer.submit(Cmd::Increment).await.unwrap();
            // Read the anchor as a restarted server would, the moment the answer arrives.
            let anchored = crate::anchor::Anchor::open(&path, &verifier)
                .unwrap()
                .checkpoint()
                .map(|c| c.checkpoint().size.get());
            (receipt, anchored)
        }));
    }
    let mut indices = Vec::new();
    for task in tasks {
        let (receipt, anchored) = task.await.unwrap();
        let size = SignedCheckpoint::verify(receipt.checkpoint.note(), &verifier)
            .unwrap()
            .checkpoint()
            .size
            .get();
        assert!(
            anchored >= Some(size),
            "answered with a checkpoint of size {size} while the anchor held {anchored:?}"
        );
        indices.push(receipt.leaf_index.get());
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..300).collect::<Vec<_>>());
    // One at a time, so the writer is idle when each batch is synced and the sync thread anchors
    // it itself: still anchored before it is answered.
    for expected in 300..320 {
        let (receipt, _) = sequencer.submit(Cmd::Increment).await.unwrap();
        let anchored = crate::anchor::Anchor::open(&path, &verifier)
            .unwrap()
            .checkpoint()
            .map(|c| c.checkpoint().size.get());
        assert_eq!(receipt.leaf_index.get(), expected);
        assert!(
            anchored > Some(expected),
            "entry {expected} answered before it was anchored"
        );
    }
    let batches = sequencer.stats().batches.load(Ordering::Relaxed);
    // The anchor thread adds no store syncs: one per batch, plus the log's creation.
    assert_eq!(store.syncs(), batches + 1);
    sequencer.shutdown().await;
    let anchored = crate::anchor::Anchor::open(&path, &verifier).unwrap();
    assert_eq!(anchored.checkpoint().unwrap().checkpoint().size.get(), 320);
}

/// Counts like [`Counter`], and while `bloat` is set seals each batch with a checkpoint extension
/// line too long for an anchor slot, so anchoring that batch fails after its store sync.
struct Bloated {
    counter: Counter,
    bloat: Arc<std::sync::atomic::AtomicBool>,
}

impl StateMachine for Bloated {
    type Command = Cmd;
    type Output = u64;
    type Rejection = &'static str;

    fn apply(&mut self, command: Cmd, tx: &mut Tx<'_>) -> Result<Applied<u64>, &'static str> {
        self.counter.apply(command, tx)
    }

    fn seal(&mut self, _tx: &mut Tx<'_>) -> Result<Vec<String>, String> {
        Ok(if self.bloat.load(Ordering::SeqCst) {
            vec!["x".repeat(crate::anchor::SLOT_LEN)]
        } else {
            Vec::new()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_anchor_answers_unavailable_and_nothing_after_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let (log, path) = anchored_log(dir.path(), &store);
    let verifier = log.verifier().clone();
    let bloat = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let machine = Bloated {
        counter: Counter {
            rollbacks: Arc::new(AtomicUsize::new(0)),
        },
        bloat: bloat.clone(),
    };
    let sequencer = Sequencer::start(log, machine, SequencerOptions::default()).unwrap();
    // Concurrent submits first, so batches go through the anchor thread as well as inline.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let sequencer = sequencer.clone();
            tokio::spawn(async move { sequencer.submit(Cmd::Increment).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    bloat.store(true, Ordering::SeqCst);
    assert!(matches!(
        sequencer.submit(Cmd::Increment).await,
        Err(SubmitError::Unavailable(_))
    ));
    bloat.store(false, Ordering::SeqCst);
    // The failed batch is in the store but not anchored: whichever thread would anchor the
    // next batches, none of them is acknowledged.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let sequencer = sequencer.clone();
            tokio::spawn(async move { sequencer.submit(Cmd::Increment).await })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.unwrap(),
            Err(SubmitError::Unavailable(_))
        ));
    }
    for _ in 0..3 {
        assert!(matches!(
            sequencer.submit(Cmd::Increment).await,
            Err(SubmitError::Unavailable(_))
        ));
    }
    assert_eq!(sequencer.log().size().get(), 100);
    assert_eq!(sequencer.stats().entries.load(Ordering::Relaxed), 100);
    sequencer.shutdown().await;
    let anchored = crate::anchor::Anchor::open(&path, &verifier).unwrap();
    assert_eq!(anchored.checkpoint().unwrap().checkpoint().size.get(), 100);
}

/// Spends known times in `seal` and `committed`, to check where a batch report puts them.
struct Slow;

const SLOW_SEAL: Duration = Duration::from_millis(20);
const SLOW_COMMITTED: Duration = Duration::from_millis(10);

impl StateMachine for Slow {
    type Command = ();
    type Output = ();
    type Rejection = &'static str;

    fn apply(&mut self, (): (), tx: &mut Tx<'_>) -> Result<Applied<()>, &'static str> {
        Ok(Applied {
            entry: test_entry(tx.index().get()),
            output: (),
        })
    }

    fn seal(&mut self, _tx: &mut Tx<'_>) -> Result<Vec<String>, String> {
        std::thread::sleep(SLOW_SEAL);
        Ok(Vec::new())
    }

    fn committed(&mut self) {
        std::thread::sleep(SLOW_COMMITTED);
    }
}

#[tokio::test]
async fn a_batch_report_counts_the_writers_phases_in_its_write_time_and_apart_from_the_sync() {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reports);
    let options = SequencerOptions {
        on_commit: Some(CommitHook(Arc::new(move |report: &BatchReport| {
            seen.lock()
                .unwrap()
                .push((report.elapsed, report.sync, report.write));
        }))),
        ..SequencerOptions::default()
    };
    let log = Arc::new(Log::open(Arc::new(MemoryStore::new()), test_signer()).unwrap());
    let sequencer = Sequencer::start(log, Slow, options).unwrap();
    sequencer.submit(()).await.unwrap();
    sequencer.shutdown().await;
    let reports = reports.lock().unwrap();
    let [(elapsed, sync, write)] = reports.as_slice() else {
        panic!("one batch, one report: {reports:?}");
    };
    // The sleeps are lower bounds: the seal's and `committed`'s time is the writer's, and the
    // writer's time and the sync's are separate parts of the batch's.
    assert!(*write >= SLOW_SEAL + SLOW_COMMITTED, "{write:?}");
    assert!(
        *elapsed >= *write + *sync,
        "{elapsed:?} < {write:?} + {sync:?}"
    );
}

//! Benchmarks of the durable log on sled (and on PostgreSQL when `AKASHI_BENCH_POSTGRES_URL` is
//! set): group-commit append throughput, the same against
//! rs_merkle's insert+commit in the same run, inclusion-proof generation and reopen at scale.
//!
//! Sizes: `AKASHI_BENCH_ENTRIES` (default 1,000,000) sets the size of the large log used for
//! proofs and reopen; building it is setup, not measured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark code"
)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger::{
    anchor::Anchor,
    conformance,
    hash::{LeafIndex, TreeSize},
    log::{Log, NewEntry},
    note::NoteSigner,
    sequencer::{Applied, Sequencer, SequencerOptions, StateMachine, Tx},
    store::{SledOptions, SledStore},
};
use rs_merkle::{Hasher, MerkleTree};
use sha2::{Digest, Sha256};

/// The log of data dir `dir` as the server opens it: the sled store in `ledger/`, held to the
/// checkpoint anchor beside it (one more `fdatasync` per batch).
fn open(dir: &std::path::Path, skey: &str) -> Log {
    let store = SledStore::open(&dir.join("ledger"), &SledOptions::default()).unwrap();
    let signer = NoteSigner::from_skey(skey).unwrap();
    let anchor = Anchor::open(&dir.join("ledger.anchor"), &signer.verifier()).unwrap();
    Log::open_anchored(Arc::new(store), signer, anchor).unwrap()
}

fn entries(n: u64) -> Vec<NewEntry> {
    (0..n).map(conformance::test_entry).collect()
}

/// Durable appends: every iteration is one batch, committed, flushed and fdatasync'ed.
fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_durable_sled");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for batch in [1u64, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), &conformance::test_signer().to_skey());
        append_batches(&mut group, &log, batch);
    }
    group.finish();
}

/// One benchmark of `group`: batches of `batch` entries appended to `log`, each committed and
/// made durable.
fn append_batches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    log: &Log,
    batch: u64,
) {
    let batch_entries = entries(batch);
    group.throughput(Throughput::Elements(batch));
    group.bench_function(format!("batch_{batch}"), |b| {
        b.iter(|| {
            let committed = log.append_batch(&batch_entries, Vec::new()).unwrap();
            assert_eq!(committed.leaf_hashes.len() as u64, batch);
            black_box(committed);
        });
    });
}

/// Durable appends on PostgreSQL, as [`append`] on sled: each iteration one batch, committed in
/// one transaction. Runs only when `AKASHI_BENCH_POSTGRES_URL` names a database (an empty one:
/// `tools/bench/postgres-appends.sh` starts a cluster with the distribution's durability
/// defaults and runs this beside the sled group).
#[cfg(feature = "postgres")]
fn append_postgres(c: &mut Criterion) {
    use ledger::store::{PostgresOptions, PostgresStore};
    let Ok(url) = std::env::var("AKASHI_BENCH_POSTGRES_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let signer = conformance::test_signer();
    let store = PostgresStore::open(&url, &PostgresOptions::default()).unwrap();
    let anchor = Anchor::open(&dir.path().join("ledger.anchor"), &signer.verifier()).unwrap();
    let log = Log::open_anchored(Arc::new(store), signer, anchor).unwrap();
    let mut group = c.benchmark_group("append_durable_postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for batch in [1u64, 1000] {
        append_batches(&mut group, &log, batch);
    }
    group.finish();
}

#[cfg(not(feature = "postgres"))]
fn append_postgres(_: &mut Criterion) {}

/// Commands per second through the sequencer (group commit formed by concurrent submitters),
/// including each submitter's inclusion proof.
fn sequencer(c: &mut Criterion) {
    struct Plain(Vec<NewEntry>);
    impl StateMachine for Plain {
        type Command = ();
        type Output = ();
        type Rejection = ();
        fn apply(&mut self, (): (), tx: &mut Tx<'_>) -> Result<Applied<()>, ()> {
            let entry = self.0[(tx.index().get() % 1024) as usize].clone();
            Ok(Applied { entry, output: () })
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), &conformance::test_signer().to_skey()));
    let sequencer =
        Sequencer::start(log, Plain(entries(1024)), SequencerOptions::default()).unwrap();
    let mut group = c.benchmark_group("sequencer_sled");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let submits = 20_000u64;
    group.throughput(Throughput::Elements(submits));
    group.bench_function("submit_1024_concurrent", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..1024 {
                    let sequencer = sequencer.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..submits / 1024 {
                            let (receipt, ()) = sequencer.submit(()).await.unwrap();
                            assert!(
                                receipt
                                    .checkpoint
                                    .checkpoint()
                                    .size
                                    .contains(receipt.leaf_index)
                            );
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            });
        });
    });
    group.finish();
    runtime.block_on(sequencer.shutdown());
}

#[derive(Clone)]
struct Rfc6962;

impl Hasher for Rfc6962 {
    type Hash = [u8; 32];
    fn hash(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }
    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => {
                let mut h = Sha256::new();
                h.update([1]);
                h.update(left);
                h.update(right);
                h.finalize().into()
            }
            None => *left,
        }
    }
}

/// Per-append cost at 100k entries: rs_merkle insert+commit (in memory, no durability) against
/// our durable append (batch of 1 and of 1,000), measured in the same run.
fn versus_rs_merkle(c: &mut Criterion) {
    const BASE: u64 = 100_000;
    let mut group = c.benchmark_group("append_at_100k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    let leaves: Vec<[u8; 32]> = (0..BASE)
        .map(|i| ledger::hash::hash_leaf(&i.to_be_bytes()).0)
        .collect();
    let mut tree = MerkleTree::<Rfc6962>::from_leaves(&leaves);
    let mut next = BASE;
    group.bench_function("rs_merkle_insert_commit", |b| {
        b.iter(|| {
            tree.insert(ledger::hash::hash_leaf(&next.to_be_bytes()).0);
            tree.commit();
            next += 1;
            black_box(tree.root());
        });
    });
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &conformance::test_signer().to_skey());
    let prefill = entries(1000);
    for _ in 0..BASE / 1000 {
        log.append_batch(&prefill, Vec::new()).unwrap();
    }
    let one = entries(1);
    group.bench_function("akashi_durable_batch_1", |b| {
        b.iter(|| black_box(log.append_batch(&one, Vec::new()).unwrap()));
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("akashi_durable_batch_1000", |b| {
        b.iter(|| black_box(log.append_batch(&prefill, Vec::new()).unwrap()));
    });
    group.finish();
}

/// Inclusion proof generation and reopen on a large log.
fn large(c: &mut Criterion) {
    let n: u64 = std::env::var("AKASHI_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let skey = conformance::test_signer().to_skey();
    {
        let log = open(dir.path(), &skey);
        let batch = entries(50_000);
        let started = Instant::now();
        while log.size().get() < n {
            let take = (n - log.size().get()).min(batch.len() as u64) as usize;
            log.append_batch(&batch[..take], Vec::new()).unwrap();
        }
        eprintln!("built a log of {n} entries in {:?}", started.elapsed());
    }
    let mut group = c.benchmark_group(format!("log_{n}"));
    group.sample_size(20);
    let log = open(dir.path(), &skey);
    let size = log.size();
    let root = log.checkpoint().checkpoint().root;
    let mut i = 0u64;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            // Spread reads over the whole log, so most tiles are not cached.
            i = (i + 7_919_993) % size.get();
            let proof = log.inclusion_proof(LeafIndex(i), size).unwrap();
            assert!(!proof.path.is_empty());
            black_box(proof);
        });
    });
    group.bench_function("inclusion_proof_verified", |b| {
        b.iter(|| {
            i = (i + 7_919_993) % size.get();
            let proof = log.inclusion_proof(LeafIndex(i), size).unwrap();
            let leaf = log.leaf_hash(LeafIndex(i)).unwrap();
            proof.verify(&leaf, &root).unwrap();
        });
    });
    group.bench_function("consistency_proof", |b| {
        b.iter(|| {
            i = (i + 7_919_993) % size.get();
            black_box(log.consistency_proof(TreeSize(i.max(1)), size).unwrap());
        });
    });
    drop(log);
    group.sample_size(10);
    group.bench_function("reopen", |b| {
        b.iter_batched(
            || (),
            |()| {
                let log = open(dir.path(), &skey);
                assert_eq!(log.size(), size);
                log
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(
    benches,
    append,
    append_postgres,
    sequencer,
    versus_rs_merkle,
    large
);
criterion_main!(benches);

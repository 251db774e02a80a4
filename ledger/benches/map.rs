//! The subject map (`ledger::map`) at scale, stored tile by tile in the sled store the log uses:
//! what one patient's update, a batch's updates, a proof and a verification cost in a map of a
//! million patients, how many stored tiles an update reads and writes, how large a proof is, and whether the
//! process's memory grows with the number of patients. Also the ECVRF evaluation the server pays
//! the first time it sees a patient.
//!
//! Sizes: `AKASHI_BENCH_MAP_KEYS` (default 1,000,000) sets the large map; building it (batches of
//! 1,000 updates, each followed by the store's sync, as one `seal` per batch does) is setup, not
//! measured, but its time, tile operations per update, RSS and disk use are printed as it goes.
//! Keys are SHA-256 outputs, uniform like the VRF-derived keys of the server's map. Every
//! iteration asserts its result, so a broken path cannot look fast.
//!
//! `AKASHI_BENCH_MAP_CACHE_MIB` sets sled's page cache (default: the server's, 256 MiB), to tell
//! the cache's share of the RSS from the rest; `AKASHI_BENCH_MAP_BUILD_ONLY=1` builds the maps
//! and prints their figures without timing anything.
//!
//! ```sh
//! cargo bench -p ledger --bench map
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "benchmark code"
)]

use std::{
    cell::Cell,
    hint::black_box,
    path::Path,
    time::{Duration, Instant},
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger::{
    hash::Hash,
    map::{self, MapKey, MapProof, NodeRead, NodeWrite, Terminal},
    store::{SledOptions, SledStore, Store as _, StoreError},
    vrf::VrfSecretKey,
};
#[path = "support/map_keys.rs"]
mod map_keys;
use map_keys::{key, spread, value};

/// The prefix the server keeps its map's nodes under (`src/subject_map.rs`).
const PREFIX: &[u8] = b"map/n/";
/// Updates per sync while building, as in a batch of the server's sequencer.
const BATCH: u64 = 1_000;

/// Map tiles read and written straight in the sled store, counting store operations. (The
/// server goes through its batch transaction, `Tx`, which buffers the batch's writes in memory
/// and puts them into the same store when the batch is committed.)
struct SledNodes<'a> {
    store: &'a SledStore,
    gets: Cell<u64>,
    puts: u64,
}

impl<'a> SledNodes<'a> {
    fn new(store: &'a SledStore) -> Self {
        Self {
            store,
            gets: Cell::new(0),
            puts: 0,
        }
    }
}

impl NodeRead for SledNodes<'_> {
    type Error = StoreError;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.gets.set(self.gets.get() + 1);
        Ok(self.store.get(key)?.map(|bytes| bytes.to_vec()))
    }
}

impl NodeWrite for SledNodes<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.puts += 1;
        self.store.put(key, value)
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Bytes under `path`.
fn disk_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| match entry.metadata() {
                Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
                Ok(meta) => meta.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Builds a map of patients `0..n` in `store`, in synced batches of [`BATCH`], printing the
/// time, tile operations per update, RSS and disk use at every report point. Returns the root.
fn build(store: &SledStore, path: &Path, n: u64, reports: &[u64]) -> Hash {
    let mut nodes = SledNodes::new(store);
    let mut root = map::EMPTY;
    let started = Instant::now();
    let mut window = (Instant::now(), 0u64, 0u64, 0u64);
    eprintln!(
        "map build: start, RSS {:.0} MiB (peak {:.0} MiB)",
        mib(status_kib("VmRSS:")),
        mib(status_kib("VmHWM:"))
    );
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        let mut batch = map::Batch::new(&nodes, PREFIX);
        for k in i..end {
            batch.update(&key(k), &value(k, 0)).unwrap();
        }
        let sealed = batch.finish().unwrap();
        root = sealed.write(&mut nodes, PREFIX).unwrap();
        store.sync().unwrap();
        i = end;
        if reports.contains(&i) || i == n {
            let (since, gets, puts, from) = window;
            let updates = (i - from) as f64;
            eprintln!(
                "map build: {i} keys after {:.1} s ({:.0} updates/s over the last {} keys, \
                 {:.2} tile reads and {:.2} tile writes per update); \
                 RSS {:.0} MiB (peak {:.0} MiB); store {:.0} MiB on disk",
                started.elapsed().as_secs_f64(),
                updates / since.elapsed().as_secs_f64(),
                i - from,
                (nodes.gets.get() - gets) as f64 / updates,
                (nodes.puts - puts) as f64 / updates,
                mib(status_kib("VmRSS:")),
                mib(status_kib("VmHWM:")),
                disk_bytes(path) as f64 / 1_048_576.0,
            );
            window = (Instant::now(), nodes.gets.get(), nodes.puts, i);
        }
    }
    root
}

/// Sibling counts of `samples` proofs of present keys and of absent keys.
fn proof_shape(store: &SledStore, n: u64, samples: u64) {
    let nodes = SledNodes::new(store);
    for (label, present) in [("present", true), ("absent", false)] {
        let (mut total, mut least, mut most) = (0usize, usize::MAX, 0usize);
        let mut leaf_terminals = 0u64;
        for j in 0..samples {
            let k = if present {
                key(spread(j, n))
            } else {
                key(n + 1_000_000_000 + j)
            };
            let (proof, _) = map::prove(&nodes, PREFIX, &k).unwrap();
            let depth = proof.siblings.len();
            total += depth;
            least = least.min(depth);
            most = most.max(depth);
            if matches!(proof.terminal, Terminal::Leaf { .. }) {
                leaf_terminals += 1;
            }
        }
        let mean = total as f64 / samples as f64;
        // As the API carries it: 32 bytes per sibling, plus the terminal leaf's key and value
        // (64 bytes) when the path ends at a leaf.
        let bytes = 32.0 * mean + 64.0 * leaf_terminals as f64 / samples as f64;
        eprintln!(
            "map proofs at {n} keys, {label} ({samples} samples): siblings mean {mean:.2}, \
             min {least}, max {most} (log2 n = {:.2}); {bytes:.0} bytes \
             (32 per sibling + 64 for a terminal leaf in {leaf_terminals} of {samples})",
            (n as f64).log2(),
        );
    }
}

/// Update, prove and verify on a map of `n` keys in a fresh sled store.
fn map_at(c: &mut Criterion, n: u64, reports: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let mut options = SledOptions::default();
    if let Some(cache) = env("AKASHI_BENCH_MAP_CACHE_MIB") {
        options.cache_capacity = cache << 20;
    }
    eprintln!(
        "map build: sled page cache {} MiB",
        options.cache_capacity >> 20
    );
    let store = SledStore::open(&path, &options).unwrap();
    let started = Instant::now();
    let mut root = build(&store, &path, n, reports);
    eprintln!(
        "map build: {n} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    proof_shape(&store, n, 10_000);
    if env("AKASHI_BENCH_MAP_BUILD_ONLY") == Some(1) {
        return;
    }

    let mut group = c.benchmark_group(format!("map_{n}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    let mut nodes = SledNodes::new(&store);
    let mut j = 0u64;
    let mut version = 1u64;
    let (gets0, puts0) = (nodes.gets.get(), nodes.puts);
    let mut updates = 0u64;
    group.bench_function("update_existing", |b| {
        b.iter(|| {
            j += 1;
            version += 1;
            let i = spread(j, n);
            root = map::update(&mut nodes, PREFIX, &key(i), &value(i, version)).unwrap();
            updates += 1;
            // As the server's batches do: the store is synced after every 1,000 updates (a
            // thousandth of a sync is in each iteration).
            if updates.is_multiple_of(BATCH) {
                store.sync().unwrap();
            }
            black_box(root);
        });
    });
    eprintln!(
        "map_{n}/update_existing: {:.2} tile reads and {:.2} tile writes per update",
        (nodes.gets.get() - gets0) as f64 / updates as f64,
        (nodes.puts - puts0) as f64 / updates as f64,
    );
    store.sync().unwrap();
    let mut fresh = n;
    let (gets0, puts0, first_new) = (nodes.gets.get(), nodes.puts, fresh);
    group.bench_function("update_new_key", |b| {
        b.iter(|| {
            root = map::update(&mut nodes, PREFIX, &key(fresh), &value(fresh, 0)).unwrap();
            fresh += 1;
            if fresh.is_multiple_of(BATCH) {
                store.sync().unwrap();
            }
            black_box(root);
        });
    });
    eprintln!(
        "map_{n}/update_new_key: {:.2} tile reads and {:.2} tile writes per update",
        (nodes.gets.get() - gets0) as f64 / (fresh - first_new) as f64,
        (nodes.puts - puts0) as f64 / (fresh - first_new) as f64,
    );
    store.sync().unwrap();
    // Batches as the server seals them: the patients' records written into the map in one
    // `map::Batch`, then the store's flush and fdatasync. 25 is about what a batch holds at
    // 6,000 decisions/s, 1,000 what setup-sized bursts hold.
    for size in [25, BATCH] {
        group.throughput(Throughput::Elements(size));
        group.sample_size(20);
        let (gets0, puts0, mut batched) = (nodes.gets.get(), nodes.puts, 0u64);
        group.bench_function(format!("update_{size}_then_sync"), |b| {
            b.iter(|| {
                let mut batch = map::Batch::new(&nodes, PREFIX);
                for _ in 0..size {
                    j += 1;
                    version += 1;
                    let i = spread(j, n);
                    batch.update(&key(i), &value(i, version)).unwrap();
                }
                let sealed = batch.finish().unwrap();
                root = sealed.write(&mut nodes, PREFIX).unwrap();
                batched += size;
                store.sync().unwrap();
                black_box(root);
            });
        });
        eprintln!(
            "map_{n}/update_{size}_then_sync: {:.2} tile reads and {:.2} tile writes per update",
            (nodes.gets.get() - gets0) as f64 / batched as f64,
            (nodes.puts - puts0) as f64 / batched as f64,
        );
    }
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    let nodes = SledNodes::new(&store);
    group.bench_function("prove_present", |b| {
        b.iter(|| {
            j += 1;
            let k = key(spread(j, n));
            let (proof, proven) = map::prove(&nodes, PREFIX, &k).unwrap();
            assert_eq!(proven, root);
            black_box(proof);
        });
    });
    group.bench_function("prove_absent", |b| {
        b.iter(|| {
            j += 1;
            let k = key(u64::MAX - j);
            let (proof, proven) = map::prove(&nodes, PREFIX, &k).unwrap();
            assert_eq!(proven, root);
            black_box(proof);
        });
    });
    let proofs: Vec<(MapKey, MapProof)> = (0..1024)
        .map(|s| {
            let k = key(spread(s + 17, n));
            (k, map::prove(&nodes, PREFIX, &k).unwrap().0)
        })
        .collect();
    let absent: Vec<(MapKey, MapProof)> = (0..1024)
        .map(|s| {
            let k = key(u64::MAX - 1_000_000_000 - s);
            (k, map::prove(&nodes, PREFIX, &k).unwrap().0)
        })
        .collect();
    let mut p = 0usize;
    group.bench_function("verify_present", |b| {
        b.iter(|| {
            p = (p + 1) % proofs.len();
            let (k, proof) = &proofs[p];
            assert!(proof.verify(&root, k).unwrap().is_some());
        });
    });
    group.bench_function("verify_absent", |b| {
        b.iter(|| {
            p = (p + 1) % absent.len();
            let (k, proof) = &absent[p];
            assert!(proof.verify(&root, k).unwrap().is_none());
        });
    });
    group.finish();
    eprintln!(
        "map_{n}: after the benchmarks RSS {:.0} MiB (peak {:.0} MiB); store {:.0} MiB on disk",
        mib(status_kib("VmRSS:")),
        mib(status_kib("VmHWM:")),
        disk_bytes(&path) as f64 / 1_048_576.0,
    );
}

/// A number from the environment.
fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The map on a small (1,000) and a large (`AKASHI_BENCH_MAP_KEYS`) number of patients.
fn maps(c: &mut Criterion) {
    let n = env("AKASHI_BENCH_MAP_KEYS").unwrap_or(1_000_000);
    map_at(c, 1_000, &[]);
    if n > 0 {
        let reports: Vec<u64> = [10, 20, 30, 40, 50, 60, 70, 80, 90]
            .iter()
            .map(|pct| n / 100 * pct / BATCH * BATCH)
            .collect();
        map_at(c, n, &reports);
    }
}

/// The server's first sight of a patient: the VRF output (what `SubjectMapKey::output_for`
/// computes), and the proof `GetSubjectHistory` computes on every call.
fn vrf(c: &mut Criterion) {
    let key = VrfSecretKey::from_seed([7; 32]);
    let mut group = c.benchmark_group("vrf");
    group.sample_size(30);
    let mut i = 0u64;
    group.bench_function("output", |b| {
        b.iter_batched(
            || {
                i += 1;
                format!("patient-{i}")
            },
            |id| black_box(key.output(id.as_bytes())),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("prove", |b| {
        b.iter_batched(
            || {
                i += 1;
                format!("patient-{i}")
            },
            |id| black_box(key.prove(id.as_bytes())),
            BatchSize::SmallInput,
        );
    });
    let (proof, beta) = key.prove(b"patient-0");
    let public = *key.public();
    group.bench_function("verify", |b| {
        b.iter(|| assert_eq!(public.verify(b"patient-0", &proof).unwrap(), beta));
    });
    group.finish();
}

criterion_group!(benches, vrf, maps);
criterion_main!(benches);

//! Durable appends with the subject map: what keeping a per-patient map (`ledger::map`) costs the
//! log's durable group commit, measured as the server pays it — every entry is about a patient,
//! the batch writes each touched patient's record and the map's changed tiles into the same
//! commit as its entries, and its checkpoint carries the map's root as an extension line.
//!
//! Three variants per map size, same run, batches of 1,000 entries about 1,000 distinct patients
//! (each batch one `Log::append_batch`: entries, bodies, tiles, signed checkpoint, state writes,
//! flush and `fdatasync`, plus the checkpoint anchor's):
//!
//! - `plain`: the entries alone (the log without any map, as `log`'s `append_durable_sled`);
//! - `records`: plus one ~100-byte record write per patient (what the state machine writes for
//!   completeness whether or not the map is cheap);
//! - `records_and_map`: plus the map written through — the records' value hashes put through
//!   one `map::Batch` over the log's state, its changed tiles and root in the batch's writes;
//! - `records_and_journal`: plus the map as the server keeps it — the same `map::Batch`, read
//!   over the tiles held in memory (`map::TileCache`), the batch's updates written as one
//!   journal record (64 bytes a patient) and its tiles kept in memory; the batch that passes
//!   32,768 held tiles or 65,536 journaled updates also writes the tiles held before it out (and
//!   deletes the journal), so the write-outs are inside the measurement. The server spreads
//!   each write-out over the following batches, a chunk each (its subject map, state layout 4);
//!   here it is one batch. The bytes written per entry are the same (plus an 8-byte tag per
//!   tile there), so the throughput stands for the server's; the spread of latency does not.
//!
//! Sizes: 1,000 patients, and `AKASHI_BENCH_MAP_APPEND_KEYS` (default 100,000; 0 skips it).
//! Building a map is setup, through the same path in batches of 1,000, and not measured. Every
//! iteration asserts the batch's size and checks the root it commits to against the map's, so
//! a broken path cannot look fast.
//!
//! ```sh
//! cargo bench -p ledger --bench map_appends
//! AKASHI_BENCH_MAP_APPEND_KEYS=1000000 cargo bench -p ledger --bench map_appends
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "benchmark code"
)]

use std::{collections::BTreeMap, hint::black_box, sync::Arc, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledger::{
    anchor::Anchor,
    completeness::MapCommitment,
    conformance,
    hash::Hash,
    log::{Log, NewEntry, StateWrite},
    map::{self, NodeRead, NodeWrite, TileCache},
    note::NoteSigner,
    store::{SledOptions, SledStore, StoreError},
};
#[path = "support/map_keys.rs"]
mod map_keys;
use map_keys::{key, spread, value};

/// Entries (and distinct patients) per batch.
const BATCH: u64 = 1_000;
/// Where the server keeps the map's tiles, its root and the patients' records.
const NODES: &[u8] = b"map/n/";
const ROOT: &[u8] = b"map/root";
const RECORDS: &[u8] = b"map/s/";
const JOURNAL: &[u8] = b"map/j/";
/// The server's write-behind limits.
const HELD_TILES: usize = 32_768;
const JOURNAL_UPDATES: usize = 65_536;

/// The tiles held in front of the stored ones and the journal since they were last written out.
#[derive(Default)]
struct Front {
    tiles: TileCache,
    journal: Vec<Vec<u8>>,
    journaled: usize,
}

/// The log of a data dir as the server opens it: sled in `ledger/`, anchored beside it.
fn open(dir: &std::path::Path) -> Log {
    let store = SledStore::open(&dir.join("ledger"), &SledOptions::default()).unwrap();
    let signer = NoteSigner::from_skey(&conformance::test_signer().to_skey()).unwrap();
    let anchor = Anchor::open(&dir.join("ledger.anchor"), &signer.verifier()).unwrap();
    Log::open_anchored(Arc::new(store), signer, anchor).unwrap()
}

/// Map tiles read from the log's state and written into the batch's state writes.
struct LogNodes<'a> {
    log: &'a Log,
    writes: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl NodeRead for LogNodes<'_> {
    type Error = StoreError;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None => self.log.state_get(key),
        }
    }
}

impl NodeWrite for LogNodes<'_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.writes.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
}

/// The batch's map root: stored beside the tree size, and its checkpoint's extension line.
fn commit_root(log: &Log, root: &Hash, writes: &mut Vec<StateWrite>, extensions: &mut Vec<String>) {
    let mut stored = log.size().get().to_be_bytes().to_vec();
    stored.extend_from_slice(&root.0);
    writes.push(StateWrite::Put(ROOT.to_vec(), stored));
    extensions.push(
        MapCommitment {
            vrf_key: [7; 32],
            root: *root,
        }
        .to_line(),
    );
}

/// What a batch writes beside its entries.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Records,
    RecordsAndMap,
    RecordsAndJournal,
}

/// One batch about the patients `patients`, appended durably; returns the map root it commits
/// to (the previous one for the variants without the map).
fn append(
    log: &Log,
    front: &mut Front,
    variant: Variant,
    patients: &[u64],
    version: u64,
    root: Hash,
) -> Hash {
    let entries: Vec<NewEntry> = patients
        .iter()
        .map(|&i| conformance::test_entry(i))
        .collect();
    let mut writes = Vec::new();
    let mut extensions = Vec::new();
    let mut root = root;
    if variant != Variant::Plain {
        writes.reserve(patients.len() + 4_096);
        for &i in patients {
            let mut k = RECORDS.to_vec();
            k.extend_from_slice(format!("pseudonym-{i:016x}").as_bytes());
            // A stored record's size: the VRF output (64) and the record (56).
            let mut v = value(i, version).0.to_vec();
            v.resize(120, 0);
            writes.push(StateWrite::Put(k, v));
        }
    }
    if variant == Variant::RecordsAndMap {
        let mut nodes = LogNodes {
            log,
            writes: BTreeMap::new(),
        };
        let mut batch = map::Batch::new(&nodes, NODES);
        for &i in patients {
            batch.update(&key(i), &value(i, version)).unwrap();
        }
        let sealed = batch.finish().unwrap();
        root = sealed.write(&mut nodes, NODES).unwrap();
        writes.extend(nodes.writes.into_iter().map(|(k, v)| StateWrite::Put(k, v)));
        commit_root(log, &root, &mut writes, &mut extensions);
    }
    if variant == Variant::RecordsAndJournal {
        let nodes = LogNodes {
            log,
            writes: BTreeMap::new(),
        };
        let mut batch = map::Batch::over(&nodes, NODES, &front.tiles);
        for &i in patients {
            batch.update(&key(i), &value(i, version)).unwrap();
        }
        let sealed = batch.finish().unwrap();
        root = sealed.root();
        if front.tiles.len() + sealed.changed() > HELD_TILES
            || front.journaled + patients.len() > JOURNAL_UPDATES
        {
            // The tiles held before this batch go out, the journal they cover is deleted.
            for (k, v) in front.tiles.encoded(NODES) {
                writes.push(StateWrite::Put(k, v));
            }
            for k in front.journal.drain(..) {
                writes.push(StateWrite::Delete(k));
            }
            front.tiles.clear();
            front.journaled = 0;
        }
        let mut record = Vec::with_capacity(patients.len() * 64);
        for &i in patients {
            record.extend_from_slice(&key(i));
            record.extend_from_slice(&value(i, version).0);
        }
        let mut k = JOURNAL.to_vec();
        k.extend_from_slice(&log.size().get().to_be_bytes());
        writes.push(StateWrite::Put(k.clone(), record));
        front.journal.push(k);
        front.journaled += patients.len();
        sealed.into_cache(&mut front.tiles);
        commit_root(log, &root, &mut writes, &mut extensions);
    }
    let staged = log.stage_batch_with(&entries, writes, extensions).unwrap();
    let committed = log.finish_batch(staged).unwrap();
    assert_eq!(committed.leaf_hashes.len(), patients.len());
    root
}

/// A map of `n` patients: built through [`append`] in batches of [`BATCH`].
fn build(log: &Log, n: u64) -> Hash {
    let started = Instant::now();
    let mut root = map::EMPTY;
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        let patients: Vec<u64> = (i..end).collect();
        root = append(
            log,
            &mut Front::default(),
            Variant::RecordsAndMap,
            &patients,
            0,
            root,
        );
        i = end;
    }
    eprintln!(
        "map_appends: built {n} patients in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    root
}

fn appends_at(c: &mut Criterion, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut root = build(&log, n);
    let mut group = c.benchmark_group(format!("map_appends_{n}"));
    group
        .sample_size(20)
        .throughput(Throughput::Elements(BATCH));
    let mut j = 0u64;
    let mut version = 0u64;
    let mut front = Front::default();
    for (name, variant) in [
        ("plain", Variant::Plain),
        ("records", Variant::Records),
        ("records_and_map", Variant::RecordsAndMap),
        ("records_and_journal", Variant::RecordsAndJournal),
    ] {
        group.bench_function(format!("batch_{BATCH}/{name}"), |b| {
            b.iter(|| {
                version += 1;
                // Distinct patients scattered over the map (the multiplier is odd, so `spread`
                // is a bijection on a power of two and nearly so otherwise).
                let mut patients: Vec<u64> = (0..BATCH)
                    .map(|_| {
                        j += 1;
                        spread(j, n)
                    })
                    .collect();
                patients.sort_unstable();
                patients.dedup();
                root = append(&log, &mut front, variant, &patients, version, root);
                black_box(root);
            });
        });
    }
    group.finish();
    // The map the log committed to is the map of what was written: check one patient's proof.
    let nodes = LogNodes {
        log: &log,
        writes: BTreeMap::new(),
    };
    let (_, proven) = map::prove_over(&nodes, NODES, Some(&front.tiles), &key(0)).unwrap();
    assert_eq!(proven, root);
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn appends(c: &mut Criterion) {
    appends_at(c, 1_000);
    let n = env("AKASHI_BENCH_MAP_APPEND_KEYS").unwrap_or(100_000);
    if n > 0 {
        appends_at(c, n);
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);

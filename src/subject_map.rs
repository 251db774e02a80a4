//! The server's subject map: for every patient the log has entries about, their record (count,
//! first and last leaf index, chain head; [`ledger::completeness`]) under a key derived from their
//! patient id by the log's VRF, in a sparse Merkle map ([`ledger::map`]) whose root every
//! checkpoint commits to. It is what lets `GetSubjectHistory` prove that a history is complete.
//!
//! **Writing** (the writer thread, [`MapWriter`]): each entry about a patient advances their
//! record in the state (`map/s/<pseudonym>`: their VRF output, then the record) as the entry is
//! applied, and its body carries the VRF output (`subject_vrf_output`) so that a regulator's replay
//! can recompute the map; once per batch, [`MapWriter::seal`] writes the records of the patients
//! the batch touched into the map (one [`map::Batch`]: O(log n) hashes each, every tile on their
//! paths read and written once, in the batch's own state transaction, so the map and the log
//! commit together) and returns the checkpoint line. The map root and the tree size it was
//! written at are kept under `map/root`; the VRF public key under `map/vrf`, written with the
//! log's first batch: a log whose state has no `map/vrf` predates the map and keeps none (its
//! checkpoints carry no line, and histories carry no proof).
//!
//! **VRF outputs** are computed at the gRPC edge ([`SubjectMapKey::output_for`]), where the
//! patient id is known and only for a patient the state has no record of yet; the writer thread
//! never sees patient ids.
//!
//! **Proving** ([`prove`]): the state can be ahead of the newest published checkpoint (batches
//! staged and not yet durable), so a proof is read from the state as it is, checked against the
//! root stored beside it, and then paired with the published checkpoint that commits to that root
//! (waiting for its batch to become durable if need be) — the newest *witnessed* checkpoint when
//! it commits to the same map root, so that the proof carries the witnesses' cosignatures whenever
//! nothing about any patient was logged since they cosigned. A proof that a concurrent batch moved
//! is read again.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    completeness::{MapCommitment, SubjectRecord, map_key},
    cosignature::WitnessedCheckpoint,
    hash::{Hash, hash_leaf},
    log::Log,
    map::{self, MapError, MapKey, MapProof, NodeRead, Terminal, TileCache},
    sequencer::Tx,
    store::StoreError,
    vrf::{OUTPUT_LEN, VrfOutput, VrfSecretKey},
};
use policy::domain::SubjectId;
use proto::pb;

use crate::error::{Error, StartError};

/// The prefix the map's tiles are named under ([`map::TileId::store_key`]); in the state, tiles of
/// state layout 3 and older are stored under it as they are ([`Stored`]).
const NODES: &[u8] = b"map/n/";
/// The two slots a stored tile alternates between, `map/a/<tile>` and `map/b/<tile>` → the
/// generation it was written for (8-byte big-endian), then the tile ([`Stored`]).
const SLOTS: [&[u8]; 2] = [b"map/a/", b"map/b/"];
/// The generation of the stored tiles: the tree size after the batch whose map they hold
/// (8-byte big-endian). Absent: generation 0, the tiles of an older layout under `map/n/`.
const GENERATION: &[u8] = b"map/g";
/// The root and the tree size it was written at: 8-byte big-endian size, then the root.
const ROOT: &[u8] = b"map/root";
/// The VRF public key the map's keys are derived with.
const VRF_KEY: &[u8] = b"map/vrf";
/// Prefix of patients' records: `map/s/<pseudonym>` → VRF output, then the record.
const RECORDS: &[u8] = b"map/s/";
/// Prefix of the map's journal: `map/j/<8-byte big-endian tree size after the batch>` → the
/// batch's map updates, each the 32-byte map key then the 32-byte value hash.
const JOURNAL: &[u8] = b"map/j/";

/// Attempts at pairing a proof with a checkpoint before giving up.
const PROVE_ATTEMPTS: usize = 50;
/// Longest wait for the batch that wrote the map's root to be published.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// The state key of `subject`'s record in the subject map.
pub(crate) fn record_key(subject: &SubjectId) -> Vec<u8> {
    let mut key = RECORDS.to_vec();
    key.extend_from_slice(subject.as_str().as_bytes());
    key
}

/// A patient's VRF output and record as the state holds them.
fn decode_stored(bytes: &[u8]) -> Option<(VrfOutput, SubjectRecord)> {
    let (beta, record) = bytes.split_at_checked(OUTPUT_LEN)?;
    Some((
        VrfOutput(beta.try_into().ok()?),
        SubjectRecord::decode(record)?,
    ))
}

fn encode_stored(beta: &VrfOutput, record: &SubjectRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(OUTPUT_LEN + ledger::completeness::RECORD_LEN);
    out.extend_from_slice(&beta.0);
    out.extend_from_slice(&record.encode());
    out
}

fn decode_root(bytes: &[u8]) -> Option<(u64, Hash)> {
    let (size, root) = bytes.split_at_checked(8)?;
    Some((
        u64::from_be_bytes(size.try_into().ok()?),
        Hash::from_slice(root).ok()?,
    ))
}

/// The log's VRF key, shared by the services that compute VRF outputs and proofs, and the map's
/// tiles that are newer in memory than in the state (see [`MapWriter`]), which proofs read
/// first.
#[derive(Clone)]
pub struct SubjectMapKey {
    vrf: Arc<VrfSecretKey>,
    front: Arc<Front>,
    limits: WriteBehind,
}

/// When the writer writes the tiles it holds out to the state ([`MapWriter`]): it begins once
/// they pass `tiles` tiles (memory: about [`TileCache::TILE_BYTES`] each) or the journal passes
/// `updates` map updates (the replay at start), and writes `chunk` tiles per batch (more when
/// the batches change more). The defaults are [`CACHE_TILES`], [`JOURNAL_UPDATES`] and
/// [`CHUNK_TILES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehind {
    /// Tiles held before a write-out begins.
    pub tiles: usize,
    /// Journaled map updates before a write-out begins.
    pub updates: usize,
    /// Tiles a batch writes out, at least.
    pub chunk: usize,
}

impl Default for WriteBehind {
    fn default() -> Self {
        Self {
            tiles: CACHE_TILES,
            updates: JOURNAL_UPDATES,
            chunk: CHUNK_TILES,
        }
    }
}

/// The writer's tiles not yet written out, for the log they belong to, and what `/metrics`
/// says of them.
#[derive(Default)]
struct Front(RwLock<Option<FrontTiles>>, FrontStats);

/// Counters of the writer's write-behind, set by the writer as each batch is staged.
#[derive(Default)]
struct FrontStats {
    held_tiles: AtomicU64,
    journaled: AtomicU64,
    write_outs: AtomicU64,
}

/// The subject map's write-behind as `/metrics` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Tiles held in memory, newer than the stored ones (a write-out's included until it ends).
    pub held_tiles: u64,
    /// Map updates in the journal since the stored tiles' generation.
    pub journaled: u64,
    /// Write-outs completed since the server started.
    pub write_outs: u64,
}

/// The map as the writer holds it, for proofs to read: `tiles` over `writing` over the stored
/// tiles of `generation`.
struct FrontTiles {
    /// The [`Log`] whose writer holds them: a proof for another log (the server reopened it)
    /// does not read them.
    log: std::sync::Weak<Log>,
    /// The tiles the batches changed since the write-out in progress began (or, with none, since
    /// the stored generation).
    tiles: TileCache,
    /// The write-out in progress: the tiles it is writing to the state, as of its generation.
    writing: Option<TileCache>,
    /// The generation of the stored tiles.
    generation: u64,
    /// The state holds tiles of an older layout (see `Stored`).
    legacy: bool,
}

impl FrontTiles {
    fn of(&self, log: &Log) -> bool {
        self.log
            .upgrade()
            .is_some_and(|ours| std::ptr::eq(Arc::as_ptr(&ours), log))
    }
}

impl std::fmt::Debug for SubjectMapKey {
    // Never the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectMapKey")
            .field("limits", &self.limits)
            .field("write_behind", &self.write_behind())
            .finish_non_exhaustive()
    }
}

impl SubjectMapKey {
    /// Wraps a key.
    pub fn new(key: VrfSecretKey) -> Self {
        Self {
            vrf: Arc::new(key),
            front: Arc::default(),
            limits: WriteBehind::default(),
        }
    }

    /// What the map's writer holds now (zeros before it opened).
    #[must_use]
    pub fn write_behind(&self) -> WriteBehindStats {
        let stats = &self.front.1;
        WriteBehindStats {
            held_tiles: stats.held_tiles.load(Ordering::Relaxed),
            journaled: stats.journaled.load(Ordering::Relaxed),
            write_outs: stats.write_outs.load(Ordering::Relaxed),
        }
    }

    /// The same key with other write-behind limits for the map's writer.
    #[must_use]
    pub fn with_write_behind(mut self, limits: WriteBehind) -> Self {
        self.limits = limits;
        self
    }

    /// The patient's VRF output if the writer will need it: `None` when the state already
    /// holds their record (the writer reads it from there), so the cost (about 50 µs) is paid
    /// once per patient rather than per entry.
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` when the state cannot be read.
    pub fn output_for(
        &self,
        log: &Log,
        subject: &SubjectId,
        patient_id: &str,
    ) -> Result<Option<VrfOutput>, Error> {
        let known = log
            .state_get(&record_key(subject))
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .is_some();
        Ok(self.output_unless(known, patient_id))
    }

    /// As [`SubjectMapKey::output_for`] when whether the state holds a record of the patient was
    /// already read (`known`): a prepared decision read it with the patient's other keys.
    pub fn output_unless(&self, known: bool, patient_id: &str) -> Option<VrfOutput> {
        (!known).then(|| self.vrf.output(patient_id.as_bytes()))
    }
}

/// The stored tiles of one generation, read through `read` (the sequencer's transaction or the
/// log's state), as [`map`] reads them (named under [`NODES`]).
///
/// **Two slots per tile.** A write-out writes the tiles of a new generation over several
/// batches, while readers and a restarted writer must go on seeing the stored generation whole.
/// So each tile has two slots ([`SLOTS`]), each value tagged with the generation it was written
/// for: a reader of generation `g` takes the slot with the newest generation not above `g`, and
/// a write-out writes into the other one ([`Stored::spare`]). The write-out's last batch makes
/// its generation the stored one ([`GENERATION`]); from then on the journal records the
/// generation covers are dead (a replay starts after it) and are deleted a few per batch. A
/// write-out a stop interrupted leaves tiles tagged with a generation above the stored one,
/// which no reader takes, and which the next write-out overwrites: it writes every tile changed
/// since the stored generation, and so every tile the interrupted one wrote, each into the slot
/// readers do not take — the one holding the leftover.
/// A tile in neither slot is read as an older layout stored it (under [`NODES`], untagged), and
/// as absent when it is not there either — when the state holds any such tile (`legacy`): a map
/// begun under the slots has none, and a new tile costs it two reads, not three.
struct Stored<R> {
    read: R,
    generation: u64,
    legacy: bool,
}

impl<R: Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>> Stored<R> {
    /// The slot readers of this generation take for the tile named `name` (its store key without
    /// the prefix), and its tile record.
    fn current(&self, name: &[u8]) -> Result<Option<(usize, Vec<u8>)>, StoreError> {
        let mut best: Option<(u64, usize, Vec<u8>)> = None;
        for (slot, prefix) in SLOTS.iter().enumerate() {
            let Some(mut value) = (self.read)(&[prefix, name].concat())? else {
                continue;
            };
            let tag = value
                .get(..8)
                .and_then(|tag| tag.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt)?;
            if tag <= self.generation && best.as_ref().is_none_or(|(newest, ..)| tag > *newest) {
                value.drain(..8);
                best = Some((tag, slot, value));
            }
        }
        Ok(best.map(|(_, slot, tile)| (slot, tile)))
    }

    /// The slot (its prefix) a newer generation's tile `name` is written into: never the one
    /// readers of this generation take.
    fn spare(&self, name: &[u8]) -> Result<&'static [u8], StoreError> {
        let [a, b] = SLOTS;
        Ok(match self.current(name)? {
            Some((0, _)) => b,
            _ => a,
        })
    }
}

impl<R: Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>> NodeRead for Stored<R> {
    type Error = StoreError;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(name) = key.strip_prefix(NODES) else {
            return (self.read)(key);
        };
        match self.current(name)? {
            Some((_, tile)) => Ok(Some(tile)),
            None if self.legacy => (self.read)(key),
            None => Ok(None),
        }
    }
}

/// The generation of the stored tiles in `state`.
fn stored_generation(value: Option<Vec<u8>>) -> Result<u64, String> {
    value.map_or(Ok(0), |bytes| {
        bytes
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| "the subject map's generation record is corrupt".to_owned())
    })
}

/// The state key of the journal record of the batch that ends at tree size `size`.
fn journal_key(size: u64) -> Vec<u8> {
    let mut key = JOURNAL.to_vec();
    key.extend_from_slice(&size.to_be_bytes());
    key
}

/// A journal record's updates: `(map key, value hash)` pairs of 64 bytes.
fn decode_journal(bytes: &[u8]) -> Option<Vec<(MapKey, Hash)>> {
    if !bytes.len().is_multiple_of(64) {
        return None;
    }
    bytes
        .chunks_exact(64)
        .map(|pair| {
            let (key, value) = pair.split_at(32);
            Some((key.try_into().ok()?, Hash::from_slice(value).ok()?))
        })
        .collect()
}

/// The writer thread's side of the map: records advanced entry by entry, the map sealed per
/// batch.
///
/// **Tiles written behind a journal.** Rewriting every tile on a batch's paths into the state
/// costs the store ≈ 3 tiles of up to 1 KB per patient. Instead, [`seal`](MapWriter::seal)
/// writes the batch's map updates (64 bytes per patient) as one journal record
/// (`map/j/<tree size>`) in the batch's state writes, and keeps the changed tiles in memory
/// (shared with proofs through [`SubjectMapKey`]). The state always holds the tiles of some
/// generation (see `Stored`) plus the journal since. The map root every checkpoint commits to is
/// computed from both, so the map and the log still commit together; opening the writer (at
/// start, after a failed batch) replays the journal over the stored tiles and checks the result
/// against the stored root.
///
/// **Write-outs, a chunk per batch.** When the held tiles pass [`WriteBehind::tiles`] or the
/// journal passes [`WriteBehind::updates`], the next batch begins a write-out: the tiles held
/// so far become a new generation, frozen, and the following batches each write a chunk of them
/// into the state's spare slots — [`WriteBehind::chunk`] tiles, or twice what the batch itself
/// changed if that is more, so that a write-out outruns the tiles piling up behind it — until
/// the last chunk's batch makes the generation the stored one; the journal records it covers
/// are then deleted [`WriteBehind::chunk`] a batch. Meanwhile the batches' own tiles are held
/// over the frozen ones. No batch writes more than its chunk, so a write-out never holds the
/// log up for one large write; only a writer whose held tiles or journal reach twice their
/// limit mid-write-out writes the rest at once.
pub struct MapWriter {
    log: Arc<Log>,
    vrf_key: [u8; 32],
    front: Arc<Front>,
    limits: WriteBehind,
    /// Patients whose records this batch changed, in order (repeats possible).
    touched: Vec<SubjectId>,
    /// The journal's records in the state, oldest first, and how many updates they hold.
    journal: Vec<Vec<u8>>,
    journaled: usize,
    /// Journal records the stored generation covers, oldest first: dead (a replay starts after
    /// the generation), deleted [`WriteBehind::chunk`] a batch so that no batch deletes a whole
    /// journal (one record per batch: tens of thousands at low load).
    dead: std::collections::VecDeque<Vec<u8>>,
    /// What the sealed batch changes in the held tiles and the journal, applied once the batch
    /// is staged ([`committed`](MapWriter::committed)): until then proofs read the tiles as of
    /// the state they read, and a failed batch leaves nothing to undo.
    pending: Option<Pending>,
    /// The held tiles missed a staged batch (they could not be locked): read them again from
    /// the state before the next batch.
    stale: bool,
    /// The generation of the stored tiles.
    generation: u64,
    /// The state holds tiles of an older layout (under [`NODES`]; see `Stored`).
    legacy: bool,
    /// The write-out in progress.
    writing: Option<WriteOut>,
}

/// A write-out in progress ([`MapWriter`]): the frozen tiles (held beside the others, in
/// [`FrontTiles::writing`]) in key order, how many are written, and the journal they cover.
struct WriteOut {
    /// The generation the tiles make up: the tree size after the last batch they include.
    generation: u64,
    order: Vec<map::TileId>,
    written: usize,
    /// How many of the journal's oldest records, and updates, the generation covers.
    journal: usize,
    journaled: usize,
}

/// A sealed batch's effect on the writer, waiting for the batch to be staged.
struct Pending {
    /// The batch's tiles, to join the held ones.
    sealed: map::Sealed,
    /// Its journal record (key, updates), to join the journal.
    journal: Option<(Vec<u8>, usize)>,
    /// It began a write-out of the tiles held before it, which make up this generation; their
    /// ids in key order (sorted here, not under the lock `committed` takes).
    began: Option<(u64, Vec<map::TileId>)>,
    /// It wrote the write-out in progress up to this position in its order (to the end: the
    /// write-out is over).
    wrote: Option<usize>,
    /// It deleted this many of the oldest dead journal records.
    buried: usize,
}

impl std::fmt::Debug for MapWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapWriter")
            .field("touched", &self.touched.len())
            .field("journal", &self.journal.len())
            .field("journaled", &self.journaled)
            .finish_non_exhaustive()
    }
}

/// Tiles held in memory before the writer writes them out (≈ 1 KB each).
pub const CACHE_TILES: usize = 32_768;
/// Journaled map updates before the writer writes the tiles out: bounds the replay at start.
pub const JOURNAL_UPDATES: usize = 65_536;
/// Tiles a batch writes out at least while a write-out is in progress (≈ 64 KB), and dead
/// journal records it deletes at most.
pub const CHUNK_TILES: usize = 64;

impl MapWriter {
    /// The writer for `log`, or `None` when the log keeps no map: its state has no VRF key and
    /// it already holds entries (a log created before the map).
    ///
    /// # Errors
    ///
    /// [`StartError::SubjectMap`] when the state names a VRF key and the server has none or
    /// another one (serving it would change every patient's map key), or when the log is new
    /// and there is no key; also when the stored tiles and journal do not give the stored root.
    pub fn open(log: &Arc<Log>, key: Option<&SubjectMapKey>) -> Result<Option<Self>, StartError> {
        let stored = log
            .state_get(VRF_KEY)
            .map_err(|e| StartError::SubjectMap(format!("cannot read the state: {e}")))?;
        let ours = key.map(|k| (k.vrf.public().to_bytes(), Arc::clone(&k.front), k.limits));
        let open = |(vrf_key, front, limits): ([u8; 32], Arc<Front>, WriteBehind)| {
            let mut writer = Self {
                log: Arc::clone(log),
                vrf_key,
                front,
                limits,
                touched: Vec::new(),
                journal: Vec::new(),
                journaled: 0,
                dead: std::collections::VecDeque::new(),
                pending: None,
                stale: true,
                generation: 0,
                legacy: true,
                writing: None,
            };
            writer.reload().map_err(StartError::SubjectMap)?;
            Ok(Some(writer))
        };
        match (stored, ours) {
            (Some(stored), Some(ours)) if stored.as_slice() == ours.0.as_slice() => open(ours),
            (Some(_), Some(_)) => Err(StartError::SubjectMap(format!(
                "`{}` is not the key this log's subject map was built with",
                crate::keys::SUBJECT_MAP_KEY_FILE
            ))),
            (Some(_), None) => Err(StartError::SubjectMap(format!(
                "the log keeps a subject map but `{}` is missing",
                crate::keys::SUBJECT_MAP_KEY_FILE
            ))),
            (None, Some(ours)) if log.size().get() == 0 => open(ours),
            // A new log must start its map with its first entry: once it holds entries without
            // one it never gets one.
            (None, None) if log.size().get() == 0 => Err(StartError::SubjectMap(format!(
                "the new log needs `{}` to start its subject map",
                crate::keys::SUBJECT_MAP_KEY_FILE
            ))),
            (None, _) => Ok(None),
        }
    }

    /// Reads the held tiles again from the state: the journal replayed over the stored tiles,
    /// checked against the stored root. On failure nothing is held.
    fn reload(&mut self) -> Result<(), String> {
        let log = Arc::clone(&self.log);
        let id = Arc::downgrade(&log);
        // Proofs must not read what this writer held before: drop it first.
        *self
            .front
            .0
            .write()
            .map_err(|_| "the subject map's tiles are poisoned")? = None;
        let generation = stored_generation(
            log.state_get(GENERATION)
                .map_err(|e| format!("cannot read the state: {e}"))?,
        )?;
        let legacy = holds_legacy_tiles(&log)?;
        let stored_tiles = Stored {
            read: |key: &[u8]| log.state_get(key),
            generation,
            legacy,
        };
        let mut tiles = TileCache::default();
        let mut journal = Vec::new();
        let mut journaled = 0;
        let mut root = None;
        // The records the stored generation covers are dead, left to delete; the journal since
        // it is replayed.
        let live = journal_key(generation.saturating_add(1));
        let mut dead = std::collections::VecDeque::new();
        each_journal_record(&log, JOURNAL, &live, |key, _| {
            dead.push_back(key);
            Ok(())
        })?;
        each_journal_record(&log, &live, &ledger_prefix_end(JOURNAL), |key, value| {
            let updates =
                decode_journal(&value).ok_or("a record of the subject map's journal is corrupt")?;
            let mut batch = map::Batch::over(&stored_tiles, NODES, &tiles);
            for (k, v) in &updates {
                batch.update(k, v).map_err(|e| map_error(&e))?;
            }
            let sealed = batch.finish().map_err(|e| map_error(&e))?;
            root = Some(sealed.into_cache(&mut tiles));
            journaled += updates.len();
            journal.push(key);
            Ok(())
        })?;
        // The stored root names the map as of the newest batch that changed it, which wrote
        // the journal's newest record (when there is one): the tiles and the journal must give
        // exactly it.
        let stored = log
            .state_get(ROOT)
            .map_err(|e| format!("cannot read the state: {e}"))?;
        if let Some(stored) = stored {
            let (version, stored) =
                decode_root(&stored).ok_or("the subject map's root record is corrupt")?;
            let root = match root {
                Some(root) => root,
                None => {
                    map::prove_over(&stored_tiles, NODES, Some(&tiles), &[0; 32])
                        .map_err(|e| map_error(&e))?
                        .1
                }
            };
            let newest = journal.last().map(|key: &Vec<u8>| key.get(JOURNAL.len()..));
            let in_step = match newest {
                Some(Some(size)) => size == version.to_be_bytes().as_slice(),
                Some(None) => false,
                None => true,
            };
            if root != stored || !in_step {
                return Err(
                    "the subject map's stored tiles and journal do not give its stored root".into(),
                );
            }
        } else if root.is_some() {
            return Err("the subject map has a journal but no root".into());
        }
        tracing::debug!(
            generation,
            journal = journal.len(),
            updates = journaled,
            tiles = tiles.len(),
            "subject map: journal replayed over the stored tiles"
        );
        let stats = &self.front.1;
        stats
            .held_tiles
            .store(tiles.len() as u64, Ordering::Relaxed);
        stats.journaled.store(journaled as u64, Ordering::Relaxed);
        *self
            .front
            .0
            .write()
            .map_err(|_| "the subject map's tiles are poisoned")? = Some(FrontTiles {
            log: id,
            tiles,
            writing: None,
            generation,
            legacy,
        });
        self.legacy = legacy;
        self.journal = journal;
        self.journaled = journaled;
        self.dead = dead;
        self.pending = None;
        self.stale = false;
        self.generation = generation;
        self.writing = None;
        Ok(())
    }

    /// The patient's VRF output: from their stored record, else `supplied` (computed at the
    /// edge for a patient new to the log).
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` when the state cannot be read or is corrupt, or when neither has it (the
    /// edge saw a record that a failed batch then took back: the caller may retry).
    pub fn output(
        &self,
        tx: &Tx<'_>,
        subject: &SubjectId,
        supplied: Option<&VrfOutput>,
    ) -> Result<VrfOutput, Error> {
        match stored_record(tx, subject)? {
            Some((beta, _)) => Ok(beta),
            None => supplied.copied().ok_or_else(|| {
                Error::Unavailable("the patient's subject-map key is not known yet; retry".into())
            }),
        }
    }

    /// Advances the patient's record by the entry at `index` with public leaf bytes `leaf`.
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` when the state cannot be read or is corrupt.
    pub fn append(
        &mut self,
        tx: &mut Tx<'_>,
        subject: &SubjectId,
        beta: &VrfOutput,
        index: u64,
        leaf: &[u8],
    ) -> Result<(), Error> {
        let leaf_hash = hash_leaf(leaf);
        let record = match stored_record(tx, subject)? {
            Some((_, record)) => record.then(index, &leaf_hash),
            None => SubjectRecord::first(beta, index, &leaf_hash),
        };
        tx.put(&record_key(subject), &encode_stored(beta, &record));
        self.touched.push(subject.clone());
        Ok(())
    }

    /// Writes the batch's records into the map (its journal record, and the held tiles; or all
    /// held tiles out, see [`MapWriter`]) and returns the checkpoint's subject-map line.
    ///
    /// # Errors
    ///
    /// The reason, when the state cannot be read or the stored map is corrupt.
    pub fn seal(&mut self, tx: &mut Tx<'_>) -> Result<Vec<String>, String> {
        let touched = std::mem::take(&mut self.touched);
        self.pending = None;
        if self.stale {
            self.reload()?;
        }
        let stored = tx.get(ROOT).map_err(|e| e.to_string())?;
        let first = stored.is_none();
        if first {
            tx.put(VRF_KEY, &self.vrf_key);
        } else if stored.as_deref().and_then(decode_root).is_none() {
            return Err("the subject map's root record is corrupt".into());
        }
        let mut seen = std::collections::HashSet::with_capacity(touched.len());
        let mut updates = Vec::with_capacity(touched.len());
        for subject in &touched {
            if !seen.insert(subject) {
                continue;
            }
            // Read back through the transaction: a command the sequencer refused after it was
            // applied left no record write, and must leave no map change either.
            let Some((beta, record)) = stored_record(tx, subject).map_err(|e| e.to_string())?
            else {
                continue;
            };
            updates.push((map_key(&beta), record.value_hash()));
        }
        // Only this thread changes the held tiles (in `committed`), so they cannot move while
        // the batch reads them.
        let front = self
            .front
            .0
            .read()
            .map_err(|_| "the subject map's tiles are poisoned")?;
        let held = front
            .as_ref()
            .ok_or("the subject map's tiles are not loaded")?;
        let generation = self.generation;
        let sealed = {
            let stored = Stored {
                read: |key: &[u8]| tx.get(key),
                generation,
                legacy: self.legacy,
            };
            let layers: Vec<&TileCache> =
                std::iter::once(&held.tiles).chain(&held.writing).collect();
            let mut batch = map::Batch::over_layers(&stored, NODES, &layers);
            for (k, v) in &updates {
                batch.update(k, v).map_err(|e| map_error(&e))?;
            }
            batch.finish().map_err(|e| map_error(&e))?
        };
        let root = sealed.root();
        let held_after = held.tiles.len() + sealed.changed();
        let journaled_after = self.journaled + updates.len();
        let mut began = None;
        let mut wrote = None;
        if let (Some(writing), Some(tiles)) = (&self.writing, &held.writing) {
            // A chunk of the write-out in progress; all the rest when the tiles held over it
            // or the journal reached twice their limit.
            let left = writing.order.len().saturating_sub(writing.written);
            let chunk = if held_after > 2 * self.limits.tiles
                || journaled_after > 2 * self.limits.updates
            {
                left
            } else {
                self.limits.chunk.max(2 * sealed.changed()).min(left)
            };
            let end = writing.written + chunk;
            for id in writing.order.get(writing.written..end).unwrap_or_default() {
                let (key, record) = tiles
                    .encoded_tile(id, NODES)
                    .ok_or("a tile of the write-out is not held")?;
                let name = key.get(NODES.len()..).unwrap_or_default();
                let spare = Stored {
                    read: |key: &[u8]| tx.get(key),
                    generation,
                    legacy: self.legacy,
                }
                .spare(name)
                .map_err(|e| e.to_string())?;
                let mut value = Vec::with_capacity(8 + record.len());
                value.extend_from_slice(&writing.generation.to_be_bytes());
                value.extend_from_slice(&record);
                tx.put(&[spare, name].concat(), &value);
            }
            if end == writing.order.len() {
                // The generation is written whole: it becomes the stored one, and the journal
                // it covers is dead.
                tx.put(GENERATION, &writing.generation.to_be_bytes());
            }
            wrote = Some(end);
        } else if !updates.is_empty()
            && !held.tiles.is_empty()
            && (held_after > self.limits.tiles || journaled_after > self.limits.updates)
        {
            // The tiles held before this batch make up the map as of the batch that last
            // changed it, which wrote the stored root.
            let (version, _) = stored
                .as_deref()
                .and_then(decode_root)
                .ok_or("the subject map holds tiles but no root")?;
            began = Some((version, held.tiles.ids()));
        }
        let buried = self.dead.len().min(self.limits.chunk);
        for key in self.dead.iter().take(buried) {
            tx.delete(key);
        }
        let journal = (!updates.is_empty()).then(|| {
            let mut record = Vec::with_capacity(updates.len() * 64);
            for (k, v) in &updates {
                record.extend_from_slice(k);
                record.extend_from_slice(&v.0);
            }
            (journal_key(tx.index().get()), record, updates.len())
        });
        if let Some((key, record, _)) = &journal {
            tx.put(key, record);
        }
        if (journal.is_some() && self.journal.is_empty()) || began.is_some() {
            // A state of layout 2 has no journal and one of layout 3 no tile slots: say that
            // this one may hold both before it does, so that a server that would ignore them
            // refuses the state.
            tx.put(
                policy::state::META_LAYOUT,
                &policy::state::LAYOUT_VERSION.to_be_bytes(),
            );
        }
        let pending = Pending {
            sealed,
            journal: journal.map(|(key, _, updates)| (key, updates)),
            began,
            wrote,
            buried,
        };
        drop(front);
        if !updates.is_empty() || first {
            let mut value = tx.index().get().to_be_bytes().to_vec();
            value.extend_from_slice(&root.0);
            tx.put(ROOT, &value);
        }
        self.pending = Some(pending);
        Ok(vec![
            MapCommitment {
                vrf_key: self.vrf_key,
                root,
            }
            .to_line(),
        ])
    }

    /// The sealed batch was staged (its state writes are visible): the write-out it advanced
    /// moves on (and ends, making its generation the stored one), the write-out it began
    /// freezes the tiles held so far, and its tiles join the held ones.
    pub fn committed(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let Ok(mut front) = self.front.0.write() else {
            self.stale = true;
            return;
        };
        let Some(held) = front.as_mut() else {
            self.stale = true;
            return;
        };
        let stats = &self.front.1;
        self.dead.drain(..pending.buried.min(self.dead.len()));
        if let (Some(wrote), Some(writing)) = (pending.wrote, self.writing.as_mut()) {
            writing.written = wrote;
            if wrote >= writing.order.len() {
                held.writing = None;
                held.generation = writing.generation;
                self.generation = writing.generation;
                let covered = writing.journal.min(self.journal.len());
                self.dead.extend(self.journal.drain(..covered));
                self.journaled = self.journaled.saturating_sub(writing.journaled);
                self.writing = None;
                stats.write_outs.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some((generation, order)) = pending.began {
            let tiles = std::mem::take(&mut held.tiles);
            self.writing = Some(WriteOut {
                generation,
                order,
                written: 0,
                journal: self.journal.len(),
                journaled: self.journaled,
            });
            held.writing = Some(tiles);
        }
        pending.sealed.into_cache(&mut held.tiles);
        if let Some((key, updates)) = pending.journal {
            self.journal.push(key);
            self.journaled += updates;
        }
        let in_memory = held.tiles.len() + held.writing.as_ref().map_or(0, TileCache::len);
        stats.held_tiles.store(in_memory as u64, Ordering::Relaxed);
        stats
            .journaled
            .store(self.journaled as u64, Ordering::Relaxed);
    }

    /// Forgets the batch (it failed): its touched patients and its sealed changes. The held
    /// tiles were never changed by it.
    pub fn rollback(&mut self) {
        self.touched.clear();
        self.pending = None;
    }
}

/// Calls `each` with every journal record from `start` to before `end`, in key order, a page
/// at a time.
fn each_journal_record(
    log: &Log,
    start: &[u8],
    end: &[u8],
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let mut start = start.to_vec();
    loop {
        let page = log
            .state_range(&start, Some(end), 256)
            .map_err(|e| format!("cannot read the subject map's journal: {e}"))?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        start = last.clone();
        start.push(0);
        for (key, value) in page {
            each(key, value)?;
        }
    }
}

/// Whether the state holds any tile of an older layout (under [`NODES`]). None is ever written
/// there now, so a state without one never gains one.
fn holds_legacy_tiles(log: &Log) -> Result<bool, String> {
    log.state_range(NODES, Some(&ledger_prefix_end(NODES)), 1)
        .map(|first| !first.is_empty())
        .map_err(|e| format!("cannot read the subject map's tiles: {e}"))
}

/// The first key after every key that starts with `prefix`.
fn ledger_prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            break;
        }
    }
    end
}

fn map_error(err: &MapError<StoreError>) -> String {
    match err {
        MapError::Store(e) => format!("the subject map's store failed: {e}"),
        other => other.to_string(),
    }
}

fn stored_record(
    tx: &Tx<'_>,
    subject: &SubjectId,
) -> Result<Option<(VrfOutput, SubjectRecord)>, Error> {
    match tx
        .get(&record_key(subject))
        .map_err(|e| Error::Unavailable(Box::new(e)))?
    {
        Some(bytes) => decode_stored(&bytes)
            .map(Some)
            .ok_or(Error::Internal("a patient's subject-map record is corrupt")),
        None => Ok(None),
    }
}

/// Whether `log` keeps a subject map (its state names the VRF key).
///
/// # Errors
///
/// `UNAVAILABLE` when the state cannot be read.
pub fn is_kept(log: &Log) -> Result<bool, Error> {
    Ok(log
        .state_get(VRF_KEY)
        .map_err(|e| Error::Unavailable(Box::new(e)))?
        .is_some())
}

/// A completeness proof and the published checkpoint it is against.
pub struct Proven {
    /// The signed checkpoint note.
    pub checkpoint: String,
    /// Its tree size.
    pub size: u64,
    /// The proof, as the API carries it.
    pub completeness: pb::SubjectCompleteness,
}

/// The completeness proof of `patient_id` (pseudonym `subject`) against a published checkpoint
/// that commits to the map it was read from.
///
/// # Errors
///
/// `UNAVAILABLE` when the state cannot be read, or no published checkpoint matched the map
/// after several attempts (a log that keeps failing its syncs).
pub async fn prove(
    log: &Log,
    key: &SubjectMapKey,
    subject: &SubjectId,
    patient_id: &str,
    witnessed: Option<&WitnessedCheckpoint>,
) -> Result<Proven, Error> {
    let (vrf_proof, beta) = key.vrf.prove(patient_id.as_bytes());
    let map_key = map_key(&beta);
    let unavailable = |e: StoreError| Error::Unavailable(Box::new(e));
    for attempt in 0..PROVE_ATTEMPTS {
        if attempt > 0 {
            settle(attempt).await;
        }
        let Some(bytes) = log.state_get(ROOT).map_err(unavailable)? else {
            return Err(Error::Internal("the log keeps no subject-map root"));
        };
        let (version, root) = decode_root(&bytes)
            .ok_or(Error::Internal("the subject map's root record is corrupt"))?;
        // The held tiles on the patient's path (the write-out's under the newer ones), copied
        // out with the stored generation: the store is read without the lock, which the writer
        // needs once per batch.
        let (held, generation, legacy) = {
            let front = key
                .front
                .0
                .read()
                .map_err(|_| Error::Internal("the subject map's tiles are poisoned"))?;
            match front.as_ref().filter(|held| held.of(log)) {
                Some(held) => {
                    let mut path = held
                        .writing
                        .as_ref()
                        .map(|writing| writing.on_path(&map_key))
                        .unwrap_or_default();
                    path.overlay(held.tiles.on_path(&map_key));
                    (Some(path), held.generation, held.legacy)
                }
                None => (
                    None,
                    stored_generation(log.state_get(GENERATION).map_err(unavailable)?).map_err(
                        |_| Error::Internal("the subject map's generation record is corrupt"),
                    )?,
                    true,
                ),
            }
        };
        let stored = Stored {
            read: |key: &[u8]| log.state_get(key),
            generation,
            legacy,
        };
        let read = map::prove_over(&stored, NODES, held.as_ref(), &map_key);
        let (proof, proven) = read.map_err(|e| match e {
            MapError::Store(e) => unavailable(e),
            _ => Error::Internal("the stored subject map is corrupt"),
        })?;
        if proven != root {
            // A batch was staged between the reads: read again.
            continue;
        }
        let record = match log.state_get(&record_key(subject)).map_err(unavailable)? {
            Some(bytes) => Some(
                decode_stored(&bytes)
                    .ok_or(Error::Internal("a patient's subject-map record is corrupt"))?
                    .1,
            ),
            None => None,
        };
        let held = match &proof.terminal {
            Terminal::Leaf { key, value } if *key == map_key => Some(*value),
            _ => None,
        };
        if held != record.map(|r| r.value_hash()) {
            continue;
        }
        // The witnessed checkpoint when it commits to this very map (nothing about any patient
        // was logged since the witnesses cosigned it): the patient can then check the
        // cosignatures on the checkpoint the proof is bound to.
        if let Some(witnessed) = witnessed.filter(|w| commits_to(w.signed().checkpoint(), &root)) {
            return Ok(Proven {
                size: witnessed.signed().checkpoint().size.get(),
                checkpoint: witnessed.note().to_owned(),
                completeness: to_pb(&vrf_proof.to_bytes(), record, &proof),
            });
        }
        let Some(checkpoint) = published_with(log, version, &root).await? else {
            continue;
        };
        return Ok(Proven {
            size: checkpoint.1,
            checkpoint: checkpoint.0,
            completeness: to_pb(&vrf_proof.to_bytes(), record, &proof),
        });
    }
    Err(Error::Unavailable(
        "the subject map kept moving; try again".into(),
    ))
}

/// Waits before reading a moving map again: a yield at first (a batch's tiles are published
/// right after it is staged), then a millisecond.
async fn settle(attempt: usize) {
    if attempt < 8 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A published checkpoint (note and size) whose subject-map line has `root`, at `version` or
/// later; waits for `version` to be published.
async fn published_with(
    log: &Log,
    version: u64,
    root: &Hash,
) -> Result<Option<(String, u64)>, Error> {
    let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
    while log.size().get() < version {
        if log.is_poisoned() || tokio::time::Instant::now() >= deadline {
            return Err(Error::Unavailable(
                "the log is not publishing new checkpoints".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let latest = log.checkpoint();
    if commits_to(latest.checkpoint(), root) {
        return Ok(Some((
            latest.note().to_owned(),
            latest.checkpoint().size.get(),
        )));
    }
    let Some(note) = log
        .checkpoint_at(ledger::hash::TreeSize(version))
        .map_err(|e| Error::Unavailable(Box::new(e)))?
    else {
        return Ok(None);
    };
    Ok(SignedCheckpoint::verify(&note, log.verifier())
        .ok()
        .filter(|c| commits_to(c.checkpoint(), root))
        .map(|c| (note.clone(), c.checkpoint().size.get())))
}

fn commits_to(checkpoint: &Checkpoint, root: &Hash) -> bool {
    matches!(MapCommitment::of(checkpoint), Ok(Some(c)) if c.root == *root)
}

fn to_pb(
    vrf_proof: &[u8],
    record: Option<SubjectRecord>,
    proof: &MapProof,
) -> pb::SubjectCompleteness {
    let (leaf_key, leaf_value) = match &proof.terminal {
        Terminal::Leaf { key, value } => (key.to_vec(), value.0.to_vec()),
        Terminal::Empty => (Vec::new(), Vec::new()),
    };
    pb::SubjectCompleteness {
        vrf_proof: vrf_proof.to_vec(),
        count: record.map_or(0, |r| r.count),
        first_index: record.map_or(0, |r| r.first),
        last_index: record.map_or(0, |r| r.last),
        chain_head: record.map(|r| r.head.0.to_vec()).unwrap_or_default(),
        map_siblings: proof.siblings.iter().map(|h| h.0.to_vec()).collect(),
        leaf_key,
        leaf_value,
    }
}

/// The body text of an event about a patient: the event's JSON with the patient's VRF output
/// added as `subject_vrf_output` (lowercase hex), for a regulator's replay to recompute the map.
#[must_use]
pub fn with_vrf_output(mut json: Vec<u8>, beta: &VrfOutput) -> Vec<u8> {
    // The event is a JSON object: its last byte is the closing brace.
    if json.last() == Some(&b'}') {
        json.pop();
        let separator: &[u8] = if json.len() > 1 { b"," } else { b"" };
        json.extend_from_slice(separator);
        json.extend_from_slice(b"\"subject_vrf_output\":\"");
        json.extend_from_slice(hex::encode(beta.0).as_bytes());
        json.extend_from_slice(b"\"}");
    }
    json
}

#[cfg(test)]
mod tests;

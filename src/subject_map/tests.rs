//! The map's writer through the real sequencer on a sled log: tiles held behind the journal and
//! written out a chunk per batch past the limits, proofs read through the held tiles, and a
//! reopened writer that replays the journal — also in the middle of a write-out, and over tiles
//! an older layout stored — every root checked against one computed from the patients' records
//! alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use ledger::{
    anchor::Anchor,
    checkpoint::SignedCheckpoint,
    conformance,
    log::Log,
    map,
    note::NoteSigner,
    sequencer::{Sequencer, SequencerOptions},
    store::{SledOptions, SledStore, Store as _},
    vrf::VrfSecretKey,
};
use policy::{
    domain::{Name, OrgId, Organization, RecipientClass, SubjectId},
    engine::PolicyEngine,
    event::Event,
};
use sha2::{Digest as _, Sha256};

use super::*;
use crate::state_machine::{Command, DomainStateMachine, Submission, tests::research_grant};

/// Small limits, so that a few hundred patients cross them several times and a write-out takes
/// several batches.
const LIMITS: WriteBehind = WriteBehind {
    tiles: 40,
    updates: 60,
    chunk: 4,
};

/// The log of data dir `dir` as the server opens it (sled store, checkpoint anchor), signed with
/// the test's own key: the same one on every reopen.
fn open_log(dir: &std::path::Path) -> Arc<Log> {
    static SKEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let skey = SKEY.get_or_init(|| conformance::test_signer().to_skey());
    let store = SledStore::open(&dir.join("ledger"), &SledOptions::default()).unwrap();
    let signer = NoteSigner::from_skey(skey).unwrap();
    let anchor = Anchor::open(&dir.join("ledger.anchor"), &signer.verifier()).unwrap();
    Arc::new(Log::open_anchored(Arc::new(store), signer, anchor).unwrap())
}

fn patient_id(i: u64) -> String {
    format!("map-patient-{i}")
}

fn subject(patient_id: &str) -> SubjectId {
    SubjectId::from_bytes(Sha256::digest(patient_id.as_bytes()).into())
}

fn key_with(limits: WriteBehind) -> SubjectMapKey {
    SubjectMapKey::new(VrfSecretKey::from_seed([5; 32])).with_write_behind(limits)
}

struct World {
    log: Arc<Log>,
    sequencer: Sequencer<DomainStateMachine>,
    key: SubjectMapKey,
}

impl World {
    fn open(dir: &std::path::Path) -> Result<Self, StartError> {
        Self::open_with(dir, LIMITS)
    }

    fn open_with(dir: &std::path::Path, limits: WriteBehind) -> Result<Self, StartError> {
        let log = open_log(dir);
        let key = key_with(limits);
        let machine = DomainStateMachine::new(log.clone())?.with_subject_map(Some(&key))?;
        let sequencer =
            Sequencer::start(log.clone(), machine, SequencerOptions::default()).unwrap();
        Ok(Self {
            log,
            sequencer,
            key,
        })
    }

    async fn setup(&self) {
        self.sequencer
            .submit(Command::Activate(Arc::new(
                PolicyEngine::default_set().unwrap(),
            )))
            .await
            .unwrap();
        self.sequencer
            .submit(Command::Directory(Event::UpsertOrganization(
                Organization {
                    id: OrgId::new("uni").unwrap(),
                    name: Name::new("Example University").unwrap(),
                    recipient_class: RecipientClass::University,
                },
            )))
            .await
            .unwrap();
    }

    /// One consent for each patient in `patients` (each `round` a fresh consent id), submitted
    /// concurrently so that batches hold several patients.
    async fn grant(self: &Arc<Self>, patients: std::ops::Range<u64>, round: u64) {
        let tasks: Vec<_> = patients
            .map(|i| {
                let world = Arc::clone(self);
                tokio::spawn(async move {
                    let patient = patient_id(i);
                    let subject = subject(&patient);
                    let subject_vrf = world
                        .key
                        .output_for(&world.log, &subject, &patient)
                        .unwrap();
                    let command = research_grant(&format!("c_{round}_{i}"), subject);
                    world
                        .sequencer
                        .submit(Submission {
                            command,
                            subject_vrf,
                            request: None,
                            group_len: 0,
                        })
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }

    /// The map root the newest checkpoint commits to.
    fn committed_root(&self) -> Hash {
        MapCommitment::of(self.log.checkpoint().checkpoint())
            .unwrap()
            .unwrap()
            .root
    }

    /// `(state key, value)` pairs under `prefix`.
    fn state_under(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.log
            .state_range(prefix, Some(&ledger_prefix_end(prefix)), 1_000_000)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect()
    }

    /// The stored tiles' records, both slots.
    fn stored_tiles(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        SLOTS
            .iter()
            .flat_map(|slot| self.state_under(slot))
            .collect()
    }

    /// The journal records after the stored generation: those a start replays.
    fn live_journal(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let live = journal_key(self.generation() + 1);
        self.state_under(JOURNAL)
            .into_iter()
            .filter(|(key, _)| *key >= live)
            .collect()
    }

    /// How many journal records the stored generation covers and are not deleted yet.
    fn dead_journal(&self) -> usize {
        self.state_under(JOURNAL).len() - self.live_journal().len()
    }

    /// The stored tiles' generation.
    fn generation(&self) -> u64 {
        stored_generation(self.log.state_get(GENERATION).unwrap()).unwrap()
    }

    /// Whether a write-out is in progress: some tile is stored for a newer generation than the
    /// stored one.
    fn writing_out(&self) -> bool {
        let generation = self.generation();
        self.stored_tiles()
            .iter()
            .any(|(_, value)| u64::from_be_bytes(value[..8].try_into().unwrap()) > generation)
    }

    /// The map's root computed from the patients' records alone, without a tile.
    fn root_from_records(&self) -> Hash {
        let entries: Vec<_> = self
            .state_under(RECORDS)
            .iter()
            .map(|(_, value)| {
                let (beta, record) = decode_stored(value).unwrap();
                (map_key(&beta), record.value_hash())
            })
            .collect();
        map::root_of(&entries)
    }

    /// The served proof for patient `i` verifies against the checkpoint it is paired with, and
    /// holds their record when they have one.
    async fn check_proof(&self, i: u64, present: bool) {
        let patient = patient_id(i);
        let proven = prove(&self.log, &self.key, &subject(&patient), &patient, None)
            .await
            .unwrap();
        let checkpoint = SignedCheckpoint::verify(&proven.checkpoint, self.log.verifier()).unwrap();
        let commitment = MapCommitment::of(checkpoint.checkpoint()).unwrap().unwrap();
        // Checked as the patient checks it (`akashi-audit history`): the VRF proof of their
        // key, then the record or its absence under the checkpoint's map root.
        let proof = &proven.completeness;
        let (_, held) = auditor::history::CompletenessProof {
            vrf_proof: proof.vrf_proof.clone(),
            count: proof.count,
            first_index: proof.first_index,
            last_index: proof.last_index,
            chain_head: proof.chain_head.clone(),
            map_siblings: proof.map_siblings.clone(),
            leaf_key: proof.leaf_key.clone(),
            leaf_value: proof.leaf_value.clone(),
        }
        .subject_proof()
        .unwrap()
        .verify(&patient, &commitment)
        .unwrap();
        assert_eq!(held.is_some(), present, "patient {i}");
        assert_eq!(proof.count > 0, present, "patient {i}");
    }

    async fn stop(self) {
        self.sequencer.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_held_behind_the_journal_and_written_out_give_the_records_root_before_and_after_a_restart()
 {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()).unwrap());
    world.setup().await;

    // A few patients: everything is held, nothing written out yet.
    world.grant(0..5, 0).await;
    assert!(world.stored_tiles().is_empty(), "no tile written yet");
    let stats = world.key.write_behind();
    assert_eq!(stats.write_outs, 0);
    assert!(stats.held_tiles > 0);
    assert!(!world.state_under(JOURNAL).is_empty());
    assert_eq!(world.committed_root(), world.root_from_records());
    world.check_proof(3, true).await;
    world.check_proof(1_000, false).await;

    // Enough patients to cross both limits several times.
    for round in 1..4 {
        world.grant(0..150, round).await;
        assert_eq!(world.committed_root(), world.root_from_records());
    }
    assert!(!world.stored_tiles().is_empty(), "tiles were written out");
    assert!(world.generation() > 0);
    let journaled: usize = world.live_journal().iter().map(|(_, v)| v.len() / 64).sum();
    let stats = world.key.write_behind();
    assert!(stats.write_outs > 0);
    assert_eq!(stats.journaled, journaled as u64);
    // At most twice the limit (a write-out in progress finishes at once there), plus the two
    // batches between that write-out's end and the next one's first chunk (one round's
    // patients at most each).
    assert!(
        journaled <= 2 * LIMITS.updates + 2 * 150,
        "{journaled} journaled updates"
    );
    for i in [0, 7, 42, 149] {
        world.check_proof(i, true).await;
    }
    world.check_proof(150, false).await;

    // Reopened: the journal is replayed over the stored tiles, and the map goes on.
    let root = world.committed_root();
    Arc::into_inner(world).unwrap().stop().await;
    let world = Arc::new(World::open(dir.path()).unwrap());
    assert_eq!(world.committed_root(), root);
    world.check_proof(42, true).await;
    world.grant(100..220, 9).await;
    assert_eq!(world.committed_root(), world.root_from_records());
    for i in [0, 120, 219] {
        world.check_proof(i, true).await;
    }
    assert_eq!(
        world.log.state_get(policy::state::META_LAYOUT).unwrap(),
        Some(policy::state::LAYOUT_VERSION.to_be_bytes().to_vec())
    );
    Arc::into_inner(world).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_does_not_give_the_stored_root_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()).unwrap());
    world.setup().await;
    world.grant(0..5, 0).await;
    world.grant(5..10, 0).await;
    // The oldest record: the newest batch's state writes are replayed when the log is opened.
    let (key, mut value) = world.state_under(JOURNAL).swap_remove(0);
    Arc::into_inner(world).unwrap().stop().await;

    // One journaled value changed behind the server's back.
    let last = value.len() - 1;
    value[last] ^= 1;
    {
        let store = SledStore::open(&dir.path().join("ledger"), &SledOptions::default()).unwrap();
        let mut stored = vec![b's'];
        stored.extend_from_slice(&key);
        assert!(
            store.get(&stored).unwrap().is_some(),
            "the state's key layout"
        );
        store.put(&stored, &value).unwrap();
        store.sync().unwrap();
    }
    match World::open(dir.path()) {
        Err(StartError::SubjectMap(reason)) => {
            assert!(reason.contains("stored root"), "{reason}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a corrupt journal was accepted"),
    }
}

/// Grants for patients `next..`, one batch each, until a write-out is half done (its first
/// chunks are stored, its last is not); returns the next patient.
async fn grant_until_mid_write_out(world: &Arc<World>, mut next: u64) -> u64 {
    while !world.writing_out() {
        world.grant(next..next + 1, 0).await;
        next += 1;
        assert!(next < 3_000, "no write-out began");
    }
    next
}

/// Grants for patients `next..`, one batch each, until a write-out completes; then no tile is
/// stored for a newer generation than the stored one, leftovers of an interrupted write-out
/// included. Returns the next patient.
async fn grant_until_written_out(world: &Arc<World>, mut next: u64) -> u64 {
    let generation = world.generation();
    while world.generation() == generation {
        world.grant(next..next + 1, 0).await;
        next += 1;
        assert!(next < 3_000, "no write-out completed");
    }
    assert!(
        !world.writing_out(),
        "a tile outlived its write-out: {:?}",
        world.generation()
    );
    // The journal the new generation covers is dead, and deleted a chunk a batch from the
    // next one on.
    let dead = world.dead_journal();
    assert!(dead > 0);
    world.grant(next..next + 1, 0).await;
    assert_eq!(
        world.dead_journal(),
        dead.saturating_sub(LIMITS.chunk),
        "dead journal records deleted by the next batch"
    );
    next + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_out_spreads_over_batches_and_a_restart_in_its_middle_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = Arc::new(World::open(dir.path()).unwrap());
    world.setup().await;
    let mut next = 0;
    for interruption in 0..3 {
        if interruption > 0 {
            // Every patient's record moves on; then two write-outs complete, so that the
            // stored tiles hold every patient and the journal only the patients added after.
            world.grant(0..next, interruption).await;
            assert_eq!(world.committed_root(), world.root_from_records());
            next = grant_until_written_out(&world, next).await;
            next = grant_until_written_out(&world, next).await;
        }
        // A write-out in progress: tiles of the new generation are stored while the stored
        // generation stays the old one; roots and proofs read through both.
        next = grant_until_mid_write_out(&world, next).await;
        let before = world.generation();
        assert_eq!(world.committed_root(), world.root_from_records());
        for i in [0, next / 2, next - 1] {
            world.check_proof(i, true).await;
        }
        world.check_proof(next, false).await;

        // Stopped in its middle: the reopened writer reads the old generation and the journal,
        // never the half-written new one (whose slots it must not have overwritten).
        let root = world.committed_root();
        Arc::into_inner(world).unwrap().stop().await;
        world = Arc::new(World::open(dir.path()).unwrap());
        assert!(
            world.writing_out(),
            "the stop left the write-out's first chunks"
        );
        assert_eq!(world.generation(), before);
        assert_eq!(world.committed_root(), root);
        for i in [0, next / 2, next - 1] {
            world.check_proof(i, true).await;
        }

        // The map goes on over the leftovers, and the next write-out overwrites them.
        next = grant_until_written_out(&world, next).await;
        assert!(world.generation() > before);
        assert_eq!(world.committed_root(), world.root_from_records());
    }
    assert!(world.key.write_behind().write_outs > 0);
    Arc::into_inner(world).unwrap().stop().await;
}

#[test]
fn a_reader_takes_the_newest_slot_not_above_its_generation_and_a_writer_the_other() {
    let state = std::cell::RefCell::new(std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new());
    let name = b"\x00\x08\xab".as_slice();
    let put = |slot: usize, tag: u64, tile: &[u8]| {
        let mut value = tag.to_be_bytes().to_vec();
        value.extend_from_slice(tile);
        state
            .borrow_mut()
            .insert([SLOTS[slot], name].concat(), value);
    };
    let over = |generation: u64, legacy: bool| Stored {
        read: |key: &[u8]| Ok(state.borrow().get(key).cloned()),
        generation,
        legacy,
    };
    let at = |generation: u64| over(generation, true);
    let key = [NODES, name].concat();
    // Nothing stored: absent, then the older layout's untagged tile — unless the state is known
    // to hold none, when it is not even looked for.
    assert_eq!(at(5).get(&key).unwrap(), None);
    assert_eq!(at(5).spare(name).unwrap(), SLOTS[0]);
    state.borrow_mut().insert(key.clone(), b"legacy".to_vec());
    assert_eq!(at(5).get(&key).unwrap().unwrap(), b"legacy");
    assert_eq!(over(5, false).get(&key).unwrap(), None);
    // A tile of generation 10 in slot 0: read from generation 10 on, not before.
    put(0, 10, b"ten");
    assert_eq!(at(9).get(&key).unwrap().unwrap(), b"legacy");
    assert_eq!(at(10).get(&key).unwrap().unwrap(), b"ten");
    assert_eq!(at(10).spare(name).unwrap(), SLOTS[1]);
    // Generation 20 written into the spare slot: generation 10's readers keep theirs.
    put(1, 20, b"twenty");
    assert_eq!(at(19).get(&key).unwrap().unwrap(), b"ten");
    assert_eq!(at(25).get(&key).unwrap().unwrap(), b"twenty");
    assert_eq!(at(25).spare(name).unwrap(), SLOTS[0]);
    // A leftover of an interrupted write-out (generation 30, slot 0 at generation 20) is not
    // read, and is what the next write-out overwrites.
    put(0, 30, b"thirty");
    assert_eq!(at(25).get(&key).unwrap().unwrap(), b"twenty");
    assert_eq!(at(25).spare(name).unwrap(), SLOTS[0]);
    // A value too short for its tag is corrupt.
    state
        .borrow_mut()
        .insert([SLOTS[1], name].concat(), vec![1, 2]);
    assert!(matches!(at(25).get(&key), Err(StoreError::Corrupt)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_an_older_layout_stored_untagged_are_read_and_then_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()).unwrap());
    world.setup().await;
    let next = grant_until_written_out(&world, 0).await;
    let next = grant_until_written_out(&world, next).await;
    // One more batch, so that the state writes the log replays at open are not the
    // write-out's.
    world.grant(next..next + 1, 0).await;
    let next = next + 1;
    assert!(!world.writing_out());
    let root = world.committed_root();
    // The stored generation's tiles as layout 3 stored them: untagged under `map/n/`, with no
    // generation record (the journal since them is the same).
    let generation = world.generation();
    let names: Vec<Vec<u8>> = world
        .stored_tiles()
        .iter()
        .map(|(key, _)| key[SLOTS[0].len()..].to_vec())
        .collect();
    let old: Vec<(Vec<u8>, Vec<u8>)> = names
        .iter()
        .filter_map(|name| {
            let stored = Stored {
                read: |key: &[u8]| world.log.state_get(key),
                generation,
                legacy: false,
            };
            let (_, tile) = stored.current(name).unwrap()?;
            Some(([NODES, name].concat(), tile))
        })
        .collect();
    Arc::into_inner(world).unwrap().stop().await;
    {
        let store = SledStore::open(&dir.path().join("ledger"), &SledOptions::default()).unwrap();
        let state = |key: &[u8]| [b"s".as_slice(), key].concat();
        for name in &names {
            for slot in SLOTS {
                store.delete(&state(&[slot, name].concat())).unwrap();
            }
        }
        for (key, tile) in &old {
            store.put(&state(key), tile).unwrap();
        }
        store.delete(&state(GENERATION)).unwrap();
        store
            .put(&state(policy::state::META_LAYOUT), &3u64.to_be_bytes())
            .unwrap();
        store.sync().unwrap();
    }

    let world = Arc::new(World::open(dir.path()).unwrap());
    assert_eq!(world.generation(), 0);
    assert!(world.stored_tiles().is_empty());
    assert_eq!(world.committed_root(), root);
    for i in [0, next / 2, next - 1] {
        world.check_proof(i, true).await;
    }
    // Write-outs over them: the first rewrites the state's layout before any slot is written.
    let next = grant_until_mid_write_out(&world, next).await;
    assert_eq!(
        world.log.state_get(policy::state::META_LAYOUT).unwrap(),
        Some(policy::state::LAYOUT_VERSION.to_be_bytes().to_vec())
    );
    let next = grant_until_written_out(&world, next).await;
    world.grant(0..next, 1).await;
    assert_eq!(world.committed_root(), world.root_from_records());
    for i in [0, next / 2, next - 1] {
        world.check_proof(i, true).await;
    }
    Arc::into_inner(world).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_read_while_write_outs_run_all_verify() {
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open(dir.path()).unwrap());
    world.setup().await;
    world.grant(0..50, 0).await;
    // Provers read patients 0..50 over and over while rounds of grants begin, advance and
    // complete write-outs under them: each proof is checked as the patient checks it.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let provers: Vec<_> = (0..3u64)
        .map(|p| {
            let world = Arc::clone(&world);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut proven = 0u64;
                let mut i = p;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    world.check_proof(i % 50, true).await;
                    proven += 1;
                    i += 7;
                    // A proof read without waiting never yields: let the grants run.
                    tokio::task::yield_now().await;
                }
                proven
            })
        })
        .collect();
    let before = world.key.write_behind().write_outs;
    for round in 1..8 {
        world.grant(0..150, round).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut proven = 0;
    for prover in provers {
        proven += prover.await.unwrap();
    }
    assert!(proven > 0);
    assert!(world.key.write_behind().write_outs > before);
    assert_eq!(world.committed_root(), world.root_from_records());
    Arc::into_inner(world).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_again_and_again_before_a_write_out_completes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = Arc::new(World::open(dir.path()).unwrap());
    world.setup().await;
    let next = grant_until_written_out(&world, 0).await;
    let mut next = grant_until_mid_write_out(&world, next).await;
    let generation = world.generation();
    // Each restart interrupts a write-out that re-began after the last one: every time the
    // stored generation stays, the root reopens the same, and the leftovers stay in the slots
    // readers do not take.
    for restart in 0..3 {
        if restart > 0 {
            // Two batches: the first begins a write-out again (the held tiles are past the
            // limit), the second writes its first chunk, far from all of it.
            for _ in 0..2 {
                world.grant(next..next + 1, 0).await;
                next += 1;
            }
            assert_eq!(world.generation(), generation, "the write-out is not over");
        }
        let root = world.committed_root();
        Arc::into_inner(world).unwrap().stop().await;
        world = Arc::new(World::open(dir.path()).unwrap());
        assert_eq!(world.generation(), generation);
        assert_eq!(world.committed_root(), root);
        assert_eq!(world.committed_root(), world.root_from_records());
    }
    next = grant_until_written_out(&world, next).await;
    assert_eq!(world.committed_root(), world.root_from_records());
    for i in [0, next / 2, next - 1] {
        world.check_proof(i, true).await;
    }
    Arc::into_inner(world).unwrap().stop().await;
}

/// A write-out that falls behind is finished in one batch: when the journal has passed twice its
/// limit, a write-out does not go a chunk a batch but writes all its tiles in the next batch, so
/// the journal a start replays never stays past twice its limit. The map first grows under
/// limits so large that nothing is written out (hundreds of tiles held, a long journal); reopened
/// under small limits with the smallest chunk, a chunk a batch would take dozens of one-patient
/// batches, but the write-out begins in the first batch and ends in the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_out_that_falls_behind_is_finished_in_one_batch() {
    const HOLD_ALL: WriteBehind = WriteBehind {
        tiles: 100_000,
        updates: 100_000,
        chunk: 1,
    };
    const BEHIND: WriteBehind = WriteBehind {
        tiles: 100_000,
        updates: 6,
        chunk: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let world = Arc::new(World::open_with(dir.path(), HOLD_ALL).unwrap());
    world.setup().await;
    for i in 0..300 {
        world.grant(i..i + 1, 0).await;
    }
    let generation = world.generation();
    assert!(world.live_journal().len() >= 300);
    let root = world.committed_root();
    Arc::into_inner(world).unwrap().stop().await;

    let world = Arc::new(World::open_with(dir.path(), BEHIND).unwrap());
    assert_eq!(world.committed_root(), root);
    let held = world.key.write_behind().held_tiles;
    assert!(held > 100, "only {held} tiles held");
    // The first batch begins the write-out; the journal being far past twice its limit, the
    // second writes every tile of it and makes it the stored generation.
    world.grant(300..301, 0).await;
    assert_eq!(world.generation(), generation);
    world.grant(301..302, 0).await;
    assert!(
        world.generation() > generation,
        "the write-out went on a chunk a batch"
    );
    assert!(!world.writing_out());
    assert!(
        world.live_journal().len() <= 2,
        "{}",
        world.live_journal().len()
    );
    assert_eq!(world.committed_root(), world.root_from_records());
    // From then on, one patient a batch: the journal stays within twice its limit and a batch.
    for i in 302..340 {
        world.grant(i..i + 1, 0).await;
        let live = world.live_journal().len();
        assert!(
            live <= 2 * BEHIND.updates + 1,
            "{live} journal records live"
        );
    }
    assert_eq!(world.committed_root(), world.root_from_records());
    for i in [0, 150, 339] {
        world.check_proof(i, true).await;
    }
    Arc::into_inner(world).unwrap().stop().await;
}

//! The map's writer through the real sequencer on a sled log: tiles held behind the journal and
//! written out at the limits, proofs read through the held tiles, and a reopened writer that
//! replays the journal — every root checked against one computed from the patients' records
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

/// Small limits, so that a few hundred patients cross them several times.
const LIMITS: WriteBehind = WriteBehind {
    tiles: 40,
    updates: 60,
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

fn key() -> SubjectMapKey {
    SubjectMapKey::new(VrfSecretKey::from_seed([5; 32])).with_write_behind(LIMITS)
}

struct World {
    log: Arc<Log>,
    sequencer: Sequencer<DomainStateMachine>,
    key: SubjectMapKey,
}

impl World {
    fn open(dir: &std::path::Path) -> Result<Self, StartError> {
        let log = open_log(dir);
        let key = key();
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
    assert!(world.state_under(NODES).is_empty(), "no tile written yet");
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
    assert!(
        !world.state_under(NODES).is_empty(),
        "tiles were written out"
    );
    let journaled: usize = world
        .state_under(JOURNAL)
        .iter()
        .map(|(_, v)| v.len() / 64)
        .sum();
    let stats = world.key.write_behind();
    assert!(stats.write_outs > 0);
    assert_eq!(stats.journaled, journaled as u64);
    // At most the limit, plus the batch that crossed it (one round's patients at most).
    assert!(
        journaled <= LIMITS.updates + 150,
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

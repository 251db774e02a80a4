//! What the subject map costs the write path: `Authorize` decisions per second through the
//! domain state machine and the group-commit sequencer on the durable sled log, without the map
//! (`DomainStateMachine::new`) and with it (`.with_subject_map(Some(&key))`), in the same run.
//!
//! Each call does what the gRPC handler does after parsing, minus gRPC: the patient's VRF output
//! when the map is kept and the patient is new to it (`SubjectMapKey::output_for`, a state read
//! for a known patient), the decision prepared on the caller's task (`Decisions::prepare`), then
//! `Sequencer::submit`, waiting for the entry to be durable. With the map, each batch's `seal`
//! writes the touched patients' records into the map (one `map::Batch`: each tile on their paths
//! read and written once) and the checkpoint carries the map's root.
//!
//! Setup (not measured, its time printed): the default policy set, one university, and a research
//! consent for each of P patients (1,000 as `akashi-load` uses, and 100,000), each granted
//! through the same sequencer (so with the map every patient was already seen once, and the
//! measured calls pay no VRF evaluation). Every call asserts an allow.
//!
//! ```sh
//! cargo bench -p akashi --bench subject_map
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "benchmark code"
)]

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use akashi::{
    state_machine::{Command, DomainStateMachine, Output, Submission},
    subject_map::SubjectMapKey,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledger::{
    anchor::Anchor,
    conformance,
    log::Log,
    note::NoteSigner,
    sequencer::{Sequencer, SequencerOptions},
    store::{SledOptions, SledStore},
    vrf::VrfSecretKey,
};
use policy::{
    decision::Request,
    domain::{
        Action, CategoryName, Consent, ConsentId, Level, Name, OrgId, Organization, Principal,
        Purpose, RecipientClass, SubjectId, Timestamp,
    },
    engine::PolicyEngine,
    event::Event,
};
use sha2::{Digest as _, Sha256};

/// Calls per measured iteration.
const CALLS: u64 = 10_000;
/// Callers in flight (what `akashi-load --connections 8 --in-flight 64` keeps outstanding).
const CALLERS: u64 = 512;

/// The log of data dir `dir` as the server opens it (sled store, checkpoint anchor).
fn open(dir: &std::path::Path) -> Log {
    let store = SledStore::open(&dir.join("ledger"), &SledOptions::default()).unwrap();
    let signer = NoteSigner::from_skey(&conformance::test_signer().to_skey()).unwrap();
    let anchor = Anchor::open(&dir.join("ledger.anchor"), &signer.verifier()).unwrap();
    Log::open_anchored(Arc::new(store), signer, anchor).unwrap()
}

fn patient_id(i: u64) -> String {
    format!("load-patient-{i}")
}

/// The patient's pseudonym (the server derives it with its keyed hash; any fixed map will do).
fn subject(patient_id: &str) -> SubjectId {
    SubjectId::from_bytes(Sha256::digest(patient_id.as_bytes()).into())
}

fn research_request(subject: SubjectId) -> Request {
    Request {
        principal: Principal::Organization(OrgId::new("uni").unwrap()),
        action: Action::SecondaryUse,
        subject: Some(subject),
        data_category: CategoryName::new("lab_result").unwrap(),
        source_facility: None,
        source_department: None,
        purpose: Purpose::Research,
        level: Level::Pseudonymized,
        cohort_size: None,
    }
}

fn grant(i: u64) -> Command {
    Command::Grant(Consent {
        // Consent ids are unique across the log.
        id: ConsentId::new(format!("c_research_{i}")).unwrap(),
        subject: subject(&patient_id(i)),
        purposes: vec![Purpose::Research],
        data_categories: vec!["clinical".parse().unwrap()],
        recipients: vec![OrgId::new("uni").unwrap()],
        recipient_classes: Vec::new(),
        max_level: Level::Pseudonymized,
        valid_from: None,
        valid_until: None,
        granted_at: Timestamp::now(),
        revoked_at: None,
    })
}

/// A running sequencer over a fresh log, with or without the map, and what callers share.
struct World {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    sequencer: Sequencer<DomainStateMachine>,
    decisions: Arc<akashi::state_machine::Decisions>,
    key: Option<SubjectMapKey>,
    patients: u64,
}

impl World {
    async fn start(patients: u64, map: bool) -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open(dir.path()));
        let key = map.then(|| SubjectMapKey::new(VrfSecretKey::from_seed([9; 32])));
        // Without a key the machine is `new` alone: a new log refuses `with_subject_map(None)`.
        let machine = DomainStateMachine::new(log.clone()).unwrap();
        let machine = match &key {
            Some(key) => machine.with_subject_map(Some(key)).unwrap(),
            None => machine,
        };
        assert_eq!(machine.keeps_subject_map(), map);
        let decisions = machine.decisions();
        let sequencer =
            Sequencer::start(log.clone(), machine, SequencerOptions::default()).unwrap();
        let world = Arc::new(Self {
            _dir: dir,
            log,
            sequencer,
            decisions,
            key,
            patients,
        });
        world
            .sequencer
            .submit(Command::Activate(Arc::new(
                PolicyEngine::default_set().unwrap(),
            )))
            .await
            .unwrap();
        world
            .sequencer
            .submit(Command::Directory(Event::UpsertOrganization(
                Organization {
                    id: OrgId::new("uni").unwrap(),
                    name: Name::new("Example University").unwrap(),
                    recipient_class: RecipientClass::University,
                },
            )))
            .await
            .unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..CALLERS {
            let world = world.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < world.patients {
                    world.submit_about(grant(i), i).await;
                    i += CALLERS;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        eprintln!(
            "{} patients granted in {:.1} s ({}; log size {})",
            patients,
            started.elapsed().as_secs_f64(),
            if map {
                "with the map: one VRF output each"
            } else {
                "no map"
            },
            world.log.size().get()
        );
        world
    }

    /// What the gRPC handler does after parsing: the VRF output for a patient new to the map,
    /// then the submission.
    async fn submit_about(&self, command: Command, i: u64) -> Output {
        let patient = patient_id(i);
        let subject_vrf = match &self.key {
            Some(key) => key
                .output_for(&self.log, &subject(&patient), &patient)
                .unwrap(),
            None => None,
        };
        self.sequencer
            .submit(Submission {
                command,
                subject_vrf,
                request: None,
                group_len: 0,
            })
            .await
            .unwrap()
            .1
    }

    async fn authorize(&self, i: u64) {
        let request = research_request(subject(&patient_id(i)));
        let prepared = self.decisions.prepare(&self.log, &request);
        match self
            .submit_about(Command::Authorize(request, prepared), i)
            .await
        {
            Output::Decided { decision, .. } => assert!(decision.is_allow()),
            other => panic!("unexpected output {other:?}"),
        }
    }

    /// `CALLS` decisions from `CALLERS` concurrent callers over scattered patients.
    async fn run(self: &Arc<Self>, round: u64) {
        let mut tasks = Vec::new();
        for t in 0..CALLERS {
            let world = self.clone();
            tasks.push(tokio::spawn(async move {
                for c in 0..CALLS / CALLERS {
                    let n = round * CALLS + c * CALLERS + t;
                    world
                        .authorize(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % world.patients)
                        .await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for patients in [1_000u64, 100_000] {
        let mut group = c.benchmark_group(format!("domain_sequencer_{patients}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .throughput(Throughput::Elements(CALLS / CALLERS * CALLERS));
        for map in [false, true] {
            let world = runtime.block_on(World::start(patients, map));
            let stats = world.sequencer.stats();
            let (batches, entries) = (
                stats.batches.load(Ordering::Relaxed),
                stats.entries.load(Ordering::Relaxed),
            );
            let mut round = 0;
            group.bench_function(if map { "map" } else { "no_map" }, |b| {
                b.iter(|| {
                    round += 1;
                    runtime.block_on(world.run(round));
                });
            });
            let batches = stats.batches.load(Ordering::Relaxed) - batches;
            let entries = stats.entries.load(Ordering::Relaxed) - entries;
            eprintln!(
                "domain_sequencer_{patients}/{}: {entries} entries in {batches} batches \
                 ({:.0} per batch); {} prepared decisions taken, {} redone",
                if map { "map" } else { "no_map" },
                entries as f64 / batches.max(1) as f64,
                world.decisions.accepted(),
                world.decisions.redone(),
            );
            runtime.block_on(world.sequencer.shutdown());
        }
        group.finish();
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);

//! Test support: a log built through the ledger API from real `policy` events (a directory,
//! consents, and decisions made by the default policy set over a `BTreeMap` state, as the server
//! makes them), and small in-process servers in front of such logs: the gRPC services the auditor
//! reads (transparency, audit, history) and C2SP tlog-tiles over HTTP. Both can switch to
//! another log, as a server restarted on a copied, forked data dir would.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use ledger::checkpoint::{Checkpoint, SignedCheckpoint};
use ledger::chunk::Record;
use ledger::completeness::{MapCommitment, SubjectRecord, map_key};
use ledger::hash::{Hash, hash_leaf};
use ledger::log::{Log, NewEntry};
use ledger::map::{self, MapKey, MemoryNodes, Terminal};
use ledger::store::MemoryStore;
use ledger::tile::{TilePath, parse_path};
use ledger::vrf::VrfSecretKey;
use ledger::{
    entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf},
    hash::{LeafIndex, TreeSize},
    note::{KeyName, NoteSigner},
};
use policy::domain::{ClinicianId, ConsentId, LeafHeader, Name};
use policy::{
    decision::{Decision, Request},
    directory::Directory,
    domain::{
        Action, CategoryName, Clinician, ClinicianRole, Consent, DataCategory, Department, Effect,
        Facility, FacilityId, Level, OrgId, Organization, Principal, Purpose, RecipientClass,
        SubjectId, Timestamp,
    },
    engine::PolicyEngine,
    event::Event,
    facts::Facts,
    state,
};
use proto::pb;
use tonic::{Request as GrpcRequest, Response, Status};

/// The log's origin and key name.
pub const ORIGIN: &str = "akashi.test/log";

/// The regulator token the test server accepts.
pub const REGULATOR_TOKEN: &str = "regulator-token";

/// The log's signer, from a fixed seed: checkpoints are the same on every run.
pub fn signer() -> NoteSigner {
    NoteSigner::from_seed(KeyName::new(ORIGIN).unwrap(), &[7; 32])
}

/// The verifier key text.
pub fn vkey() -> String {
    signer().verifier().to_vkey()
}

/// The log's VRF key, from a fixed seed: map keys are the same on every run.
pub fn vrf_key() -> VrfSecretKey {
    VrfSecretKey::from_seed([5; 32])
}

/// The patient id behind a test pseudonym: `p{n}` for [`subject`]`(n)`, `m{n}` for
/// [`many_subject`]`(n)`.
pub fn patient_of(pseudonym: &SubjectId) -> String {
    let text = pseudonym.as_str();
    let n = u8::from_str_radix(&text[..2], 16).unwrap();
    if subject(n) == *pseudonym {
        return format!("p{n}");
    }
    let n = u32::from_str_radix(&text[..8], 16).unwrap();
    assert_eq!(many_subject(n), *pseudonym, "not a test pseudonym");
    format!("m{n}")
}

/// A patient's pseudonym in the test world (`p1`, `p2`, ...).
pub fn subject(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

/// The pseudonym of patient number `n` of a large world.
pub fn many_subject(n: u32) -> SubjectId {
    let mut bytes = [0xAB; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    SubjectId::from_bytes(bytes)
}

/// A patient token as the server mints them: a JWT whose `sub` is the patient id. Only the
/// claims matter here; the test server does not check the signature.
pub fn patient_token(patient: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = serde_json::json!({ "role": "patient", "sub": patient });
    format!(
        "{}.{}.sig",
        b64.encode(br#"{"alg":"EdDSA"}"#),
        b64.encode(claims.to_string())
    )
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse("test", text).unwrap()
}

/// A log and the state derived from it, grown the way the server grows it: every event is
/// applied to the state and appended as one entry (public header, private body).
pub struct World {
    /// The log.
    pub log: Arc<Log>,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    engine: PolicyEngine,
    /// Bodies about a patient carry `subject_vrf_output`, as a log with a subject map writes.
    vrf_outputs: bool,
}

impl World {
    /// An empty log.
    pub fn empty() -> Self {
        Self {
            log: Arc::new(Log::open(Arc::new(MemoryStore::new()), signer()).unwrap()),
            kv: BTreeMap::new(),
            engine: PolicyEngine::default_set().unwrap(),
            vrf_outputs: false,
        }
    }

    /// A log with the default policy set, a directory and consents: `p1` consents to research
    /// by `univ-a` (pseudonymised) and to treatment by hospitals, `p2` opted out of research,
    /// `p3` has nothing on record.
    pub fn new() -> Self {
        Self::build(Self::empty())
    }

    /// [`World::new`] as a log with a subject map writes it: every body about a patient carries
    /// the patient's VRF output (serve it with [`Served::with_subject_map`]).
    pub fn with_subject_map() -> Self {
        Self::build(Self {
            vrf_outputs: true,
            ..Self::empty()
        })
    }

    fn build(mut world: Self) -> Self {
        world.apply(Event::ActivatePolicySet {
            policies: world.engine.text().to_owned(),
            hash: world.engine.hash(),
        });
        for (id, class) in [
            ("univ-a", RecipientClass::University),
            ("insurer-a", RecipientClass::PrivateInsurer),
            ("hosp-a", RecipientClass::Hospital),
            ("hosp-b", RecipientClass::Hospital),
        ] {
            world.apply(Event::UpsertOrganization(Organization {
                id: OrgId::new(id).unwrap(),
                name: Name::new(format!("The {id}")).unwrap(),
                recipient_class: class,
            }));
        }
        for id in ["hosp-a", "hosp-b"] {
            world.apply(Event::UpsertFacility(Facility {
                id: FacilityId::new(id).unwrap(),
                name: Name::new(format!("Facility {id}")).unwrap(),
                group: None,
                excluded_departments: vec![Department::new("psychiatry").unwrap()],
                excluded_patients: Vec::new(),
                recipient_class: None,
                header: None,
            }));
        }
        world.apply(Event::UpsertClinician(Clinician {
            id: ClinicianId::new("dr-b").unwrap(),
            facility: FacilityId::new("hosp-b").unwrap(),
            department: Department::new("internal").unwrap(),
            role: ClinicianRole::Doctor,
        }));
        world.apply(Event::GrantConsent(consent(
            "c1",
            1,
            &[Purpose::Research],
            &["univ-a"],
            &[],
            Level::Pseudonymized,
        )));
        world.apply(Event::GrantConsent(consent(
            "c2",
            1,
            &[Purpose::Treatment],
            &[],
            &[RecipientClass::Hospital],
            Level::Identified,
        )));
        world.apply(Event::RecordOptOut {
            subject: subject(2),
            purposes: vec![Purpose::Research],
        });
        world
    }

    /// The log's size.
    pub fn size(&self) -> u64 {
        self.log.size().get()
    }

    /// Applies `event` to the state and appends it; returns its index.
    pub fn apply(&mut self, event: Event) -> u64 {
        let index = self.size();
        state::apply(&mut self.kv, &event, index).unwrap();
        self.log
            .append_batch(&[self.frame(&event, index)], Vec::new())
            .unwrap();
        index
    }

    /// Frames an event as this world's server does.
    pub fn frame(&self, event: &Event, index: u64) -> NewEntry {
        if self.vrf_outputs {
            frame_with_vrf_output(event, index)
        } else {
            frame(event, index)
        }
    }

    /// Applies and appends events in batches of `batch` (one checkpoint per batch, as the
    /// server's group commit does under load). `make` builds each event from the state so far.
    pub fn apply_batched(
        &mut self,
        count: u64,
        batch: usize,
        mut make: impl FnMut(&Self, u64) -> Event,
    ) {
        let mut entries = Vec::with_capacity(batch);
        for _ in 0..count {
            let index = self.size() + entries.len() as u64;
            let event = make(self, index);
            state::apply(&mut self.kv, &event, index).unwrap();
            entries.push(self.frame(&event, index));
            if entries.len() == batch {
                self.log.append_batch(&entries, Vec::new()).unwrap();
                entries.clear();
            }
        }
        if !entries.is_empty() {
            self.log.append_batch(&entries, Vec::new()).unwrap();
        }
    }

    /// A large, realistic mix: for each of `count` entries, a consent grant for a new patient
    /// one time in ten, otherwise a decision about one of the patients so far (research, allowed
    /// or denied by their consent), in batches of `batch`.
    pub fn grow_realistic(&mut self, count: u64, batch: usize) {
        let mut patients = 0u32;
        self.apply_batched(count, batch, |world, index| {
            if index % 10 == 0 || patients == 0 {
                patients += 1;
                let mut grant = consent(
                    "c",
                    1,
                    &[Purpose::Research],
                    &["univ-a"],
                    &[],
                    Level::Pseudonymized,
                );
                grant.id = ConsentId::new(format!("bulk-{patients}")).unwrap();
                // Sequenced among the decisions, as the server would date it.
                grant.granted_at = ts("2026-06-01T12:00:00Z");
                grant.subject = many_subject(patients);
                return Event::GrantConsent(grant);
            }
            let patient = (index as u32).wrapping_mul(2_654_435_761) % patients + 1;
            let level = if index % 3 == 0 {
                Level::Identified
            } else {
                Level::Pseudonymized
            };
            let mut request = org_request("univ-a", 1, Purpose::Research, level);
            request.subject = Some(many_subject(patient));
            world.decision_event(request)
        });
    }

    /// The decision event the server would log for `request` now (not appended).
    pub fn decision_event(&self, request: Request) -> Event {
        let directory = Directory::load(&self.kv).unwrap();
        let now = ts("2026-06-01T12:00:00Z");
        let decision = self
            .engine
            .decide_kv(&request, &directory, &self.kv, now)
            .unwrap();
        let recipient = Facts::gather(&directory, &self.kv, &request)
            .unwrap()
            .recipient();
        let subject_prev = request
            .subject
            .as_ref()
            .and_then(|s| state::subject_head(&self.kv, s).unwrap())
            .map(|h| h.last_index);
        Event::Decision {
            request,
            time: now,
            decision,
            policy_set_hash: self.engine.hash(),
            subject_prev,
            recipient,
            header: Some(LeafHeader::V2),
        }
    }

    /// Decides `request` and logs the decision; returns its index and effect.
    pub fn decide(&mut self, request: Request) -> (u64, Effect) {
        let event = self.decision_event(request);
        let Event::Decision { decision, .. } = &event else {
            unreachable!()
        };
        let effect = decision.effect;
        (self.apply(event), effect)
    }

    /// A mix of decisions over the three patients: allows and denies, a revocation between two
    /// decisions of the same patient. Returns the indices of the decisions.
    pub fn decisions(&mut self) -> Vec<u64> {
        use Purpose::{Insurance, Research};
        let before = [
            org_request("univ-a", 1, Research, Level::Pseudonymized),
            org_request("univ-a", 3, Research, Level::Pseudonymized),
            org_request("univ-a", 2, Research, Level::Anonymized),
            org_request("univ-a", 3, Research, Level::Anonymized),
            org_request("insurer-a", 1, Insurance, Level::Identified),
            clinician_view("dr-b", 1, "hosp-a", "internal"),
            clinician_view("dr-b", 1, "hosp-a", "psychiatry"),
        ];
        let mut out: Vec<u64> = before.into_iter().map(|r| self.decide(r).0).collect();
        self.apply(Event::RevokeConsent {
            subject: subject(1),
            consent_id: ConsentId::new("c1").unwrap(),
            // The server sets it to the sequencing time.
            revoked_at: Some(ts("2026-06-01T12:00:00Z")),
        });
        out.push(
            self.decide(org_request("univ-a", 1, Research, Level::Pseudonymized))
                .0,
        );
        out
    }
}

/// An organisation's secondary-use request about patient `n`.
pub fn org_request(org: &str, n: u8, purpose: Purpose, level: Level) -> Request {
    Request {
        principal: Principal::Organization(OrgId::new(org).unwrap()),
        action: Action::SecondaryUse,
        subject: Some(subject(n)),
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: None,
        source_department: None,
        purpose,
        level,
        cohort_size: None,
    }
}

/// A clinician viewing patient `n`'s records held by another facility.
pub fn clinician_view(clinician: &str, n: u8, facility: &str, department: &str) -> Request {
    Request {
        principal: Principal::Clinician(ClinicianId::new(clinician).unwrap()),
        action: Action::ViewRecord,
        subject: Some(subject(n)),
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: Some(FacilityId::new(facility).unwrap()),
        source_department: Some(Department::new(department).unwrap()),
        purpose: Purpose::Treatment,
        level: Level::Identified,
        cohort_size: None,
    }
}

fn consent(
    id: &str,
    n: u8,
    purposes: &[Purpose],
    recipients: &[&str],
    classes: &[RecipientClass],
    max_level: Level,
) -> Consent {
    Consent {
        id: ConsentId::new(id).unwrap(),
        subject: subject(n),
        purposes: purposes.to_vec(),
        data_categories: vec![DataCategory::General],
        recipients: recipients.iter().map(|r| OrgId::new(*r).unwrap()).collect(),
        recipient_classes: classes.to_vec(),
        max_level,
        valid_from: None,
        valid_until: None,
        granted_at: ts("2026-01-01T00:00:00Z"),
        revoked_at: None,
    }
}

/// Frames an event as the server does (kind, day, public attributes; the event's JSON behind a
/// nonce), with a nonce derived from the index so that runs are reproducible.
pub fn frame(event: &Event, index: u64) -> NewEntry {
    frame_payload(event, index, event.to_json().unwrap())
}

/// [`frame`], with the patient's VRF output in the body of an event about a patient, as the
/// server of a log with a subject map writes it.
pub fn frame_with_vrf_output(event: &Event, index: u64) -> NewEntry {
    let Some(pseudonym) = event.subject() else {
        return frame(event, index);
    };
    let beta = vrf_key().output(patient_of(pseudonym).as_bytes());
    let mut json: serde_json::Value = serde_json::from_slice(&event.to_json().unwrap()).unwrap();
    json["subject_vrf_output"] = serde_json::json!(hex(&beta.0));
    frame_payload(event, index, serde_json::to_vec(&json).unwrap())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame_payload(event: &Event, index: u64, payload: Vec<u8>) -> NewEntry {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&index.to_be_bytes());
    let body = Body { nonce, payload };
    let attributes = event
        .public_attributes()
        .into_iter()
        .map(|(n, v)| (AttrName::new(n).unwrap(), AttrValue::new(&v).unwrap()))
        .collect();
    // The server dates a leaf by its sequencing time, which the body states for decisions,
    // grants and revocations; other events carry no time, and get the fixtures' first day (the
    // worlds here set up their directory before anything timed, so days stay in order).
    let day = event.sequenced_at().map_or_else(
        || Day::parse("2026-01-01").unwrap(),
        |t| Day::from_unix_seconds(t.unix_millis().div_euclid(1000)).unwrap(),
    );
    let leaf = Leaf::new(
        EntryKind::new(event.kind()).unwrap(),
        day,
        attributes,
        body.commitment(),
    )
    .unwrap();
    NewEntry {
        leaf,
        body,
        seal: None,
    }
}

/// Flips a decision's effect, keeping everything else (a deliberately wrong decision entry with
/// a valid commitment and a header that agrees with its body).
pub fn flipped(event: Event) -> Event {
    match event {
        Event::Decision {
            request,
            time,
            mut decision,
            policy_set_hash,
            subject_prev,
            recipient,
            header,
        } => {
            decision = Decision {
                effect: match decision.effect {
                    Effect::Allow => Effect::Deny,
                    Effect::Deny => Effect::Allow,
                },
                ..decision
            };
            Event::Decision {
                request,
                time,
                decision,
                policy_set_hash,
                subject_prev,
                recipient,
                header,
            }
        }
        other => other,
    }
}

/// A log of `n` plain test entries (no events), in batches.
pub fn plain_log(n: u64, batch: u64, tag: &str) -> Arc<Log> {
    let log = Arc::new(Log::open(Arc::new(MemoryStore::new()), signer()).unwrap());
    append_plain(&log, 0..n, batch, tag);
    log
}

/// Appends plain test entries `range` in batches.
pub fn append_plain(log: &Log, range: std::ops::Range<u64>, batch: u64, tag: &str) {
    let entries: Vec<NewEntry> = range
        .map(|i| {
            let body = Body {
                nonce: [(i % 251) as u8; 16],
                payload: format!("{tag} {i}").into_bytes(),
            };
            let leaf = Leaf::new(
                EntryKind::new("test.entry").unwrap(),
                Day::parse("2026-06-01").unwrap(),
                vec![(
                    AttrName::new("n").unwrap(),
                    AttrValue::new(&i.to_string()).unwrap(),
                )],
                body.commitment(),
            )
            .unwrap();
            NewEntry {
                leaf,
                body,
                seal: None,
            }
        })
        .collect();
    for chunk in entries.chunks(batch as usize) {
        log.append_batch(chunk, Vec::new()).unwrap();
    }
}

/// The subject map of a log's first `size` entries, as its server keeps it: each patient's
/// record under their VRF-derived key (patients from the bodies' events; erased bodies are
/// skipped, as the test server keeps no state).
pub struct SubjectMap {
    /// The map's nodes.
    pub nodes: MemoryNodes,
    /// Its root.
    pub root: Hash,
    /// Each key's record.
    pub records: BTreeMap<MapKey, SubjectRecord>,
}

/// The store prefix of the test map.
const MAP_PREFIX: &[u8] = b"m/";

impl SubjectMap {
    /// The map of `log`'s first `size` entries.
    pub fn of(log: &Log, size: u64) -> Self {
        let mut map = Self {
            nodes: MemoryNodes::default(),
            root: map::EMPTY,
            records: BTreeMap::new(),
        };
        for i in 0..size {
            let Record::Present(body) = log.body(LeafIndex(i)).unwrap() else {
                continue;
            };
            let Ok(event) = Event::from_json(&body[16..]) else {
                continue;
            };
            let Some(pseudonym) = event.subject() else {
                continue;
            };
            let beta = vrf_key().output(patient_of(pseudonym).as_bytes());
            let key = map_key(&beta);
            let leaf_hash = hash_leaf(&log.leaves(LeafIndex(i), 1).unwrap()[0]);
            let record = match map.records.get(&key) {
                Some(record) => record.then(i, &leaf_hash),
                None => SubjectRecord::first(&beta, i, &leaf_hash),
            };
            map.records.insert(key, record);
            map.root = map::update(&mut map.nodes, MAP_PREFIX, &key, &record.value_hash()).unwrap();
        }
        map
    }

    /// The commitment a checkpoint carries.
    pub fn commitment(&self) -> MapCommitment {
        MapCommitment {
            vrf_key: vrf_key().public().to_bytes(),
            root: self.root,
        }
    }

    /// `patient`'s completeness proof in this map.
    pub fn completeness(&self, patient: &str) -> pb::SubjectCompleteness {
        let (vrf_proof, beta) = vrf_key().prove(patient.as_bytes());
        let key = map_key(&beta);
        let (proof, root) = map::prove(&self.nodes, MAP_PREFIX, &key).unwrap();
        assert_eq!(root, self.root);
        let mut out = pb::SubjectCompleteness {
            vrf_proof: vrf_proof.to_bytes().to_vec(),
            map_siblings: proof.siblings.iter().map(|h| h.0.to_vec()).collect(),
            ..Default::default()
        };
        if let Some(record) = self.records.get(&key) {
            out.count = record.count;
            out.first_index = record.first;
            out.last_index = record.last;
            out.chain_head = record.head.0.to_vec();
        }
        // The leaf the path ends at, as the server sends it: the patient's own for a record.
        if let Terminal::Leaf { key, value } = proof.terminal {
            out.leaf_key = key.to_vec();
            out.leaf_value = value.0.to_vec();
        }
        out
    }
}

/// `note` signed again with `commitment`'s subject-map line added (none: `note` as it is).
pub fn with_map_line(note: &str, commitment: Option<&MapCommitment>) -> String {
    let Some(commitment) = commitment else {
        return note.to_owned();
    };
    let text = ledger::note::parse_note(note).unwrap().text;
    let mut checkpoint = Checkpoint::parse(&text).unwrap();
    checkpoint.extensions.push(commitment.to_line());
    SignedCheckpoint::sign(checkpoint, &signer())
        .unwrap()
        .into_note()
}

/// The tree size of a checkpoint note.
pub fn note_size(note: &str) -> u64 {
    let text = ledger::note::parse_note(note).unwrap().text;
    Checkpoint::parse(&text).unwrap().size.get()
}

/// How a server with a subject map serves it, and how it cheats.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapServing {
    /// Checkpoints carry the map's line and histories its proof.
    pub enabled: bool,
    /// Checkpoints sign the map root as of this size (the log signs a stale map), and histories
    /// carry proofs from that map.
    pub stale_map: Option<u64>,
    /// Histories carry the record and proof as of this size against the current root.
    pub stale_proof: Option<u64>,
    /// Histories carry no completeness proof.
    pub omit_proof: bool,
}

/// What the in-process servers serve, shared so that a test can switch logs.
#[derive(Clone)]
pub struct Served {
    log: Arc<RwLock<Arc<Log>>>,
    subjects: BTreeMap<String, SubjectId>,
    tampered_bodies: Arc<Mutex<HashSet<u64>>>,
    blank_bodies: Arc<Mutex<HashSet<u64>>>,
    withheld: Arc<Mutex<HashSet<u64>>>,
    map: Arc<Mutex<MapServing>>,
}

impl Served {
    /// Serves `log`; patients `p1`..`p19` are `subject(1)`..`subject(19)`.
    pub fn new(log: Arc<Log>) -> Self {
        Self {
            log: Arc::new(RwLock::new(log)),
            subjects: (1..20u8).map(|n| (format!("p{n}"), subject(n))).collect(),
            tampered_bodies: Arc::default(),
            blank_bodies: Arc::default(),
            withheld: Arc::default(),
            map: Arc::default(),
        }
    }

    /// Serves a subject map: every checkpoint with its line, every history with its proof.
    pub fn with_subject_map(self) -> Self {
        self.map.lock().unwrap().enabled = true;
        self
    }

    /// Changes how the subject map is served.
    pub fn map_serving(&self, change: impl FnOnce(&mut MapServing)) {
        change(&mut self.map.lock().unwrap());
    }

    /// `note` as this server signs it: with the subject map's line of its size when it serves a
    /// map.
    pub fn sign(&self, log: &Log, note: &str) -> String {
        let serving = *self.map.lock().unwrap();
        if !serving.enabled {
            return note.to_owned();
        }
        let size = note_size(note);
        let map = SubjectMap::of(log, serving.stale_map.unwrap_or(size).min(size));
        with_map_line(note, Some(&map.commitment()))
    }

    /// The history response this server gives (as the gRPC method does, without the token).
    pub fn history_response(
        &self,
        r: &pb::GetSubjectHistoryRequest,
    ) -> Result<pb::GetSubjectHistoryResponse, Status> {
        let subject = self
            .subjects
            .get(&r.patient_id)
            .ok_or_else(|| Status::not_found("patient"))?;
        let log = self.log();
        let checkpoint = log.checkpoint();
        let size = checkpoint.checkpoint().size;
        // The patient's entries, from the leaves' bodies (the test server keeps no state).
        let mut indices = Vec::new();
        for i in 0..size.get() {
            let Record::Present(body) = log.body(LeafIndex(i)).unwrap() else {
                continue;
            };
            let Ok(event) = Event::from_json(&body[16..]) else {
                continue;
            };
            if event.subject() == Some(subject) && !self.withheld.lock().unwrap().contains(&i) {
                indices.push(i);
            }
        }
        let indices: Vec<u64> = indices
            .into_iter()
            .filter(|i| r.after_index.is_none_or(|a| *i > a))
            .collect();
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        let more = indices.len() > limit;
        let mut entries = Vec::new();
        for index in indices.into_iter().take(limit) {
            let leaf = log.leaves(LeafIndex(index), 1).unwrap().remove(0);
            let (body, redacted) = self.body(index, log.body(LeafIndex(index)).unwrap());
            let proof = log.inclusion_proof(LeafIndex(index), size).unwrap();
            entries.push(pb::HistoryEntry {
                leaf_index: index,
                leaf,
                body,
                inclusion_proof: proof.path.iter().map(|h| h.0.to_vec()).collect(),
                redacted,
                unacknowledged: false,
                review_required: false,
            });
        }
        let serving = *self.map.lock().unwrap();
        let completeness = (serving.enabled && !serving.omit_proof).then(|| {
            let at = serving
                .stale_proof
                .or(serving.stale_map)
                .unwrap_or(size.get());
            SubjectMap::of(&log, at).completeness(&r.patient_id)
        });
        Ok(pb::GetSubjectHistoryResponse {
            checkpoint: self.sign(&log, checkpoint.note()),
            entries,
            tree_size: size.get(),
            more,
            completeness,
        })
    }

    /// Serves another log from now on.
    pub fn switch(&self, log: Arc<Log>) {
        *self.log.write().unwrap() = log;
    }

    /// Serves entry `index` with one body byte changed.
    pub fn tamper_body(&self, index: u64) {
        self.tampered_bodies.lock().unwrap().insert(index);
    }

    /// Serves entry `index` with no body, without saying it was erased.
    pub fn blank_body(&self, index: u64) {
        self.blank_bodies.lock().unwrap().insert(index);
    }

    /// Leaves entry `index` out of histories.
    pub fn withhold(&self, index: u64) {
        self.withheld.lock().unwrap().insert(index);
    }

    fn log(&self) -> Arc<Log> {
        self.log.read().unwrap().clone()
    }

    fn body(&self, index: u64, record: Record) -> (Vec<u8>, bool) {
        match record {
            Record::Present(_) if self.blank_bodies.lock().unwrap().contains(&index) => {
                (Vec::new(), false)
            }
            Record::Present(mut body) => {
                if self.tampered_bodies.lock().unwrap().contains(&index) {
                    let last = body.len() - 1;
                    body[last] ^= 1;
                }
                (body, false)
            }
            Record::Redacted => (Vec::new(), true),
        }
    }
}

fn status(err: impl std::fmt::Display) -> Status {
    Status::out_of_range(err.to_string())
}

fn check_token<T>(request: &GrpcRequest<T>, allowed: &[&str]) -> Result<(), Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("no token"))?;
    if allowed.contains(&header) {
        Ok(())
    } else {
        Err(Status::permission_denied("wrong token"))
    }
}

#[tonic::async_trait]
impl pb::transparency_service_server::TransparencyService for Served {
    async fn get_checkpoint(
        &self,
        _: GrpcRequest<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        let log = self.log();
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: self.sign(&log, log.checkpoint().note()),
            verifier_key: vkey(),
            ..Default::default()
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: GrpcRequest<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let r = request.into_inner();
        let proof = self
            .log()
            .inclusion_proof(LeafIndex(r.leaf_index), TreeSize(r.tree_size))
            .map_err(status)?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            leaf_index: r.leaf_index,
            tree_size: r.tree_size,
            path: proof.path.iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: GrpcRequest<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let r = request.into_inner();
        let proof = self
            .log()
            .consistency_proof(TreeSize(r.old_size), TreeSize(r.new_size))
            .map_err(status)?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            old_size: r.old_size,
            new_size: r.new_size,
            path: proof.path.iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    async fn get_leaves(
        &self,
        request: GrpcRequest<pb::GetLeavesRequest>,
    ) -> Result<Response<pb::GetLeavesResponse>, Status> {
        let r = request.into_inner();
        let leaves = self
            .log()
            .leaves(LeafIndex(r.start), r.count)
            .map_err(status)?;
        Ok(Response::new(pb::GetLeavesResponse { leaves }))
    }

    async fn get_public_body(
        &self,
        _: GrpcRequest<pb::GetPublicBodyRequest>,
    ) -> Result<Response<pb::GetPublicBodyResponse>, Status> {
        Err(Status::unimplemented("not in the test server"))
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Served {
    async fn get_entries(
        &self,
        request: GrpcRequest<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        check_token(&request, &[REGULATOR_TOKEN])?;
        let r = request.into_inner();
        let log = self.log();
        let start = LeafIndex(r.start);
        let leaves = log
            .leaves(start, u64::from(r.count.min(1024)))
            .map_err(status)?;
        let bodies = log.bodies(start, leaves.len() as u64).map_err(status)?;
        let entries = leaves
            .into_iter()
            .zip(bodies)
            .enumerate()
            .map(|(offset, (leaf, body))| {
                let leaf_index = r.start + offset as u64;
                let (body, redacted) = self.body(leaf_index, body);
                pb::AuditEntry {
                    leaf_index,
                    leaf,
                    body,
                    redacted,
                    erased_by: None,
                }
            })
            .collect();
        Ok(Response::new(pb::GetEntriesResponse { entries }))
    }

    async fn list_checkpoints(
        &self,
        request: GrpcRequest<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        check_token(&request, &[REGULATOR_TOKEN])?;
        let r = request.into_inner();
        let log = self.log();
        let checkpoints = log
            .checkpoints(
                TreeSize(r.from_size),
                TreeSize(u64::MAX),
                r.limit.min(1024) as usize,
            )
            .map_err(status)?
            .iter()
            .map(|note| self.sign(&log, note))
            .collect();
        Ok(Response::new(pb::ListCheckpointsResponse { checkpoints }))
    }
}

#[tonic::async_trait]
impl pb::history_service_server::HistoryService for Served {
    async fn get_subject_history(
        &self,
        request: GrpcRequest<pb::GetSubjectHistoryRequest>,
    ) -> Result<Response<pb::GetSubjectHistoryResponse>, Status> {
        let patient = request.get_ref().patient_id.clone();
        check_token(&request, &[REGULATOR_TOKEN, &patient_token(&patient)])?;
        self.history_response(&request.into_inner())
            .map(Response::new)
    }
}

/// Starts the gRPC services on 127.0.0.1:0 in the background of the current runtime; returns
/// the address.
pub async fn start_grpc(served: Served) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                pb::transparency_service_server::TransparencyServiceServer::new(served.clone()),
            )
            .add_service(pb::audit_service_server::AuditServiceServer::new(
                served.clone(),
            ))
            .add_service(pb::history_service_server::HistoryServiceServer::new(
                served,
            ))
            .serve_with_incoming(incoming),
    );
    addr
}

/// Starts a C2SP tlog-tiles HTTP server (`/checkpoint`, `/tile/...`) on 127.0.0.1:0 in a
/// thread; returns its URL.
pub fn start_http(served: Served) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the whole request head before answering, so that closing does not reset the
            // connection under unread bytes.
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let log = served.log();
            let found = if path == "checkpoint" {
                Some(log.checkpoint().note().to_owned().into_bytes())
            } else {
                match parse_path(path) {
                    Ok(TilePath::Hash(tile)) => log
                        .tile(tile.level, tile.index, usize::from(tile.width))
                        .unwrap(),
                    _ => None,
                }
            };
            let response = match found {
                Some(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    url
}

/// A receipt of entry `index` against the log's latest checkpoint, as grpcurl prints it.
pub fn receipt_json(log: &Log, index: u64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let leaf = log.leaves(LeafIndex(index), 1).unwrap().remove(0);
    let receipt = log
        .receipt(
            LeafIndex(index),
            ledger::hash::hash_leaf(&leaf),
            log.checkpoint(),
        )
        .unwrap();
    let value = serde_json::json!({
        "leafIndex": index.to_string(),
        "leafHash": b64.encode(receipt.leaf_hash.0),
        "checkpoint": receipt.checkpoint.note(),
        "inclusionProof": receipt
            .inclusion_proof
            .path
            .iter()
            .map(|h| b64.encode(h.0))
            .collect::<Vec<_>>(),
        "treeSize": receipt.checkpoint.checkpoint().size.get().to_string(),
    });
    serde_json::to_string_pretty(&value).unwrap()
}

/// The `Authorize` response of decision entry `index` as grpcurl prints it: the answer the
/// server gave (from the logged event) and its receipt, carrying the leaf as the server's does.
/// Fields at their default value are left out, as proto3 JSON does.
pub fn authorize_response_json(log: &Log, index: u64) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Record::Present(body) = log.body(LeafIndex(index)).unwrap() else {
        unreachable!()
    };
    let Event::Decision { decision, .. } = Event::from_json(&body[16..]).unwrap() else {
        panic!("entry {index} is not a decision")
    };
    let mut receipt: serde_json::Value = serde_json::from_str(&receipt_json(log, index)).unwrap();
    let leaf = log.leaves(LeafIndex(index), 1).unwrap().remove(0);
    receipt["leaf"] = serde_json::json!(b64.encode(leaf));
    let mut response = serde_json::json!({
        "decision": decision.effect.to_string(),
        "receipt": receipt,
    });
    if !decision.determining_policies.is_empty() {
        response["determiningPolicies"] = serde_json::json!(decision.determining_policies);
    }
    if !decision.reasons.is_empty() {
        response["reasons"] = serde_json::json!(decision.reasons);
    }
    if decision.review_required {
        response["reviewRequired"] = serde_json::json!(true);
    }
    response
}

/// A `GetSubjectHistory` response as grpcurl prints it (and as `history --save` writes it).
pub fn history_json(response: &pb::GetSubjectHistoryResponse) -> serde_json::Value {
    auditor::cli::saved::history_response_json(response)
}

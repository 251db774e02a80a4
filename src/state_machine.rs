//! The server's state machine: how each command becomes a log entry, run by the ledger's
//! sequencer on its writer thread, one command at a time, in log order.
//!
//! Every command is turned into a [`policy::event::Event`] against the state as of the entries
//! before it (so an `Authorize` sees every write sequenced before it, including earlier ones of its
//! own batch), applied to the derived state through [`policy::state::apply`] (the same code the
//! regulator's replay runs), and framed as a ledger entry: a public leaf with the event's kind, its
//! day and its public attributes, committing to a private body that holds the event's JSON behind a
//! random nonce. A command that fails any check appends nothing. Compiled policy sets are cached by
//! hash; the cache holds only sets that were activated in the log, and a set missing from it (after
//! a restart) is compiled from the text the state holds. This module does not parse gRPC messages
//! (see `service`) and does not decide anything itself (the `policy` crate does). **Prepared
//! decisions.** Gathering facts and evaluating Cedar are most of a decision's cost, and the writer
//! thread is the one serial resource. So the Authorize handler first *prepares* the decision on its
//! own task ([`Decisions::prepare`]) against the committed state: it notes the tree size it read
//! at, every state key it read, the policy set and directory version it used, and the span of time
//! in which the decision cannot change ([`policy::facts::StableSpan`]). The writer takes a prepared
//! decision only if, at the command's own position in the log, the same policy set is active, the
//! directory is at the same version, none of those keys was written since, and the sequencing time
//! lies in the span; then the decision is exactly the one the writer would have made (decisions are
//! a pure function of those inputs), and the writer only frames and logs it. Otherwise the writer
//! decides itself. Either way a decision sees every write sequenced before it, and the regulator's
//! replay re-derives it the same way.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use ledger::log::Log;
use ledger::vrf::VrfOutput;
use ledger::{
    entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf},
    log::NewEntry,
    sequencer::{Applied, StateMachine, Tx},
};
use policy::{
    decision::{Decision, PolicySetHash, Recipient, Request},
    directory::Directory,
    domain::{
        Action, Consent, ConsentId, Effect, LeafHeader, Level, Purpose, SubjectId, Timestamp,
    },
    engine::PolicyEngine,
    event::Event,
    facts::{Facts, StableSpan},
    state::{self, StateError},
    state::{KvError, KvRead, KvWrite},
    whatif::AnalysisId,
};

use crate::error::{Error, StartError};
use crate::idempotency::{Recorded, RecordedOutput, RequestKey};
use crate::subject_map::{MapWriter, SubjectMapKey};

/// What a service asks the sequencer to log.
#[derive(Debug)]
pub enum Command {
    /// A directory change (organisation, facility, facility group, clinician, emergency,
    /// deactivation).
    Directory(Event),
    /// A consent grant; its `granted_at` is set to the sequencing time.
    Grant(Consent),
    /// A revocation.
    Revoke {
        /// The patient.
        subject: SubjectId,
        /// The consent.
        consent_id: ConsentId,
    },
    /// The patient opts out of these purposes, in addition to earlier opt-outs (or, with
    /// `replace`, instead of them). The logged event holds the resulting set.
    OptOut {
        /// The patient.
        subject: SubjectId,
        /// The purposes.
        purposes: Vec<Purpose>,
        /// Whether `purposes` replaces the earlier opt-outs rather than adding to them.
        replace: bool,
    },
    /// Entries about a patient are erased (see [`crate::erasure`]).
    Erase {
        /// The patient.
        subject: SubjectId,
        /// The entries named, ascending and distinct; empty: every entry about the patient.
        indices: Vec<u64>,
        /// Why.
        reason: String,
        /// A regulator erases entries under the retention period.
        force: bool,
        /// The legal retention period, in days from an entry's day.
        retention_days: u32,
    },
    /// A policy set, compiled and validated off the writer thread, becomes active.
    Activate(Arc<PolicyEngine>),
    /// A policy set, compiled and validated off the writer thread, waits for a regulator's
    /// approval (two-person rule).
    Propose(Arc<PolicyEngine>),
    /// A regulator approves a waiting policy set (compiled off the writer thread from the
    /// pending text), which becomes active.
    Approve {
        /// The set.
        engine: Arc<PolicyEngine>,
        /// The analysis the regulator saw.
        analysis: AnalysisId,
        /// Its window's first leaf index.
        from: u64,
        /// Its window's end (exclusive).
        to: u64,
    },
    /// A pending policy set is taken off the list.
    Reject(PolicySetHash),
    /// An access decision to make and log, perhaps prepared off the writer thread.
    Authorize(Request, Option<Box<Prepared>>),
}

/// A command as the sequencer carries it: the command, and the VRF output of the patient it is
/// about when the edge computed one (only for a patient the state has no subject-map record of;
/// see `crate::subject_map`).
#[derive(Debug)]
pub struct Submission {
    /// The command.
    pub command: Command,
    /// The patient's VRF output, if computed.
    pub subject_vrf: Option<VrfOutput>,
    /// The caller's request id, when the write is to be idempotent (`crate::idempotency`).
    pub request: Option<RequestKey>,
    /// When this command heads a group logged all or nothing (a cohort's decisions), how many
    /// commands the group holds: its request record says so, so that a retry gets them all.
    pub group_len: u32,
}

impl From<Command> for Submission {
    fn from(command: Command) -> Self {
        Self {
            command,
            subject_vrf: None,
            request: None,
            group_len: 0,
        }
    }
}

/// A decision prepared off the writer thread by [`Decisions::prepare`], with everything the
/// writer needs to tell whether it still holds at the command's position in the log.
#[derive(Debug)]
pub struct Prepared {
    decision: Decision,
    recipient: Option<Recipient>,
    policy_set_hash: PolicySetHash,
    directory_version: Option<u64>,
    /// The tree size of the committed state the keys were read at (read before them).
    read_at: u64,
    /// Every state key the facts were gathered from.
    reads: Vec<Vec<u8>>,
    span: StableSpan,
    /// The keys logging the decision reads besides the facts (the patient's head, listing page
    /// and, when the log keeps one, subject-map record) with their values read after `read_at`
    /// (as of it or a later batch), offered to the writer (`Tx::prime`), which keeps each only
    /// if no batch after `read_at` wrote its key, so that it need not read them from the store.
    prefetched: state::KeyValues,
}

impl Prepared {
    /// Whether the patient had a subject-map record when the decision was prepared (`None`: it
    /// was not read, the log keeping no map). A record, once written, is never removed, so a
    /// `Some(true)` stays true.
    pub(crate) fn map_record_known(&self, subject: &SubjectId) -> Option<bool> {
        let key = crate::subject_map::record_key(subject);
        self.prefetched
            .iter()
            .find(|(read, _)| *read == key)
            .map(|(_, value)| value.is_some())
    }

    /// Whether the prepared decision allows.
    pub fn allows(&self) -> bool {
        self.decision.effect == Effect::Allow
    }
}

/// Where `Authorize` calls spend their time in the server, for `/metrics`: whether a tail comes
/// from before the writer or from the writer and the syncs behind it.
#[derive(Debug)]
pub(crate) struct AuthorizeTimes {
    /// From the handler's start to the decision prepared (parsing, checks, Cedar).
    pub(crate) prepare: crate::metrics::Histogram,
    /// From handing the command to the writer to its receipt built: the queue, the batch, the
    /// syncs and the inclusion proof.
    pub(crate) sequenced: crate::metrics::Histogram,
}

impl Default for AuthorizeTimes {
    fn default() -> Self {
        Self {
            prepare: crate::metrics::Histogram::new(crate::metrics::LATENCY_BUCKETS),
            sequenced: crate::metrics::Histogram::new(crate::metrics::LATENCY_BUCKETS),
        }
    }
}

/// What the writer shares with the services so that they can prepare decisions: the compiled
/// policy sets, the directory as of the last committed batch, and how prepared decisions fared.
#[derive(Debug)]
pub struct Decisions {
    engines: RwLock<HashMap<PolicySetHash, Arc<PolicyEngine>>>,
    /// INVARIANT: only ever a directory of a committed state, flushed.
    directory: RwLock<Arc<Directory>>,
    accepted: AtomicU64,
    redone: AtomicU64,
    answered: DecisionCounts,
    times: AuthorizeTimes,
    /// Whether the log keeps a subject map (then preparation reads the patient's record too).
    subject_map: std::sync::atomic::AtomicBool,
}

impl Decisions {
    fn new(directory: &Directory) -> Self {
        Self {
            engines: RwLock::new(HashMap::new()),
            directory: RwLock::new(Arc::new(directory.clone())),
            accepted: AtomicU64::new(0),
            redone: AtomicU64::new(0),
            answered: DecisionCounts::new(),
            times: AuthorizeTimes::default(),
            subject_map: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Decisions answered (logged and durable), by their public fields.
    pub fn answered(&self) -> &DecisionCounts {
        &self.answered
    }

    /// Where `Authorize` calls spent their time, for `/metrics`.
    pub(crate) fn times(&self) -> &AuthorizeTimes {
        &self.times
    }

    /// Prepares the decision for `request` against `log`'s committed state, or returns `None`
    /// when it cannot (no compiled policy set yet, a store error): the writer then decides.
    /// Never wrong, only possibly stale: the writer checks it before using it.
    pub fn prepare(&self, log: &Log, request: &Request) -> Option<Box<Prepared>> {
        // The size first: every key read afterwards holds its value at this size or a later one.
        let read_at = log.size().get();
        let kv = Recording {
            kv: LogKv(log),
            keys: RefCell::new(Vec::with_capacity(2)),
        };
        let policy_set_hash = state::active_policy_set_hash(&kv.kv).ok()??;
        let engine = self.engines.read().ok()?.get(&policy_set_hash)?.clone();
        let directory = self.directory.read().ok()?.clone();
        let facts = Facts::gather(&directory, &kv, request).ok()?;
        let now = Timestamp::now();
        let decision = engine.decide(request, &facts, &directory, now);
        // Read after `read_at` like the facts: the writer keeps a value only if no batch
        // committed since wrote its key.
        let prefetched = match &request.subject {
            Some(subject) => {
                let mut keys = state::subject_entry_reads(&kv.kv, subject).unwrap_or_default();
                // The key the entry is sealed under.
                let seal = crate::erasure::seal_key_name(subject);
                if let Ok(value) = log.state_get(&seal) {
                    keys.push((seal, value));
                }
                if self.subject_map.load(Ordering::Relaxed) {
                    let record = crate::subject_map::record_key(subject);
                    if let Ok(value) = log.state_get(&record) {
                        keys.push((record, value));
                    }
                }
                keys
            }
            None => Vec::new(),
        };
        Some(Box::new(Prepared {
            decision,
            recipient: facts.recipient(),
            policy_set_hash,
            directory_version: directory.version(),
            read_at,
            reads: kv.keys.into_inner(),
            span: facts.stable_span(now),
            prefetched,
        }))
    }

    /// Makes sure the active policy set of `log`'s committed state is compiled and cached, so
    /// that [`Decisions::prepare`] can prepare decisions (after a restart the writer compiles it
    /// at the first decision; a cohort of statistics needs it before). The set was activated in
    /// the log, which is all the cache requires.
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` when the state cannot be read; `INTERNAL` when no set is active or the active
    /// text no longer compiles.
    pub fn compile_active(&self, log: &Log) -> Result<(), Error> {
        let kv = LogKv(log);
        let Some(hash) = state::active_policy_set_hash(&kv).map_err(unavailable)? else {
            return Err(Error::Internal("no active policy set"));
        };
        if self.engine(&hash).is_some() {
            return Ok(());
        }
        let active = state::active_policy_set(&kv)
            .map_err(unavailable)?
            .ok_or(Error::Internal("no active policy set"))?;
        let engine = PolicyEngine::new(&active.policies)
            .map_err(|_| Error::Internal("the active policy set no longer compiles"))?;
        // Only the set the state names: a set activated after the read is compiled by the writer.
        if engine.hash() == hash {
            self.insert_engine(Arc::new(engine));
        }
        Ok(())
    }

    /// Prepared decisions the writer logged as they were.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Prepared decisions the writer made again because something they read had changed.
    pub fn redone(&self) -> u64 {
        self.redone.load(Ordering::Relaxed)
    }

    fn engine(&self, hash: &PolicySetHash) -> Option<Arc<PolicyEngine>> {
        self.engines.read().ok()?.get(hash).cloned()
    }

    fn insert_engine(&self, engine: Arc<PolicyEngine>) {
        if let Ok(mut engines) = self.engines.write() {
            engines.insert(engine.hash(), engine);
        }
    }

    fn clear_engines(&self) {
        if let Ok(mut engines) = self.engines.write() {
            engines.clear();
        }
    }

    fn directory_version(&self) -> Option<Option<u64>> {
        self.directory.read().ok().map(|d| d.version())
    }

    fn publish(&self, directory: &Directory) {
        if let Ok(mut published) = self.directory.write() {
            *published = Arc::new(directory.clone());
        }
    }
}

/// The committed state, remembering which keys were read.
struct Recording<'a> {
    kv: LogKv<'a>,
    keys: RefCell<Vec<Vec<u8>>>,
}

impl KvRead for Recording<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.keys.borrow_mut().push(key.to_vec());
        self.kv.get(key)
    }
}

/// What a logged command returns besides its receipt.
#[derive(Debug)]
pub enum Output {
    /// A directory change or consent event was logged.
    Logged,
    /// A consent was granted under this id.
    Granted(ConsentId),
    /// A policy set was activated.
    Activated(PolicySetHash),
    /// A policy set was proposed and waits for approval.
    Proposed(PolicySetHash),
    /// A decision was made and logged.
    Decided {
        /// The decision.
        decision: Box<Decision>,
        /// The entry's public leaf bytes, which the answer's receipt carries so that a verifier
        /// can check the answer against what was logged.
        leaf: Vec<u8>,
    },
}

/// akashi's domain state machine: the ledger's [`StateMachine`] for directory, consent, policy
/// and decision commands, applied one at a time in log order on the sequencer's writer thread.
pub struct DomainStateMachine {
    log: Arc<Log>,
    /// Compiled policy sets (shared with [`Decisions::prepare`]) and the published directory.
    shared: Arc<Decisions>,
    /// The directory as prebuilt Cedar entities, kept in step with the state entry by entry.
    directory: Directory,
    /// The subject map, when the log keeps one.
    map: Option<MapWriter>,
}

impl DomainStateMachine {
    /// A state machine over `log`'s committed state, with an empty policy cache.
    ///
    /// # Errors
    ///
    /// [`StartError::State`] when the state was written with another key layout or the directory
    /// cannot be loaded from it.
    pub fn new(log: Arc<Log>) -> Result<Self, StartError> {
        state::check_layout(&LogKv(&log)).map_err(StartError::State)?;
        let directory = Directory::load(&LogKv(&log)).map_err(StartError::State)?;
        let shared = Arc::new(Decisions::new(&directory));
        Ok(Self {
            log,
            shared,
            directory,
            map: None,
        })
    }

    /// The same state machine, keeping the subject map with `key` when the log keeps one (see
    /// [`MapWriter::open`]).
    ///
    /// # Errors
    ///
    /// [`StartError::SubjectMap`] when the log's map was built with another key or the key is
    /// missing.
    pub fn with_subject_map(mut self, key: Option<&SubjectMapKey>) -> Result<Self, StartError> {
        self.map = MapWriter::open(&self.log, key)?;
        self.shared
            .subject_map
            .store(self.map.is_some(), Ordering::Relaxed);
        Ok(self)
    }

    /// Whether entries update a subject map.
    pub fn keeps_subject_map(&self) -> bool {
        self.map.is_some()
    }

    /// What services need to prepare decisions off the writer thread.
    pub fn decisions(&self) -> Arc<Decisions> {
        self.shared.clone()
    }

    /// Brings the directory back to the committed state (after a failed batch, or when it is
    /// found out of step). If even that fails, decisions fail closed until it succeeds.
    fn reload_directory(&mut self) {
        match Directory::load(&LogKv(&self.log)) {
            Ok(directory) => self.directory = directory,
            Err(err) => {
                tracing::error!(cause = %err, "the directory cannot be reloaded");
                self.directory = Directory::empty();
            }
        }
    }

    fn event(
        &mut self,
        command: Command,
        kv: &TxKv<'_, '_>,
        now: Timestamp,
    ) -> Result<Event, Error> {
        Ok(match command {
            Command::Directory(event) => event,
            Command::Grant(mut consent) => {
                consent.granted_at = now;
                Event::GrantConsent(consent)
            }
            Command::Revoke {
                subject,
                consent_id,
            } => Event::RevokeConsent {
                subject,
                consent_id,
                revoked_at: Some(now),
            },
            Command::OptOut {
                subject,
                mut purposes,
                replace,
            } => {
                // The event states the whole resulting set, so replaying it needs no history
                // and the patient's earlier opt-outs are never lost by a later, narrower call.
                if !replace {
                    let earlier = state::consent_state(kv, &subject).map_err(unavailable)?;
                    purposes.extend(earlier.opt_outs);
                }
                purposes.sort_unstable();
                purposes.dedup();
                Event::RecordOptOut { subject, purposes }
            }
            Command::Activate(engine) => {
                let event = Event::ActivatePolicySet {
                    policies: engine.text().to_owned(),
                    hash: engine.hash(),
                };
                self.shared.insert_engine(engine);
                event
            }
            Command::Propose(engine) => Event::ProposePolicySet {
                policies: engine.text().to_owned(),
                hash: engine.hash(),
            },
            Command::Approve {
                engine,
                analysis,
                from,
                to,
            } => {
                let event = Event::ApprovePolicySet {
                    policies: engine.text().to_owned(),
                    hash: engine.hash(),
                    analysis,
                    analysis_from: from,
                    analysis_to: to,
                };
                self.shared.insert_engine(engine);
                event
            }
            Command::Reject(hash) => Event::RejectPolicySet { hash },
            Command::Erase {
                subject,
                indices,
                reason,
                force,
                retention_days,
            } => {
                let erasure = crate::erasure::Request {
                    subject,
                    indices,
                    reason,
                    force,
                    retention_days,
                };
                erasure.event(&self.log, kv, now)?
            }
            Command::Authorize(request, prepared) => self.decide(request, prepared, kv, now)?,
        })
    }

    /// Whether `prepared` is the decision the writer would make at this position and time.
    fn still_holds(prepared: &Prepared, tx: &Tx<'_>, now: Timestamp) -> Result<bool, StateError> {
        let kv = TxRead(tx);
        Ok(prepared.span.contains(now)
            && state::active_policy_set_hash(&kv)? == Some(prepared.policy_set_hash)
            && state::directory_version(&kv)? == prepared.directory_version
            && prepared
                .reads
                .iter()
                .all(|key| tx.unchanged_since(key, prepared.read_at)))
    }

    fn decide(
        &mut self,
        request: Request,
        prepared: Option<Box<Prepared>>,
        kv: &TxKv<'_, '_>,
        now: Timestamp,
    ) -> Result<Event, Error> {
        if let Some(prepared) = prepared {
            if Self::still_holds(&prepared, kv.0, now).map_err(unavailable)? {
                self.shared.accepted.fetch_add(1, Ordering::Relaxed);
                let Prepared {
                    decision,
                    recipient,
                    policy_set_hash,
                    ..
                } = *prepared;
                return Ok(Event::Decision {
                    subject_prev: subject_prev(kv, &request)?,
                    recipient,
                    request,
                    time: now,
                    decision,
                    policy_set_hash,
                    header: Some(LeafHeader::V2),
                });
            }
            self.shared.redone.fetch_add(1, Ordering::Relaxed);
        }
        // Fail closed: without a readable state and an active policy set there is no decision.
        let hash = state::active_policy_set_hash(kv)
            .map_err(unavailable)?
            .ok_or(Error::Internal("no active policy set"))?;
        let engine = match self.shared.engine(&hash) {
            Some(engine) => engine,
            None => {
                let active = state::active_policy_set(kv)
                    .map_err(unavailable)?
                    .ok_or(Error::Internal("no active policy set"))?;
                let engine =
                    Arc::new(PolicyEngine::new(&active.policies).map_err(|_| {
                        Error::Internal("the active policy set no longer compiles")
                    })?);
                self.shared.insert_engine(engine.clone());
                engine
            }
        };
        self.directory.flush().map_err(unavailable)?;
        let version = state::directory_version(kv).map_err(unavailable)?;
        if version != self.directory.version() {
            // Out of step (only after a failed reload): try the committed state, else refuse.
            self.reload_directory();
            if version != self.directory.version() {
                // The reload reads the store: when it keeps failing, the store is what is
                // unavailable, and the request may succeed later.
                return Err(Error::Unavailable(
                    "the directory could not be reloaded from the state".into(),
                ));
            }
        }
        let facts = Facts::gather(&self.directory, kv, &request).map_err(unavailable)?;
        let decision = engine.decide(&request, &facts, &self.directory, now);
        Ok(Event::Decision {
            subject_prev: subject_prev(kv, &request)?,
            recipient: facts.recipient(),
            request,
            time: now,
            decision,
            policy_set_hash: hash,
            header: Some(LeafHeader::V2),
        })
    }
}

/// The index of the patient's previous entry, which a decision about them links to.
fn subject_prev(kv: &TxKv<'_, '_>, request: &Request) -> Result<Option<u64>, Error> {
    Ok(match &request.subject {
        Some(subject) => state::subject_head(kv, subject)
            .map_err(unavailable)?
            .map(|head| head.last_index),
        None => None,
    })
}

impl StateMachine for DomainStateMachine {
    type Command = Submission;
    type Output = Output;
    type Rejection = Error;

    fn apply(&mut self, submission: Submission, tx: &mut Tx<'_>) -> Result<Applied<Output>, Error> {
        let Submission {
            mut command,
            subject_vrf,
            request,
            group_len,
        } = submission;
        if let Command::Authorize(_, Some(prepared)) = &mut command {
            let read_at = prepared.read_at;
            for (key, value) in std::mem::take(&mut prepared.prefetched) {
                tx.prime(key, value, read_at);
            }
        }
        let index = tx.index().get();
        let now = Timestamp::from_unix_millis(tx.time_millis())
            .ok_or(Error::Internal("the clock is outside 1970-9999"))?;
        let log = self.log.clone();
        let mut kv = TxKv(tx, &log);
        // A request id seen before (in this batch too) appends nothing: the caller gets the
        // first answer, or ALREADY_EXISTS for another request under the same id.
        if let Some(request) = &request
            && let Some(bytes) = kv.get(&request.state_key()).map_err(unavailable_kv)?
        {
            let recorded =
                Recorded::decode(&bytes).ok_or(Error::Internal("a request record is bad"))?;
            return Err(if recorded.digest == hex::encode(request.digest) {
                Error::Duplicate(Box::new(recorded))
            } else {
                Error::AlreadyExists("`request_id` was already used for another request".to_owned())
            });
        }
        let event = self.event(command, &kv, now)?;
        let beta = match (&self.map, event.subject()) {
            (Some(map), Some(subject)) => Some(map.output(kv.0, subject, subject_vrf.as_ref())?),
            _ => None,
        };
        // Framed first: an event that cannot become an entry is rejected before it changes
        // anything. The sequencer drops a rejected command's state writes, but not what the
        // in-memory directory took in, which the next committed batch would publish to
        // decisions without a log entry behind it.
        let mut entry = frame_with(&event, now, beta.as_ref())?;
        // The key first: the patient's consent-state record is sealed under it as it is written.
        let erasure = matches!(event, Event::EraseEntries { .. });
        let (seal, replaced) = match event.subject() {
            Some(subject) => crate::erasure::choose_key(&self.log, &mut kv, subject, erasure)?,
            None => (None, None),
        };
        entry.seal = seal;
        state::apply(&mut kv, &event, index).map_err(Error::from)?;
        if erasure {
            crate::erasure::record_erasure(&mut kv, &event, index, replaced)?;
        }
        // The state accepted it, so the directory does too (same checks); it takes effect at
        // the next decision's flush.
        self.directory.apply(&event, index).map_err(unavailable)?;
        if let (Some(map), Some(beta), Some(subject)) = (&mut self.map, &beta, event.subject()) {
            map.append(kv.0, subject, beta, index, &entry.leaf.encode())?;
        }
        let output = match &event {
            Event::GrantConsent(consent) => Output::Granted(consent.id.clone()),
            Event::ActivatePolicySet { hash, .. } | Event::ApprovePolicySet { hash, .. } => {
                Output::Activated(*hash)
            }
            Event::ProposePolicySet { hash, .. } => Output::Proposed(*hash),
            Event::Decision { decision, .. } => Output::Decided {
                decision: Box::new(decision.clone()),
                leaf: entry.leaf.encode(),
            },
            _ => Output::Logged,
        };
        if let Some(request) = &request {
            let recorded = Recorded {
                digest: hex::encode(request.digest),
                index,
                output: match &output {
                    Output::Granted(id) => RecordedOutput::Granted(id.to_string()),
                    Output::Activated(hash) => RecordedOutput::Activated(hash.to_hex()),
                    Output::Proposed(hash) => RecordedOutput::Proposed(hash.to_hex()),
                    Output::Decided { .. } if group_len > 0 => RecordedOutput::Cohort(group_len),
                    Output::Logged | Output::Decided { .. } => RecordedOutput::Logged,
                },
            };
            kv.put(&request.state_key(), &recorded.encode())
                .map_err(unavailable_kv)?;
        }
        Ok(Applied { entry, output })
    }

    /// A group is a cohort's decisions. A cohort for statistics is decided with the number of
    /// its patients that are allowed (`service::access`), counted from the prepared decisions:
    /// it is logged only if every one of them still holds here, so that the count is the
    /// logged one (otherwise `ABORTED`, and the service decides again). Decisions of a group
    /// write only their own patient's keys, so what holds at the group's first position holds
    /// at each of its positions.
    fn check_group(&mut self, group: &[Submission], tx: &Tx<'_>) -> Result<(), Error> {
        let now = Timestamp::from_unix_millis(tx.time_millis())
            .ok_or(Error::Internal("the clock is outside 1970-9999"))?;
        for submission in group {
            match &submission.command {
                Command::Authorize(request, prepared)
                    if request.action == Action::ExportStatistics =>
                {
                    let holds = match prepared {
                        Some(prepared) => {
                            Self::still_holds(prepared, tx, now).map_err(unavailable)?
                        }
                        None => false,
                    };
                    if !holds {
                        return Err(Error::Conflict(
                            "the state changed while the cohort was decided; retry".to_owned(),
                        ));
                    }
                }
                Command::Authorize(..) => {}
                _ => {
                    return Err(Error::Internal(
                        "a group holds a command other than a decision",
                    ));
                }
            }
        }
        Ok(())
    }

    fn seal(&mut self, tx: &mut Tx<'_>) -> Result<Vec<String>, String> {
        match &mut self.map {
            Some(map) => map.seal(tx),
            None => Ok(Vec::new()),
        }
    }

    fn rollback(&mut self) {
        if let Some(map) = &mut self.map {
            map.rollback();
        }
        // Activations and directory changes of a failed batch never happened: forget every
        // compiled set (the committed one is recompiled on first use) and reload the directory.
        self.shared.clear_engines();
        self.reload_directory();
    }

    fn committed(&mut self) {
        if let Some(map) = &mut self.map {
            map.committed();
        }
        // Publish the committed directory for prepared decisions, once per change.
        if self.directory.has_pending() && self.directory.flush().is_err() {
            self.reload_directory();
        }
        if self.shared.directory_version() != Some(self.directory.version()) {
            self.shared.publish(&self.directory);
        }
    }
}

/// Counts of answered decisions by action, purpose, level, effect and review flag: the fields a
/// decision's public leaf carries, never anything about the patient. One counter per
/// combination (640), so counting is one atomic add.
#[derive(Debug)]
pub struct DecisionCounts {
    counts: Vec<AtomicU64>,
}

/// The public fields a decision is counted by.
pub type DecisionLabels = (Action, Purpose, Level, Effect, bool);

impl DecisionCounts {
    fn new() -> Self {
        let len = Action::ALL.len() * Purpose::ALL.len() * Level::ALL.len() * 4;
        Self {
            counts: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index((action, purpose, level, effect, review): DecisionLabels) -> Option<usize> {
        let action = Action::ALL.iter().position(|v| *v == action)?;
        let purpose = Purpose::ALL.iter().position(|v| *v == purpose)?;
        let level = Level::ALL.iter().position(|v| *v == level)?;
        let outcome = usize::from(effect == Effect::Allow) * 2 + usize::from(review);
        Some(((action * Purpose::ALL.len() + purpose) * Level::ALL.len() + level) * 4 + outcome)
    }

    /// Counts one answered decision.
    pub fn record(&self, labels: DecisionLabels) {
        if let Some(count) = Self::index(labels).and_then(|i| self.counts.get(i)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every combination counted at least once, with its count.
    pub fn nonzero(&self) -> Vec<(DecisionLabels, u64)> {
        let mut out = Vec::new();
        for &action in Action::ALL {
            for &purpose in Purpose::ALL {
                for &level in Level::ALL {
                    for effect in [Effect::Allow, Effect::Deny] {
                        for review in [false, true] {
                            let labels = (action, purpose, level, effect, review);
                            let count = Self::index(labels)
                                .and_then(|i| self.counts.get(i))
                                .map_or(0, |c| c.load(Ordering::Relaxed));
                            if count > 0 {
                                out.push((labels, count));
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// Frames an event as a log entry: public leaf (kind, day, public attributes) and private body
/// (the event's JSON behind a random nonce).
///
/// # Errors
///
/// [`Error::Internal`] when the event does not fit the entry format (a bug).
pub fn frame(event: &Event, now: Timestamp) -> Result<NewEntry, Error> {
    frame_with(event, now, None)
}

/// [`frame`], with the patient's VRF output in the body (`subject_vrf_output`) when the log
/// keeps a subject map.
///
/// # Errors
///
/// As [`frame`].
pub fn frame_with(
    event: &Event,
    now: Timestamp,
    subject_vrf: Option<&VrfOutput>,
) -> Result<NewEntry, Error> {
    let mut payload = event
        .to_json()
        .map_err(|_| Error::Internal("event does not serialise"))?;
    if let Some(beta) = subject_vrf {
        payload = crate::subject_map::with_vrf_output(payload, beta);
    }
    // The thread's ChaCha12 generator (seeded and periodically reseeded from the OS) is a
    // cryptographic generator, so the nonce still hides the body; drawing from the OS directly
    // cost a `getrandom` system call per entry on the writer thread (≈ 2% of its time).
    let body = Body::try_new(payload, &mut rand::thread_rng())
        .map_err(|_| Error::Internal("body too large"))?;
    let kind = EntryKind::new(event.kind()).map_err(|_| Error::Internal("bad entry kind"))?;
    let day = Day::from_unix_seconds(now.unix_millis().div_euclid(1000))
        .map_err(|_| Error::Internal("bad entry day"))?;
    let mut attributes = Vec::new();
    for (name, value) in event.public_attributes() {
        let name = AttrName::new(name).map_err(|_| Error::Internal("bad attribute name"))?;
        let value = AttrValue::new(&value).map_err(|_| Error::Internal("bad attribute value"))?;
        attributes.push((name, value));
    }
    let leaf = Leaf::new(kind, day, attributes, body.commitment())
        .map_err(|_| Error::Internal("leaf does not validate"))?;
    Ok(NewEntry {
        leaf,
        body,
        seal: None,
    })
}

/// The derived state as a command sees it: the sequencer's transaction, and the log whose vault
/// seals and opens patients' consent-state records (`crate::erasure`).
pub(crate) struct TxKv<'a, 'b>(pub(crate) &'a mut Tx<'b>, pub(crate) &'a Log);

/// The same, read only.
struct TxRead<'a, 'b>(&'a Tx<'b>);

impl KvRead for TxRead<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(KvError::new)
    }
}

impl KvRead for TxKv<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        match self.0.get(key).map_err(KvError::new)? {
            Some(value) => crate::erasure::open_state(self.1, key, value).map(Some),
            None => Ok(None),
        }
    }
}

impl KvWrite for TxKv<'_, '_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let tx = &*self.0;
        let current = |name: &[u8]| tx.get(name).map_err(KvError::new);
        match crate::erasure::seal_state(self.1, current, key, value)? {
            Some(sealed) => self.0.put(key, &sealed),
            None => self.0.put(key, value),
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.0.delete(key);
        Ok(())
    }
}

pub(crate) fn unavailable_kv(err: KvError) -> Error {
    Error::Unavailable(Box::new(err))
}

pub(crate) fn unavailable(err: StateError) -> Error {
    Error::Unavailable(Box::new(err))
}

/// The derived state, read through the log (outside the sequencer). It includes batches the
/// writer has staged and the syncer is still making durable (see `Log::stage_batch`), so a read
/// can show a write a moment before its caller is answered, and — should that batch's sync fail
/// or the power go — a write that never became durable. Reads that must only show durable
/// entries (history, transparency) go by the published checkpoint instead.
pub struct LogKv<'a>(pub &'a Log);

impl policy::state::KvRead for LogKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, policy::state::KvError> {
        match self.0.state_get(key).map_err(policy::state::KvError::new)? {
            Some(value) => crate::erasure::open_state(self.0, key, value).map(Some),
            None => Ok(None),
        }
    }
}

impl policy::state::KvScan for LogKv<'_> {
    fn scan_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<policy::state::KvPairs, policy::state::KvError> {
        self.0
            .state_range(start, end, usize::MAX)
            .map_err(policy::state::KvError::new)
    }

    fn scan_range_limit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<policy::state::KvPairs, policy::state::KvError> {
        self.0
            .state_range(start, end, limit)
            .map_err(policy::state::KvError::new)
    }
}

#[cfg(test)]
pub(crate) mod tests;

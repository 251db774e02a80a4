//! The server's state machine: how each command becomes a log entry, run by the ledger's
//! sequencer on its writer thread, one command at a time, in log order.
//!
//! Every command is turned into a [`policy::Event`] against the state as of the entries before
//! it (so an `Authorize` sees every write sequenced before it, including earlier ones of its own
//! batch), applied to the derived state through [`policy::state::apply`] (the same code the
//! regulator's replay runs), and framed as a ledger entry: a public leaf with the event's kind,
//! its day and its public attributes, committing to a private body that holds the event's JSON
//! behind a random nonce. A command that fails any check appends nothing.
//!
//! Compiled policy sets are cached by hash; the cache holds only sets that were activated in
//! the log, and a set missing from it (after a restart) is compiled from the text the state
//! holds. This module does not parse gRPC messages (see `service`) and does not decide anything
//! itself (the `policy` crate does).

use std::{collections::HashMap, sync::Arc};

use ledger::log::Log;
use ledger::{
    entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf},
    log::NewEntry,
    sequencer::{Applied, StateMachine, Tx},
};
use policy::{
    Decision, Directory, Event, Facts, KvError, KvRead, KvWrite, PolicyEngine, PolicySetHash,
    Request,
    domain::{Consent, ConsentId, Purpose, SubjectId, Timestamp},
    state::{self, ApplyError, StateError},
};
use rand::rngs::OsRng;

use crate::{Error, service::LogKv};

/// What a service asks the sequencer to log.
#[derive(Debug)]
pub enum Command {
    /// A directory change (organisation, facility, facility group, clinician, emergency).
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
    /// The patient's opt-outs are now exactly these purposes.
    OptOut {
        /// The patient.
        subject: SubjectId,
        /// The purposes.
        purposes: Vec<Purpose>,
    },
    /// A policy set, compiled and validated off the writer thread, becomes active.
    Activate(Arc<PolicyEngine>),
    /// An access decision to make and log.
    Authorize(Request),
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
    /// A decision was made and logged.
    Decided(Box<Decision>),
}

/// The akashi state machine.
pub struct Akashi {
    log: Arc<Log>,
    engines: HashMap<PolicySetHash, Arc<PolicyEngine>>,
    /// The directory as prebuilt Cedar entities, kept in step with the state entry by entry.
    directory: Directory,
}

impl Akashi {
    /// A state machine over `log`'s committed state, with an empty policy cache.
    ///
    /// # Errors
    ///
    /// [`Error::Ledger`] when the directory cannot be loaded from the state.
    pub fn new(log: Arc<Log>) -> Result<Self, Error> {
        let directory = Directory::load(&LogKv(&log)).map_err(|e| Error::Ledger(e.to_string()))?;
        Ok(Self {
            log,
            engines: HashMap::new(),
            directory,
        })
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
            Command::OptOut { subject, purposes } => Event::RecordOptOut { subject, purposes },
            Command::Activate(engine) => {
                let event = Event::ActivatePolicySet {
                    policies: engine.text().to_owned(),
                    hash: engine.hash(),
                };
                self.engines.insert(engine.hash(), engine);
                event
            }
            Command::Authorize(request) => self.decide(request, kv, now)?,
        })
    }

    fn decide(
        &mut self,
        request: Request,
        kv: &TxKv<'_, '_>,
        now: Timestamp,
    ) -> Result<Event, Error> {
        // Fail closed: without a readable state and an active policy set there is no decision.
        let hash = state::active_policy_set_hash(kv)
            .map_err(unavailable)?
            .ok_or(Error::Internal("no active policy set"))?;
        let engine = match self.engines.get(&hash) {
            Some(engine) => engine.clone(),
            None => {
                let active = state::active_policy_set(kv)
                    .map_err(unavailable)?
                    .ok_or(Error::Internal("no active policy set"))?;
                let engine =
                    Arc::new(PolicyEngine::new(&active.policies).map_err(|_| {
                        Error::Internal("the active policy set no longer compiles")
                    })?);
                self.engines.insert(hash, engine.clone());
                engine
            }
        };
        self.directory.flush().map_err(unavailable)?;
        let version = state::directory_version(kv).map_err(unavailable)?;
        if version != self.directory.version() {
            // Out of step (only after a failed reload): try the committed state, else refuse.
            self.reload_directory();
            if version != self.directory.version() {
                return Err(Error::Internal(
                    "the directory is out of step with the state",
                ));
            }
        }
        let facts = Facts::gather(&self.directory, kv, &request).map_err(unavailable)?;
        let decision = engine.decide(&request, &facts, &self.directory, now);
        let subject_prev = match &request.subject {
            Some(subject) => state::subject_head(kv, subject)
                .map_err(unavailable)?
                .map(|head| head.last_index),
            None => None,
        };
        Ok(Event::Decision {
            recipient: facts.recipient(),
            request,
            time: now,
            decision,
            policy_set_hash: hash,
            subject_prev,
        })
    }
}

impl StateMachine for Akashi {
    type Command = Command;
    type Output = Output;
    type Rejection = Error;

    fn apply(&mut self, command: Command, tx: &mut Tx<'_>) -> Result<Applied<Output>, Error> {
        let index = tx.index().get();
        let now = Timestamp::from_unix_millis(tx.time_millis())
            .ok_or(Error::Internal("the clock is outside 1970-9999"))?;
        let mut kv = TxKv(tx);
        let event = self.event(command, &kv, now)?;
        state::apply(&mut kv, &event, index).map_err(rejection)?;
        // The state accepted it, so the directory does too (same checks); it takes effect at
        // the next decision's flush.
        self.directory.apply(&event, index).map_err(unavailable)?;
        let output = match &event {
            Event::GrantConsent(consent) => Output::Granted(consent.id.clone()),
            Event::ActivatePolicySet { hash, .. } => Output::Activated(*hash),
            Event::Decision { decision, .. } => Output::Decided(Box::new(decision.clone())),
            _ => Output::Logged,
        };
        let entry = frame(&event, now)?;
        Ok(Applied { entry, output })
    }

    fn rollback(&mut self) {
        // Activations and directory changes of a failed batch never happened: forget every
        // compiled set (the committed one is recompiled on first use) and reload the directory.
        self.engines.clear();
        self.reload_directory();
    }
}

/// Frames an event as a log entry: public leaf (kind, day, public attributes) and private body
/// (the event's JSON behind a random nonce).
///
/// # Errors
///
/// [`Error::Internal`] when the event does not fit the entry format (a bug).
pub fn frame(event: &Event, now: Timestamp) -> Result<NewEntry, Error> {
    let payload = event
        .to_json()
        .map_err(|_| Error::Internal("event does not serialise"))?;
    let body = Body::try_new(payload, &mut OsRng).map_err(|_| Error::Internal("body too large"))?;
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
    Ok(NewEntry { leaf, body })
}

/// The derived state as a command sees it: the sequencer's transaction.
struct TxKv<'a, 'b>(&'a mut Tx<'b>);

impl KvRead for TxKv<'_, '_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(KvError::new)
    }
}

impl KvWrite for TxKv<'_, '_> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.0.put(key, value);
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.0.delete(key);
        Ok(())
    }
}

fn unavailable(err: StateError) -> Error {
    Error::Unavailable(Box::new(err))
}

/// Maps a refused event to the status its caller gets.
fn rejection(err: ApplyError) -> Error {
    match err {
        ApplyError::State(err) => unavailable(err),
        ApplyError::UnknownOrganization { id } => Error::NotFound {
            kind: "organization",
            id: id.to_string(),
        },
        ApplyError::UnknownFacility { id } => Error::NotFound {
            kind: "facility",
            id: id.to_string(),
        },
        ApplyError::UnknownGroup { id } => Error::NotFound {
            kind: "facility group",
            id: id.to_string(),
        },
        // A consent of another patient is reported as unknown: its existence is not revealed.
        ApplyError::UnknownConsent { id } | ApplyError::ConsentOfOtherSubject { id } => {
            Error::NotFound {
                kind: "consent",
                id: id.to_string(),
            }
        }
        ApplyError::AlreadyRevoked { id } => {
            Error::FailedPrecondition(format!("consent `{id}` is already revoked"))
        }
        ApplyError::TooManyConsents { max } => {
            Error::FailedPrecondition(format!("the patient already holds {max} consents"))
        }
        ApplyError::Invalid(err) => Error::Rejected(err.to_string()),
        ApplyError::InvalidPolicySet { .. } => Error::Rejected(err.to_string()),
        _ => {
            tracing::error!(cause = %err, "the state machine built an event the state refuses");
            Error::Internal("event refused by the state")
        }
    }
}

#[cfg(test)]
mod tests;

//! The `akashi.v1` gRPC services: parse at the edge, check the caller's role, then either
//! submit a command to the sequencer (every write and every decision) or read the log.
//!
//! Parsing follows "parse, don't validate": every request field becomes a typed domain value
//! here, or the call fails with `INVALID_ARGUMENT` naming the field, before anything reaches the
//! sequencer, so a rejected request appends nothing. Patient ids are turned into pseudonyms
//! (`HMAC-SHA256(subject_key, patient_id)`) at this edge and never travel further: the log and
//! the state hold pseudonyms only.
//!
//! One module per service; this module holds what they share: [`Core`], field parsers and the
//! receipt conversion.

use std::sync::Arc;

use ledger::{
    hash::{Hash, LeafIndex, hash_leaf},
    log::{Log, Receipt},
    sequencer::{GroupReceipt, Sequencer},
};
use policy::{
    domain::{DomainError, SubjectId},
    event::Event,
};
use proto::pb;
use tokio::sync::watch;
use tonic::Status;

use crate::idempotency::{Recorded, RecordedOutput, RequestKey};
use crate::{
    error::Error,
    error::FieldProblem,
    keys::SubjectKey,
    state_machine::{Command, Decisions, DomainStateMachine, Output, Submission},
    subject_map::SubjectMapKey,
    witness::Witnessed,
};

pub mod access;
pub mod audit;
pub mod budget;
pub mod cohort;
pub mod consent;
pub mod consent_changes;
pub mod directory;
pub mod erasure;
pub mod history;
pub mod policies;
pub mod transparency;

/// Longest a retried write waits for its first request's entry to be committed.
const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest patient id accepted, in bytes.
pub const MAX_PATIENT_ID_LEN: usize = 256;
/// Most items in any repeated request field not capped more tightly by the domain.
pub const MAX_LIST_LEN: usize = 10_000;

/// What every service shares: the sequencer (writes and decisions), the log (reads) and the
/// key that turns patient ids into pseudonyms.
#[derive(Clone)]
pub struct Core {
    sequencer: Sequencer<DomainStateMachine>,
    decisions: Arc<Decisions>,
    subject_key: Arc<SubjectKey>,
    verifier_key: Arc<str>,
    witnessed: Witnessed,
    /// The VRF key, when the log keeps a subject map.
    subject_map: Option<SubjectMapKey>,
    /// The tree size after each commit (streams wait on it).
    commits: watch::Receiver<u64>,
    /// Turns true when the server begins to stop (streams end then).
    stopping: watch::Receiver<bool>,
}

impl Core {
    /// Services over `sequencer`, pseudonymising with `subject_key`.
    pub fn new(
        sequencer: Sequencer<DomainStateMachine>,
        decisions: Arc<Decisions>,
        subject_key: SubjectKey,
    ) -> Self {
        let verifier_key = sequencer.log().verifier().to_vkey().into();
        Self {
            sequencer,
            decisions,
            subject_key: Arc::new(subject_key),
            verifier_key,
            witnessed: Witnessed::none(),
            subject_map: None,
            commits: watch::channel(0).1,
            stopping: watch::channel(false).1,
        }
    }

    /// The same core, with streams woken by `commits` (the tree size after each commit) and
    /// ended when `stopping` turns true.
    #[must_use]
    pub fn with_streams(
        mut self,
        commits: watch::Receiver<u64>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        self.commits = commits;
        self.stopping = stopping;
        self
    }

    /// The tree size after each commit.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    /// Turns true when the server begins to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// The key of patient pseudonyms (and of recipients' patient references).
    pub fn subject_key(&self) -> Arc<SubjectKey> {
        self.subject_key.clone()
    }

    /// The same core, for a log that keeps a subject map with `key`.
    #[must_use]
    pub fn with_subject_map(mut self, key: SubjectMapKey) -> Self {
        self.subject_map = Some(key);
        self
    }

    /// The VRF key of the subject map, when the log keeps one.
    pub fn subject_map(&self) -> Option<&SubjectMapKey> {
        self.subject_map.as_ref()
    }

    /// The same core, reading witnessed checkpoints from `witnessed`.
    #[must_use]
    pub fn with_witnessed(mut self, witnessed: Witnessed) -> Self {
        self.witnessed = witnessed;
        self
    }

    /// The newest witnessed checkpoint and the quorum in force (see `crate::witness`).
    pub fn witnessed(&self) -> &Witnessed {
        &self.witnessed
    }

    /// The log.
    pub fn log(&self) -> &Arc<Log> {
        self.sequencer.log()
    }

    /// Where decisions are prepared off the writer thread.
    pub fn decisions(&self) -> &Arc<Decisions> {
        &self.decisions
    }

    /// The sequencer.
    pub fn sequencer(&self) -> &Sequencer<DomainStateMachine> {
        &self.sequencer
    }

    /// The checkpoint verifier key (note `vkey` format).
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Logs `command`; returns its receipt and output once the entry is durable.
    ///
    /// # Errors
    ///
    /// The command's rejection, or `UNAVAILABLE` when it could not be made durable (then it was
    /// not logged, and a decision is not an allow).
    pub async fn submit(&self, command: Command) -> Result<(Receipt, Output), Error> {
        self.submit_request(command, None, None).await
    }

    /// [`Core::submit`] for a command about the patient `patient_id` (pseudonym `subject`): when
    /// the log keeps a subject map and the patient is new to it, their VRF output goes along.
    ///
    /// # Errors
    ///
    /// As [`Core::submit`].
    pub async fn submit_about(
        &self,
        command: Command,
        subject: &SubjectId,
        patient_id: &str,
    ) -> Result<(Receipt, Output), Error> {
        self.submit_request(command, Some((subject, patient_id)), None)
            .await
    }

    /// [`Core::submit`] (or [`Core::submit_about`], with `about`) for a write that may carry a
    /// request id: a retry of a logged request gets the first answer — a fresh receipt of the
    /// same entry, and the same output — and appends nothing (`crate::idempotency`).
    ///
    /// # Errors
    ///
    /// As [`Core::submit`]; `ALREADY_EXISTS` for a request id used for another request;
    /// `UNAVAILABLE` when the first request's outcome is not known yet.
    pub async fn submit_request(
        &self,
        command: Command,
        about: Option<(&SubjectId, &str)>,
        request: Option<RequestKey>,
    ) -> Result<(Receipt, Output), Error> {
        let subject_vrf = match (&self.subject_map, about) {
            (Some(key), Some((subject, patient_id))) => {
                // A prepared decision already read the patient's record: no second read.
                let known = match &command {
                    Command::Authorize(_, Some(prepared)) => prepared.map_record_known(subject),
                    _ => None,
                };
                match known {
                    Some(known) => key.output_unless(known, patient_id),
                    None => key.output_for(self.log(), subject, patient_id)?,
                }
            }
            _ => None,
        };
        match &command {
            Command::Directory(event) => fits_public_leaf(event)?,
            Command::Grant(consent) => fits_public_leaf(&Event::GrantConsent(consent.clone()))?,
            // Opt-outs list purposes of a small fixed vocabulary, deduplicated by the state
            // machine: every set of them fits. Revocations, activations and decisions put
            // only ids, hashes and fixed words in their leaves.
            _ => {}
        }
        let submitted = self
            .sequencer
            .submit(Submission {
                command,
                subject_vrf,
                request,
                group_len: 0,
            })
            .await
            .map_err(Error::from);
        match (submitted, request) {
            (Err(Error::Duplicate(recorded)), Some(request)) => {
                self.first_answer(&request, &recorded).await
            }
            (other, _) => other,
        }
    }

    /// The first answer to `request` when it was logged before (a retry), from the committed
    /// state: for writes whose checks would now fail because the first request succeeded (an
    /// approval's set is no longer pending) or time has passed (a grant's `valid_until`).
    ///
    /// # Errors
    ///
    /// `ALREADY_EXISTS` when the id was used for another request; as
    /// [`Core::submit_request`] otherwise.
    pub async fn answered(
        &self,
        request: Option<&RequestKey>,
    ) -> Result<Option<(Receipt, Output)>, Error> {
        let Some(request) = request else {
            return Ok(None);
        };
        let recorded = policy::state::KvRead::get(
            &crate::state_machine::LogKv(self.log()),
            &request.state_key(),
        )
        .map_err(|e| Error::Unavailable(Box::new(e)))?
        .and_then(|bytes| Recorded::decode(&bytes));
        match recorded {
            None => Ok(None),
            Some(recorded) if recorded.digest == hex::encode(request.digest) => {
                self.first_answer(request, &recorded).await.map(Some)
            }
            Some(_) => Err(Error::AlreadyExists(
                "`request_id` was already used for another request".to_owned(),
            )),
        }
    }

    /// Waits until the entries of a request logged before (`recorded`) are committed, and
    /// checks that the committed state holds the same record.
    async fn committed_record(
        &self,
        request: &RequestKey,
        recorded: &Recorded,
    ) -> Result<(), Error> {
        let log = self.log().clone();
        let last = recorded.index
            + match recorded.output {
                RecordedOutput::Cohort(count) => u64::from(count.max(1)) - 1,
                _ => 0,
            };
        // The first request may be in a batch still being made durable.
        let mut commits = self.commits();
        let waited = tokio::time::timeout(FIRST_ANSWER_WAIT, async {
            while log.size().get() <= last {
                if commits.changed().await.is_err() {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        })
        .await;
        let unknown = || {
            Error::Unavailable(
                "the first request with this `request_id` is not logged yet; retry".into(),
            )
        };
        if waited.is_err() {
            return Err(unknown());
        }
        // The committed state must hold the same record: a first request whose batch failed
        // left none, and its index may now be another entry's.
        let committed =
            policy::state::KvRead::get(&crate::state_machine::LogKv(&log), &request.state_key())
                .map_err(|e| Error::Unavailable(Box::new(e)))?
                .and_then(|bytes| Recorded::decode(&bytes));
        if committed.as_ref() != Some(recorded) {
            return Err(unknown());
        }
        Ok(())
    }

    /// The answer a request logged before (`recorded`) got, once its entry is committed.
    async fn first_answer(
        &self,
        request: &RequestKey,
        recorded: &Recorded,
    ) -> Result<(Receipt, Output), Error> {
        self.committed_record(request, recorded).await?;
        let index = recorded.index;
        let log = self.log();
        let leaf = log
            .leaves(LeafIndex(index), 1)?
            .into_iter()
            .next()
            .ok_or(Error::Internal("a logged leaf is missing"))?;
        let receipt = log.receipt(LeafIndex(index), hash_leaf(&leaf), log.checkpoint())?;
        let output = match &recorded.output {
            RecordedOutput::Logged => Output::Logged,
            RecordedOutput::Granted(id) => Output::Granted(
                id.parse()
                    .map_err(|_| Error::Internal("a request record is bad"))?,
            ),
            RecordedOutput::Activated(hash) => Output::Activated(
                hash.parse()
                    .map_err(|_| Error::Internal("a request record is bad"))?,
            ),
            RecordedOutput::Proposed(hash) => Output::Proposed(
                hash.parse()
                    .map_err(|_| Error::Internal("a request record is bad"))?,
            ),
            RecordedOutput::Cohort(_) => {
                return Err(Error::Internal("a cohort's record answers a single write"));
            }
        };
        Ok((receipt, output))
    }

    /// The request logged before under `request`'s id, if any.
    ///
    /// # Errors
    ///
    /// `ALREADY_EXISTS` when the id was used for another request; `UNAVAILABLE` when the state
    /// cannot be read.
    pub fn recorded(&self, request: &RequestKey) -> Result<Option<Recorded>, Error> {
        let recorded = policy::state::KvRead::get(
            &crate::state_machine::LogKv(self.log()),
            &request.state_key(),
        )
        .map_err(|e| Error::Unavailable(Box::new(e)))?
        .and_then(|bytes| Recorded::decode(&bytes));
        match recorded {
            Some(recorded) if recorded.digest != hex::encode(request.digest) => {
                Err(Error::AlreadyExists(
                    "`request_id` was already used for another request".to_owned(),
                ))
            }
            other => Ok(other),
        }
    }

    /// Logs a cohort's decisions all or nothing (`Sequencer::submit_group`; the first
    /// submission carries the request id and the group's length). A retry of a logged request
    /// gets the first answer, rebuilt from the log.
    ///
    /// # Errors
    ///
    /// As [`Core::submit_request`]; `ABORTED` when a cohort for statistics met a changed state.
    /// The second value is set on a retry's answer: the cohort size the first decisions
    /// stated.
    pub async fn submit_group(
        &self,
        group: Vec<Submission>,
    ) -> Result<(GroupReceipt<Output>, Option<Option<u64>>), Error> {
        let request = group.first().and_then(|first| first.request);
        match (
            self.sequencer
                .submit_group(group)
                .await
                .map_err(Error::from),
            request,
        ) {
            (Err(Error::Duplicate(recorded)), Some(request)) => {
                let (answer, size) = self.first_group_answer(&request, &recorded).await?;
                Ok((answer, Some(size)))
            }
            (other, _) => other.map(|answer| (answer, None)),
        }
    }

    /// The answer a cohort logged before (`recorded`) got: its decisions and leaves, read back
    /// from the log once they are committed, with the current checkpoint.
    ///
    /// # Errors
    ///
    /// As [`Core::submit_request`]; `FAILED_PRECONDITION` when a decision's private body was
    /// erased since.
    pub async fn first_group_answer(
        &self,
        request: &RequestKey,
        recorded: &Recorded,
    ) -> Result<(GroupReceipt<Output>, Option<u64>), Error> {
        let RecordedOutput::Cohort(count) = recorded.output else {
            return Err(Error::AlreadyExists(
                "`request_id` was already used for another request".to_owned(),
            ));
        };
        self.committed_record(request, recorded).await?;
        let log = self.log().clone();
        let first = recorded.index;
        tokio::task::spawn_blocking(move || {
            let count = u64::from(count);
            // Reads are capped per call (`MAX_LEAVES_PER_READ`): a cohort takes several.
            let (mut leaves, mut bodies) = (Vec::new(), Vec::new());
            while (leaves.len() as u64) < count {
                let at = LeafIndex(first + leaves.len() as u64);
                let want = count - leaves.len() as u64;
                let got = log.leaves(at, want)?;
                let got_bodies = log.bodies(at, got.len() as u64)?;
                if got.is_empty() || got_bodies.len() != got.len() {
                    return Err(Error::Internal("a cohort's entries are not all in the log"));
                }
                leaves.extend(got);
                bodies.extend(got_bodies);
            }
            let mut leaf_hashes = Vec::with_capacity(leaves.len());
            let mut outputs = Vec::with_capacity(leaves.len());
            let mut cohort_size = None;
            for (leaf, body) in leaves.into_iter().zip(bodies) {
                let ledger::chunk::Record::Present(bytes) = body else {
                    return Err(Error::FailedPrecondition(
                        "a decision of the first answer was erased since".to_owned(),
                    ));
                };
                let event = ledger::entry::Body::decode(&bytes)
                    .ok()
                    .and_then(|body| Event::from_json(&body.payload).ok());
                let Some(Event::Decision {
                    decision, request, ..
                }) = event
                else {
                    return Err(Error::Internal("a cohort's entry is not a decision"));
                };
                cohort_size = request.cohort_size;
                leaf_hashes.push(hash_leaf(&leaf));
                outputs.push(Output::Decided {
                    decision: Box::new(decision),
                    leaf,
                });
            }
            let answer = GroupReceipt {
                first: LeafIndex(first),
                leaf_hashes,
                checkpoint: log.checkpoint(),
                outputs,
            };
            Ok((answer, cohort_size))
        })
        .await
        .map_err(|_| Error::Internal("reading a first answer failed"))?
    }

    /// The pseudonym of the patient id in `field`.
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` naming `field` when the id is empty, too long or holds control
    /// characters. The id itself is never repeated in a message.
    pub fn subject(&self, field: &'static str, patient_id: &str) -> Result<SubjectId, Error> {
        check_patient_id(field, patient_id)?;
        Ok(SubjectId::from_bytes(
            self.subject_key.pseudonym(patient_id).0,
        ))
    }

    /// Like [`Core::subject`], for an optional field (empty = none).
    ///
    /// # Errors
    ///
    /// As for [`Core::subject`].
    pub fn optional_subject(
        &self,
        field: &'static str,
        patient_id: &str,
    ) -> Result<Option<SubjectId>, Error> {
        if patient_id.is_empty() {
            return Ok(None);
        }
        self.subject(field, patient_id).map(Some)
    }
}

/// Checks a patient id's shape.
fn check_patient_id(field: &'static str, patient_id: &str) -> Result<(), Error> {
    if patient_id.is_empty() {
        return Err(Error::invalid(field, FieldProblem::Missing));
    }
    if patient_id.len() > MAX_PATIENT_ID_LEN {
        return Err(Error::invalid(
            field,
            FieldProblem::TooLong {
                max: MAX_PATIENT_ID_LEN,
            },
        ));
    }
    if patient_id.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            FieldProblem::Malformed {
                reason: "holds a control character",
            },
        ));
    }
    Ok(())
}

/// Parses a required field with a domain parser.
///
/// # Errors
///
/// `INVALID_ARGUMENT` naming `field`: missing when empty, otherwise the parser's reason.
pub fn required<T>(
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Result<T, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, FieldProblem::Missing));
    }
    parse(value).map_err(|e| invalid(field, &e))
}

/// Parses an optional field (empty = none) with a domain parser.
///
/// # Errors
///
/// `INVALID_ARGUMENT` naming `field` with the parser's reason.
pub fn optional<T>(
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, DomainError>,
) -> Result<Option<T>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    parse(value).map(Some).map_err(|e| invalid(field, &e))
}

/// Checks that an event's public leaf attributes fit the entry format
/// ([`ledger::entry::MAX_ATTR_VALUE_LEN`] bytes each), naming the request field an over-long one
/// comes from. The leaf joins a list's items with commas, so items that are each valid (and few
/// enough) can still be too long together: without this check the write would fail on the
/// writer thread, as an internal error naming nothing.
///
/// # Errors
///
/// `INVALID_ARGUMENT` naming the field (the leaf attributes are named after the request fields
/// they come from).
pub fn fits_public_leaf(event: &Event) -> Result<(), Error> {
    let max = ledger::entry::MAX_ATTR_VALUE_LEN;
    for (field, value) in event.public_attributes() {
        if value.len() > max {
            return Err(Error::invalid(
                field,
                FieldProblem::TooLongForLeaf {
                    len: value.len(),
                    max,
                },
            ));
        }
    }
    Ok(())
}

/// Parses every item of a repeated field.
///
/// # Errors
///
/// `INVALID_ARGUMENT` naming `field` for too many items, an empty item, or an item the parser
/// refuses.
pub fn list<T>(
    field: &'static str,
    values: &[String],
    max: usize,
    parse: impl Fn(&str) -> Result<T, DomainError>,
) -> Result<Vec<T>, Error> {
    if values.len() > max {
        return Err(Error::invalid(field, FieldProblem::TooMany { max }));
    }
    values
        .iter()
        .map(|value| required(field, value, &parse))
        .collect()
}

fn invalid(field: &'static str, err: &DomainError) -> Error {
    Error::invalid(
        field,
        FieldProblem::Invalid {
            reason: err.to_string(),
        },
    )
}

/// A receipt as the API sends it.
pub fn receipt(receipt: &Receipt) -> pb::Receipt {
    pb::Receipt {
        leaf_index: receipt.leaf_index.get(),
        leaf_hash: receipt.leaf_hash.0.to_vec(),
        checkpoint: receipt.checkpoint.note().to_owned(),
        inclusion_proof: hashes(&receipt.inclusion_proof.path),
        tree_size: receipt.checkpoint.checkpoint().size.get(),
        leaf: Vec::new(),
    }
}

/// Hashes as repeated bytes.
pub fn hashes(path: &[Hash]) -> Vec<Vec<u8>> {
    path.iter().map(|h| h.0.to_vec()).collect()
}

/// The domain parser of any type that parses from text.
///
/// # Errors
///
/// The type's [`DomainError`].
pub fn parse<T: std::str::FromStr<Err = DomainError>>(value: &str) -> Result<T, DomainError> {
    value.parse()
}

/// Converts a crate error into the status sent to the caller.
pub fn status(err: Error) -> Status {
    err.into()
}

/// The [`RequestKey`] of a write `request` whose `request_id` is `request_id` (none when empty).
///
/// # Errors
///
/// `UNAUTHENTICATED` without a caller; `INVALID_ARGUMENT` for a malformed `request_id`.
pub fn request_key<T: prost::Message>(
    request: &tonic::Request<T>,
    request_id: &str,
) -> Result<Option<RequestKey>, Status> {
    let caller = crate::auth::caller(request)?;
    Ok(RequestKey::new(
        caller,
        &caller.method.to_string(),
        request_id,
        &request.get_ref().encode_to_vec(),
    )?)
}

//! The crate's error type and its single mapping to gRPC status codes.
//!
//! Every request handler returns [`Error`] (or a `Status` made from one). The errors of the
//! layers below — a log read ([`ReadError`]), an event the state refused ([`ApplyError`]), a
//! submission the sequencer could not log ([`SubmitError`]) — become an [`Error`] here and
//! nowhere else, and [`Error::code`] is the one place that picks codes. The `Status` mapping adds `BadRequest` field violations for `INVALID_ARGUMENT`
//! (google.rpc error details, via `tonic_types`), and keeps store internals out of messages.
//! This module does not log request contents; it logs only the cause of internal failures.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use ledger::{
    log::{OpenError, Position, ReadError},
    sequencer::SubmitError,
    store::StoreError,
};
use policy::{domain::Timestamp, state::ApplyError};

use crate::{auth::Refusal, config::ConfigError, keys::KeyError};

/// Everything that can go wrong in the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request field is missing or malformed (`INVALID_ARGUMENT`, naming the field).
    #[error("`{field}` {problem}")]
    InvalidArgument {
        /// The field, as named in the .proto (nested fields joined by `.`, e.g.
        /// `principal.type`).
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// A field of one item of a repeated request field is missing or malformed
    /// (`INVALID_ARGUMENT`, naming the item, e.g. `subjects[3].patient_id`).
    #[error("`{list}[{position}].{field}` {problem}")]
    InvalidItem {
        /// The repeated field.
        list: &'static str,
        /// The item's position in it (0-based).
        position: usize,
        /// The item's field.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// The state changed under a request that needs it unchanged (`ABORTED`): retry.
    #[error("{0}")]
    Conflict(String),
    /// A referenced entity does not exist (`NOT_FOUND`).
    #[error("unknown {kind} `{id}`")]
    NotFound {
        /// What kind of entity (`organisation`, `consent`, ...), in the prose spelling of
        /// messages.
        kind: &'static str,
        /// The id asked for. Never a patient id: say "patient" without the id instead.
        id: String,
    },
    /// The request is well-formed but breaks a rule of the domain that no single field
    /// violates (`INVALID_ARGUMENT`), e.g. a consent with neither recipients nor classes.
    #[error("{0}")]
    Rejected(String),
    /// The request cannot apply in the current state (`FAILED_PRECONDITION`), e.g. revoking a
    /// consent twice.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call is refused before its handler runs (`UNAUTHENTICATED` for a missing or bad
    /// token, `PERMISSION_DENIED` for a role or patient the method does not take).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// An `Authorize` request by a `Patient` principal about another patient
    /// (`PERMISSION_DENIED`): refused before anything is logged, so the other patient's history
    /// never names the asker. Neither id is repeated.
    #[error("a `Patient` principal may ask only about their own records")]
    ForeignSubject,
    /// A size or index beyond the tree (`OUT_OF_RANGE`).
    #[error("`{field}` is {value}, beyond {limit}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The bound it exceeds (for example the current tree size).
        limit: u64,
    },
    /// The ledger store failed or is shutting down (`UNAVAILABLE`). The cause is logged, never
    /// sent to the caller.
    #[error("the ledger is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request's metadata (HTTP/2 header list) is over the limit (`RESOURCE_EXHAUSTED`).
    #[error("request metadata takes {len} bytes, more than the limit of {max}")]
    MetadataTooLarge {
        /// Its size as HTTP/2 counts it (names, values and 32 bytes per entry).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A request message is over the limit (`RESOURCE_EXHAUSTED`).
    #[error("request message is {len} bytes, more than the limit of {max}")]
    MessageTooLarge {
        /// The length its gRPC frame announces.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request body ends inside a gRPC frame (`INVALID_ARGUMENT`).
    #[error("request ends inside a message: {missing} more bytes were announced")]
    TruncatedMessage {
        /// Bytes of the frame (prefix or message) that never came.
        missing: usize,
    },
    /// Too many bytes of large answers are in flight (`RESOURCE_EXHAUSTED`): the caller should
    /// read the answers it has, or retry later.
    #[error(
        "too many answer bytes in flight {scope} (limit {max}); retry after reading earlier answers"
    )]
    AnswerBudget {
        /// Whose budget is spent.
        scope: BudgetScope,
        /// That budget, in bytes.
        max: usize,
    },
    /// A `request_id` already used for another request (`ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// A retried write: its `request_id` was logged before with the same request. The service
    /// answers with the first answer (`crate::idempotency`); should it ever reach a caller, it
    /// is `ALREADY_EXISTS`.
    #[error("this request was logged before, at entry {}", .0.index)]
    Duplicate(Box<crate::idempotency::Recorded>),
    /// The server is already doing one of these, and does one at a time
    /// (`RESOURCE_EXHAUSTED`).
    #[error("{0}; retry later")]
    Busy(&'static str),
    /// A bug or broken invariant (`INTERNAL`). The cause is logged, never sent to the caller.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Why the server could not start, or why its listeners stopped: configuration, key material,
/// the log's store, the built-in policy set, TLS files and the transport. Never sent to a
/// caller; [`Error`] is what calls get.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration refused at start.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key vault cannot be opened, or is missing beside a store whose bodies are sealed
    /// under its keys.
    #[error("the key vault: {0}")]
    Vault(String),
    /// The OpenID Connect key set file cannot be read or is not a key set.
    #[error("OpenID Connect: {0}")]
    Oidc(#[source] crate::oidc::JwksError),
    /// The state derived from the log cannot be read at start-up (another key layout, a damaged
    /// record, a directory that does not load).
    #[error("the state derived from the log cannot be read: {0}")]
    State(#[source] policy::state::StateError),
    /// The subject map's VRF key does not fit the log: missing, or another key than the one the
    /// map was built with.
    #[error("subject map: {0}")]
    SubjectMap(String),
    /// The built-in default policy set does not compile (a defect of this build).
    #[error("the built-in default policy set does not compile: {0}")]
    DefaultPolicySet(#[source] policy::policy_set::PolicyError),
    /// The log refused to open: its store is damaged, behind or different from the newest
    /// checkpoint the log acknowledged, or its checkpoint anchor is unreadable.
    #[error("the ledger cannot be opened: {0}")]
    LedgerOpen(#[from] OpenError),
    /// The ledger's store could not be opened (held by another process, unreadable).
    #[error("the ledger store cannot be opened: {0}")]
    LedgerStore(#[from] StoreError),
    /// Key material refused at start.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A listener or server failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or CA file named in the configuration could not be read.
    #[error("cannot read TLS file `{path}`: {source}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The reflection descriptor sets are broken (a build problem).
    #[error("invalid reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A start-up step that runs through the request path (logging the default policy set's
    /// activation) was refused.
    #[error("a start-up request failed: {0}")]
    Request(#[from] Error),
}

/// Whose answer budget is spent ([`Error::AnswerBudget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetScope {
    /// This caller's.
    #[error("for this caller")]
    Caller,
    /// The whole server's.
    #[error("on the server")]
    Server,
}

/// What is wrong with a request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldProblem {
    /// Required and empty or absent.
    #[error("is required")]
    Missing,
    /// Longer than allowed.
    #[error("is longer than {max} bytes")]
    TooLong {
        /// The cap.
        max: usize,
    },
    /// More list items than allowed.
    #[error("has more than {max} items")]
    TooMany {
        /// The cap.
        max: usize,
    },
    /// Not one of the accepted values.
    #[error("has unknown value `{value}`; expected one of {expected}")]
    UnknownValue {
        /// The value given (never a patient id).
        value: String,
        /// The accepted values, for the message (e.g. "`IDENTIFIED`, `ANONYMIZED`").
        expected: &'static str,
    },
    /// Not in the expected syntax.
    #[error("is malformed: {reason}")]
    Malformed {
        /// What syntax was expected.
        reason: &'static str,
    },
    /// A list whose items, joined by commas as the public leaf shows them, are too long.
    #[error(
        "is too long for the public log entry: its items joined by commas take {len} bytes, \
         at most {max}"
    )]
    TooLongForLeaf {
        /// The joined length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Refused by the domain's parser, which says why (never repeating a patient id).
    #[error("is invalid: {reason}")]
    Invalid {
        /// The parser's message.
        reason: String,
    },
    /// A timestamp that must come after another field's does not.
    #[error("must be after `{other}`")]
    NotAfter {
        /// The other field.
        other: &'static str,
    },
    /// A timestamp that must lie in the future does not.
    #[error("is not after the server's clock ({now}): the consent would never be in force")]
    NotInFuture {
        /// The server's clock when the request was parsed.
        now: Timestamp,
    },
    /// A list holds a value that is valid in general but not here.
    #[error("may not hold `{value}`: {reason}")]
    NotAllowed {
        /// The value (never a patient id).
        value: &'static str,
        /// Why not.
        reason: &'static str,
    },
}

impl Error {
    /// An `INVALID_ARGUMENT` error for `field`.
    pub fn invalid(field: &'static str, problem: FieldProblem) -> Self {
        Self::InvalidArgument { field, problem }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. }
            | Self::InvalidItem { .. }
            | Self::Rejected(_)
            | Self::TruncatedMessage { .. } => Code::InvalidArgument,
            Self::Conflict(_) => Code::Aborted,
            Self::MetadataTooLarge { .. }
            | Self::MessageTooLarge { .. }
            | Self::AnswerBudget { .. }
            | Self::Busy(_) => Code::ResourceExhausted,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::AlreadyExists(_) | Self::Duplicate(_) => Code::AlreadyExists,
            Self::NotFound { .. } => Code::NotFound,
            Self::Refused(Refusal::Unauthenticated(_)) => Code::Unauthenticated,
            Self::Refused(_) | Self::ForeignSubject => Code::PermissionDenied,
            Self::OutOfRange { .. } => Code::OutOfRange,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match &err {
            Error::InvalidArgument { field, problem } => Status::with_error_details(
                code,
                err.to_string(),
                ErrorDetails::with_bad_request_violation(*field, problem.to_string()),
            ),
            Error::InvalidItem {
                list,
                position,
                field,
                problem,
            } => Status::with_error_details(
                code,
                err.to_string(),
                ErrorDetails::with_bad_request_violation(
                    format!("{list}[{position}].{field}"),
                    problem.to_string(),
                ),
            ),
            Error::Unavailable(cause) => {
                tracing::error!(cause = %cause, "store failure answered with UNAVAILABLE");
                Status::new(code, err.to_string())
            }
            Error::Internal(_) => {
                tracing::error!(cause = %err, "internal error");
                Status::new(code, "internal error")
            }
            Error::NotFound { .. }
            | Error::Rejected(_)
            | Error::FailedPrecondition(_)
            | Error::Refused(_)
            | Error::ForeignSubject
            | Error::OutOfRange { .. }
            | Error::MetadataTooLarge { .. }
            | Error::MessageTooLarge { .. }
            | Error::TruncatedMessage { .. }
            | Error::AnswerBudget { .. }
            | Error::Busy(_)
            | Error::AlreadyExists(_)
            | Error::Conflict(_)
            | Error::Duplicate(_) => Status::new(code, err.to_string()),
        }
    }
}

/// A log read: positions beyond the tree are `OUT_OF_RANGE` naming the request field, malformed
/// proof requests `INVALID_ARGUMENT`, anything the store reports `UNAVAILABLE`.
impl From<ReadError> for Error {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::OutOfRange { what, got, size } => Error::OutOfRange {
                field: match what {
                    Position::TreeSize => "tree_size",
                    Position::LeafIndex => "leaf_index",
                    Position::NewSize => "new_size",
                    Position::Start => "start",
                },
                value: got,
                limit: size,
            },
            ReadError::InvalidRequest(reason) => Error::Rejected(reason.to_string()),
            other => Error::Unavailable(Box::new(other)),
        }
    }
}

/// An event the state refused: unknown ids are `NOT_FOUND` (a consent of another patient is
/// reported as unknown, so its existence is not revealed), state conflicts
/// `FAILED_PRECONDITION`, invalid content `INVALID_ARGUMENT`, a state read failure
/// `UNAVAILABLE`; anything else is a bug of the caller that built the event (`INTERNAL`).
impl From<ApplyError> for Error {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::State(err) => Error::Unavailable(Box::new(err)),
            ApplyError::UnknownOrganization { id } => Error::NotFound {
                kind: "organisation",
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
            ApplyError::UnknownClinician { id } => Error::NotFound {
                kind: "clinician",
                id: id.to_string(),
            },
            ApplyError::AlreadyDeactivated { .. } => Error::FailedPrecondition(err.to_string()),
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
            ApplyError::AlreadyActive { .. }
            | ApplyError::AlreadyPending { .. }
            | ApplyError::TooManyPending { .. } => Error::FailedPrecondition(err.to_string()),
            ApplyError::NotPending { hash } => Error::NotFound {
                kind: "pending policy set",
                id: hash.to_hex(),
            },
            _ => {
                tracing::error!(cause = %err, "the state machine built an event the state refuses");
                Error::Internal("event refused by the state")
            }
        }
    }
}

/// A submission to the sequencer: the state machine's own rejection as it is; a batch that
/// could not be made durable, or a sequencer shutting down, `UNAVAILABLE` (maybe logged, never
/// an allow).
impl From<SubmitError<Error>> for Error {
    fn from(err: SubmitError<Error>) -> Self {
        match err {
            SubmitError::Rejected(err) => err,
            SubmitError::Unavailable(cause) => Error::Unavailable(cause.into()),
            SubmitError::Closed => Error::Unavailable("the server is shutting down".into()),
        }
    }
}

/// A refusal as the caller sees it (through [`Error`], the one place codes are chosen).
impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        Error::Refused(refusal).into()
    }
}

#[cfg(test)]
mod tests;

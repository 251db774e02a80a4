//! Idempotent writes: every write request may carry a `request_id`, and a retry with the same id
//! returns the first answer and appends nothing; the same id with another request is
//! `ALREADY_EXISTS`.
//!
//! The gRPC edge turns `(caller, request_id)` into a [`RequestKey`]: the SHA-256 of the caller's
//! role and patient id and the id (so two callers' ids never meet), and the digest of the method
//! and the request's protobuf bytes. The state machine looks the key up on the writer thread,
//! in the batch's own view of the state, before it builds the event: so a retry racing its
//! original in the same batch is caught too. A first request writes its [`Recorded`] answer
//! under `req/<key>` in the same transaction as its entry; the record never leaves the server's
//! state (it is not in the log: a request id is the caller's bookkeeping, not a fact about a
//! patient). A retry gets [`crate::error::Error::Duplicate`] from the writer, and the service
//! answers it, once the original is committed, with a fresh receipt of the original entry.
//!
//! Records are kept as long as the state (about 100 bytes per write that carried an id).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::auth::Caller;
use crate::error::{Error, FieldProblem};

/// Longest accepted `request_id`, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// The state key prefix of request records.
pub const REQUEST_PREFIX: &[u8] = b"req/";

/// A request's identity and content, as the state machine checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey {
    /// SHA-256 of the caller and the request id.
    pub key: [u8; 32],
    /// SHA-256 of the method and the request's bytes.
    pub digest: [u8; 32],
}

impl RequestKey {
    /// The key of `request_id` sent by `caller` to `method` with request bytes `body`; none
    /// when the id is empty.
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` on `request_id` when it is longer than [`MAX_REQUEST_ID_LEN`] or
    /// holds control characters.
    pub fn new(
        caller: &Caller,
        method: &str,
        request_id: &str,
        body: &[u8],
    ) -> Result<Option<Self>, Error> {
        if request_id.is_empty() {
            return Ok(None);
        }
        if request_id.len() > MAX_REQUEST_ID_LEN {
            return Err(Error::invalid(
                "request_id",
                FieldProblem::TooLong {
                    max: MAX_REQUEST_ID_LEN,
                },
            ));
        }
        if request_id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "request_id",
                FieldProblem::Invalid {
                    reason: "holds a control character".to_owned(),
                },
            ));
        }
        let mut key = Sha256::new();
        key.update(b"akashi/request-id/v1\0");
        key.update(caller.role.as_str().as_bytes());
        key.update([0]);
        key.update(caller.patient_id.as_deref().unwrap_or_default().as_bytes());
        key.update([0]);
        key.update(request_id.as_bytes());
        let mut digest = Sha256::new();
        digest.update(method.as_bytes());
        digest.update([0]);
        digest.update(body);
        Ok(Some(Self {
            key: key.finalize().into(),
            digest: digest.finalize().into(),
        }))
    }

    /// The state key of its record.
    pub fn state_key(&self) -> Vec<u8> {
        let mut key = REQUEST_PREFIX.to_vec();
        key.extend_from_slice(&self.key);
        key
    }
}

/// What a first request answered, kept for its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The request's digest (hex).
    pub digest: String,
    /// The leaf index of its entry.
    pub index: u64,
    /// What the answer said besides its receipt.
    pub output: RecordedOutput,
}

/// The part of an answer a receipt does not give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedOutput {
    /// Nothing more.
    Logged,
    /// The consent id of a grant.
    Granted(String),
    /// The hash of a policy set activated.
    Activated(String),
    /// The hash of a policy set proposed.
    Proposed(String),
    /// A cohort's decisions: this many entries from the record's index on.
    Cohort(u32),
}

impl Recorded {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // INVARIANT: strings and numbers, which serde_json always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record from its bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Method, Role};

    fn caller(role: Role, patient: Option<&str>) -> Caller {
        Caller {
            role,
            patient_id: patient.map(str::to_owned),
            method: Method::default(),
        }
    }

    #[test]
    fn keys_are_per_caller_and_digests_per_request() {
        let platform = caller(Role::Platform, None);
        let alice = caller(Role::Patient, Some("alice"));
        let a = RequestKey::new(&platform, "m", "r1", b"x")
            .unwrap()
            .unwrap();
        let b = RequestKey::new(&alice, "m", "r1", b"x").unwrap().unwrap();
        assert_ne!(a.key, b.key);
        assert_eq!(a.digest, b.digest);
        let other_body = RequestKey::new(&platform, "m", "r1", b"y")
            .unwrap()
            .unwrap();
        assert_eq!(a.key, other_body.key);
        assert_ne!(a.digest, other_body.digest);
        let other_method = RequestKey::new(&platform, "n", "r1", b"x")
            .unwrap()
            .unwrap();
        assert_ne!(a.digest, other_method.digest);
        assert!(RequestKey::new(&platform, "m", "", b"x").unwrap().is_none());
        assert!(RequestKey::new(&platform, "m", &"x".repeat(129), b"x").is_err());
        assert!(RequestKey::new(&platform, "m", "a\nb", b"x").is_err());
        let record = Recorded {
            digest: hex::encode(a.digest),
            index: 7,
            output: RecordedOutput::Granted("c_1".into()),
        };
        assert_eq!(Recorded::decode(&record.encode()), Some(record));
    }
}

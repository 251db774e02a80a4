//! The shapes of an access decision: what is asked ([`Request`]), what is answered
//! ([`Decision`]), who receives the data ([`Recipient`]) and which policy set answered
//! ([`PolicySetHash`]).
//!
//! These are plain data, serialised into the private body of every `access.decision` log entry;
//! their JSON field names are stable. Computing a decision is [`crate::engine`]'s job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{
    Action, CategoryName, ConsentId, Department, Effect, FacilityId, Level, OrgId, Principal,
    Purpose, RecipientClass, SubjectId,
};

/// An access request (docs/api.md `AccessService/Authorize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who asks.
    pub principal: Principal,
    /// What they want to do.
    pub action: Action,
    /// Whose data; none for a statistics request about a cohort.
    pub subject: Option<SubjectId>,
    /// What kind of data, as named by the caller (may be unknown: then the decision denies).
    pub data_category: CategoryName,
    /// The facility holding the records, if any.
    pub source_facility: Option<FacilityId>,
    /// The department of the source facility the records come from, if known.
    pub source_department: Option<Department>,
    /// Why.
    pub purpose: Purpose,
    /// At which de-identification level.
    pub level: Level,
    /// The number of people in the cohort, for statistics.
    pub cohort_size: Option<u64>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or deny. Any evaluation error makes this a deny.
    pub effect: Effect,
    /// The `@id`s of the policies that determined the effect, in policy-set order: the satisfied
    /// `permit`s of an allow, the satisfied `forbid`s of a deny (empty for a deny by default).
    pub determining_policies: Vec<String>,
    /// Why, in plain words (the `@reason` of each determining policy, or why nothing permitted).
    pub reasons: Vec<String>,
    /// Evaluation errors, if any (each made the decision fail closed).
    pub errors: Vec<String>,
    /// True when an allowing policy asks for review (`@review("true")`, break-glass).
    pub review_required: bool,
    /// The consents that covered the request (purpose, category, recipient, level, time).
    pub matched_consents: Vec<ConsentId>,
}

impl Decision {
    /// A deny decided before any policy ran, for `reason`.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            effect: Effect::Deny,
            determining_policies: Vec::new(),
            reasons: vec![reason.into()],
            errors: Vec::new(),
            review_required: false,
            matched_consents: Vec::new(),
        }
    }

    /// Whether the decision allows.
    pub fn is_allow(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// Whether two decisions agree on everything a replay must reproduce: the effect, the
    /// determining policies and the review flag. (Reasons are derived from the policies; error
    /// texts may change with the Cedar version.)
    pub fn same_outcome(&self, other: &Self) -> bool {
        self.effect == other.effect
            && self.determining_policies == other.determining_policies
            && self.review_required == other.review_required
    }
}

/// Who receives data in a decision: the organisation, or for a clinician their facility's
/// organisation, with its class when the directory knows it. It goes into the public leaf header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The organisation id.
    pub id: OrgId,
    /// Its recipient class, if known.
    pub class: Option<RecipientClass>,
}

/// SHA-256 of a policy set's canonical text (see [`crate::policy_set::canonicalize`]). Serialised as
/// 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicySetHash(pub [u8; 32]);

impl PolicySetHash {
    /// The hash as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// A policy-set hash that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy set hash must be 64 hex characters")]
pub struct BadPolicySetHash;

impl FromStr for PolicySetHash {
    type Err = BadPolicySetHash;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadPolicySetHash)?;
        Ok(Self(out))
    }
}

impl fmt::Debug for PolicySetHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicySetHash({})", self.to_hex())
    }
}

impl fmt::Display for PolicySetHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for PolicySetHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PolicySetHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_str(&s).map_err(serde::de::Error::custom)
    }
}

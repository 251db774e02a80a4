//! Log events: the content of every state-changing or decision log entry, as stored in its body.
//!
//! An [`Event`] serialises to JSON with a `kind` tag equal to [`Event::kind`] and stable field
//! names; the bytes the ledger stores never change, so fields are only ever added (with
//! `#[serde(default)]`). [`Event::public_attributes`] says what may go into the public leaf header
//! (docs/design.md §3) and [`Event::public_body`] which events may be published whole.
//!
//! This module does not apply events (that is [`crate::state::apply`]) and does not frame them
//! into ledger entries (nonce, commitment and header encoding are the ledger's).

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::decision::{Decision, PolicySetHash, Recipient, Request};
use crate::domain::{
    Clinician, Consent, ConsentId, Deactivation, DomainError, Facility, FacilityGroup, FacilityId,
    LeafHeader, MAX_EXCLUDED_DEPARTMENTS, MAX_EXCLUDED_PATIENTS, MAX_PURPOSES, Organization,
    Purpose, SubjectId, Timestamp, check_list,
};
use crate::policy_set::MAX_POLICY_TEXT;
use crate::whatif::AnalysisId;

#[cfg(test)]
mod tests;

/// Largest serialised event accepted by [`Event::from_json`], in bytes.
pub const MAX_EVENT_BYTES: usize = 2 * 1024 * 1024;
/// The most entries one erasure names one by one (an erasure of all of a patient's entries
/// names none: it says up to which index).
pub const MAX_ERASED_INDICES: usize = 1_000;
/// The longest reason an erasure states, in bytes.
pub const MAX_ERASURE_REASON: usize = 1_024;

/// A log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Event {
    /// An organisation was registered or changed.
    #[serde(rename = "directory.organization")]
    UpsertOrganization(Organization),
    /// A facility was registered or changed (including its disclosure settings).
    #[serde(rename = "directory.facility")]
    UpsertFacility(Facility),
    /// A facility group was registered or changed (including its disclosure settings).
    #[serde(rename = "directory.facility_group")]
    UpsertFacilityGroup(FacilityGroup),
    /// A clinician was registered or changed.
    #[serde(rename = "directory.clinician")]
    UpsertClinician(Clinician),
    /// An emergency was declared (`active`) or ended for a facility.
    #[serde(rename = "directory.emergency")]
    SetEmergency {
        /// The facility.
        facility: FacilityId,
        /// Whether an emergency is now in force.
        active: bool,
    },
    /// A clinician, facility or organisation was deactivated: requests by it or on its behalf
    /// are denied from this entry on, until it is registered again (an upsert reactivates it).
    #[serde(rename = "directory.deactivate")]
    Deactivate {
        /// What was deactivated.
        target: Deactivation,
    },
    /// A patient granted a consent.
    #[serde(rename = "consent.grant")]
    GrantConsent(Consent),
    /// A patient revoked a consent; it stops counting for every decision sequenced after this.
    #[serde(rename = "consent.revoke")]
    RevokeConsent {
        /// The patient.
        subject: SubjectId,
        /// The consent.
        consent_id: ConsentId,
        /// When (informational; the order in the log is what counts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revoked_at: Option<Timestamp>,
    },
    /// A patient's opt-outs are now exactly `purposes` (an empty list withdraws every opt-out).
    #[serde(rename = "consent.opt_out")]
    RecordOptOut {
        /// The patient.
        subject: SubjectId,
        /// The purposes opted out of (each with its sub-purposes).
        purposes: Vec<Purpose>,
    },
    /// Entries about a patient were erased on a lawful request (APPI 35条): their private bodies
    /// are deleted and the keys they were sealed under destroyed; their leaves and commitments
    /// stay. The erasure never widens what may be done with the patient's data: consents whose
    /// grants were erased stop counting; opt-outs and revocations keep their effect.
    #[serde(rename = "consent.erase")]
    EraseEntries {
        /// The patient.
        subject: SubjectId,
        /// Every entry about the patient up to and including this index was erased (a request
        /// that named no entries), besides `indices`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        through: Option<u64>,
        /// The entries the request named, ascending (at most [`MAX_ERASED_INDICES`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        indices: Vec<u64>,
        /// Why, as the caller gave it (at most [`MAX_ERASURE_REASON`] bytes).
        reason: String,
        /// A regulator erased entries still under the legal retention period.
        #[serde(default)]
        forced: bool,
        /// When (the sequencing time).
        time: Timestamp,
        /// The consents whose grants were erased: they stop counting from this entry on.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dropped_consents: Vec<ConsentId>,
        /// The patient's consent state after the erasure, so that a replay that could not read
        /// the erased bodies continues from the state the server had.
        state_after: Box<crate::state::SubjectState>,
    },
    /// A policy set became the active one.
    #[serde(rename = "policy.activate")]
    ActivatePolicySet {
        /// Its canonical text.
        policies: String,
        /// SHA-256 of `policies`.
        hash: PolicySetHash,
    },
    /// A policy set was proposed under the two-person rule: it waits, pending, until a
    /// regulator approves it ([`Event::ApprovePolicySet`]); the active set does not change.
    #[serde(rename = "policy.propose")]
    ProposePolicySet {
        /// Its canonical text.
        policies: String,
        /// SHA-256 of `policies`.
        hash: PolicySetHash,
    },
    /// A regulator approved a pending policy set, which became the active one. The approval
    /// names the analysis of its effect on past decisions that the regulator saw
    /// ([`crate::whatif::Analysis`]), and the entries it covered, so that anyone holding the log
    /// can compute the same analysis again and compare.
    #[serde(rename = "policy.approve")]
    ApprovePolicySet {
        /// Its canonical text (the same as the proposal's).
        policies: String,
        /// SHA-256 of `policies`.
        hash: PolicySetHash,
        /// The id of the analysis the regulator saw.
        analysis: AnalysisId,
        /// The first leaf index of the analysis's window.
        analysis_from: u64,
        /// The end (exclusive) of the analysis's window: the tree size it was made at.
        analysis_to: u64,
    },
    /// A pending policy set was taken off the list without being activated (a regulator
    /// declined it, or the platform withdrew it).
    #[serde(rename = "policy.reject")]
    RejectPolicySet {
        /// SHA-256 of its canonical text.
        hash: PolicySetHash,
    },
    /// An access decision.
    #[serde(rename = "access.decision")]
    Decision {
        /// What was asked.
        request: Request,
        /// When it was decided (the time consents' validity is judged at).
        time: Timestamp,
        /// The answer.
        decision: Decision,
        /// The policy set in force.
        policy_set_hash: PolicySetHash,
        /// The leaf index of the subject's previous entry, if the request names a subject.
        subject_prev: Option<u64>,
        /// Who receives the data (from the directory at decision time); public.
        #[serde(default)]
        recipient: Option<Recipient>,
        /// The format of the event's public leaf; none is the first format, which does not
        /// give the data category (see [`LeafHeader`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<LeafHeader>,
    },
}

impl Event {
    /// The dotted kind of the event, also its JSON `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UpsertOrganization(_) => "directory.organization",
            Self::UpsertFacility(_) => "directory.facility",
            Self::UpsertFacilityGroup(_) => "directory.facility_group",
            Self::UpsertClinician(_) => "directory.clinician",
            Self::SetEmergency { .. } => "directory.emergency",
            Self::Deactivate { .. } => "directory.deactivate",
            Self::GrantConsent(_) => "consent.grant",
            Self::RevokeConsent { .. } => "consent.revoke",
            Self::RecordOptOut { .. } => "consent.opt_out",
            Self::EraseEntries { .. } => "consent.erase",
            Self::ActivatePolicySet { .. } => "policy.activate",
            Self::ProposePolicySet { .. } => "policy.propose",
            Self::ApprovePolicySet { .. } => "policy.approve",
            Self::RejectPolicySet { .. } => "policy.reject",
            Self::Decision { .. } => "access.decision",
        }
    }

    /// The sequencing time the event states, for the events that state one (decisions, grants,
    /// revocations): the server dates the entry's leaf by the same time.
    pub fn sequenced_at(&self) -> Option<Timestamp> {
        match self {
            Self::Decision { time, .. } => Some(*time),
            Self::GrantConsent(consent) => Some(consent.granted_at),
            Self::RevokeConsent { revoked_at, .. } => *revoked_at,
            Self::EraseEntries { time, .. } => Some(*time),
            _ => None,
        }
    }

    /// The patient this event is about, if any (the key of the per-subject chain). Directory
    /// events that list excluded patients are not about one patient and return none.
    pub fn subject(&self) -> Option<&SubjectId> {
        match self {
            Self::GrantConsent(consent) => Some(&consent.subject),
            Self::RevokeConsent { subject, .. }
            | Self::RecordOptOut { subject, .. }
            | Self::EraseEntries { subject, .. } => Some(subject),
            Self::Decision { request, .. } => request.subject.as_ref(),
            _ => None,
        }
    }

    /// What may go into the public leaf header (docs/design.md §3), as `(name, value)` pairs. Values
    /// are printable ASCII without spaces (department names outside it are percent-encoded, see
    /// [`leaf_text`]); lists are comma separated, an empty list is `none`.
    /// Never the subject, never patient exclusions, never the requesting clinician or anything
    /// the caller wrote freely. Facility and group events of the first leaf format (no
    /// [`LeafHeader`], as logged before it existed) give the number of excluded patients, which
    /// let the public see one patient being excluded; [`LeafHeader::V2`] ones say nothing about
    /// excluded patients. [`LeafHeader::V2`] decisions add the data category asked for, as a
    /// word of akashi's vocabulary (the public disclosure statistics count by it).
    pub fn public_attributes(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::UpsertOrganization(org) => vec![
                ("org", org.id.to_string()),
                ("recipient_class", org.recipient_class.to_string()),
            ],
            Self::UpsertFacility(facility) => match facility.header {
                None => vec![
                    ("facility", facility.id.to_string()),
                    ("group", opt(facility.group.as_ref())),
                    ("excluded_departments", join(&facility.excluded_departments)),
                    (
                        "excluded_patients",
                        facility.excluded_patients.len().to_string(),
                    ),
                ],
                Some(LeafHeader::V2) => vec![
                    ("header", LeafHeader::V2.to_string()),
                    ("facility", facility.id.to_string()),
                    ("group", opt(facility.group.as_ref())),
                    ("excluded_departments", join(&facility.excluded_departments)),
                    ("recipient_class", opt(facility.recipient_class.as_ref())),
                ],
            },
            Self::UpsertFacilityGroup(group) => match group.header {
                None => vec![
                    ("group", group.id.to_string()),
                    ("excluded_departments", join(&group.excluded_departments)),
                    (
                        "excluded_patients",
                        group.excluded_patients.len().to_string(),
                    ),
                ],
                Some(LeafHeader::V2) => vec![
                    ("header", LeafHeader::V2.to_string()),
                    ("group", group.id.to_string()),
                    ("excluded_departments", join(&group.excluded_departments)),
                ],
            },
            Self::UpsertClinician(clinician) => vec![
                ("clinician", clinician.id.to_string()),
                ("facility", clinician.facility.to_string()),
                ("department", leaf_text(clinician.department.as_str())),
                ("role", clinician.role.to_string()),
            ],
            Self::SetEmergency { facility, active } => vec![
                ("facility", facility.to_string()),
                (
                    "emergency",
                    if *active { "active" } else { "ended" }.to_owned(),
                ),
            ],
            Self::Deactivate { target } => vec![match target {
                Deactivation::Clinician(id) => ("clinician", id.to_string()),
                Deactivation::Facility(id) => ("facility", id.to_string()),
                Deactivation::Organization(id) => ("org", id.to_string()),
            }],
            Self::GrantConsent(consent) => vec![
                ("purposes", join(&consent.purposes)),
                ("recipients", join(&consent.recipients)),
                ("recipient_classes", join(&consent.recipient_classes)),
                ("max_level", consent.max_level.to_string()),
            ],
            // Nothing of an erasure is public but that there was one: not even how many entries
            // it reached, which would tell how many entries a patient has.
            Self::RevokeConsent { .. } | Self::EraseEntries { .. } => Vec::new(),
            Self::RecordOptOut { purposes, .. } => vec![("purposes", join(purposes))],
            Self::ActivatePolicySet { hash, .. }
            | Self::ProposePolicySet { hash, .. }
            | Self::RejectPolicySet { hash } => vec![("policy_set", hash.to_hex())],
            Self::ApprovePolicySet { hash, analysis, .. } => vec![
                ("policy_set", hash.to_hex()),
                ("analysis", analysis.to_hex()),
            ],
            Self::Decision {
                request,
                decision,
                policy_set_hash,
                recipient,
                header,
                ..
            } => decision_attributes(
                request,
                decision,
                *policy_set_hash,
                recipient.as_ref(),
                *header,
            ),
        }
    }

    /// The event as it may be published whole, if it may: directory and policy events carry no
    /// personal data, except facility and group patient exclusions, which are removed here. Consent and decision events are about a patient and
    /// return none.
    pub fn public_body(&self) -> Option<Self> {
        match self {
            Self::UpsertFacility(facility) => Some(Self::UpsertFacility(Facility {
                excluded_patients: Vec::new(),
                ..facility.clone()
            })),
            Self::UpsertFacilityGroup(group) => Some(Self::UpsertFacilityGroup(FacilityGroup {
                excluded_patients: Vec::new(),
                ..group.clone()
            })),
            Self::UpsertOrganization(_)
            | Self::UpsertClinician(_)
            | Self::SetEmergency { .. }
            | Self::Deactivate { .. }
            | Self::ActivatePolicySet { .. }
            | Self::ProposePolicySet { .. }
            | Self::ApprovePolicySet { .. }
            | Self::RejectPolicySet { .. } => Some(self.clone()),
            Self::GrantConsent(_)
            | Self::RevokeConsent { .. }
            | Self::RecordOptOut { .. }
            | Self::EraseEntries { .. }
            | Self::Decision { .. } => None,
        }
    }

    /// Checks the caps and shapes that the types cannot express (list lengths, consent shape).
    ///
    /// # Errors
    ///
    /// The first [`DomainError`] found.
    pub fn check(&self) -> Result<(), DomainError> {
        match self {
            Self::UpsertFacility(facility) => {
                check_list(
                    "excluded_departments",
                    facility.excluded_departments.len(),
                    MAX_EXCLUDED_DEPARTMENTS,
                    false,
                )?;
                check_list(
                    "excluded_patients",
                    facility.excluded_patients.len(),
                    MAX_EXCLUDED_PATIENTS,
                    false,
                )
            }
            Self::UpsertFacilityGroup(group) => {
                check_list(
                    "excluded_departments",
                    group.excluded_departments.len(),
                    MAX_EXCLUDED_DEPARTMENTS,
                    false,
                )?;
                check_list(
                    "excluded_patients",
                    group.excluded_patients.len(),
                    MAX_EXCLUDED_PATIENTS,
                    false,
                )
            }
            Self::GrantConsent(consent) => consent.check(),
            Self::RecordOptOut { purposes, .. } => {
                check_list("purposes", purposes.len(), MAX_PURPOSES, false)
            }
            Self::EraseEntries {
                indices, reason, ..
            } => {
                check_list("indices", indices.len(), MAX_ERASED_INDICES, false)?;
                if reason.len() > MAX_ERASURE_REASON {
                    return Err(DomainError::TooLong {
                        field: "reason",
                        len: reason.len(),
                        max: MAX_ERASURE_REASON,
                    });
                }
                Ok(())
            }
            Self::ActivatePolicySet { policies, .. }
            | Self::ProposePolicySet { policies, .. }
            | Self::ApprovePolicySet { policies, .. }
                if policies.len() > MAX_POLICY_TEXT =>
            {
                Err(DomainError::TooLong {
                    field: "policies",
                    len: policies.len(),
                    max: MAX_POLICY_TEXT,
                })
            }
            _ => Ok(()),
        }
    }

    /// The event's JSON body.
    ///
    /// # Errors
    ///
    /// [`EventCodecError`] if serialisation fails (it does not for events built from this crate's
    /// types).
    pub fn to_json(&self) -> Result<Vec<u8>, EventCodecError> {
        serde_json::to_vec(self).map_err(|source| EventCodecError::Json { source })
    }

    /// Parses an event from its JSON body.
    ///
    /// # Errors
    ///
    /// [`EventCodecError`] when the body is larger than [`MAX_EVENT_BYTES`] or not a valid event.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventCodecError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventCodecError::TooLarge {
                len: bytes.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| EventCodecError::Json { source })
    }
}

/// Why an event body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventCodecError {
    /// The body is larger than the cap.
    #[error("event body is too large ({len} bytes, at most {max})")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The body is not a valid event.
    #[error("invalid event body: {source}")]
    Json {
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// What a public leaf value may not hold as it is: control characters, space, `%` (the escape)
/// and `,` (the list separator). Everything outside ASCII is encoded too.
const LEAF_ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b',');

/// `value` as a public leaf value: printable ASCII without spaces, with every other byte of its
/// UTF-8 (and `%` and `,`) percent-encoded, e.g. `精神科` as `%E7%B2%BE%E7%A5%9E%E7%A7%91`.
/// Values made only of identifier characters and vocabulary words (everything logged before
/// department names could leave ASCII) are unchanged, so older leaves encode as they did.
pub fn leaf_text(value: &str) -> String {
    utf8_percent_encode(value, LEAF_ENCODED).to_string()
}

/// A list as a public leaf value: its items (each through [`leaf_text`]) joined by commas, or
/// `none` when empty.
fn join<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(|item| leaf_text(&item.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The public attributes of a decision. A [`LeafHeader::V2`] leaf begins with `header 2` and also
/// gives the data category asked for — a known category's name, or `other` for a name akashi does
/// not know (which the decision denied), so that no caller-chosen text reaches the public leaf.
fn decision_attributes(
    request: &Request,
    decision: &Decision,
    policy_set_hash: PolicySetHash,
    recipient: Option<&Recipient>,
    header: Option<LeafHeader>,
) -> Vec<(&'static str, String)> {
    let mut attributes = Vec::with_capacity(11);
    if let Some(header) = header {
        attributes.push(("header", header.to_string()));
    }
    attributes.extend([
        ("action", request.action.to_string()),
        (
            "principal_type",
            request.principal.principal_type().to_string(),
        ),
        ("recipient", opt(recipient.map(|r| &r.id))),
        (
            "recipient_class",
            opt(recipient.and_then(|r| r.class.as_ref())),
        ),
        ("purpose", request.purpose.to_string()),
        ("level", request.level.to_string()),
    ]);
    if header.is_some() {
        let category = request
            .data_category
            .category()
            .map_or(OTHER_CATEGORY, |category| category.as_str());
        attributes.push(("category", category.to_owned()));
    }
    attributes.extend([
        ("decision", decision.effect.to_string()),
        ("policy_set", policy_set_hash.to_hex()),
        ("review", decision.review_required.to_string()),
    ]);
    attributes
}

/// The `category` of a [`LeafHeader::V2`] decision leaf whose request named a category akashi
/// does not know.
pub const OTHER_CATEGORY: &str = "other";

fn opt<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "none".to_owned(), ToString::to_string)
}

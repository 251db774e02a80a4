//! The state derived from the log, kept in a key-value map: one implementation, used by the
//! server (over the ledger's transactional store) and by a regulator's replay (over a
//! [`BTreeMap`]), so both compute the same thing from the same log.
//!
//! [`apply`] folds one [`Event`] into the map; [`check`] runs the same checks without writing,
//! so the server can refuse an event before it is sequenced. The read helpers below are what
//! decisions and the consent API read. Reads per decision are a handful of point gets (see
//! [`crate::facts::Facts::gather`]): a patient's consents, opt-outs and disclosure exclusions live
//! under one key, so decisions do not slow down as patients grow.
//!
//! This module does not decide (see [`crate::engine`]) and does not sequence or store entries.
//!
//! # Key layout
//!
//! Keys are ASCII prefixes followed by an identifier (identifiers never contain `/`) or, for the
//! per-subject entry listing, an 8-byte big-endian page number. Values are JSON unless noted.
//!
//! | key | value |
//! |---|---|
//! | `meta/layout` | 8-byte big-endian [`LAYOUT_VERSION`], written with the first event |
//! | `meta/last` | 8-byte big-endian leaf index of the last applied event |
//! | `meta/dir` | 8-byte big-endian leaf index of the last directory event (directory version) |
//! | `dirlog/<8-byte BE index>` | the key of the directory record that event changed |
//! | `dirlog/<8-byte BE index><1 byte n>` | the key of the n-th other record it changed (a facility's organisation) |
//! | `dir/org/<org id>` | [`OrganizationRecord`]: the [`Organization`], and when it was deactivated |
//! | `dir/fac/<facility id>` | the facility without its patient list, plus its emergency flag and deactivation |
//! | `dir/facx/<facility id>` | the facility's excluded patients (read only when it changes) |
//! | `dir/grp/<group id>` | the facility group without its patient list |
//! | `dir/grpx/<group id>` | the group's excluded patients (read only when it changes) |
//! | `dir/cli/<clinician id>` | [`ClinicianRecord`]: the [`Clinician`], and when they were deactivated |
//! | `con/<consent id>` | which patient it belongs to, and the leaf indices of grant and revoke |
//! | `pol/active` | the active policy set: hash, canonical text, leaf index |
//! | `subj/<pseudonym>/s` | [`SubjectState`]: unrevoked consents, opt-outs, exclusions, and the leaf indices of grants and opt-outs |
//! | `subj/<pseudonym>/h` | 16 bytes: last leaf index and entry count, both big-endian |
//! | `subj/<pseudonym>/e/<8-byte BE page>` | leaf indices (8 bytes BE each) of the patient's entries `page × 32 ..`, at most [`SUBJECT_PAGE_ENTRIES`] |
//!
//! The listing is paged rather than one key per entry because every decision about a patient
//! adds to it: appending to the last page overwrites a key, where a new key per entry made the
//! engine split its B-tree nodes every few decisions and kept a page of engine bookkeeping in
//! memory per sixteen entries (see BENCHMARKS.md, “A paged patient listing”).
//! [`subject_entries_after`] reads it page by page, finding where to start with a binary search
//! over the pages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::decision::PolicySetHash;
use crate::domain::{
    Clinician, ClinicianId, Consent, ConsentId, DataCategory, Deactivation, Department,
    DomainError, Facility, FacilityGroup, FacilityId, GroupId, Level, Name, OrgId, Organization,
    Purpose, RecipientClass, SubjectId, Timestamp,
};
use crate::event::Event;
use crate::policy_set::{self, ValidationIssue};

#[cfg(test)]
mod tests;

/// Leaf indices per page of a patient's entry listing.
pub const SUBJECT_PAGE_ENTRIES: u64 = 32;

/// The version of the key layout above. Version 1 (no `meta/layout` key) listed a patient's
/// entries one key per entry.
pub const LAYOUT_VERSION: u64 = 2;

/// Most unrevoked consents a patient may hold (consents that expired before a new grant are
/// dropped at that grant and do not count).
pub const MAX_CONSENTS_PER_SUBJECT: usize = 256;

/// A failure of the underlying key-value store.
#[derive(Debug, thiserror::Error)]
#[error("key-value store failed: {source}")]
pub struct KvError {
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl KvError {
    /// Wraps a store's error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

/// Reads from a key-value map.
pub trait KvRead {
    /// The value under `key`, if any.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
}

/// Writes to a key-value map.
pub trait KvWrite: KvRead {
    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError>;

    /// Removes `key` (no error if it is absent).
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn delete(&mut self, key: &[u8]) -> Result<(), KvError>;
}

/// Key-value pairs, in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Lists keys in a range, in key order.
pub trait KvScan: KvRead {
    /// Every `(key, value)` with `start <= key < end` (`end` `None`: no upper bound), in key
    /// order.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<KvPairs, KvError>;

    /// The first `limit` pairs of [`KvScan::scan_range`]. Stores that can stop early override it.
    ///
    /// # Errors
    ///
    /// [`KvError`] when the store fails.
    fn scan_range_limit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        let mut pairs = self.scan_range(start, end)?;
        pairs.truncate(limit);
        Ok(pairs)
    }
}

impl KvRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(BTreeMap::get(self, key).cloned())
    }
}

impl KvWrite for BTreeMap<Vec<u8>, Vec<u8>> {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        self.remove(key);
        Ok(())
    }
}

impl KvScan for BTreeMap<Vec<u8>, Vec<u8>> {
    fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<KvPairs, KvError> {
        use std::ops::Bound;
        let upper = match end {
            Some(end) if start >= end => return Ok(Vec::new()),
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        Ok(self
            .range((Bound::Included(start.to_vec()), upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl<T: KvScan + ?Sized> KvScan for &T {
    fn scan_range(&self, start: &[u8], end: Option<&[u8]>) -> Result<KvPairs, KvError> {
        (**self).scan_range(start, end)
    }

    fn scan_range_limit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<KvPairs, KvError> {
        (**self).scan_range_limit(start, end, limit)
    }
}

/// The smallest key greater than every key that starts with `prefix`, the end bound of
/// [`KvScan::scan_range`] for a prefix scan; `None` when there is none (an empty prefix, or one
/// of only `0xff` bytes: every key after `prefix` starts with it).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last.saturating_add(1));
            return Some(end);
        }
    }
    None
}

/// Every `(key, value)` whose key starts with `prefix`, in key order.
///
/// # Errors
///
/// [`KvError`] when the store fails.
pub fn scan_prefix(kv: &impl KvScan, prefix: &[u8]) -> Result<KvPairs, KvError> {
    kv.scan_range(prefix, prefix_end(prefix).as_deref())
}

impl<T: KvRead + ?Sized> KvRead for &T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }
}

impl<T: KvRead + ?Sized> KvRead for &mut T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }
}

impl<T: KvWrite + ?Sized> KvWrite for &mut T {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        (**self).put(key, value)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        (**self).delete(key)
    }
}

/// A read of the derived state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The Cedar directory could not be built (a bug in this crate, or a corrupt record).
    #[error("directory could not be built: {message}")]
    Directory {
        /// Cedar's message.
        message: String,
    },
    /// A directory snapshot does not match the state it is used with.
    #[error("directory snapshot is at version {directory:?} but the state is at {state:?}")]
    StaleDirectory {
        /// The snapshot's version.
        directory: Option<u64>,
        /// The state's version.
        state: Option<u64>,
    },
    /// A stored value could not be decoded (`what` names the kind of record, never its key, which
    /// may hold a pseudonym).
    #[error("stored {what} record is corrupt")]
    Corrupt {
        /// The kind of record.
        what: &'static str,
    },
    /// The state was written with another key layout (by an older server).
    #[error(
        "the derived state has key layout {found} but this server reads layout {expected}: \
         the data dir was written by an older akashi"
    )]
    Layout {
        /// The layout found.
        found: u64,
        /// The layout this code reads.
        expected: u64,
    },
}

/// Why an event cannot be applied (or, from [`check`], would not be).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Reading or writing the state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The event breaks a cap or shape rule.
    #[error("invalid event: {0}")]
    Invalid(#[from] DomainError),
    /// Events must be applied in increasing leaf-index order, each once.
    #[error("event at index {index} applied after index {last}")]
    OutOfOrder {
        /// The event's index.
        index: u64,
        /// The last applied index.
        last: u64,
    },
    /// The event names an organisation the directory does not hold.
    #[error("unknown organisation `{id}`")]
    UnknownOrganization {
        /// The organisation.
        id: OrgId,
    },
    /// The event names a facility the directory does not hold.
    #[error("unknown facility `{id}`")]
    UnknownFacility {
        /// The facility.
        id: FacilityId,
    },
    /// The event names a facility group the directory does not hold.
    #[error("unknown facility group `{id}`")]
    UnknownGroup {
        /// The group.
        id: GroupId,
    },
    /// The event names a clinician the directory does not hold.
    #[error("unknown clinician `{id}`")]
    UnknownClinician {
        /// The clinician.
        id: ClinicianId,
    },
    /// A deactivation names something already deactivated.
    #[error("{} is already deactivated (at entry {at})", describe(.target))]
    AlreadyDeactivated {
        /// What the event names.
        target: Deactivation,
        /// The leaf index of its deactivation.
        at: u64,
    },
    /// A grant reuses a consent id.
    #[error("consent `{id}` already exists")]
    DuplicateConsent {
        /// The consent.
        id: ConsentId,
    },
    /// A revocation names a consent that was never granted.
    #[error("unknown consent `{id}`")]
    UnknownConsent {
        /// The consent.
        id: ConsentId,
    },
    /// A revocation names a consent of another patient.
    #[error("consent `{id}` belongs to another patient")]
    ConsentOfOtherSubject {
        /// The consent.
        id: ConsentId,
    },
    /// A revocation names a consent that is already revoked.
    #[error("consent `{id}` is already revoked")]
    AlreadyRevoked {
        /// The consent.
        id: ConsentId,
    },
    /// A patient would hold more unrevoked consents than allowed.
    #[error("the patient already holds {max} consents")]
    TooManyConsents {
        /// The cap.
        max: usize,
    },
    /// An activation's hash is not the SHA-256 of its text, or the text is not canonical.
    #[error("policy set hash `{claimed}` does not match its canonical text (`{actual}`)")]
    PolicyHashMismatch {
        /// The hash in the event.
        claimed: PolicySetHash,
        /// The hash of the canonical text.
        actual: PolicySetHash,
    },
    /// An activation's policies do not validate against the schema.
    #[error("policy set is invalid: {}", first_issue(.issues))]
    InvalidPolicySet {
        /// What is wrong.
        issues: Vec<ValidationIssue>,
    },
    /// A decision was logged before any policy set was activated.
    #[error("decision logged with no active policy set")]
    NoActivePolicySet,
    /// A decision names a policy set other than the active one.
    #[error("decision names policy set `{logged}` but `{active}` is active")]
    PolicySetMismatch {
        /// The hash in the event.
        logged: PolicySetHash,
        /// The active hash.
        active: PolicySetHash,
    },
    /// A decision's `subject_prev` is not the subject's last entry.
    #[error("decision names previous subject entry {logged:?} but the last one is {actual:?}")]
    SubjectChainMismatch {
        /// The index in the event.
        logged: Option<u64>,
        /// The subject's last entry.
        actual: Option<u64>,
    },
}

/// `clinician `dr-x``, `facility `f``, `organisation `o``: what a deactivation names, for messages.
pub fn describe(target: &Deactivation) -> String {
    match target {
        Deactivation::Clinician(id) => format!("clinician `{id}`"),
        Deactivation::Facility(id) => format!("facility `{id}`"),
        Deactivation::Organization(id) => format!("organisation `{id}`"),
    }
}

fn first_issue(issues: &[ValidationIssue]) -> String {
    issues
        .first()
        .map_or_else(|| "no details".to_owned(), ToString::to_string)
}

/// A patient's consent state, as stored under one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectState {
    /// Unrevoked consents (including ones not yet or no longer in force).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consents: Vec<Consent>,
    /// Purposes opted out of (each with its sub-purposes), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opt_outs: Vec<Purpose>,
    /// Facilities that exclude this patient from sharing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_by_facilities: Vec<FacilityId>,
    /// Facility groups that exclude this patient from sharing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_by_groups: Vec<GroupId>,
    /// Leaf index of the grant of each consent in `consents`. A consent missing here was stored
    /// before these indices were kept: it counts as granted before every opt-out (see
    /// [`SubjectState::opted_out_after`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent_indices: BTreeMap<ConsentId, u64>,
    /// For each purpose in `opt_outs`, the leaf index of the opt-out event since which it has
    /// been opted out without a break (an event that keeps a purpose keeps its index). A purpose
    /// missing here was stored before these indices were kept: it counts as recorded after every
    /// consent stored then, and before every consent granted since (see
    /// [`SubjectState::opted_out_after`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub opt_out_indices: BTreeMap<Purpose, u64>,
}

impl SubjectState {
    /// The consents in force at `now` (unrevoked and inside their validity period).
    pub fn active_at(&self, now: Timestamp) -> impl Iterator<Item = &Consent> {
        self.consents.iter().filter(move |c| c.in_force_at(now))
    }

    /// Whether the patient opted out of `purpose` (or of a purpose it is a kind of).
    pub fn opted_out_of(&self, purpose: Purpose) -> bool {
        self.opt_outs.iter().any(|o| purpose.is_a(*o))
    }

    /// Whether an opt-out of `purpose` (or of a purpose it is a kind of) was recorded after
    /// `consent` was granted, so that it overrides the consent for `purpose` (the patient's later
    /// word wins).
    ///
    /// Records stored before these indices were kept lack them; an index missing here means
    /// "recorded before indices were kept", so it is earlier than every known index. Where both
    /// are missing the order is unknown and the opt-out counts as the later word (fail closed).
    pub fn opted_out_after(&self, consent: &ConsentId, purpose: Purpose) -> bool {
        let granted = self.consent_indices.get(consent).copied();
        self.opt_outs.iter().filter(|o| purpose.is_a(**o)).any(|o| {
            match (self.opt_out_indices.get(o), granted) {
                (Some(opted), Some(granted)) => *opted > granted,
                (None, Some(_)) => false,
                (Some(_), None) | (None, None) => true,
            }
        })
    }

    /// Drops the indices of consents and purposes the state no longer holds.
    fn prune_indices(&mut self) {
        let consents = &self.consents;
        self.consent_indices
            .retain(|id, _| consents.iter().any(|c| &c.id == id));
        let opt_outs = &self.opt_outs;
        self.opt_out_indices.retain(|p, _| opt_outs.contains(p));
    }

    fn is_empty(&self) -> bool {
        self.consents.is_empty()
            && self.opt_outs.is_empty()
            && self.excluded_by_facilities.is_empty()
            && self.excluded_by_groups.is_empty()
    }
}

/// Where a patient's chain of entries stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectHead {
    /// Leaf index of the patient's latest entry.
    pub last_index: u64,
    /// How many entries name the patient.
    pub count: u64,
}

/// A facility as the state holds it: the directory record (with its patient exclusions when read
/// through [`facility`]) and whether an emergency is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacilityState {
    /// The facility.
    pub facility: Facility,
    /// Whether an emergency is declared for it.
    pub emergency_active: bool,
    /// The leaf index of its deactivation, if it is deactivated.
    pub deactivated: Option<u64>,
}

/// An organisation as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationRecord {
    /// The organisation.
    #[serde(flatten)]
    pub organization: Organization,
    /// The leaf index of its deactivation, if it is deactivated (an upsert clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<u64>,
}

/// A clinician as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClinicianRecord {
    /// The clinician.
    #[serde(flatten)]
    pub clinician: Clinician,
    /// The leaf index of their deactivation, if deactivated (an upsert clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<u64>,
}

/// A facility as directory reads show it: everything but its patient exclusions, which are
/// personal data (pseudonyms) and stay in the state for decisions only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacilityRecord {
    /// Its id.
    pub id: FacilityId,
    /// Its display name.
    pub name: Name,
    /// Its group, if any.
    pub group: Option<GroupId>,
    /// Departments whose records it does not share.
    pub excluded_departments: Vec<Department>,
    /// Whether an emergency is declared for it.
    pub emergency_active: bool,
    /// The leaf index of its deactivation, if it is deactivated (an upsert clears it).
    pub deactivated: Option<u64>,
}

/// A facility group as directory reads show it: without its patient exclusions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Its id.
    pub id: GroupId,
    /// Departments no member facility shares.
    pub excluded_departments: Vec<Department>,
}

/// One page of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The records, in id order.
    pub items: Vec<T>,
    /// The id to list after for the next page, when there are more records.
    pub next_after: Option<String>,
}

/// What the state knows of a consent id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// The patient it belongs to.
    pub subject: SubjectId,
    /// Leaf index of its grant.
    pub granted: u64,
    /// Leaf index of its revocation, if revoked.
    pub revoked: Option<u64>,
}

/// The active policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePolicySet {
    /// SHA-256 of its canonical text.
    pub hash: PolicySetHash,
    /// Its canonical text.
    pub policies: String,
    /// Leaf index of its activation.
    pub index: u64,
}

/// Applies the event at leaf `index` to the state.
///
/// # Errors
///
/// [`ApplyError`] when the event breaks a rule of [`check`] (nothing is written then) or the store
/// fails (the caller's transaction must then be dropped).
pub fn apply(kv: &mut impl KvWrite, event: &Event, index: u64) -> Result<(), ApplyError> {
    check(&*kv, event, index)?;
    match event {
        Event::UpsertOrganization(org) => put_json(kv, &key(ORG, org.id.as_str()), org)?,
        Event::UpsertFacility(facility) => {
            apply_facility(kv, facility)?;
            // A facility is an organisation with the same id, when the event says under which
            // class (events logged before that register none).
            if let Some(organization) = facility_organization(facility) {
                put_json(kv, &key(ORG, facility.id.as_str()), &organization)?;
            }
        }
        Event::UpsertFacilityGroup(group) => apply_group(kv, group)?,
        Event::UpsertClinician(clinician) => {
            put_json(kv, &key(CLINICIAN, clinician.id.as_str()), clinician)?;
        }
        Event::Deactivate { target } => apply_deactivation(kv, target, index)?,
        Event::SetEmergency { facility, active } => {
            let k = key(FACILITY, facility.as_str());
            let mut stored: StoredFacility =
                get_json(&*kv, &k, "facility")?.ok_or_else(|| ApplyError::UnknownFacility {
                    id: facility.clone(),
                })?;
            stored.emergency_active = *active;
            put_json(kv, &k, &stored)?;
        }
        Event::GrantConsent(consent) => {
            let mut state = consent_state(&*kv, &consent.subject)?;
            state
                .consents
                .retain(|c| c.valid_until.is_none_or(|until| until > consent.granted_at));
            state.consents.push(consent.clone());
            state.consent_indices.insert(consent.id.clone(), index);
            state.prune_indices();
            put_subject_state(kv, &consent.subject, &state)?;
            let record = ConsentRecord {
                subject: consent.subject.clone(),
                granted: index,
                revoked: None,
            };
            put_json(kv, &key(CONSENT, consent.id.as_str()), &record)?;
        }
        Event::RevokeConsent {
            subject,
            consent_id,
            ..
        } => {
            let k = key(CONSENT, consent_id.as_str());
            if let Some(mut record) = get_json::<ConsentRecord>(&*kv, &k, "consent")? {
                record.revoked = Some(index);
                put_json(kv, &k, &record)?;
            }
            let mut state = consent_state(&*kv, subject)?;
            state.consents.retain(|c| &c.id != consent_id);
            state.prune_indices();
            put_subject_state(kv, subject, &state)?;
        }
        Event::RecordOptOut { subject, purposes } => {
            let mut state = consent_state(&*kv, subject)?;
            let mut purposes = purposes.clone();
            purposes.sort_unstable();
            purposes.dedup();
            // A purpose that stays opted out keeps the index it was recorded at (or none, for
            // one stored before indices were kept); a newly opted-out purpose gets this one.
            let earlier = std::mem::take(&mut state.opt_out_indices);
            for purpose in &purposes {
                if state.opt_outs.contains(purpose) {
                    if let Some(at) = earlier.get(purpose) {
                        state.opt_out_indices.insert(*purpose, *at);
                    }
                } else {
                    state.opt_out_indices.insert(*purpose, index);
                }
            }
            state.opt_outs = purposes;
            put_subject_state(kv, subject, &state)?;
        }
        Event::ActivatePolicySet { policies, hash } => {
            let active = ActivePolicySet {
                hash: *hash,
                policies: policies.clone(),
                index,
            };
            put_json(kv, POLICY_ACTIVE, &active)?;
            // The hash alone, under its own key: every decision reads it, and the whole set is
            // tens of kilobytes.
            kv.put(POLICY_ACTIVE_HASH, &hash.0)
                .map_err(StateError::from)?;
        }
        Event::Decision { .. } => {}
    }
    if let Some(subject) = event.subject() {
        append_subject_entry(kv, subject, index)?;
    }
    let changed = directory_keys(&*kv, event)?;
    if !changed.is_empty() {
        kv.put(META_DIRECTORY, &index.to_be_bytes())
            .map_err(StateError::from)?;
        for (n, changed) in changed.iter().enumerate() {
            let mut log_key = DIRECTORY_LOG.to_vec();
            log_key.extend_from_slice(&index.to_be_bytes());
            // The first record keeps the key events have always used; further ones (a
            // facility's organisation) sort right after it.
            if let Some(n) = n.checked_sub(1) {
                log_key.push(u8::try_from(n).unwrap_or(u8::MAX));
            }
            kv.put(&log_key, changed).map_err(StateError::from)?;
        }
    }
    if last_applied(&*kv)?.is_none() {
        kv.put(META_LAYOUT, &LAYOUT_VERSION.to_be_bytes())
            .map_err(StateError::from)?;
    }
    kv.put(META_LAST, &index.to_be_bytes())
        .map_err(StateError::from)?;
    Ok(())
}

/// Adds leaf `index` to the patient's head and to the last page of their listing.
fn append_subject_entry(
    kv: &mut impl KvWrite,
    subject: &SubjectId,
    index: u64,
) -> Result<(), StateError> {
    let position = subject_head(&*kv, subject)?.map_or(0, |h| h.count);
    let page_key = subject_page_key(subject, position / SUBJECT_PAGE_ENTRIES);
    let mut page = if position.is_multiple_of(SUBJECT_PAGE_ENTRIES) {
        Vec::new()
    } else {
        // A state that does not keep the listing (a regulator's replay) has no page here; it
        // drops the write below as well.
        kv.get(&page_key)?.unwrap_or_default()
    };
    page.extend_from_slice(&index.to_be_bytes());
    kv.put(&page_key, &page).map_err(StateError::from)?;
    let mut head = [0u8; 16];
    let (last, count) = head.split_at_mut(8);
    last.copy_from_slice(&index.to_be_bytes());
    count.copy_from_slice(&position.saturating_add(1).to_be_bytes());
    kv.put(&subject_key(subject, b"h"), &head)
        .map_err(StateError::from)?;
    Ok(())
}

/// The storage keys of the directory records a directory event changed (none for other
/// events), read after the event was applied.
fn directory_keys(kv: &impl KvRead, event: &Event) -> Result<Vec<Vec<u8>>, StateError> {
    Ok(match event {
        Event::UpsertOrganization(org) => vec![key(ORG, org.id.as_str())],
        Event::UpsertFacility(facility) if facility.recipient_class.is_some() => vec![
            key(FACILITY, facility.id.as_str()),
            key(ORG, facility.id.as_str()),
        ],
        Event::UpsertFacility(facility) => vec![key(FACILITY, facility.id.as_str())],
        Event::SetEmergency { facility, .. } => vec![key(FACILITY, facility.as_str())],
        Event::UpsertFacilityGroup(group) => vec![key(GROUP, group.id.as_str())],
        Event::UpsertClinician(clinician) => vec![key(CLINICIAN, clinician.id.as_str())],
        Event::Deactivate {
            target: Deactivation::Clinician(id),
        } => vec![key(CLINICIAN, id.as_str())],
        Event::Deactivate {
            target: Deactivation::Organization(id),
        } => vec![key(ORG, id.as_str())],
        Event::Deactivate {
            target: Deactivation::Facility(id),
        } => {
            let org = key(ORG, id.as_str());
            let mut keys = vec![key(FACILITY, id.as_str())];
            if kv.get(&org)?.is_some() {
                keys.push(org);
            }
            keys
        }
        _ => Vec::new(),
    })
}

/// The organisation a facility event registers, if it names a recipient class.
fn facility_organization(facility: &Facility) -> Option<Organization> {
    Some(Organization {
        id: OrgId::of_facility(&facility.id),
        name: facility.name.clone(),
        recipient_class: facility.recipient_class?,
    })
}

/// Marks what `target` names deactivated at `index` (a facility's organisation too).
fn apply_deactivation(
    kv: &mut impl KvWrite,
    target: &Deactivation,
    index: u64,
) -> Result<(), ApplyError> {
    match target {
        Deactivation::Clinician(id) => {
            let k = key(CLINICIAN, id.as_str());
            let mut record: ClinicianRecord = get_json(&*kv, &k, "clinician")?
                .ok_or_else(|| ApplyError::UnknownClinician { id: id.clone() })?;
            record.deactivated = Some(index);
            put_json(kv, &k, &record)?;
        }
        Deactivation::Organization(id) => deactivate_organization(kv, id, index)?,
        Deactivation::Facility(id) => {
            let k = key(FACILITY, id.as_str());
            let mut stored: StoredFacility = get_json(&*kv, &k, "facility")?
                .ok_or_else(|| ApplyError::UnknownFacility { id: id.clone() })?;
            stored.deactivated = Some(index);
            put_json(kv, &k, &stored)?;
            let org = OrgId::of_facility(id);
            if organization_record(&*kv, &org)?.is_some() {
                deactivate_organization(kv, &org, index)?;
            }
        }
    }
    Ok(())
}

fn deactivate_organization(
    kv: &mut impl KvWrite,
    id: &OrgId,
    index: u64,
) -> Result<(), ApplyError> {
    let k = key(ORG, id.as_str());
    let mut record: OrganizationRecord = get_json(&*kv, &k, "organisation")?
        .ok_or_else(|| ApplyError::UnknownOrganization { id: id.clone() })?;
    record.deactivated = Some(index);
    put_json(kv, &k, &record)?;
    Ok(())
}

/// When what `target` names was deactivated: `Ok(None)` when it is registered and active.
fn deactivated_at(kv: &impl KvRead, target: &Deactivation) -> Result<Option<u64>, ApplyError> {
    Ok(match target {
        Deactivation::Clinician(id) => {
            clinician_record(kv, id)?
                .ok_or_else(|| ApplyError::UnknownClinician { id: id.clone() })?
                .deactivated
        }
        Deactivation::Organization(id) => {
            organization_record(kv, id)?
                .ok_or_else(|| ApplyError::UnknownOrganization { id: id.clone() })?
                .deactivated
        }
        Deactivation::Facility(id) => {
            facility_record(kv, id)?
                .ok_or_else(|| ApplyError::UnknownFacility { id: id.clone() })?
                .deactivated
        }
    })
}

/// Checks, without writing, that the event at leaf `index` can be applied: the same checks as
/// [`apply`]. The server calls it before sequencing an event it built (a revocation of an unknown
/// consent or of another patient's consent, an emergency for an unknown facility, an invalid
/// policy set, ...).
///
/// Within one batch, later events must be checked against the state after the earlier ones:
/// [`apply`] them in order and drop the ones that fail.
///
/// # Errors
///
/// The first [`ApplyError`] found.
pub fn check(kv: &impl KvRead, event: &Event, index: u64) -> Result<(), ApplyError> {
    event.check()?;
    if let Some(last) = last_applied(kv)?
        && index <= last
    {
        return Err(ApplyError::OutOfOrder { index, last });
    }
    match event {
        Event::UpsertOrganization(_) => {}
        Event::UpsertFacility(facility) => {
            if let Some(group) = &facility.group
                && facility_group_record(kv, group)?.is_none()
            {
                return Err(ApplyError::UnknownGroup { id: group.clone() });
            }
        }
        Event::UpsertFacilityGroup(_) => {}
        Event::UpsertClinician(clinician) => require_facility(kv, &clinician.facility)?,
        Event::SetEmergency { facility, .. } => require_facility(kv, facility)?,
        Event::Deactivate { target } => {
            if let Some(at) = deactivated_at(kv, target)? {
                return Err(ApplyError::AlreadyDeactivated {
                    target: target.clone(),
                    at,
                });
            }
        }
        Event::GrantConsent(consent) => check_grant(kv, consent)?,
        Event::RevokeConsent {
            subject,
            consent_id,
            ..
        } => check_revoke(kv, subject, consent_id)?,
        Event::RecordOptOut { .. } => {}
        Event::ActivatePolicySet { policies, hash } => {
            let canonical = policy_set::canonicalize(policies);
            let actual = policy_set::hash_text(&canonical);
            if canonical != *policies || actual != *hash {
                return Err(ApplyError::PolicyHashMismatch {
                    claimed: *hash,
                    actual,
                });
            }
            policy_set::validate(policies)
                .map_err(|issues| ApplyError::InvalidPolicySet { issues })?;
        }
        Event::Decision {
            request,
            policy_set_hash,
            subject_prev,
            ..
        } => {
            let active = active_policy_set_hash(kv)?.ok_or(ApplyError::NoActivePolicySet)?;
            if active != *policy_set_hash {
                return Err(ApplyError::PolicySetMismatch {
                    logged: *policy_set_hash,
                    active,
                });
            }
            let actual = match &request.subject {
                Some(subject) => subject_head(kv, subject)?.map(|h| h.last_index),
                None => None,
            };
            if actual != *subject_prev {
                return Err(ApplyError::SubjectChainMismatch {
                    logged: *subject_prev,
                    actual,
                });
            }
        }
    }
    Ok(())
}

/// Checks that `consent` can be granted: valid shape, a new id, named recipients registered, and
/// room for one more consent.
///
/// # Errors
///
/// [`ApplyError::Invalid`], [`ApplyError::DuplicateConsent`],
/// [`ApplyError::UnknownOrganization`] or [`ApplyError::TooManyConsents`].
pub fn check_grant(kv: &impl KvRead, consent: &Consent) -> Result<(), ApplyError> {
    consent.check()?;
    if consent_record(kv, &consent.id)?.is_some() {
        return Err(ApplyError::DuplicateConsent {
            id: consent.id.clone(),
        });
    }
    for recipient in &consent.recipients {
        if organization(kv, recipient)?.is_none() {
            return Err(ApplyError::UnknownOrganization {
                id: recipient.clone(),
            });
        }
    }
    let state = consent_state(kv, &consent.subject)?;
    let kept = state
        .consents
        .iter()
        .filter(|c| c.valid_until.is_none_or(|until| until > consent.granted_at))
        .count();
    if kept >= MAX_CONSENTS_PER_SUBJECT {
        return Err(ApplyError::TooManyConsents {
            max: MAX_CONSENTS_PER_SUBJECT,
        });
    }
    Ok(())
}

/// Checks that `subject` can revoke `consent_id`: it exists, is theirs, and is not revoked yet.
///
/// # Errors
///
/// [`ApplyError::UnknownConsent`], [`ApplyError::ConsentOfOtherSubject`] or
/// [`ApplyError::AlreadyRevoked`].
pub fn check_revoke(
    kv: &impl KvRead,
    subject: &SubjectId,
    consent_id: &ConsentId,
) -> Result<(), ApplyError> {
    let record = consent_record(kv, consent_id)?.ok_or_else(|| ApplyError::UnknownConsent {
        id: consent_id.clone(),
    })?;
    if &record.subject != subject {
        return Err(ApplyError::ConsentOfOtherSubject {
            id: consent_id.clone(),
        });
    }
    if record.revoked.is_some() {
        return Err(ApplyError::AlreadyRevoked {
            id: consent_id.clone(),
        });
    }
    Ok(())
}

/// The organisation `id`, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn organization(kv: &impl KvRead, id: &OrgId) -> Result<Option<Organization>, StateError> {
    get_json(kv, &key(ORG, id.as_str()), "organisation")
}

/// The facility `id` with its patient exclusions and emergency flag, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or a record is corrupt.
pub fn facility(kv: &impl KvRead, id: &FacilityId) -> Result<Option<FacilityState>, StateError> {
    let Some(stored) = facility_record(kv, id)? else {
        return Ok(None);
    };
    let excluded_patients = get_json(kv, &key(FACILITY_PATIENTS, id.as_str()), "facility")?;
    let recipient_class = organization(kv, &OrgId::of_facility(id))?.map(|o| o.recipient_class);
    Ok(Some(FacilityState {
        facility: Facility {
            id: stored.id,
            name: stored.name,
            group: stored.group,
            excluded_departments: stored.excluded_departments,
            excluded_patients: excluded_patients.unwrap_or_default(),
            recipient_class,
            header: None,
        },
        emergency_active: stored.emergency_active,
        deactivated: stored.deactivated,
    }))
}

/// The facility group `id` with its patient exclusions, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or a record is corrupt.
pub fn facility_group(kv: &impl KvRead, id: &GroupId) -> Result<Option<FacilityGroup>, StateError> {
    let Some(stored) = facility_group_record(kv, id)? else {
        return Ok(None);
    };
    let excluded_patients = get_json(kv, &key(GROUP_PATIENTS, id.as_str()), "facility group")?;
    Ok(Some(FacilityGroup {
        id: stored.id,
        excluded_departments: stored.excluded_departments,
        excluded_patients: excluded_patients.unwrap_or_default(),
        header: None,
    }))
}

/// The clinician `id`, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn clinician(kv: &impl KvRead, id: &ClinicianId) -> Result<Option<Clinician>, StateError> {
    get_json(kv, &key(CLINICIAN, id.as_str()), "clinician")
}

/// The organisation `id` with its deactivation, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn organization_record(
    kv: &impl KvRead,
    id: &OrgId,
) -> Result<Option<OrganizationRecord>, StateError> {
    get_json(kv, &key(ORG, id.as_str()), "organisation")
}

/// The clinician `id` with their deactivation, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn clinician_record(
    kv: &impl KvRead,
    id: &ClinicianId,
) -> Result<Option<ClinicianRecord>, StateError> {
    get_json(kv, &key(CLINICIAN, id.as_str()), "clinician")
}

/// The facility `id` without its patient exclusions, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn facility_summary(
    kv: &impl KvRead,
    id: &FacilityId,
) -> Result<Option<FacilityRecord>, StateError> {
    Ok(facility_record(kv, id)?.map(StoredFacility::summary))
}

/// The facility group `id` without its patient exclusions, if registered.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn group_summary(kv: &impl KvRead, id: &GroupId) -> Result<Option<GroupRecord>, StateError> {
    Ok(facility_group_record(kv, id)?.map(StoredGroup::summary))
}

/// Up to `limit` organisations with ids after `after` (from the first when none), in id order.
///
/// # Errors
///
/// [`StateError`] when the store fails or a record is corrupt.
pub fn list_organizations(
    kv: &impl KvScan,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<OrganizationRecord>, StateError> {
    list(
        kv,
        ORG,
        after,
        limit,
        "organisation",
        |r: &OrganizationRecord| r.organization.id.to_string(),
    )
}

/// Up to `limit` facilities with ids after `after`, in id order, without patient exclusions.
///
/// # Errors
///
/// [`StateError`] when the store fails or a record is corrupt.
pub fn list_facilities(
    kv: &impl KvScan,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<FacilityRecord>, StateError> {
    let page = list(
        kv,
        FACILITY,
        after,
        limit,
        "facility",
        |r: &StoredFacility| r.id.to_string(),
    )?;
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(StoredFacility::summary)
            .collect(),
        next_after: page.next_after,
    })
}

/// Up to `limit` facility groups with ids after `after`, in id order, without patient
/// exclusions.
///
/// # Errors
///
/// [`StateError`] when the store fails or a record is corrupt.
pub fn list_facility_groups(
    kv: &impl KvScan,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<GroupRecord>, StateError> {
    let page = list(
        kv,
        GROUP,
        after,
        limit,
        "facility group",
        |r: &StoredGroup| r.id.to_string(),
    )?;
    Ok(Page {
        items: page.items.into_iter().map(StoredGroup::summary).collect(),
        next_after: page.next_after,
    })
}

/// Up to `limit` clinicians with ids after `after`, in id order.
///
/// # Errors
///
/// [`StateError`] when the store fails or a record is corrupt.
pub fn list_clinicians(
    kv: &impl KvScan,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<ClinicianRecord>, StateError> {
    list(
        kv,
        CLINICIAN,
        after,
        limit,
        "clinician",
        |r: &ClinicianRecord| r.clinician.id.to_string(),
    )
}

/// One page of the records under `prefix` (keyed by id) after id `after`.
fn list<T: DeserializeOwned>(
    kv: &impl KvScan,
    prefix: &[u8],
    after: Option<&str>,
    limit: usize,
    what: &'static str,
    id: impl Fn(&T) -> String,
) -> Result<Page<T>, StateError> {
    let mut start = prefix.to_vec();
    if let Some(after) = after {
        // The smallest key after `<prefix><after>`: ids never hold a NUL byte.
        start.extend_from_slice(after.as_bytes());
        start.push(0);
    }
    let pairs = kv.scan_range_limit(
        &start,
        prefix_end(prefix).as_deref(),
        limit.saturating_add(1),
    )?;
    let more = pairs.len() > limit;
    let mut items = Vec::with_capacity(pairs.len().min(limit));
    for (_, value) in pairs.into_iter().take(limit) {
        items.push(serde_json::from_slice(&value).map_err(|_| StateError::Corrupt { what })?);
    }
    let next_after = if more { items.last().map(&id) } else { None };
    Ok(Page { items, next_after })
}

/// A patient's unrevoked consents, opt-outs and disclosure exclusions (empty for a patient the log
/// has not seen). Use [`SubjectState::active_at`] for the consents in force.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn consent_state(kv: &impl KvRead, subject: &SubjectId) -> Result<SubjectState, StateError> {
    let stored: Option<StoredSubject> = get_json(kv, &subject_key(subject, b"s"), "patient")?;
    Ok(stored.map_or_else(SubjectState::default, |s| s.into_state(subject)))
}

/// What the state knows of consent `id`, if it was ever granted.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn consent_record(
    kv: &impl KvRead,
    id: &ConsentId,
) -> Result<Option<ConsentRecord>, StateError> {
    get_json(kv, &key(CONSENT, id.as_str()), "consent")
}

/// The active policy set, if one was activated.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn active_policy_set(kv: &impl KvRead) -> Result<Option<ActivePolicySet>, StateError> {
    get_json(kv, POLICY_ACTIVE, "policy set")
}

/// The hash of the active policy set, if one was activated.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn active_policy_set_hash(kv: &impl KvRead) -> Result<Option<PolicySetHash>, StateError> {
    let Some(bytes) = kv.get(POLICY_ACTIVE_HASH)? else {
        return Ok(None);
    };
    let hash: [u8; 32] = bytes.try_into().map_err(|_| StateError::Corrupt {
        what: "policy set hash",
    })?;
    Ok(Some(PolicySetHash(hash)))
}

/// The leaf index and count of the patient's entries, if any.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn subject_head(
    kv: &impl KvRead,
    subject: &SubjectId,
) -> Result<Option<SubjectHead>, StateError> {
    let Some(value) = kv.get(&subject_key(subject, b"h"))? else {
        return Ok(None);
    };
    let corrupt = StateError::Corrupt {
        what: "patient head",
    };
    let bytes: [u8; 16] = value.as_slice().try_into().map_err(|_| corrupt)?;
    let (last, count) = bytes.split_at(8);
    let last: [u8; 8] = last.try_into().map_err(|_| StateError::Corrupt {
        what: "patient head",
    })?;
    let count: [u8; 8] = count.try_into().map_err(|_| StateError::Corrupt {
        what: "patient head",
    })?;
    Ok(Some(SubjectHead {
        last_index: u64::from_be_bytes(last),
        count: u64::from_be_bytes(count),
    }))
}

/// The key prefix under which the patient's entry listing is paged: `subj/<pseudonym>/e/`
/// followed by the 8-byte big-endian page number.
pub fn subject_entries_prefix(subject: &SubjectId) -> Vec<u8> {
    subject_key(subject, b"e/")
}

fn subject_page_key(subject: &SubjectId, page: u64) -> Vec<u8> {
    let mut key = subject_entries_prefix(subject);
    key.extend_from_slice(&page.to_be_bytes());
    key
}

/// Whether `key` is a page of some patient's entry listing.
pub fn is_subject_listing_key(key: &[u8]) -> bool {
    key.strip_prefix(SUBJECT)
        .and_then(|rest| rest.get(SubjectId::LEN..))
        .and_then(|rest| rest.strip_prefix(b"/e/"))
        .is_some_and(|page| page.len() == 8)
}

/// Decodes a listing page: a non-empty run of 8-byte big-endian leaf indices, increasing.
fn decode_page(bytes: &[u8]) -> Result<Vec<u64>, StateError> {
    let corrupt = StateError::Corrupt {
        what: "patient entry listing",
    };
    if bytes.is_empty()
        || !bytes.len().is_multiple_of(8)
        || bytes.len() / 8 > SUBJECT_PAGE_ENTRIES as usize
    {
        return Err(corrupt);
    }
    let indices: Vec<u64> = bytes
        .chunks_exact(8)
        .filter_map(|chunk| chunk.try_into().ok().map(u64::from_be_bytes))
        .collect();
    if !indices.is_sorted_by(|a, b| a < b) {
        return Err(corrupt);
    }
    Ok(indices)
}

fn read_page(kv: &impl KvRead, subject: &SubjectId, page: u64) -> Result<Vec<u64>, StateError> {
    match kv.get(&subject_page_key(subject, page))? {
        Some(bytes) => decode_page(&bytes),
        None => Err(StateError::Corrupt {
            what: "patient entry listing",
        }),
    }
}

/// The leaf indices of the patient's entries, oldest first.
///
/// # Errors
///
/// [`StateError`] when the store fails or a page is corrupt.
pub fn subject_entries(kv: &impl KvScan, subject: &SubjectId) -> Result<Vec<u64>, StateError> {
    let mut out = Vec::new();
    for (_, page) in scan_prefix(kv, &subject_entries_prefix(subject))? {
        out.extend(decode_page(&page)?);
    }
    Ok(out)
}

/// Up to `limit` leaf indices of the patient's entries after `after` (all, when `None`), oldest
/// first. Costs a binary search over the listing's pages (O(log n) point reads) plus the pages
/// read, so deep pages of a long history cost no more than the first.
///
/// # Errors
///
/// [`StateError`] when the store fails or a page is missing or corrupt.
pub fn subject_entries_after(
    kv: &impl KvRead,
    subject: &SubjectId,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<u64>, StateError> {
    let Some(head) = subject_head(kv, subject)? else {
        return Ok(Vec::new());
    };
    let pages = head.count.div_ceil(SUBJECT_PAGE_ENTRIES);
    // The last page whose first index is at most `after`: everything before it is older.
    let mut first = 0;
    if let Some(after) = after {
        let (mut lo, mut hi) = (0, pages);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let starts = read_page(kv, subject, mid)?.first().copied();
            if starts.is_some_and(|start| start <= after) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        first = lo;
    }
    let mut out = Vec::new();
    for page in first..pages {
        for index in read_page(kv, subject, page)? {
            if after.is_some_and(|after| index <= after) {
                continue;
            }
            if out.len() == limit {
                return Ok(out);
            }
            out.push(index);
        }
    }
    Ok(out)
}

/// Checks that the state was written with this key layout ([`LAYOUT_VERSION`]); an empty state
/// passes.
///
/// # Errors
///
/// [`StateError::Layout`] naming the layout found, or [`StateError`] when the store fails.
pub fn check_layout(kv: &impl KvRead) -> Result<(), StateError> {
    if last_applied(kv)?.is_none() {
        return Ok(());
    }
    let found = read_u64(kv, META_LAYOUT, "state layout")?.unwrap_or(1);
    if found == LAYOUT_VERSION {
        Ok(())
    } else {
        Err(StateError::Layout {
            found,
            expected: LAYOUT_VERSION,
        })
    }
}

/// The leaf index of the last applied event, if any.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn last_applied(kv: &impl KvRead) -> Result<Option<u64>, StateError> {
    read_u64(kv, META_LAST, "last applied index")
}

/// The leaf index of the last applied directory event (organisation, facility, group, clinician
/// or emergency), if any: the version a [`crate::directory::Directory`] must match.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn directory_version(kv: &impl KvRead) -> Result<Option<u64>, StateError> {
    read_u64(kv, META_DIRECTORY, "directory version")
}

fn read_u64(kv: &impl KvRead, key: &[u8], what: &'static str) -> Result<Option<u64>, StateError> {
    let Some(value) = kv.get(key)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value
        .as_slice()
        .try_into()
        .map_err(|_| StateError::Corrupt { what })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// The directory records changed by directory events after leaf index `after` (all of them when
/// none), oldest first, without repeats.
pub(crate) fn directory_changes(
    kv: &impl KvScan,
    after: Option<u64>,
) -> Result<Vec<DirectoryRecord>, StateError> {
    let mut start = DIRECTORY_LOG.to_vec();
    if let Some(after) = after {
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut changes = Vec::new();
    for (_, changed) in kv.scan_range(&start, prefix_end(DIRECTORY_LOG).as_deref())? {
        if seen.insert(changed.clone()) {
            changes.push(read_directory_record(kv, &changed)?);
        }
    }
    Ok(changes)
}

/// Every directory record, for a full load: groups before facilities before clinicians.
pub(crate) fn directory_records(kv: &impl KvScan) -> Result<Vec<DirectoryRecord>, StateError> {
    let mut records = Vec::new();
    for prefix in [ORG, GROUP, FACILITY, CLINICIAN] {
        for (k, _) in scan_prefix(kv, prefix)? {
            records.push(read_directory_record(kv, &k)?);
        }
    }
    Ok(records)
}

/// A directory record as the Cedar directory needs it.
#[derive(Debug, Clone)]
pub(crate) enum DirectoryRecord {
    Organization(OrganizationRecord),
    Facility(StoredFacility),
    Group(StoredGroup),
    Clinician(ClinicianRecord),
}

fn read_directory_record(kv: &impl KvRead, k: &[u8]) -> Result<DirectoryRecord, StateError> {
    let record = if k.starts_with(ORG) {
        get_json(kv, k, "organisation")?.map(DirectoryRecord::Organization)
    } else if k.starts_with(FACILITY) {
        get_json(kv, k, "facility")?.map(DirectoryRecord::Facility)
    } else if k.starts_with(GROUP) {
        get_json(kv, k, "facility group")?.map(DirectoryRecord::Group)
    } else if k.starts_with(CLINICIAN) {
        get_json(kv, k, "clinician")?.map(DirectoryRecord::Clinician)
    } else {
        None
    };
    record.ok_or(StateError::Corrupt {
        what: "directory log",
    })
}

// ---------------------------------------------------------------------------------------------
// Internals shared with `facts`
// ---------------------------------------------------------------------------------------------

/// A facility as stored on the decision path: no patient list, plus the emergency flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredFacility {
    pub(crate) id: FacilityId,
    pub(crate) name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<GroupId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) excluded_departments: Vec<Department>,
    #[serde(default)]
    pub(crate) emergency_active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deactivated: Option<u64>,
}

/// A facility group as stored on the decision path: no patient list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredGroup {
    pub(crate) id: GroupId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) excluded_departments: Vec<Department>,
}

impl StoredFacility {
    pub(crate) fn new(facility: &Facility, emergency_active: bool) -> Self {
        Self {
            id: facility.id.clone(),
            name: facility.name.clone(),
            group: facility.group.clone(),
            excluded_departments: sorted(&facility.excluded_departments),
            emergency_active,
            deactivated: None,
        }
    }

    fn summary(self) -> FacilityRecord {
        FacilityRecord {
            id: self.id,
            name: self.name,
            group: self.group,
            excluded_departments: self.excluded_departments,
            emergency_active: self.emergency_active,
            deactivated: self.deactivated,
        }
    }
}

impl StoredGroup {
    pub(crate) fn new(group: &FacilityGroup) -> Self {
        Self {
            id: group.id.clone(),
            excluded_departments: sorted(&group.excluded_departments),
        }
    }

    fn summary(self) -> GroupRecord {
        GroupRecord {
            id: self.id,
            excluded_departments: self.excluded_departments,
        }
    }
}

pub(crate) fn facility_record(
    kv: &impl KvRead,
    id: &FacilityId,
) -> Result<Option<StoredFacility>, StateError> {
    get_json(kv, &key(FACILITY, id.as_str()), "facility")
}

pub(crate) fn facility_group_record(
    kv: &impl KvRead,
    id: &GroupId,
) -> Result<Option<StoredGroup>, StateError> {
    get_json(kv, &key(GROUP, id.as_str()), "facility group")
}

const META_LAST: &[u8] = b"meta/last";
const META_LAYOUT: &[u8] = b"meta/layout";
const META_DIRECTORY: &[u8] = b"meta/dir";
const DIRECTORY_LOG: &[u8] = b"dirlog/";
const ORG: &[u8] = b"dir/org/";
const FACILITY: &[u8] = b"dir/fac/";
const FACILITY_PATIENTS: &[u8] = b"dir/facx/";
const GROUP: &[u8] = b"dir/grp/";
const GROUP_PATIENTS: &[u8] = b"dir/grpx/";
const CLINICIAN: &[u8] = b"dir/cli/";
const CONSENT: &[u8] = b"con/";
const POLICY_ACTIVE: &[u8] = b"pol/active";
const POLICY_ACTIVE_HASH: &[u8] = b"pol/hash";
const SUBJECT: &[u8] = b"subj/";

fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

fn subject_key(subject: &SubjectId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(SUBJECT.len() + SubjectId::LEN + 1 + suffix.len());
    k.extend_from_slice(SUBJECT);
    k.extend_from_slice(subject.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(suffix);
    k
}

fn get_json<T: DeserializeOwned>(
    kv: &impl KvRead,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StateError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| StateError::Corrupt { what }),
    }
}

fn put_json<T: Serialize>(kv: &mut impl KvWrite, key: &[u8], value: &T) -> Result<(), StateError> {
    // INVARIANT: the state's records are plain structs of strings, numbers and lists, which
    // serde_json always serialises.
    let bytes = serde_json::to_vec(value).map_err(|_| StateError::Corrupt { what: "new" })?;
    kv.put(key, &bytes)?;
    Ok(())
}

fn put_subject_state(
    kv: &mut impl KvWrite,
    subject: &SubjectId,
    state: &SubjectState,
) -> Result<(), StateError> {
    let k = subject_key(subject, b"s");
    if state.is_empty() {
        kv.delete(&k)?;
        return Ok(());
    }
    put_json(kv, &k, &StoredSubject::from_state(state))
}

/// A patient's record as stored: short field names and no repeated pseudonym, because it is read
/// on every decision about the patient.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSubject {
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    consents: Vec<StoredConsent>,
    #[serde(rename = "o", default, skip_serializing_if = "Vec::is_empty")]
    opt_outs: Vec<Purpose>,
    #[serde(rename = "xf", default, skip_serializing_if = "Vec::is_empty")]
    excluded_by_facilities: Vec<FacilityId>,
    #[serde(rename = "xg", default, skip_serializing_if = "Vec::is_empty")]
    excluded_by_groups: Vec<GroupId>,
    /// Opt-out indices (absent in records written before they were kept).
    #[serde(rename = "oi", default, skip_serializing_if = "BTreeMap::is_empty")]
    opt_out_indices: BTreeMap<Purpose, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredConsent {
    #[serde(rename = "i")]
    id: ConsentId,
    #[serde(rename = "p")]
    purposes: Vec<Purpose>,
    #[serde(rename = "d")]
    data_categories: Vec<DataCategory>,
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    recipients: Vec<OrgId>,
    #[serde(rename = "k", default, skip_serializing_if = "Vec::is_empty")]
    recipient_classes: Vec<RecipientClass>,
    #[serde(rename = "l")]
    max_level: Level,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    valid_from: Option<Timestamp>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    valid_until: Option<Timestamp>,
    #[serde(rename = "g")]
    granted_at: Timestamp,
    /// Leaf index of the grant (absent in records written before it was kept).
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
}

impl StoredSubject {
    fn from_state(state: &SubjectState) -> Self {
        Self {
            consents: state
                .consents
                .iter()
                .map(|c| StoredConsent {
                    id: c.id.clone(),
                    purposes: c.purposes.clone(),
                    data_categories: c.data_categories.clone(),
                    recipients: c.recipients.clone(),
                    recipient_classes: c.recipient_classes.clone(),
                    max_level: c.max_level,
                    valid_from: c.valid_from,
                    valid_until: c.valid_until,
                    granted_at: c.granted_at,
                    index: state.consent_indices.get(&c.id).copied(),
                })
                .collect(),
            opt_outs: state.opt_outs.clone(),
            excluded_by_facilities: state.excluded_by_facilities.clone(),
            excluded_by_groups: state.excluded_by_groups.clone(),
            opt_out_indices: state.opt_out_indices.clone(),
        }
    }

    fn into_state(self, subject: &SubjectId) -> SubjectState {
        let consent_indices = self
            .consents
            .iter()
            .filter_map(|c| Some((c.id.clone(), c.index?)))
            .collect();
        SubjectState {
            consents: self
                .consents
                .into_iter()
                .map(|c| Consent {
                    id: c.id,
                    subject: subject.clone(),
                    purposes: c.purposes,
                    data_categories: c.data_categories,
                    recipients: c.recipients,
                    recipient_classes: c.recipient_classes,
                    max_level: c.max_level,
                    valid_from: c.valid_from,
                    valid_until: c.valid_until,
                    granted_at: c.granted_at,
                    revoked_at: None,
                })
                .collect(),
            opt_outs: self.opt_outs,
            excluded_by_facilities: self.excluded_by_facilities,
            excluded_by_groups: self.excluded_by_groups,
            consent_indices,
            opt_out_indices: self.opt_out_indices,
        }
    }
}

fn require_facility(kv: &impl KvRead, id: &FacilityId) -> Result<(), ApplyError> {
    if facility_record(kv, id)?.is_none() {
        return Err(ApplyError::UnknownFacility { id: id.clone() });
    }
    Ok(())
}

fn apply_facility(kv: &mut impl KvWrite, facility: &Facility) -> Result<(), StateError> {
    let k = key(FACILITY, facility.id.as_str());
    let emergency_active = facility_record(&*kv, &facility.id)?.is_some_and(|f| f.emergency_active);
    put_json(kv, &k, &StoredFacility::new(facility, emergency_active))?;
    let patients_key = key(FACILITY_PATIENTS, facility.id.as_str());
    update_exclusions(
        kv,
        &patients_key,
        &facility.excluded_patients,
        |state| &mut state.excluded_by_facilities,
        &facility.id,
    )
}

fn apply_group(kv: &mut impl KvWrite, group: &FacilityGroup) -> Result<(), StateError> {
    put_json(kv, &key(GROUP, group.id.as_str()), &StoredGroup::new(group))?;
    let patients_key = key(GROUP_PATIENTS, group.id.as_str());
    update_exclusions(
        kv,
        &patients_key,
        &group.excluded_patients,
        |state| &mut state.excluded_by_groups,
        &group.id,
    )
}

/// Replaces the patient list under `list_key` with `new`, and updates the exclusion list (chosen
/// by `field`) of every patient added or removed.
fn update_exclusions<T: Clone + Ord>(
    kv: &mut impl KvWrite,
    list_key: &[u8],
    new: &[SubjectId],
    field: impl Fn(&mut SubjectState) -> &mut Vec<T>,
    id: &T,
) -> Result<(), StateError> {
    let old: Vec<SubjectId> = get_json(&*kv, list_key, "exclusion list")?.unwrap_or_default();
    let new = sorted(new);
    for subject in old.iter().filter(|s| new.binary_search(s).is_err()) {
        let mut state = consent_state(&*kv, subject)?;
        field(&mut state).retain(|x| x != id);
        put_subject_state(kv, subject, &state)?;
    }
    for subject in new.iter().filter(|s| old.binary_search(s).is_err()) {
        let mut state = consent_state(&*kv, subject)?;
        let list = field(&mut state);
        if let Err(at) = list.binary_search(id) {
            list.insert(at, id.clone());
        }
        put_subject_state(kv, subject, &state)?;
    }
    if new.is_empty() {
        kv.delete(list_key)?;
    } else {
        put_json(kv, list_key, &new)?;
    }
    Ok(())
}

fn sorted<T: Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

//! A patient's part of the state: their consent state ([`SubjectState`], stored in a compact
//! form under one key) and their paged entry listing with its head ([`SubjectHead`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{
    Consent, ConsentId, DataCategory, FacilityId, GroupId, Level, OrgId, Purpose, RecipientClass,
    SubjectId, Timestamp,
};

use super::kv::{KvRead, KvScan, KvWrite, scan_prefix};
use super::layout::{
    SUBJECT_PAGE_ENTRIES, get_json, put_json, subject_entries_prefix, subject_key, subject_page_key,
};
use super::read::StateError;

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
    pub(super) fn prune_indices(&mut self) {
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

/// Adds leaf `index` to the patient's head and to the last page of their listing.
pub(super) fn append_subject_entry(
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

/// State keys with their values (none: absent).
pub type KeyValues = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The keys logging another entry about `subject` reads, with their values in `kv`: the patient's
/// head and the page of their listing the entry would join. A caller that reads them ahead of the
/// writer (a prepared decision) hands them over with the size it read at.
///
/// # Errors
///
/// [`StateError`] when the store fails or the head is corrupt.
pub fn subject_entry_reads(kv: &impl KvRead, subject: &SubjectId) -> Result<KeyValues, StateError> {
    let head_key = subject_key(subject, b"h");
    let head = kv.get(&head_key)?;
    let position = match &head {
        Some(bytes) => decode_head(bytes)?.count,
        None => 0,
    };
    let page_key = subject_page_key(subject, position / SUBJECT_PAGE_ENTRIES);
    let page = kv.get(&page_key)?;
    Ok(vec![(head_key, head), (page_key, page)])
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

/// The leaf index and count of the patient's entries, if any.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn subject_head(
    kv: &impl KvRead,
    subject: &SubjectId,
) -> Result<Option<SubjectHead>, StateError> {
    match kv.get(&subject_key(subject, b"h"))? {
        Some(value) => decode_head(&value).map(Some),
        None => Ok(None),
    }
}

/// A patient's head from its stored bytes (the last index and the count, 8 bytes each).
fn decode_head(value: &[u8]) -> Result<SubjectHead, StateError> {
    let corrupt = || StateError::Corrupt {
        what: "patient head",
    };
    let bytes: [u8; 16] = value.try_into().map_err(|_| corrupt())?;
    let (last, count) = bytes.split_at(8);
    let last: [u8; 8] = last.try_into().map_err(|_| corrupt())?;
    let count: [u8; 8] = count.try_into().map_err(|_| corrupt())?;
    Ok(SubjectHead {
        last_index: u64::from_be_bytes(last),
        count: u64::from_be_bytes(count),
    })
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

/// The bytes [`consent_state`] reads `state` from: what the state stores for a patient, for a
/// store that keeps the record in another form (sealed) and must hand the same bytes back.
pub fn encode_subject_state(state: &SubjectState) -> Vec<u8> {
    // INVARIANT: the record is a plain struct of strings, numbers and lists, which serde_json
    // always serialises.
    serde_json::to_vec(&StoredSubject::from_state(state)).unwrap_or_default()
}

pub(super) fn put_subject_state(
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

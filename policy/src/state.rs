//! The state derived from the log, kept in a key-value map: one implementation, used by the
//! server (over the ledger's transactional store) and by a regulator's replay (over a
//! [`BTreeMap`](std::collections::BTreeMap)), so both compute the same thing from the same log.
//!
//! [`apply`] folds one [`Event`](crate::event::Event) into the map; [`check`] runs the same
//! checks without writing, so the server can refuse an event before it is sequenced. The read
//! helpers below are what decisions and the consent API read. Reads per decision are a handful
//! of point gets (see [`crate::facts::Facts::gather`]): a patient's consents, opt-outs and
//! disclosure exclusions live under one key, so decisions do not slow down as patients grow.
//!
//! This module does not decide (see [`crate::engine`]) and does not sequence or store entries.
//!
//! The code is split by concern into private submodules whose public items are re-exported
//! here, so every item has the one path `state::…`: `kv` (the key-value traits and their
//! `BTreeMap` implementation), `layout` (the key prefixes and key-building functions of the
//! table below, and the JSON encoding of values), `records` (the records stored and returned by
//! reads), `subject` (a patient's consent state and entry listing), `apply` ([`apply`], [`check`]
//! and the rules they enforce) and `read` (the directory, consent, policy-set and version reads).
//!
//! # Key layout
//!
//! Keys are ASCII prefixes followed by an identifier (identifiers never contain `/`) or, for the
//! per-subject entry listing, an 8-byte big-endian page number. Values are JSON unless noted.
//!
//! | key | value |
//! |---|---|
//! | `meta/layout` | 8-byte big-endian [`LAYOUT_VERSION`], written with the first event (a state of layout [`OLDEST_LAYOUT_READ`] or later is rewritten to the current one by the subject map's first journal record or write-out) |
//! | `meta/last` | 8-byte big-endian leaf index of the last applied event |
//! | `meta/dir` | 8-byte big-endian leaf index of the last directory event (directory version) |
//! | `dirlog/<8-byte BE index>` | the key of the directory record that event changed |
//! | `dirlog/<8-byte BE index><1 byte n>` | the key of the n-th other record it changed (a facility's organisation) |
//! | `dir/org/<org id>` | [`OrganizationRecord`]: the [`Organization`](crate::domain::Organization), and when it was deactivated |
//! | `dir/fac/<facility id>` | the facility without its patient list, plus its emergency flag and deactivation |
//! | `dir/facx/<facility id>` | the facility's excluded patients (read only when it changes) |
//! | `dir/grp/<group id>` | the facility group without its patient list |
//! | `dir/grpx/<group id>` | the group's excluded patients (read only when it changes) |
//! | `dir/cli/<clinician id>` | [`ClinicianRecord`]: the [`Clinician`](crate::domain::Clinician), and when they were deactivated |
//! | `con/<consent id>` | which patient it belongs to, and the leaf indices of grant and revoke |
//! | `pol/active` | the active policy set: hash, canonical text, leaf index |
//! | `pol/hash` | 32 bytes: the active policy set's hash |
//! | `pol/pending` | the policy sets proposed and not yet approved (two-person rule), at most [`MAX_PENDING_POLICY_SETS`] |
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

mod apply;
mod kv;
mod layout;
mod read;
mod records;
mod subject;

#[cfg(test)]
mod tests;

pub use apply::{
    ApplyError, MAX_CONSENTS_PER_SUBJECT, MAX_PENDING_POLICY_SETS, adopt_erasure, apply, check,
    check_grant, check_revoke, describe, erasure_effect,
};
pub use kv::{KvError, KvPairs, KvRead, KvScan, KvWrite, scan_prefix};
pub use layout::{
    LAYOUT_VERSION, META_LAYOUT, OLDEST_LAYOUT_READ, SUBJECT_PAGE_ENTRIES, is_subject_listing_key,
    subject_entries_prefix,
};
pub use read::{
    StateError, active_policy_set, active_policy_set_hash, check_layout, clinician,
    clinician_record, consent_record, directory_version, facility, facility_group,
    facility_summary, group_summary, last_applied, list_clinicians, list_facilities,
    list_facility_groups, list_organizations, organization, organization_record,
    pending_policy_sets,
};
pub use records::{
    ActivePolicySet, ClinicianRecord, ConsentRecord, FacilityRecord, FacilityState, GroupRecord,
    OrganizationRecord, Page, PendingPolicySet,
};
pub use subject::{
    KeyValues, SubjectHead, SubjectState, consent_state, encode_subject_state, subject_entries,
    subject_entries_after, subject_entry_reads, subject_head,
};

pub(crate) use kv::prefix_end;
pub(crate) use read::{
    DirectoryRecord, directory_changes, directory_records, facility_group_record, facility_record,
};
pub(crate) use records::{StoredFacility, StoredGroup};

// What the tests (`use super::*`) read from this module's scope before the split.
#[cfg(test)]
use crate::decision::PolicySetHash;
#[cfg(test)]
use crate::domain::{
    Clinician, ClinicianId, Consent, ConsentId, Department, Facility, FacilityGroup, FacilityId,
    GroupId, Name, OrgId, Organization, Purpose, SubjectId, Timestamp,
};
#[cfg(test)]
use crate::event::Event;
#[cfg(test)]
use layout::{FACILITY, META_LAST, key, subject_key};
#[cfg(test)]
use std::collections::BTreeMap;

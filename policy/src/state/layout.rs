//! The key layout of the derived state (see the table in [`crate::state`]): the key prefixes, the
//! functions that build keys from them, and the JSON encoding of values.

use serde::{Serialize, de::DeserializeOwned};

use crate::domain::SubjectId;

use super::kv::{KvRead, KvWrite};
use super::read::StateError;

/// Leaf indices per page of a patient's entry listing.
pub const SUBJECT_PAGE_ENTRIES: u64 = 32;

/// The version of the key layout above. Version 1 (no `meta/layout` key) listed a patient's
/// entries one key per entry. Version 2 always held the subject map's tiles written out;
/// version 3 adds the map's journal (`map/j/…`, the server's subject map): its tiles may be
/// written behind the journal, so a build that reads only version 2 must not open it. Version 4
/// stores the map's tiles in two slots tagged with their generation (`map/a/…`, `map/b/…`,
/// `map/g`), written out over several batches: a build that reads only `map/n/…` must not open
/// it either.
pub const LAYOUT_VERSION: u64 = 4;

/// The oldest layout this code opens as it is: versions 2 and 3 differ from 4 only by the
/// subject map's tiles, which this code reads where they left them (untagged under `map/n/…`,
/// the generation before any of its own); such a state becomes version 4 with the map's first
/// journal record or write-out ([`META_LAYOUT`] is rewritten in the same batch).
pub const OLDEST_LAYOUT_READ: u64 = 2;

/// The key prefix under which the patient's entry listing is paged: `subj/<pseudonym>/e/`
/// followed by the 8-byte big-endian page number.
pub fn subject_entries_prefix(subject: &SubjectId) -> Vec<u8> {
    subject_key(subject, b"e/")
}

pub(super) fn subject_page_key(subject: &SubjectId, page: u64) -> Vec<u8> {
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

pub(super) const META_LAST: &[u8] = b"meta/last";
/// The state key of the layout version: 8 bytes, big-endian.
pub const META_LAYOUT: &[u8] = b"meta/layout";
pub(super) const META_DIRECTORY: &[u8] = b"meta/dir";
pub(super) const DIRECTORY_LOG: &[u8] = b"dirlog/";
pub(super) const ORG: &[u8] = b"dir/org/";
pub(super) const FACILITY: &[u8] = b"dir/fac/";
pub(super) const FACILITY_PATIENTS: &[u8] = b"dir/facx/";
pub(super) const GROUP: &[u8] = b"dir/grp/";
pub(super) const GROUP_PATIENTS: &[u8] = b"dir/grpx/";
pub(super) const CLINICIAN: &[u8] = b"dir/cli/";
pub(super) const CONSENT: &[u8] = b"con/";
pub(super) const POLICY_ACTIVE: &[u8] = b"pol/active";
pub(super) const POLICY_ACTIVE_HASH: &[u8] = b"pol/hash";
pub(super) const POLICY_PENDING: &[u8] = b"pol/pending";
pub(super) const SUBJECT: &[u8] = b"subj/";

pub(super) fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn subject_key(subject: &SubjectId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(SUBJECT.len() + SubjectId::LEN + 1 + suffix.len());
    k.extend_from_slice(SUBJECT);
    k.extend_from_slice(subject.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(suffix);
    k
}

pub(super) fn get_json<T: DeserializeOwned>(
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

pub(super) fn put_json<T: Serialize>(
    kv: &mut impl KvWrite,
    key: &[u8],
    value: &T,
) -> Result<(), StateError> {
    // INVARIANT: the state's records are plain structs of strings, numbers and lists, which
    // serde_json always serialises.
    let bytes = serde_json::to_vec(value).map_err(|_| StateError::Corrupt { what: "new" })?;
    kv.put(key, &bytes)?;
    Ok(())
}

//! Reads of the derived state: the directory (organisations, facilities, groups, clinicians, one
//! by one and in pages), consent records, the active policy set, the layout and version markers,
//! and the directory changes a [`crate::directory::Directory`] follows; and [`StateError`].

use serde::de::DeserializeOwned;

use crate::decision::PolicySetHash;
use crate::domain::{
    Clinician, ClinicianId, ConsentId, Facility, FacilityGroup, FacilityId, GroupId, OrgId,
    Organization,
};

use super::kv::{KvError, KvRead, KvScan, scan_prefix};
use super::layout::{
    CLINICIAN, CONSENT, DIRECTORY_LOG, FACILITY, FACILITY_PATIENTS, GROUP, GROUP_PATIENTS,
    LAYOUT_VERSION, META_DIRECTORY, META_LAST, META_LAYOUT, OLDEST_LAYOUT_READ, ORG, POLICY_ACTIVE,
    POLICY_ACTIVE_HASH, POLICY_PENDING, get_json, key,
};
use super::prefix_end;
use super::records::{
    ActivePolicySet, ClinicianRecord, ConsentRecord, FacilityRecord, FacilityState, GroupRecord,
    OrganizationRecord, Page, PendingPolicySet, StoredFacility, StoredGroup,
};

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
    /// The state was written with another key layout (by an older or a newer server).
    #[error(
        "the derived state has key layout {found} but this server reads layout {expected}: \
         the data dir was written by another version of akashi"
    )]
    Layout {
        /// The layout found.
        found: u64,
        /// The layout this code reads.
        expected: u64,
    },
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

/// The policy sets proposed and not yet approved, oldest proposal first.
///
/// # Errors
///
/// [`StateError`] when the store fails or the record is corrupt.
pub fn pending_policy_sets(kv: &impl KvRead) -> Result<Vec<PendingPolicySet>, StateError> {
    Ok(get_json(kv, POLICY_PENDING, "pending policy sets")?.unwrap_or_default())
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
    if (OLDEST_LAYOUT_READ..=LAYOUT_VERSION).contains(&found) {
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

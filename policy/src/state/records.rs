//! The records the state stores and its reads return: directory records (public, and the forms
//! stored on the decision path), consent records, the active policy set, and listing pages.

use serde::{Deserialize, Serialize};

use crate::decision::PolicySetHash;
use crate::domain::{
    Clinician, Department, Facility, FacilityGroup, FacilityId, GroupId, Name, Organization,
    SubjectId,
};

/// A facility as the state holds it: the directory record (with its patient exclusions when read
/// through [`facility`](crate::state::facility)) and whether an emergency is declared.
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

/// A policy set proposed under the two-person rule and not yet approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPolicySet {
    /// SHA-256 of its canonical text.
    pub hash: PolicySetHash,
    /// Its canonical text.
    pub policies: String,
    /// Leaf index of its proposal.
    pub index: u64,
}

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

    pub(super) fn summary(self) -> FacilityRecord {
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

    pub(super) fn summary(self) -> GroupRecord {
        GroupRecord {
            id: self.id,
            excluded_departments: self.excluded_departments,
        }
    }
}

pub(super) fn sorted<T: Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

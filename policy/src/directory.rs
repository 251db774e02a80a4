//! The directory as Cedar entities: organisations, facility groups, facilities (with their
//! disclosure settings and emergency flag), departments and clinicians, plus the purpose and data
//! category hierarchies, built once from the state and then kept up to date incrementally.
//!
//! Decisions evaluate against this prebuilt store with all per-request data in the Cedar context,
//! so no entity is built and no transitive closure is computed on the decision path. A
//! [`Directory`] carries the version of the state it reflects ([`state::directory_version`], the
//! leaf index of the last directory event), and
//! [`PolicyEngine::decide_kv`](crate::engine::PolicyEngine::decide_kv) refuses a directory whose
//! version is not the state's. It is kept in step in one of two ways:
//!
//! - whoever applies events in log order (the server's sequencer, a replay) calls
//!   [`Directory::apply`] after each successful [`state::apply`]; [`Directory::load`] builds it at
//!   start, and again after a failed commit (the in-memory directory may then be ahead);
//! - a reader of committed state uses [`DirectoryCache::current`], which replays the state's
//!   directory change log (`dirlog/`) from its version.
//!
//! This module only reads the state; it does not decide.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};

use crate::domain::{
    Clinician, ClinicianId, ClinicianRole, Deactivation, Department, FacilityId, GroupId, OrgId,
    Organization, RecipientClass, normalize_id,
};
use crate::event::Event;
use crate::policy_set::{Names, names, uid};
use crate::state::{
    self, ClinicianRecord, DirectoryRecord, KvScan, OrganizationRecord, StateError, StoredFacility,
    StoredGroup,
};

#[cfg(test)]
mod tests;

/// The directory as Cedar entities, at one version of the state.
#[derive(Debug, Clone)]
pub struct Directory {
    entities: Entities,
    version: Option<u64>,
    organizations: HashMap<OrgId, OrganizationRecord>,
    facilities: HashMap<FacilityId, StoredFacility>,
    /// Departments each facility and each facility group excludes, normalised once here (see
    /// [`Directory::excludes_department`]) rather than on every decision.
    facility_exclusions: HashMap<FacilityId, Vec<String>>,
    group_exclusions: HashMap<GroupId, Vec<String>>,
    clinicians: HashMap<ClinicianId, ClinicianRecord>,
    /// Changes applied but not yet flushed into the entities, and the version they lead to.
    /// Cedar's upsert costs time linear in the store's size whatever it upserts, so changes are
    /// gathered and flushed together, once, before the next decision.
    pending: Vec<DirectoryRecord>,
    pending_version: Option<u64>,
}

/// A facility as a decision sees it through the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FacilityView<'a> {
    /// Its id.
    pub id: &'a FacilityId,
    /// Its group, if any.
    pub group: Option<&'a GroupId>,
    /// The leaf index of its deactivation, if it is deactivated.
    pub deactivated: Option<u64>,
}

impl Directory {
    /// A directory with no organisations, facilities or clinicians (the state before any
    /// directory event). Should the static hierarchies fail to build (a bug), the directory holds
    /// no entities at all, and every decision that needs one fails closed.
    pub fn empty() -> Self {
        Self::build(Vec::new(), None).unwrap_or_else(|_| Self::bare())
    }

    /// Loads the whole directory from the state.
    ///
    /// # Errors
    ///
    /// [`StateError`] when the store fails, a record is corrupt, or the entities do not build.
    pub fn load(kv: &impl KvScan) -> Result<Self, StateError> {
        let version = state::directory_version(kv)?;
        Self::build(state::directory_records(kv)?, version)
    }

    /// Brings the directory up to the state's version, applying only the records changed since
    /// its own version (or reloading everything if the state is older than the directory), and
    /// dropping unflushed changes (the state holds them, or they were rolled back). Returns
    /// whether anything changed.
    ///
    /// # Errors
    ///
    /// [`StateError`] when the store fails, a record is corrupt, or the entities do not build;
    /// the directory may then be left empty with no version, so the next refresh reloads it.
    pub fn refresh(&mut self, kv: &impl KvScan) -> Result<bool, StateError> {
        // The state is the truth: changes applied but not flushed are in it too, or were undone.
        self.pending.clear();
        self.pending_version = None;
        let version = state::directory_version(kv)?;
        if version == self.version {
            return Ok(false);
        }
        if self.version.is_none() || version < self.version {
            *self = Self::load(kv)?;
            return Ok(true);
        }
        let changes = state::directory_changes(kv, self.version)?;
        self.upsert(&changes, version)?;
        Ok(true)
    }

    fn upsert(
        &mut self,
        records: &[DirectoryRecord],
        version: Option<u64>,
    ) -> Result<(), StateError> {
        let mut entities = Vec::with_capacity(records.len().saturating_mul(2));
        for record in records {
            record_entities(record, &mut entities)?;
        }
        let current = std::mem::replace(&mut self.entities, Entities::empty());
        self.version = None;
        self.entities =
            current
                .upsert_entities(entities, None)
                .map_err(|e| StateError::Directory {
                    message: e.to_string(),
                })?;
        for record in records {
            self.index(record);
        }
        self.version = version;
        Ok(())
    }

    /// Applies the directory event at leaf `index` (organisation, facility, group, clinician,
    /// emergency or deactivation; other events change nothing). Call it after [`state::apply`] accepted the same
    /// event, in log order. The change takes effect at the next [`Directory::flush`]; until then
    /// [`Directory::version`] stays where it was, so a decision against the unflushed directory is
    /// refused as stale rather than decided on old data.
    ///
    /// # Errors
    ///
    /// [`StateError::Directory`] when the event is an emergency or a deactivation for something
    /// the directory does not hold (which [`state::apply`] refuses too).
    pub fn apply(&mut self, event: &Event, index: u64) -> Result<(), StateError> {
        let unknown = |what: &str, id: &dyn std::fmt::Display| StateError::Directory {
            message: format!("unknown {what} `{id}`"),
        };
        let record = match event {
            Event::UpsertOrganization(org) => DirectoryRecord::Organization(OrganizationRecord {
                organization: org.clone(),
                deactivated: None,
            }),
            Event::UpsertFacility(facility) => {
                let emergency = self
                    .latest_facility(&facility.id)
                    .is_some_and(|f| f.emergency_active);
                if let Some(recipient_class) = facility.recipient_class {
                    // A facility is an organisation with the same id (state::apply does the same).
                    self.pending
                        .push(DirectoryRecord::Organization(OrganizationRecord {
                            organization: Organization {
                                id: OrgId::of_facility(&facility.id),
                                name: facility.name.clone(),
                                recipient_class,
                            },
                            deactivated: None,
                        }));
                }
                DirectoryRecord::Facility(StoredFacility::new(facility, emergency))
            }
            Event::Deactivate { target } => match target {
                Deactivation::Clinician(id) => {
                    let mut record = self
                        .latest_clinician(id)
                        .cloned()
                        .ok_or_else(|| unknown("clinician", id))?;
                    record.deactivated = Some(index);
                    DirectoryRecord::Clinician(record)
                }
                Deactivation::Organization(id) => {
                    let mut record = self
                        .latest_organization(id)
                        .cloned()
                        .ok_or_else(|| unknown("organisation", id))?;
                    record.deactivated = Some(index);
                    DirectoryRecord::Organization(record)
                }
                Deactivation::Facility(id) => {
                    let mut stored = self
                        .latest_facility(id)
                        .cloned()
                        .ok_or_else(|| unknown("facility", id))?;
                    stored.deactivated = Some(index);
                    if let Some(org) = self.latest_organization(&OrgId::of_facility(id)) {
                        let mut org = org.clone();
                        org.deactivated = Some(index);
                        self.pending.push(DirectoryRecord::Organization(org));
                    }
                    DirectoryRecord::Facility(stored)
                }
            },
            Event::SetEmergency { facility, active } => {
                let mut stored = self.latest_facility(facility).cloned().ok_or_else(|| {
                    StateError::Directory {
                        message: format!("unknown facility `{facility}`"),
                    }
                })?;
                stored.emergency_active = *active;
                DirectoryRecord::Facility(stored)
            }
            Event::UpsertFacilityGroup(group) => DirectoryRecord::Group(StoredGroup::new(group)),
            Event::UpsertClinician(clinician) => DirectoryRecord::Clinician(ClinicianRecord {
                clinician: clinician.clone(),
                deactivated: None,
            }),
            _ => return Ok(()),
        };
        self.pending.push(record);
        self.pending_version = Some(index);
        Ok(())
    }

    /// Puts the applied changes into effect (one Cedar upsert for all of them).
    ///
    /// # Errors
    ///
    /// [`StateError::Directory`] when the entities do not build; the directory is then left
    /// empty with no version, so reload it.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let version = self.pending_version.take();
        self.upsert(&pending, version)
    }

    /// Whether changes were applied since the last flush.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn latest_facility(&self, id: &FacilityId) -> Option<&StoredFacility> {
        let pending = self.pending.iter().rev().find_map(|r| match r {
            DirectoryRecord::Facility(f) if &f.id == id => Some(f),
            _ => None,
        });
        pending.or_else(|| self.facilities.get(id))
    }

    fn latest_organization(&self, id: &OrgId) -> Option<&OrganizationRecord> {
        let pending = self.pending.iter().rev().find_map(|r| match r {
            DirectoryRecord::Organization(o) if &o.organization.id == id => Some(o),
            _ => None,
        });
        pending.or_else(|| self.organizations.get(id))
    }

    fn latest_clinician(&self, id: &ClinicianId) -> Option<&ClinicianRecord> {
        let pending = self.pending.iter().rev().find_map(|r| match r {
            DirectoryRecord::Clinician(c) if &c.clinician.id == id => Some(c),
            _ => None,
        });
        pending.or_else(|| self.clinicians.get(id))
    }

    /// The version of the state this directory reflects: the leaf index of the last directory
    /// event, or none before any.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The recipient class of organisation `id`, if registered (deactivated or not).
    pub fn organization_class(&self, id: &OrgId) -> Option<RecipientClass> {
        self.organizations
            .get(id)
            .map(|o| o.organization.recipient_class)
    }

    /// The leaf index at which organisation `id` was deactivated, if registered and deactivated.
    pub fn organization_deactivated(&self, id: &OrgId) -> Option<u64> {
        self.organizations.get(id)?.deactivated
    }

    /// Facility `id`, if registered.
    pub fn facility(&self, id: &FacilityId) -> Option<FacilityView<'_>> {
        let facility = self.facilities.get(id)?;
        Some(FacilityView {
            id: &facility.id,
            group: facility.group.as_ref(),
            deactivated: facility.deactivated,
        })
    }

    /// Whether facility `id`, or its facility group, excludes `department` from sharing, with
    /// both sides compared after [`normalize_id`]: settings stored before identifiers were
    /// normalised at the edge may spell a department `Psychiatry`, and requests arrive
    /// normalised. False for an unknown facility.
    pub fn excludes_department(&self, id: &FacilityId, department: &Department) -> bool {
        let Some(facility) = self.facilities.get(id) else {
            return false;
        };
        let asked = normalize_id(department.as_str());
        let listed = |list: Option<&Vec<String>>| list.is_some_and(|l| l.contains(&asked));
        listed(self.facility_exclusions.get(id))
            || listed(
                facility
                    .group
                    .as_ref()
                    .and_then(|g| self.group_exclusions.get(g)),
            )
    }

    /// Clinician `id`, if registered (deactivated or not).
    pub fn clinician(&self, id: &ClinicianId) -> Option<&Clinician> {
        self.clinicians.get(id).map(|c| &c.clinician)
    }

    /// The leaf index at which clinician `id` was deactivated, if registered and deactivated.
    pub fn clinician_deactivated(&self, id: &ClinicianId) -> Option<u64> {
        self.clinicians.get(id)?.deactivated
    }

    /// Number of Cedar entities in the store.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether the store holds no entity (never: the hierarchies are always there).
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub(crate) fn entities(&self) -> &Entities {
        &self.entities
    }

    fn build(records: Vec<DirectoryRecord>, version: Option<u64>) -> Result<Self, StateError> {
        let names = names().map_err(|message| StateError::Directory {
            message: message.clone(),
        })?;
        let mut directory = Self::bare();
        let mut entities = names.hierarchies.clone();
        for record in &records {
            directory.index(record);
            record_entities(record, &mut entities)?;
        }
        // Departments are shared by clinicians: keep one of each.
        let mut seen = std::collections::HashSet::new();
        entities.retain(|e| seen.insert(e.uid()));
        directory.entities =
            Entities::from_entities(entities, None).map_err(|e| StateError::Directory {
                message: e.to_string(),
            })?;
        directory.version = version;
        Ok(directory)
    }

    fn bare() -> Self {
        Self {
            entities: Entities::empty(),
            version: None,
            organizations: HashMap::new(),
            facilities: HashMap::new(),
            facility_exclusions: HashMap::new(),
            group_exclusions: HashMap::new(),
            clinicians: HashMap::new(),
            pending: Vec::new(),
            pending_version: None,
        }
    }

    fn index(&mut self, record: &DirectoryRecord) {
        match record {
            DirectoryRecord::Organization(org) => {
                self.organizations
                    .insert(org.organization.id.clone(), org.clone());
            }
            DirectoryRecord::Facility(facility) => {
                self.facilities
                    .insert(facility.id.clone(), facility.clone());
                self.facility_exclusions.insert(
                    facility.id.clone(),
                    normalized(&facility.excluded_departments),
                );
            }
            DirectoryRecord::Group(group) => {
                self.group_exclusions
                    .insert(group.id.clone(), normalized(&group.excluded_departments));
            }
            DirectoryRecord::Clinician(clinician) => {
                self.clinicians
                    .insert(clinician.clinician.id.clone(), clinician.clone());
            }
        }
    }
}

fn normalized(departments: &[Department]) -> Vec<String> {
    departments
        .iter()
        .map(|d| normalize_id(d.as_str()))
        .collect()
}

/// A shared, self-refreshing [`Directory`] for a server or a replay: readers get the current
/// snapshot cheaply; the first reader after a directory change brings it up to date.
#[derive(Debug)]
pub struct DirectoryCache {
    current: RwLock<Arc<Directory>>,
}

impl DirectoryCache {
    /// A cache holding `directory`.
    pub fn new(directory: Directory) -> Self {
        Self {
            current: RwLock::new(Arc::new(directory)),
        }
    }

    /// The directory at the state's current version.
    ///
    /// # Errors
    ///
    /// [`StateError`] when the store fails, a record is corrupt, the entities do not build, or
    /// the cache's lock was poisoned by a panic.
    pub fn current(&self, kv: &impl KvScan) -> Result<Arc<Directory>, StateError> {
        let version = state::directory_version(kv)?;
        let poisoned = || StateError::Directory {
            message: "directory cache lock poisoned".to_owned(),
        };
        {
            let current = self.current.read().map_err(|_| poisoned())?;
            if current.version() == version {
                return Ok(Arc::clone(&current));
            }
        }
        let mut current = self.current.write().map_err(|_| poisoned())?;
        if current.version() != version {
            Arc::make_mut(&mut current).refresh(kv)?;
        }
        Ok(Arc::clone(&current))
    }
}

// ---------------------------------------------------------------------------------------------
// Entity construction
// ---------------------------------------------------------------------------------------------

pub(crate) fn class_uid(class: RecipientClass) -> Result<EntityUid, StateError> {
    let names = names().map_err(|message| StateError::Directory {
        message: message.clone(),
    })?;
    Ok(uid(&names.recipient_class, class.as_str()))
}

pub(crate) fn role_uid(names: &Names, role: ClinicianRole) -> EntityUid {
    uid(&names.role, role.as_str())
}

/// The department entity id: `<facility id>/<department name>` (ids never contain `/`).
pub(crate) fn department_id(facility: &FacilityId, department: &Department) -> String {
    format!("{}/{}", facility.as_str(), department.as_str())
}

fn record_entities(record: &DirectoryRecord, out: &mut Vec<Entity>) -> Result<(), StateError> {
    let names = names().map_err(|message| StateError::Directory {
        message: message.clone(),
    })?;
    let built = match record {
        DirectoryRecord::Organization(org) => {
            let org = &org.organization;
            let class = class_uid(org.recipient_class)?;
            entity(
                uid(&names.organization, org.id.as_str()),
                vec![("class", RestrictedExpression::new_entity_uid(class.clone()))],
                vec![class],
            )
        }
        DirectoryRecord::Group(group) => group_entity(names, group),
        DirectoryRecord::Facility(facility) => facility_entity(names, facility),
        DirectoryRecord::Clinician(clinician) => {
            let clinician = &clinician.clinician;
            let facility = uid(&names.facility, clinician.facility.as_str());
            let department = uid(
                &names.department,
                &department_id(&clinician.facility, &clinician.department),
            );
            out.push(Entity::new_no_attrs(
                department.clone(),
                [facility.clone()].into_iter().collect(),
            ));
            entity(
                uid(&names.clinician, clinician.id.as_str()),
                vec![
                    (
                        "role",
                        RestrictedExpression::new_entity_uid(role_uid(names, clinician.role)),
                    ),
                    ("facility", RestrictedExpression::new_entity_uid(facility)),
                    (
                        "department",
                        RestrictedExpression::new_string(clinician.department.as_str().to_owned()),
                    ),
                ],
                vec![department],
            )
        }
    };
    out.push(built.map_err(|message| StateError::Directory { message })?);
    Ok(())
}

fn departments(list: &[Department]) -> RestrictedExpression {
    RestrictedExpression::new_set(
        list.iter()
            .map(|d| RestrictedExpression::new_string(d.as_str().to_owned())),
    )
}

fn group_entity(names: &Names, group: &StoredGroup) -> Result<Entity, String> {
    entity(
        uid(&names.facility_group, group.id.as_str()),
        vec![(
            "excluded_departments",
            departments(&group.excluded_departments),
        )],
        Vec::new(),
    )
}

fn facility_entity(names: &Names, facility: &StoredFacility) -> Result<Entity, String> {
    let mut attrs = vec![
        (
            "excluded_departments",
            departments(&facility.excluded_departments),
        ),
        (
            "emergency_active",
            RestrictedExpression::new_bool(facility.emergency_active),
        ),
    ];
    let mut parents = Vec::new();
    if let Some(group) = &facility.group {
        let group = uid(&names.facility_group, group.as_str());
        attrs.push(("group", RestrictedExpression::new_entity_uid(group.clone())));
        parents.push(group);
    }
    entity(uid(&names.facility, facility.id.as_str()), attrs, parents)
}

fn entity(
    id: EntityUid,
    attrs: Vec<(&str, RestrictedExpression)>,
    parents: Vec<EntityUid>,
) -> Result<Entity, String> {
    Entity::new(
        id,
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        parents.into_iter().collect(),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) fn entities_for_tests(directory: &Directory) -> Vec<Entity> {
    directory.entities.iter().cloned().collect()
}

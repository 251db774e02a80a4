//! The typed, in-memory snapshot of what one decision needs beyond the Cedar directory: who the
//! principal is (and for whom they receive data), the source facility and its group, and the
//! patient's consents, opt-outs and exclusions.
//!
//! [`Facts::gather`] takes the principal and facilities from a [`Directory`] and reads one key
//! from the state: the patient's record. Decisions are computed from a [`Request`], its [`Facts`]
//! and the directory alone, so what-if analysis can re-run them later. Consent resolution (which
//! consents cover a request) also lives here, in Rust, because Cedar cannot ask "is there any
//! consent that covers this?"; its results reach Cedar as context facts.
//!
//! This module does not decide and does not write.

use serde::{Deserialize, Serialize};

use crate::decision::{Recipient, Request};
use crate::directory::Directory;
use crate::domain::{
    CategoryName, ClinicianId, ClinicianRole, ConsentId, DataCategory, FacilityId, GroupId, OrgId,
    Principal, RecipientClass, SubjectId, Timestamp,
};
use crate::state::{self, KvRead, StateError, SubjectState};

/// Everything a decision reads from the state besides the directory's Cedar entities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The principal, as the directory knows it (none when unknown: see `missing`).
    pub principal: Option<PrincipalFacts>,
    /// The source facility, when the request names a known one.
    pub source: Option<FacilityFacts>,
    /// The patient's state (empty when the request names no patient).
    pub subject: SubjectState,
    /// The source facility or its group excludes the request's source department, both
    /// spellings compared normalised ([`Directory::excludes_department`]).
    #[serde(default)]
    pub source_department_excluded: bool,
    /// What the request names that the directory does not hold; any entry makes the decision a
    /// deny with that reason.
    pub missing: Vec<Missing>,
}

/// The principal as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PrincipalFacts {
    /// A clinician, acting for their facility.
    Clinician {
        /// Their id.
        id: ClinicianId,
        /// Their role.
        role: ClinicianRole,
        /// Their facility.
        facility: FacilityFacts,
        /// The recipient class of their facility's organisation, if it is registered.
        facility_class: Option<RecipientClass>,
    },
    /// An organisation.
    Organization {
        /// Its id.
        id: OrgId,
        /// Its recipient class.
        class: RecipientClass,
    },
    /// A patient.
    Patient {
        /// Their pseudonym.
        id: SubjectId,
    },
}

/// A facility and its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacilityFacts {
    /// Its id.
    pub id: FacilityId,
    /// Its facility group, if any.
    pub group: Option<GroupId>,
}

/// Something a request names that the directory does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "missing", content = "id")]
pub enum Missing {
    /// The principal's clinician id is not registered.
    #[error("unknown clinician `{0}`")]
    Clinician(ClinicianId),
    /// A clinician's facility is not registered.
    #[error("unknown facility `{0}` of the clinician")]
    ClinicianFacility(FacilityId),
    /// The data category is not one akashi knows.
    #[error("unknown data category `{0}`")]
    DataCategory(CategoryName),
    /// The principal clinician was deactivated (at the leaf index `at`).
    #[error("clinician `{id}` was deactivated at entry {at}")]
    DeactivatedClinician {
        /// The clinician.
        id: ClinicianId,
        /// The leaf index of the deactivation.
        at: u64,
    },
    /// The principal clinician's facility was deactivated.
    #[error("facility `{id}` of the clinician was deactivated at entry {at}")]
    DeactivatedFacility {
        /// The facility.
        id: FacilityId,
        /// The leaf index of the deactivation.
        at: u64,
    },
    /// The recipient organisation (the principal, or a clinician's facility) was deactivated:
    /// no consent covers it any more, and it may not act.
    #[error("organisation `{id}` was deactivated at entry {at}")]
    DeactivatedOrganization {
        /// The organisation.
        id: OrgId,
        /// The leaf index of the deactivation.
        at: u64,
    },
    /// The principal's organisation id is not registered.
    #[error("unknown organisation `{0}`")]
    Organization(OrgId),
    /// The source facility is not registered.
    #[error("unknown source facility `{0}`")]
    SourceFacility(FacilityId),
}

impl Facts {
    /// Gathers what `request` needs: the principal and facilities from `directory`, the patient's
    /// record from `kv` (one point get).
    ///
    /// # Errors
    ///
    /// [`StateError`] when the store fails or the record is corrupt (the caller must then fail
    /// closed: no decision, an error).
    pub fn gather(
        directory: &Directory,
        kv: &impl KvRead,
        request: &Request,
    ) -> Result<Self, StateError> {
        let mut missing = Vec::new();
        if request.data_category.category().is_none() {
            missing.push(Missing::DataCategory(request.data_category.clone()));
        }
        let facility = |id: &FacilityId| {
            directory.facility(id).map(|f| FacilityFacts {
                id: f.id.clone(),
                group: f.group.cloned(),
            })
        };
        // A deactivated principal, or one acting for a deactivated facility or organisation, is
        // denied before Cedar (directories logged before deactivations existed hold none).
        match &request.principal {
            Principal::Organization(id) => {
                if let Some(at) = directory.organization_deactivated(id) {
                    missing.push(Missing::DeactivatedOrganization { id: id.clone(), at });
                }
            }
            Principal::Clinician(id) => {
                if let Some(at) = directory.clinician_deactivated(id) {
                    missing.push(Missing::DeactivatedClinician { id: id.clone(), at });
                }
                if let Some(clinician) = directory.clinician(id) {
                    let facility = &clinician.facility;
                    let org = OrgId::of_facility(facility);
                    if let Some(at) = directory.facility(facility).and_then(|f| f.deactivated) {
                        missing.push(Missing::DeactivatedFacility {
                            id: facility.clone(),
                            at,
                        });
                    } else if let Some(at) = directory.organization_deactivated(&org) {
                        missing.push(Missing::DeactivatedOrganization { id: org, at });
                    }
                }
            }
            Principal::Patient(_) => {}
        }
        let principal = match &request.principal {
            Principal::Organization(id) => match directory.organization_class(id) {
                Some(class) => Some(PrincipalFacts::Organization {
                    id: id.clone(),
                    class,
                }),
                None => {
                    missing.push(Missing::Organization(id.clone()));
                    None
                }
            },
            Principal::Clinician(id) => match directory.clinician(id) {
                None => {
                    missing.push(Missing::Clinician(id.clone()));
                    None
                }
                Some(clinician) => match facility(&clinician.facility) {
                    None => {
                        missing.push(Missing::ClinicianFacility(clinician.facility.clone()));
                        None
                    }
                    Some(facility) => Some(PrincipalFacts::Clinician {
                        id: clinician.id.clone(),
                        role: clinician.role,
                        facility_class: directory
                            .organization_class(&OrgId::of_facility(&facility.id)),
                        facility,
                    }),
                },
            },
            Principal::Patient(id) => Some(PrincipalFacts::Patient { id: id.clone() }),
        };
        let source = match &request.source_facility {
            None => None,
            Some(id) => {
                let known = facility(id);
                if known.is_none() {
                    missing.push(Missing::SourceFacility(id.clone()));
                }
                known
            }
        };
        let subject = match &request.subject {
            Some(subject) => state::consent_state(kv, subject)?,
            None => SubjectState::default(),
        };
        let source_department_excluded = match (&source, &request.source_department) {
            (Some(source), Some(department)) => {
                directory.excludes_department(&source.id, department)
            }
            _ => false,
        };
        Ok(Self {
            principal,
            source,
            subject,
            source_department_excluded,
            missing,
        })
    }

    /// Who receives data: the organisation, or a clinician's facility (as an organisation).
    pub fn recipient(&self) -> Option<Recipient> {
        match self.principal.as_ref()? {
            PrincipalFacts::Organization { id, class } => Some(Recipient {
                id: id.clone(),
                class: Some(*class),
            }),
            PrincipalFacts::Clinician {
                facility,
                facility_class,
                ..
            } => Some(Recipient {
                id: OrgId::of_facility(&facility.id),
                class: *facility_class,
            }),
            PrincipalFacts::Patient { .. } => None,
        }
    }

    /// The patient's consents that cover `request` at `now`: in force, purpose (with its
    /// hierarchy), category (with its hierarchy), level, and recipient (its id or class). Empty
    /// for patients as principals, unknown principals and unknown categories.
    pub fn matching_consents(&self, request: &Request, now: Timestamp) -> Vec<ConsentId> {
        let (Some(recipient), Some(category)) =
            (self.recipient(), request.data_category.category())
        else {
            return Vec::new();
        };
        self.subject
            .consents
            .iter()
            .filter(|c| {
                c.covers(
                    request.purpose,
                    category,
                    request.level,
                    &recipient.id,
                    recipient.class,
                    now,
                )
            })
            .map(|c| c.id.clone())
            .collect()
    }

    /// Whether some consent of `matched` (see [`Facts::matching_consents`]) is the patient's
    /// latest word on the request's purpose: no opt-out of that purpose, or of a purpose it is a
    /// kind of, was recorded after its grant (see [`SubjectState::opted_out_after`]).
    pub fn has_current_consent(&self, request: &Request, matched: &[ConsentId]) -> bool {
        matched
            .iter()
            .any(|id| !self.subject.opted_out_after(id, request.purpose))
    }

    /// Whether the source facility, or its group, excludes the patient.
    pub fn patient_excluded(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        self.subject.excluded_by_facilities.contains(&source.id)
            || source
                .group
                .as_ref()
                .is_some_and(|g| self.subject.excluded_by_groups.contains(g))
    }

    /// The category the request names, when known.
    pub(crate) fn category(request: &Request) -> Option<DataCategory> {
        request.data_category.category()
    }

    /// The span of time around `now` in which no consent of the patient comes into or goes out
    /// of force. Time reaches a decision only through
    /// [`Consent::in_force_at`](crate::domain::Consent::in_force_at), so a decision made from these facts at `now` is
    /// the decision at every instant of the span: a decision prepared at one instant may be
    /// logged at a later one inside it.
    pub fn stable_span(&self, now: Timestamp) -> StableSpan {
        let mut span = StableSpan {
            from: None,
            until: None,
        };
        let bounds = self
            .subject
            .consents
            .iter()
            .flat_map(|c| [c.valid_from, c.valid_until])
            .flatten();
        for bound in bounds {
            // Every bound flips `in_force_at` between `t < bound` and `t >= bound`.
            if bound <= now {
                span.from = Some(span.from.map_or(bound, |f: Timestamp| f.max(bound)));
            } else {
                span.until = Some(span.until.map_or(bound, |u: Timestamp| u.min(bound)));
            }
        }
        span
    }
}

/// A half-open span of time `[from, until)`, unbounded where `None`: see
/// [`Facts::stable_span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StableSpan {
    /// The first instant of the span.
    pub from: Option<Timestamp>,
    /// The first instant after the span.
    pub until: Option<Timestamp>,
}

impl StableSpan {
    /// Whether `t` lies in the span.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|f| f <= t) && self.until.is_none_or(|u| t < u)
    }
}

//! `DirectoryService`: organisations, facilities, facility groups, clinicians and emergencies,
//! their deactivation, and reads of them. Every change is a log entry (the directory is an input
//! to every decision, so a regulator replaying the log must see it). Platform role only.
//!
//! Reads go to the derived state (as the consent reads do) and never return patient
//! exclusions: the server holds only their pseudonyms, which are personal data and of no use to
//! the caller, who registered the patient ids.

use policy::{
    domain::{
        Clinician, Deactivation, Facility, FacilityGroup, LeafHeader, MAX_EXCLUDED_DEPARTMENTS,
        MAX_EXCLUDED_PATIENTS, Name, Organization, RecipientClass,
    },
    event::Event,
    state::{self, ClinicianRecord, FacilityRecord, GroupRecord, OrganizationRecord, Page},
};
use proto::pb::{self, directory_service_server::DirectoryService};
use tonic::{Request, Response, Status};

use super::{Core, list, optional, parse, receipt, request_key, required};
use crate::idempotency::RequestKey;
use crate::state_machine::LogKv;
use crate::{
    auth::{Role, caller, require},
    error::Error,
    error::FieldProblem,
    state_machine::Command,
};

/// `DirectoryService`: the registry of organisations, facilities, groups and clinicians (named
/// apart from [`policy::directory::Directory`], the entities decisions read).
#[derive(Clone)]
pub struct Registry(pub Core);

impl Registry {
    async fn log(
        &self,
        event: Event,
        request: Option<RequestKey>,
    ) -> Result<Option<pb::Receipt>, Status> {
        let (r, _) = self
            .0
            .submit_request(Command::Directory(event), None, request)
            .await?;
        Ok(Some(receipt(&r)))
    }

    fn excluded_patients(
        &self,
        values: &[String],
    ) -> Result<Vec<policy::domain::SubjectId>, Error> {
        if values.len() > MAX_EXCLUDED_PATIENTS {
            return Err(Error::invalid(
                "excluded_patients",
                FieldProblem::TooMany {
                    max: MAX_EXCLUDED_PATIENTS,
                },
            ));
        }
        values
            .iter()
            .map(|id| self.0.subject("excluded_patients", id))
            .collect()
    }
}

/// Records per page of a List method when the request names no `page_size`.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most records per page of a List method; a larger `page_size` is cut to this.
pub const MAX_PAGE_SIZE: usize = 1000;

impl Registry {
    async fn deactivate(
        &self,
        target: Deactivation,
        request: Option<RequestKey>,
    ) -> Result<Option<pb::Receipt>, Status> {
        self.log(Event::Deactivate { target }, request).await
    }

    fn kv(&self) -> LogKv<'_> {
        LogKv(self.0.log())
    }
}

/// The recipient class a facility is registered under: `hospital` unless the request names
/// `checkup_center`.
fn facility_class(value: &str) -> Result<RecipientClass, Error> {
    let class = optional("recipient_class", value, parse)?.unwrap_or(RecipientClass::Hospital);
    match class {
        RecipientClass::Hospital | RecipientClass::CheckupCenter => Ok(class),
        _ => Err(Error::invalid(
            "recipient_class",
            FieldProblem::UnknownValue {
                value: value.to_owned(),
                expected: "`hospital`, `checkup_center`",
            },
        )),
    }
}

/// A List request's page: how many records, and the id to list after.
fn page(page_size: u32, page_token: &str) -> Result<(usize, Option<String>), Error> {
    let size = match usize::try_from(page_size).unwrap_or(MAX_PAGE_SIZE) {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    if page_token.is_empty() {
        return Ok((size, None));
    }
    let malformed = || {
        Error::invalid(
            "page_token",
            FieldProblem::Malformed {
                reason: "not a token from an earlier page",
            },
        )
    };
    let bytes = hex::decode(page_token).map_err(|_| malformed())?;
    let after = String::from_utf8(bytes).map_err(|_| malformed())?;
    Ok((size, Some(after)))
}

/// The token of the page after `page`, empty on the last page.
fn next_token<T>(page: &Page<T>) -> String {
    page.next_after
        .as_deref()
        .map(hex::encode)
        .unwrap_or_default()
}

fn unavailable(err: state::StateError) -> Error {
    Error::Unavailable(Box::new(err))
}

fn organization_pb(record: OrganizationRecord) -> pb::Organization {
    pb::Organization {
        id: record.organization.id.to_string(),
        name: record.organization.name.to_string(),
        recipient_class: record.organization.recipient_class.to_string(),
        deactivated_at: record.deactivated,
    }
}

fn facility_pb(record: FacilityRecord, class: Option<RecipientClass>) -> pb::Facility {
    pb::Facility {
        id: record.id.to_string(),
        name: record.name.to_string(),
        group: record.group.map(|g| g.to_string()).unwrap_or_default(),
        excluded_departments: record
            .excluded_departments
            .iter()
            .map(ToString::to_string)
            .collect(),
        recipient_class: class.map(|c| c.to_string()).unwrap_or_default(),
        emergency_active: record.emergency_active,
        deactivated_at: record.deactivated,
    }
}

fn group_pb(record: GroupRecord) -> pb::FacilityGroup {
    pb::FacilityGroup {
        id: record.id.to_string(),
        excluded_departments: record
            .excluded_departments
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

fn clinician_pb(record: ClinicianRecord) -> pb::Clinician {
    pb::Clinician {
        id: record.clinician.id.to_string(),
        facility: record.clinician.facility.to_string(),
        department: record.clinician.department.to_string(),
        role: record.clinician.role.to_string(),
        deactivated_at: record.deactivated,
    }
}

/// The departments a facility or group excludes from sharing.
fn excluded_departments(values: &[String]) -> Result<Vec<policy::domain::Department>, Error> {
    list(
        "excluded_departments",
        values,
        MAX_EXCLUDED_DEPARTMENTS,
        parse,
    )
}

#[tonic::async_trait]
impl DirectoryService for Registry {
    async fn upsert_organization(
        &self,
        request: Request<pb::UpsertOrganizationRequest>,
    ) -> Result<Response<pb::UpsertOrganizationResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        let org = Organization {
            id: required("id", &r.id, parse)?,
            name: required("name", &r.name, |v| Name::new(v))?,
            recipient_class: required("recipient_class", &r.recipient_class, parse)?,
        };
        let receipt = self.log(Event::UpsertOrganization(org), idempotent).await?;
        Ok(Response::new(pb::UpsertOrganizationResponse { receipt }))
    }

    async fn upsert_facility(
        &self,
        request: Request<pb::UpsertFacilityRequest>,
    ) -> Result<Response<pb::UpsertFacilityResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        let facility = Facility {
            id: required("id", &r.id, parse)?,
            name: required("name", &r.name, |v| Name::new(v))?,
            group: optional("group", &r.group, parse)?,
            excluded_departments: excluded_departments(&r.excluded_departments)?,
            excluded_patients: self.excluded_patients(&r.excluded_patients)?,
            recipient_class: Some(facility_class(&r.recipient_class)?),
            header: Some(LeafHeader::V2),
        };
        let receipt = self
            .log(Event::UpsertFacility(facility), idempotent)
            .await?;
        Ok(Response::new(pb::UpsertFacilityResponse { receipt }))
    }

    async fn upsert_facility_group(
        &self,
        request: Request<pb::UpsertFacilityGroupRequest>,
    ) -> Result<Response<pb::UpsertFacilityGroupResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        let group = FacilityGroup {
            id: required("id", &r.id, parse)?,
            excluded_departments: excluded_departments(&r.excluded_departments)?,
            excluded_patients: self.excluded_patients(&r.excluded_patients)?,
            header: Some(LeafHeader::V2),
        };
        let receipt = self
            .log(Event::UpsertFacilityGroup(group), idempotent)
            .await?;
        Ok(Response::new(pb::UpsertFacilityGroupResponse { receipt }))
    }

    async fn upsert_clinician(
        &self,
        request: Request<pb::UpsertClinicianRequest>,
    ) -> Result<Response<pb::UpsertClinicianResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        let clinician = Clinician {
            id: required("id", &r.id, parse)?,
            facility: required("facility", &r.facility, parse)?,
            department: required("department", &r.department, parse)?,
            role: required("role", &r.role, parse)?,
        };
        let receipt = self
            .log(Event::UpsertClinician(clinician), idempotent)
            .await?;
        Ok(Response::new(pb::UpsertClinicianResponse { receipt }))
    }

    async fn set_emergency(
        &self,
        request: Request<pb::SetEmergencyRequest>,
    ) -> Result<Response<pb::SetEmergencyResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        let event = Event::SetEmergency {
            facility: required("facility", &r.facility, parse)?,
            active: r.active,
        };
        let receipt = self.log(event, idempotent).await?;
        Ok(Response::new(pb::SetEmergencyResponse { receipt }))
    }

    async fn deactivate_clinician(
        &self,
        request: Request<pb::DeactivateClinicianRequest>,
    ) -> Result<Response<pb::DeactivateClinicianResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let id = required("id", &request.get_ref().id, parse)?;
        let receipt = self
            .deactivate(Deactivation::Clinician(id), idempotent)
            .await?;
        Ok(Response::new(pb::DeactivateClinicianResponse { receipt }))
    }

    async fn deactivate_organization(
        &self,
        request: Request<pb::DeactivateOrganizationRequest>,
    ) -> Result<Response<pb::DeactivateOrganizationResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let id = required("id", &request.get_ref().id, parse)?;
        let receipt = self
            .deactivate(Deactivation::Organization(id), idempotent)
            .await?;
        Ok(Response::new(pb::DeactivateOrganizationResponse {
            receipt,
        }))
    }

    async fn deactivate_facility(
        &self,
        request: Request<pb::DeactivateFacilityRequest>,
    ) -> Result<Response<pb::DeactivateFacilityResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let id = required("id", &request.get_ref().id, parse)?;
        let receipt = self
            .deactivate(Deactivation::Facility(id), idempotent)
            .await?;
        Ok(Response::new(pb::DeactivateFacilityResponse { receipt }))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let id = required("id", &request.get_ref().id, parse)?;
        let record = state::organization_record(&self.kv(), &id)
            .map_err(unavailable)?
            .ok_or_else(|| Error::NotFound {
                kind: "organization",
                id: id.to_string(),
            })?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(organization_pb(record)),
        }))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.get_ref();
        let (size, after) = page(r.page_size, &r.page_token)?;
        let page =
            state::list_organizations(&self.kv(), after.as_deref(), size).map_err(unavailable)?;
        let next_page_token = next_token(&page);
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: page.items.into_iter().map(organization_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_facility(
        &self,
        request: Request<pb::GetFacilityRequest>,
    ) -> Result<Response<pb::GetFacilityResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let id = required("id", &request.get_ref().id, parse)?;
        let kv = self.kv();
        let record = state::facility_summary(&kv, &id)
            .map_err(unavailable)?
            .ok_or_else(|| Error::NotFound {
                kind: "facility",
                id: id.to_string(),
            })?;
        let class = state::organization(&kv, &policy::domain::OrgId::of_facility(&id))
            .map_err(unavailable)?
            .map(|o| o.recipient_class);
        Ok(Response::new(pb::GetFacilityResponse {
            facility: Some(facility_pb(record, class)),
        }))
    }

    async fn list_facilities(
        &self,
        request: Request<pb::ListFacilitiesRequest>,
    ) -> Result<Response<pb::ListFacilitiesResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.get_ref();
        let (size, after) = page(r.page_size, &r.page_token)?;
        let kv = self.kv();
        let page = state::list_facilities(&kv, after.as_deref(), size).map_err(unavailable)?;
        let next_page_token = next_token(&page);
        let mut facilities = Vec::with_capacity(page.items.len());
        for record in page.items {
            let class = state::organization(&kv, &policy::domain::OrgId::of_facility(&record.id))
                .map_err(unavailable)?
                .map(|o| o.recipient_class);
            facilities.push(facility_pb(record, class));
        }
        Ok(Response::new(pb::ListFacilitiesResponse {
            facilities,
            next_page_token,
        }))
    }

    async fn get_facility_group(
        &self,
        request: Request<pb::GetFacilityGroupRequest>,
    ) -> Result<Response<pb::GetFacilityGroupResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let id = required("id", &request.get_ref().id, parse)?;
        let record = state::group_summary(&self.kv(), &id)
            .map_err(unavailable)?
            .ok_or_else(|| Error::NotFound {
                kind: "facility group",
                id: id.to_string(),
            })?;
        Ok(Response::new(pb::GetFacilityGroupResponse {
            facility_group: Some(group_pb(record)),
        }))
    }

    async fn list_facility_groups(
        &self,
        request: Request<pb::ListFacilityGroupsRequest>,
    ) -> Result<Response<pb::ListFacilityGroupsResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.get_ref();
        let (size, after) = page(r.page_size, &r.page_token)?;
        let page =
            state::list_facility_groups(&self.kv(), after.as_deref(), size).map_err(unavailable)?;
        let next_page_token = next_token(&page);
        Ok(Response::new(pb::ListFacilityGroupsResponse {
            facility_groups: page.items.into_iter().map(group_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_clinician(
        &self,
        request: Request<pb::GetClinicianRequest>,
    ) -> Result<Response<pb::GetClinicianResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let id = required("id", &request.get_ref().id, parse)?;
        let record = state::clinician_record(&self.kv(), &id)
            .map_err(unavailable)?
            .ok_or_else(|| Error::NotFound {
                kind: "clinician",
                id: id.to_string(),
            })?;
        Ok(Response::new(pb::GetClinicianResponse {
            clinician: Some(clinician_pb(record)),
        }))
    }

    async fn list_clinicians(
        &self,
        request: Request<pb::ListCliniciansRequest>,
    ) -> Result<Response<pb::ListCliniciansResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.get_ref();
        let (size, after) = page(r.page_size, &r.page_token)?;
        let page =
            state::list_clinicians(&self.kv(), after.as_deref(), size).map_err(unavailable)?;
        let next_page_token = next_token(&page);
        Ok(Response::new(pb::ListCliniciansResponse {
            clinicians: page.items.into_iter().map(clinician_pb).collect(),
            next_page_token,
        }))
    }
}

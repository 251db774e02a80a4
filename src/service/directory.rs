//! `DirectoryService`: organisations, facilities, facility groups, clinicians and emergencies.
//! Every change is a log entry (the directory is an input to every decision, so a regulator
//! replaying the log must see it). Platform role only.

use policy::{
    Event,
    domain::{
        Clinician, Facility, FacilityGroup, MAX_EXCLUDED_DEPARTMENTS, MAX_EXCLUDED_PATIENTS, Name,
        Organization,
    },
};
use proto::pb::{self, directory_service_server::DirectoryService};
use tonic::{Request, Response, Status};

use super::{Core, list, optional, parse, receipt, required};
use crate::{
    Error, FieldProblem,
    auth::{Role, caller, require},
    state_machine::Command,
};

/// The directory service.
#[derive(Clone)]
pub struct Directory(pub Core);

impl Directory {
    async fn log(&self, event: Event) -> Result<Option<pb::Receipt>, Status> {
        let (r, _) = self.0.submit(Command::Directory(event)).await?;
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
impl DirectoryService for Directory {
    async fn upsert_organization(
        &self,
        request: Request<pb::UpsertOrganizationRequest>,
    ) -> Result<Response<pb::UpsertOrganizationResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let org = Organization {
            id: required("id", &r.id, parse)?,
            name: required("name", &r.name, |v| Name::new(v))?,
            recipient_class: required("recipient_class", &r.recipient_class, parse)?,
        };
        let receipt = self.log(Event::UpsertOrganization(org)).await?;
        Ok(Response::new(pb::UpsertOrganizationResponse { receipt }))
    }

    async fn upsert_facility(
        &self,
        request: Request<pb::UpsertFacilityRequest>,
    ) -> Result<Response<pb::UpsertFacilityResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let facility = Facility {
            id: required("id", &r.id, parse)?,
            name: required("name", &r.name, |v| Name::new(v))?,
            group: optional("group", &r.group, parse)?,
            excluded_departments: excluded_departments(&r.excluded_departments)?,
            excluded_patients: self.excluded_patients(&r.excluded_patients)?,
        };
        let receipt = self.log(Event::UpsertFacility(facility)).await?;
        Ok(Response::new(pb::UpsertFacilityResponse { receipt }))
    }

    async fn upsert_facility_group(
        &self,
        request: Request<pb::UpsertFacilityGroupRequest>,
    ) -> Result<Response<pb::UpsertFacilityGroupResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let group = FacilityGroup {
            id: required("id", &r.id, parse)?,
            excluded_departments: excluded_departments(&r.excluded_departments)?,
            excluded_patients: self.excluded_patients(&r.excluded_patients)?,
        };
        let receipt = self.log(Event::UpsertFacilityGroup(group)).await?;
        Ok(Response::new(pb::UpsertFacilityGroupResponse { receipt }))
    }

    async fn upsert_clinician(
        &self,
        request: Request<pb::UpsertClinicianRequest>,
    ) -> Result<Response<pb::UpsertClinicianResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let clinician = Clinician {
            id: required("id", &r.id, parse)?,
            facility: required("facility", &r.facility, parse)?,
            department: required("department", &r.department, parse)?,
            role: required("role", &r.role, parse)?,
        };
        let receipt = self.log(Event::UpsertClinician(clinician)).await?;
        Ok(Response::new(pb::UpsertClinicianResponse { receipt }))
    }

    async fn set_emergency(
        &self,
        request: Request<pb::SetEmergencyRequest>,
    ) -> Result<Response<pb::SetEmergencyResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let event = Event::SetEmergency {
            facility: required("facility", &r.facility, parse)?,
            active: r.active,
        };
        let receipt = self.log(event).await?;
        Ok(Response::new(pb::SetEmergencyResponse { receipt }))
    }
}

//! `AccessService/Authorize`: every access request is decided by the policy crate against the
//! state as of its position in the log, and the decision (allow and deny alike, with the full
//! request in the private body) is logged before the caller hears it. If it cannot be logged,
//! the caller gets `UNAVAILABLE`, never an allow.
//!
//! Identifiers are normalised as they are parsed (Unicode NFC, then ASCII lowercase: see
//! `policy::domain::normalize_id`), like those of every write, so `Psychiatry` asks about the
//! department registered as `psychiatry`. A `Patient` principal asking about another patient is
//! refused with `PERMISSION_DENIED` and nothing is logged.
//!
//! The decision is prepared here, on the caller's task, and the sequencer's writer takes it only
//! if nothing it depends on changed before its position (see `state_machine`): the expensive
//! part runs in parallel, the serial part stays small, and the guarantee is the writer's.

use policy::{
    decision::Request as AccessRequest,
    domain::{Action, Effect, Principal, PrincipalType},
};
use proto::pb::{self, access_service_server::AccessService};
use tonic::{Request, Response, Status};

use super::{Core, optional, parse, receipt, required};
use crate::{
    auth::{Role, caller, require},
    error::Error,
    error::FieldProblem,
    state_machine::{Command, Output},
};

/// The access service.
#[derive(Clone)]
pub struct Access(pub Core);

impl Access {
    fn parse(&self, r: pb::AuthorizeRequest) -> Result<AccessRequest, Error> {
        let principal = r
            .principal
            .ok_or(Error::invalid("principal", FieldProblem::Missing))?;
        let principal_type: PrincipalType = required("principal.type", &principal.r#type, parse)?;
        let principal = match principal_type {
            // A patient is named by their patient id, pseudonymised here like every other.
            PrincipalType::Patient => {
                Principal::Patient(self.0.subject("principal.id", &principal.id)?)
            }
            PrincipalType::Clinician => {
                Principal::Clinician(required("principal.id", &principal.id, parse)?)
            }
            PrincipalType::Organization => {
                Principal::Organization(required("principal.id", &principal.id, parse)?)
            }
        };
        let action: Action = required("action", &r.action, parse)?;
        let subject = self.0.optional_subject("patient_id", &r.patient_id)?;
        // A patient asks only about themself. About another patient the request is refused here,
        // before anything is logged: a logged decision would join that patient's history and
        // name the asker there.
        if let (Principal::Patient(asker), Some(subject)) = (&principal, &subject)
            && asker != subject
        {
            return Err(Error::ForeignSubject);
        }
        // Only statistics may leave the patient out (they then ask about a cohort, whose size
        // is required). A request missing what its action needs is malformed, refused here
        // rather than logged as a deny.
        match (action, &subject) {
            (Action::ExportStatistics, None) if r.cohort_size == 0 => {
                return Err(Error::invalid("cohort_size", FieldProblem::Missing));
            }
            (Action::ExportStatistics, _) | (_, Some(_)) => {}
            (_, None) => return Err(Error::invalid("patient_id", FieldProblem::Missing)),
        }
        Ok(AccessRequest {
            principal,
            action,
            subject,
            data_category: required("data_category", &r.data_category, parse)?,
            source_facility: optional("source_facility", &r.source_facility, parse)?,
            source_department: optional("source_department", &r.source_department, parse)?,
            purpose: required("purpose", &r.purpose, parse)?,
            level: required("level", &r.level, parse)?,
            cohort_size: (r.cohort_size > 0).then_some(r.cohort_size),
        })
    }
}

#[tonic::async_trait]
impl AccessService for Access {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let started = std::time::Instant::now();
        require(caller(&request)?, &[Role::Platform])?;
        let request = request.into_inner();
        let patient_id = request.patient_id.clone();
        let access = self.parse(request)?;
        let labels = (access.action, access.purpose, access.level);
        let prepared = self.0.decisions().prepare(self.0.log(), &access);
        let subject = access.subject.clone();
        let times = self.0.decisions().times();
        let handed = std::time::Instant::now();
        times
            .prepare
            .observe(handed.duration_since(started).as_secs_f64());
        let submitted = match access.subject.clone() {
            Some(subject) => {
                self.0
                    .submit_about(Command::Authorize(access, prepared), &subject, &patient_id)
                    .await
            }
            None => self.0.submit(Command::Authorize(access, prepared)).await,
        };
        times.sequenced.observe(handed.elapsed().as_secs_f64());
        let (r, output) = submitted?;
        let Output::Decided { decision, leaf } = output else {
            return Err(Error::Internal("authorize answered with another output").into());
        };
        // The logged recipient (public, in the leaf) and the patient's pseudonym name the
        // reference a recipient's change stream uses.
        let patient_ref = match (
            &subject,
            ledger::entry::Leaf::decode(&leaf)
                .ok()
                .and_then(|l| l.attribute("recipient").map(str::to_owned)),
        ) {
            (Some(subject), Some(recipient)) if recipient != "none" => self
                .0
                .subject_key()
                .recipient_reference(&recipient, subject.as_str()),
            _ => String::new(),
        };
        self.0.decisions().answered().record((
            labels.0,
            labels.1,
            labels.2,
            decision.effect,
            decision.review_required,
        ));
        let effect = match decision.effect {
            Effect::Allow => pb::Decision::Allow,
            Effect::Deny => pb::Decision::Deny,
        };
        Ok(Response::new(pb::AuthorizeResponse {
            decision: effect.into(),
            determining_policies: decision.determining_policies,
            reasons: decision.reasons,
            review_required: decision.review_required,
            // The leaf states the logged decision and review flag: with it, the answer verifies
            // against the log (`akashi-audit verify-receipt`), not only the receipt.
            receipt: Some(pb::Receipt {
                leaf,
                ..receipt(&r)
            }),
            errors: decision.errors,
            patient_ref,
        }))
    }

    async fn authorize_cohort(
        &self,
        request: Request<pb::AuthorizeCohortRequest>,
    ) -> Result<Response<pb::AuthorizeCohortResponse>, Status> {
        super::cohort::authorize_cohort(&self.0, request).await
    }
}

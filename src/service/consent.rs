//! `ConsentService`: opt-in grants, revocations, opt-outs (each a log entry about the patient)
//! and reading a patient's consent state (the platform, or the patient themself).

use policy::{
    domain::{
        Consent, ConsentId, MAX_CATEGORIES, MAX_PURPOSES, MAX_RECIPIENT_CLASSES, MAX_RECIPIENTS,
        Timestamp,
    },
    state,
};
use proto::pb::{self, consent_service_server::ConsentService};
use rand::RngCore as _;
use tonic::{Request, Response, Status};

use super::{Core, list, optional, parse, receipt, required};
use crate::{
    Error, FieldProblem,
    auth::{Role, caller, require, require_subject},
    state_machine::{Command, Output},
};

/// The consent service.
#[derive(Clone)]
pub struct Consents(pub Core);

#[tonic::async_trait]
impl ConsentService for Consents {
    async fn grant_consent(
        &self,
        request: Request<pb::GrantConsentRequest>,
    ) -> Result<Response<pb::GrantConsentResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let consent = Consent {
            id: ConsentId::from_random_bytes(id),
            subject: self.0.subject("patient_id", &r.patient_id)?,
            purposes: list("purposes", &r.purposes, MAX_PURPOSES, parse)?,
            data_categories: list("data_categories", &r.data_categories, MAX_CATEGORIES, parse)?,
            recipients: list("recipients", &r.recipients, MAX_RECIPIENTS, parse)?,
            recipient_classes: list(
                "recipient_classes",
                &r.recipient_classes,
                MAX_RECIPIENT_CLASSES,
                parse,
            )?,
            max_level: required("max_level", &r.max_level, parse)?,
            valid_from: optional("valid_from", &r.valid_from, |v| {
                Timestamp::parse("valid_from", v)
            })?,
            valid_until: optional("valid_until", &r.valid_until, |v| {
                Timestamp::parse("valid_until", v)
            })?,
            // Set to the sequencing time by the state machine.
            granted_at: Timestamp::now(),
            revoked_at: None,
        };
        // Shape rules no single field breaks (no recipient at all, an empty validity period).
        consent
            .check()
            .map_err(|e| Error::Rejected(e.to_string()))?;
        let (r, output) = self.0.submit(Command::Grant(consent)).await?;
        let Output::Granted(consent_id) = output else {
            return Err(Error::Internal("grant answered with another output").into());
        };
        Ok(Response::new(pb::GrantConsentResponse {
            consent_id: consent_id.to_string(),
            receipt: Some(receipt(&r)),
        }))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let command = Command::Revoke {
            subject: self.0.subject("patient_id", &r.patient_id)?,
            consent_id: required("consent_id", &r.consent_id, parse)?,
        };
        let (r, _) = self.0.submit(command).await?;
        Ok(Response::new(pb::RevokeConsentResponse {
            receipt: Some(receipt(&r)),
        }))
    }

    async fn record_opt_out(
        &self,
        request: Request<pb::RecordOptOutRequest>,
    ) -> Result<Response<pb::RecordOptOutResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let r = request.into_inner();
        let purposes = list("purposes", &r.purposes, MAX_PURPOSES, parse)?;
        if purposes.is_empty() && !r.replace {
            // Nothing to add: a no-op would still be logged. Withdrawing every opt-out is an
            // explicit `replace` with no purposes.
            return Err(Error::invalid("purposes", FieldProblem::Missing).into());
        }
        let command = Command::OptOut {
            subject: self.0.subject("patient_id", &r.patient_id)?,
            purposes,
            replace: r.replace,
        };
        let (r, _) = self.0.submit(command).await?;
        Ok(Response::new(pb::RecordOptOutResponse {
            receipt: Some(receipt(&r)),
        }))
    }

    async fn get_consent_state(
        &self,
        request: Request<pb::GetConsentStateRequest>,
    ) -> Result<Response<pb::GetConsentStateResponse>, Status> {
        let caller = caller(&request)?.clone();
        let r = request.into_inner();
        // The role first: a caller who may not ask learns nothing, not even that the id is bad.
        require_subject(&caller, &r.patient_id, &[Role::Platform])?;
        let subject = self.0.subject("patient_id", &r.patient_id)?;
        let now = Timestamp::now();
        let stored = state::consent_state(&super::LogKv(self.0.log()), &subject)
            .map_err(|e| Error::Unavailable(Box::new(e)))?;
        let consents = stored
            .consents
            .iter()
            // Expired consents are history, not state.
            .filter(|c| c.valid_until.is_none_or(|until| now < until))
            .map(|c| pb::Consent {
                consent_id: c.id.to_string(),
                purposes: c.purposes.iter().map(ToString::to_string).collect(),
                data_categories: c.data_categories.iter().map(ToString::to_string).collect(),
                recipients: c.recipients.iter().map(ToString::to_string).collect(),
                recipient_classes: c
                    .recipient_classes
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                max_level: c.max_level.to_string(),
                valid_from: c.valid_from.map(|t| t.to_rfc3339()).unwrap_or_default(),
                valid_until: c.valid_until.map(|t| t.to_rfc3339()).unwrap_or_default(),
                granted_at: c.granted_at.to_rfc3339(),
                in_force: c.in_force_at(now),
            })
            .collect();
        let opt_outs = stored
            .opt_outs
            .iter()
            .map(|p| pb::OptOut {
                purpose: p.to_string(),
            })
            .collect();
        Ok(Response::new(pb::GetConsentStateResponse {
            consents,
            opt_outs,
        }))
    }
}

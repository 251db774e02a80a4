//! `PolicyService`: read the active policy set, validate a candidate against the schema, and
//! activate one (a log entry; the state machine refuses sets that do not validate). Text past
//! the size or shape limits (`policy::limits`) is `INVALID_ARGUMENT` for both calls, before Cedar
//! parses it.

use std::sync::Arc;

use policy::{engine::PolicyEngine, limits, policy_set::MAX_POLICY_TEXT, state};
use proto::pb::{self, policy_service_server::PolicyService};
use tonic::{Request, Response, Status};

use super::{Core, receipt};
use crate::state_machine::LogKv;
use crate::{
    auth::{Role, caller, require},
    error::Error,
    error::FieldProblem,
    state_machine::{Command, Output},
};

/// The policy service.
#[derive(Clone)]
pub struct Policies(pub Core);

fn check_text(text: &str) -> Result<(), Error> {
    if text.trim().is_empty() {
        return Err(Error::invalid("policies", FieldProblem::Missing));
    }
    if text.len() > MAX_POLICY_TEXT {
        return Err(Error::invalid(
            "policies",
            FieldProblem::TooLong {
                max: MAX_POLICY_TEXT,
            },
        ));
    }
    // Before Cedar parses anything: text that nests too deep would overflow the stack.
    limits::check(text).map_err(|e| {
        Error::invalid(
            "policies",
            FieldProblem::Invalid {
                reason: e.to_string(),
            },
        )
    })
}

#[tonic::async_trait]
impl PolicyService for Policies {
    async fn get_active_policy_set(
        &self,
        request: Request<pb::GetActivePolicySetRequest>,
    ) -> Result<Response<pb::GetActivePolicySetResponse>, Status> {
        caller(&request)?;
        let active = state::active_policy_set(&LogKv(self.0.log()))
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .ok_or(Error::Internal("no active policy set"))?;
        Ok(Response::new(pb::GetActivePolicySetResponse {
            policy_set_hash: active.hash.to_hex(),
            policies: active.policies,
            schema: PolicyEngine::schema_text().to_owned(),
            activated_at_index: active.index,
        }))
    }

    async fn validate_policy_set(
        &self,
        request: Request<pb::ValidatePolicySetRequest>,
    ) -> Result<Response<pb::ValidatePolicySetResponse>, Status> {
        require(caller(&request)?, &[Role::Platform, Role::Regulator])?;
        let text = request.into_inner().policies;
        check_text(&text)?;
        let result = tokio::task::spawn_blocking(move || policy::policy_set::validate(&text))
            .await
            .map_err(|_| Error::Internal("policy validation task failed"))?;
        let errors: Vec<String> = match result {
            Ok(()) => Vec::new(),
            Err(issues) => issues.iter().map(ToString::to_string).collect(),
        };
        Ok(Response::new(pb::ValidatePolicySetResponse {
            valid: errors.is_empty(),
            errors,
        }))
    }

    async fn activate_policy_set(
        &self,
        request: Request<pb::ActivatePolicySetRequest>,
    ) -> Result<Response<pb::ActivatePolicySetResponse>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        let text = request.into_inner().policies;
        check_text(&text)?;
        // Compiling and validating takes milliseconds: do it here, not on the writer thread.
        let engine = tokio::task::spawn_blocking(move || PolicyEngine::new(&text))
            .await
            .map_err(|_| Error::Internal("policy compilation task failed"))?
            .map_err(|e| {
                Error::invalid(
                    "policies",
                    FieldProblem::Invalid {
                        reason: e.to_string(),
                    },
                )
            })?;
        let (r, output) = self.0.submit(Command::Activate(Arc::new(engine))).await?;
        let Output::Activated(hash) = output else {
            return Err(Error::Internal("activation answered with another output").into());
        };
        Ok(Response::new(pb::ActivatePolicySetResponse {
            policy_set_hash: hash.to_hex(),
            receipt: Some(receipt(&r)),
        }))
    }
}

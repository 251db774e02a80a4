//! `PolicyService`: read the active policy set (and those waiting for approval), validate a
//! candidate against the schema, analyse what it would change among the logged decisions, and
//! activate one — directly, or under the two-person rule by proposal and a regulator's approval,
//! or take a proposal back (each a log entry; the state machine refuses sets that do not
//! validate). Text past the size
//! or shape limits (`policy::limits`) is `INVALID_ARGUMENT` for every call that takes it, before
//! Cedar parses it.

use std::sync::Arc;

use policy::{
    decision::PolicySetHash, engine::PolicyEngine, limits, policy_set::MAX_POLICY_TEXT, state,
    whatif::AnalysisId,
};
use proto::pb::{self, policy_service_server::PolicyService};
use tonic::{Request, Response, Status};

use super::{Core, receipt, request_key};
use crate::config::PolicyApproval;
use crate::policy_review::{Review, Window};
use crate::state_machine::LogKv;
use crate::{
    auth::{Role, caller, require},
    error::Error,
    error::FieldProblem,
    state_machine::{Command, Output},
};

/// The policy service.
#[derive(Clone)]
pub struct Policies {
    core: Core,
    review: Arc<Review>,
}

impl Policies {
    /// The service over `core`, under the two-person rule `approval`.
    pub fn new(core: Core, approval: PolicyApproval) -> Self {
        Self {
            core,
            review: Arc::new(Review::new(approval)),
        }
    }
}

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

/// Checks, compiles and validates `text` off the async threads (it takes milliseconds).
async fn compile(text: String) -> Result<PolicyEngine, Error> {
    check_text(&text)?;
    tokio::task::spawn_blocking(move || PolicyEngine::new(&text))
        .await
        .map_err(|_| Error::Internal("policy compilation task failed"))?
        .map_err(|e| {
            Error::invalid(
                "policies",
                FieldProblem::Invalid {
                    reason: e.to_string(),
                },
            )
        })
}

fn hex_field<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, FieldProblem::Missing));
    }
    value.parse().map_err(|_| {
        Error::invalid(
            field,
            FieldProblem::Invalid {
                reason: "must be 64 lowercase hex characters".to_owned(),
            },
        )
    })
}

/// The window an `AnalyzePolicySetRequest` asks for: at most one of its three ways.
fn window(r: &pb::AnalyzePolicySetRequest) -> Result<Window, Error> {
    let given = [r.last_entries > 0, r.days > 0, r.from_index.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(Error::invalid(
            "last_entries",
            FieldProblem::Invalid {
                reason: "give at most one of last_entries, days and from_index".to_owned(),
            },
        ));
    }
    Ok(match (r.last_entries, r.days, r.from_index) {
        (n, _, _) if n > 0 => Window::LastEntries(n),
        (_, d, _) if d > 0 => Window::Days(d),
        (_, _, Some(index)) => Window::FromIndex(index),
        _ => Window::All,
    })
}

#[tonic::async_trait]
impl PolicyService for Policies {
    async fn get_active_policy_set(
        &self,
        request: Request<pb::GetActivePolicySetRequest>,
    ) -> Result<Response<pb::GetActivePolicySetResponse>, Status> {
        caller(&request)?;
        let kv = LogKv(self.core.log());
        let active = state::active_policy_set(&kv)
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .ok_or(Error::Internal("no active policy set"))?;
        let pending = state::pending_policy_sets(&kv)
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .into_iter()
            .map(|p| pb::PendingPolicySet {
                policy_set_hash: p.hash.to_hex(),
                policies: p.policies,
                proposed_at_index: p.index,
            })
            .collect();
        Ok(Response::new(pb::GetActivePolicySetResponse {
            policy_set_hash: active.hash.to_hex(),
            policies: active.policies,
            schema: PolicyEngine::schema_text().to_owned(),
            activated_at_index: active.index,
            pending,
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
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let engine = Arc::new(compile(request.into_inner().policies).await?);
        let command = match self.review.approval() {
            PolicyApproval::None => Command::Activate(engine),
            PolicyApproval::Regulator => Command::Propose(engine),
        };
        let (r, output) = self.core.submit_request(command, None, idempotent).await?;
        let (hash, pending) = match output {
            Output::Activated(hash) => (hash, false),
            Output::Proposed(hash) => (hash, true),
            _ => return Err(Error::Internal("activation answered with another output").into()),
        };
        Ok(Response::new(pb::ActivatePolicySetResponse {
            policy_set_hash: hash.to_hex(),
            receipt: Some(receipt(&r)),
            pending,
        }))
    }

    async fn analyze_policy_set(
        &self,
        request: Request<pb::AnalyzePolicySetRequest>,
    ) -> Result<Response<pb::AnalyzePolicySetResponse>, Status> {
        require(caller(&request)?, &[Role::Platform, Role::Regulator])?;
        let r = request.into_inner();
        let window = window(&r)?;
        let candidate = compile(r.policies).await?;
        let log = self.core.log().clone();
        let kv = LogKv(&log);
        let pending = state::pending_policy_sets(&kv)
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .iter()
            .any(|p| p.hash == candidate.hash());
        let active = state::active_policy_set_hash(&kv)
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .map(|h| h.to_hex())
            .unwrap_or_default();
        let analysis = self.review.analyze(log.clone(), candidate, window).await?;
        tracing::info!(
            analysis = %analysis.id(),
            candidate = %analysis.candidate,
            from = analysis.from_index,
            to = analysis.to_index,
            decisions = analysis.decisions,
            allow_to_deny = analysis.allow_to_deny,
            deny_to_allow = analysis.deny_to_allow,
            "policy set analysed"
        );
        Ok(Response::new(pb::AnalyzePolicySetResponse {
            analysis_id: analysis.id().to_hex(),
            policy_set_hash: analysis.candidate.to_hex(),
            active_policy_set_hash: active,
            from_index: analysis.from_index,
            to_index: analysis.to_index,
            decisions: analysis.decisions,
            allow_to_deny: analysis.allow_to_deny,
            deny_to_allow: analysis.deny_to_allow,
            groups: analysis
                .groups
                .into_iter()
                .map(|g| pb::PolicyChangeGroup {
                    direction: g.direction.as_str().to_owned(),
                    rule: g.rule,
                    purpose: g.purpose,
                    count: g.count,
                    example_leaf_indices: g.examples,
                })
                .collect(),
            pending,
        }))
    }

    async fn reject_policy_set(
        &self,
        request: Request<pb::RejectPolicySetRequest>,
    ) -> Result<Response<pb::RejectPolicySetResponse>, Status> {
        require(caller(&request)?, &[Role::Regulator, Role::Platform])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let hash: PolicySetHash =
            hex_field("policy_set_hash", &request.into_inner().policy_set_hash)?;
        let (r, _) = self
            .core
            .submit_request(Command::Reject(hash), None, idempotent)
            .await?;
        Ok(Response::new(pb::RejectPolicySetResponse {
            receipt: Some(receipt(&r)),
        }))
    }

    async fn approve_policy_set(
        &self,
        request: Request<pb::ApprovePolicySetRequest>,
    ) -> Result<Response<pb::ApprovePolicySetResponse>, Status> {
        require(caller(&request)?, &[Role::Regulator])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        let hash: PolicySetHash = hex_field("policy_set_hash", &r.policy_set_hash)?;
        // A retry of an approval that went through: the set is no longer pending, and the
        // analysis may be forgotten, but the first answer stands.
        if let Some((r, Output::Activated(hash))) = self.core.answered(idempotent.as_ref()).await? {
            return Ok(Response::new(pb::ApprovePolicySetResponse {
                policy_set_hash: hash.to_hex(),
                receipt: Some(receipt(&r)),
            }));
        }
        let analysis: AnalysisId = hex_field("analysis_id", &r.analysis_id)?;
        let pending = state::pending_policy_sets(&LogKv(self.core.log()))
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .into_iter()
            .find(|p| p.hash == hash)
            .ok_or_else(|| Error::NotFound {
                kind: "pending policy set",
                id: hash.to_hex(),
            })?;
        let made = self.review.made(analysis, hash).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "this server made no analysis `{analysis}` of policy set `{hash}`: run \
                 AnalyzePolicySet for it and approve naming that analysis"
            ))
        })?;
        let engine = Arc::new(compile(pending.policies).await?);
        let (r, output) = self
            .core
            .submit_request(
                Command::Approve {
                    engine,
                    analysis: made.id,
                    from: made.from,
                    to: made.to,
                },
                None,
                idempotent,
            )
            .await?;
        let Output::Activated(hash) = output else {
            return Err(Error::Internal("approval answered with another output").into());
        };
        Ok(Response::new(pb::ApprovePolicySetResponse {
            policy_set_hash: hash.to_hex(),
            receipt: Some(receipt(&r)),
        }))
    }
}

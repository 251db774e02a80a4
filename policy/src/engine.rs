//! The Cedar facade: a compiled policy set ([`PolicyEngine`]) and its decisions
//! ([`PolicyEngine::decide`]). The set as an artefact — canonical text, hash, validation, schema,
//! limits — is [`crate::policy_set`]'s; this module compiles with it and decides.
//!
//! Decisions evaluate against the prebuilt entities of a [`Directory`] (organisations, facilities,
//! groups, departments, clinicians, purpose and category hierarchies) with a context built
//! directly from typed values ([`Request`] and [`Facts`]): no JSON is parsed and no entity is built
//! on the decision path. The principal is the organisation, clinician or patient; the resource is
//! the `Patient` the request is about, or the `Cohort` for statistics about no one patient. The
//! rules themselves live in the `.cedar` files; Rust only resolves consents, opt-outs and patient
//! exclusions into context facts (see `RequestContext` in the schema), because Cedar cannot search
//! a patient's consents.
//!
//! Fail closed: an unknown principal, facility or category, an action the schema does not allow
//! for the principal, a request without the patient it needs, an entity that cannot be built, or
//! any policy evaluation error makes the decision a deny, never an allow.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, EntityUid, PolicyId, PolicySet, RestrictedExpression,
};

use crate::decision::{Decision, PolicySetHash, Request};
use crate::directory::Directory;
use crate::domain::{Action, DataCategory, Effect, Timestamp};
use crate::explain;
use crate::facts::{Facts, PrincipalFacts};
use crate::limits;
use crate::policy_set::{
    CompileFn, DEFAULT_POLICIES, PolicyError, PolicyMeta, SCHEMA, Statics, ValidationIssue,
    canonicalize, compile, hash_text, statics, uid,
};
use crate::state::{self, KvRead, StateError};

#[cfg(test)]
mod tests;

/// The reason given when no policy permits a request.
pub const DEFAULT_DENY_REASON: &str = "no policy permits this request (deny by default)";

/// A compiled policy set, validated against [`SCHEMA`] in strict mode.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    text: String,
    hash: PolicySetHash,
    /// Per action (in `Action::ALL` order), the policies whose action scope can match it. A
    /// policy whose scope excludes the action can neither be satisfied nor fail (scope is
    /// checked before the conditions), so leaving it out changes no decision; it only saves
    /// evaluating it.
    by_action: Vec<(Action, PolicySet)>,
    meta: HashMap<PolicyId, PolicyMeta>,
}

impl PolicyEngine {
    /// Compiles a policy set after canonicalising and validating it (see [`crate::policy_set::validate`]).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Limit`] when a policy breaks a limit of [`crate::limits`] (checked before
    /// Cedar parses anything), else [`PolicyError::Invalid`] with every issue found.
    pub fn new(policies: &str) -> Result<Self, PolicyError> {
        let text = canonicalize(policies);
        limits::check(&text).map_err(|source| PolicyError::Limit { source })?;
        Self::build(text, compile)
    }

    /// Compiles canonical `text` with `compile` (the checked one, or in tests the unchecked one)
    /// and splits the set by action.
    fn build(text: String, compile: CompileFn) -> Result<Self, PolicyError> {
        let statics = statics()?;
        let (set, meta) =
            compile(&text, statics).map_err(|issues| PolicyError::Invalid { issues })?;
        let mut by_action = Vec::with_capacity(Action::ALL.len());
        for info in &statics.actions {
            let mut subset = PolicySet::new();
            for policy in set.policies() {
                let applies = match policy.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(uid) => uid == info.uid,
                    ActionConstraint::In(uids) => uids.contains(&info.uid),
                };
                if applies {
                    subset
                        .add(policy.clone())
                        .map_err(|e| PolicyError::Invalid {
                            issues: vec![ValidationIssue {
                                message: e.to_string(),
                                policy: meta.get(policy.id()).map(|m: &PolicyMeta| m.id.clone()),
                                line: None,
                                column: None,
                            }],
                        })?;
                }
            }
            by_action.push((info.action, subset));
        }
        Ok(Self {
            hash: hash_text(&text),
            text,
            by_action,
            meta,
        })
    }

    /// The default policy set ([`DEFAULT_POLICIES`]).
    ///
    /// # Errors
    ///
    /// [`PolicyError`] only if this crate's own files are broken (its tests check they are not).
    pub fn default_set() -> Result<Self, PolicyError> {
        Self::new(DEFAULT_POLICIES)
    }

    /// SHA-256 of the canonical text.
    pub fn hash(&self) -> PolicySetHash {
        self.hash
    }

    /// The canonical text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The Cedar schema policy sets are validated against.
    pub fn schema_text() -> &'static str {
        SCHEMA
    }

    /// The `@id`s of the policies, in policy-set order.
    pub fn policy_ids(&self) -> Vec<&str> {
        let mut metas: Vec<&PolicyMeta> = self.meta.values().collect();
        metas.sort_by_key(|m| m.position);
        metas.into_iter().map(|m| m.id.as_str()).collect()
    }

    /// Decides `request` at time `now` with the state in `kv` and its `directory` (see
    /// [`crate::directory::DirectoryCache::current`]).
    ///
    /// # Errors
    ///
    /// [`StateError`] when the state cannot be read or the directory is not at the state's
    /// version: the caller must then answer with an error, never an allow.
    pub fn decide_kv(
        &self,
        request: &Request,
        directory: &Directory,
        kv: &impl KvRead,
        now: Timestamp,
    ) -> Result<Decision, StateError> {
        let state_version = state::directory_version(kv)?;
        if state_version != directory.version() {
            return Err(StateError::StaleDirectory {
                directory: directory.version(),
                state: state_version,
            });
        }
        let facts = Facts::gather(directory, kv, request)?;
        Ok(self.decide(request, &facts, directory, now))
    }

    /// Decides `request` from its `facts` (see [`Facts::gather`]) and the `directory` they were
    /// gathered with, at time `now`. Never fails: every problem is a deny with a reason.
    pub fn decide(
        &self,
        request: &Request,
        facts: &Facts,
        directory: &Directory,
        now: Timestamp,
    ) -> Decision {
        let statics = match statics() {
            Ok(s) => s,
            Err(e) => return Decision::deny(format!("policy engine unavailable: {e}")),
        };
        if !facts.missing.is_empty() {
            let mut decision = Decision::deny(String::new());
            decision.reasons = facts.missing.iter().map(ToString::to_string).collect();
            return decision;
        }
        let (Some(principal), Some(category)) =
            (facts.principal.as_ref(), Facts::category(request))
        else {
            return Decision::deny("unknown principal or data category");
        };
        let Some(action) = statics.action(request.action) else {
            return Decision::deny(format!("action `{}` is not in the schema", request.action));
        };
        let principal_type = request.principal.principal_type();
        if !action.principals.contains(&principal_type) {
            return Decision::deny(format!(
                "action `{}` is not available to `{principal_type}` principals",
                request.action
            ));
        }
        let resource_ok = match &request.subject {
            Some(_) => action.on_patient,
            None => action.on_cohort,
        };
        if !resource_ok {
            return Decision::deny(format!("action `{}` needs a patient", request.action));
        }
        let matched = facts.matching_consents(request, now);
        let consent = ConsentFacts {
            any: !matched.is_empty(),
            current: facts.has_current_consent(request, &matched),
        };
        let cedar_request = match build_request(
            statics,
            &action.uid,
            request,
            facts,
            principal,
            category,
            consent,
        ) {
            Ok(r) => r,
            Err(message) => {
                let mut decision =
                    Decision::deny("the request could not be evaluated (fail closed)");
                decision.errors.push(message);
                return decision;
            }
        };
        let Some((_, policies)) = self.by_action.iter().find(|(a, _)| *a == request.action) else {
            return Decision::deny(format!("action `{}` is not in the schema", request.action));
        };
        let response =
            Authorizer::new().is_authorized(&cedar_request, policies, directory.entities());
        let mut decision = self.to_decision(&response, matched);
        explain::explain_default_deny(&mut decision, request, facts, now);
        decision
    }

    fn to_decision(
        &self,
        response: &cedar_policy::Response,
        matched: Vec<crate::domain::ConsentId>,
    ) -> Decision {
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                let id = self
                    .meta
                    .get(e.policy_id())
                    .map_or_else(|| e.policy_id().to_string(), |m| m.id.clone());
                format!("policy `{id}` failed to evaluate: {}", e.inner())
            })
            .collect();
        let mut determining: Vec<&PolicyMeta> = diagnostics
            .reason()
            .filter_map(|id| self.meta.get(id))
            .collect();
        determining.sort_by_key(|m| m.position);
        let cedar_allow = response.decision() == cedar_policy::Decision::Allow;
        if !errors.is_empty() && cedar_allow {
            // Fail closed: a policy that failed to evaluate might have been a forbid.
            return Decision {
                effect: Effect::Deny,
                determining_policies: Vec::new(),
                reasons: vec![
                    "a policy failed to evaluate, so the request is denied (fail closed)"
                        .to_owned(),
                ],
                errors,
                review_required: false,
                matched_consents: matched,
            };
        }
        let mut reasons: Vec<String> = determining.iter().map(|m| m.reason.clone()).collect();
        if determining.is_empty() {
            reasons.push(DEFAULT_DENY_REASON.to_owned());
        }
        if !errors.is_empty() {
            reasons.push("a policy failed to evaluate (fail closed)".to_owned());
        }
        Decision {
            effect: if cedar_allow {
                Effect::Allow
            } else {
                Effect::Deny
            },
            review_required: cedar_allow && determining.iter().any(|m| m.review),
            determining_policies: determining.iter().map(|m| m.id.clone()).collect(),
            reasons,
            errors,
            matched_consents: matched,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building a Cedar request
// ---------------------------------------------------------------------------------------------

/// What consent resolution found for a request (see `RequestContext` in the schema).
#[derive(Debug, Clone, Copy)]
struct ConsentFacts {
    /// Some consent covers the request (`has_opt_in_consent`).
    any: bool,
    /// Some covering consent was granted after every opt-out of the request's purpose
    /// (`has_current_opt_in_consent`).
    current: bool,
}

/// Builds the Cedar request: principal and resource uids, and a context holding everything that
/// is particular to this request. The entities come from the prebuilt [`Directory`].
fn build_request(
    statics: &Statics,
    action: &EntityUid,
    request: &Request,
    facts: &Facts,
    principal: &PrincipalFacts,
    category: DataCategory,
    consent: ConsentFacts,
) -> Result<cedar_policy::Request, String> {
    let n = statics.names;
    let principal_uid = match principal {
        PrincipalFacts::Organization { id, .. } => uid(&n.organization, id.as_str()),
        PrincipalFacts::Clinician { id, .. } => uid(&n.clinician, id.as_str()),
        PrincipalFacts::Patient { id } => uid(&n.patient, id.as_str()),
    };
    let resource = match &request.subject {
        Some(subject) => uid(&n.patient, subject.as_str()),
        None => statics.cohort.clone(),
    };
    let mut context = Vec::with_capacity(12);
    context.push((
        "purpose".to_owned(),
        RestrictedExpression::new_entity_uid(uid(&n.purpose, request.purpose.as_str())),
    ));
    context.push((
        "level".to_owned(),
        RestrictedExpression::new_entity_uid(uid(&n.level, request.level.as_str())),
    ));
    context.push((
        "category".to_owned(),
        RestrictedExpression::new_entity_uid(uid(&n.data_category, category.as_str())),
    ));
    if let Some(source) = &facts.source {
        context.push((
            "source_facility".to_owned(),
            RestrictedExpression::new_entity_uid(uid(&n.facility, source.id.as_str())),
        ));
    }
    if let Some(department) = &request.source_department {
        context.push((
            "source_department".to_owned(),
            RestrictedExpression::new_string(department.as_str().to_owned()),
        ));
    }
    context.push((
        "has_opt_in_consent".to_owned(),
        RestrictedExpression::new_bool(consent.any),
    ));
    context.push((
        "has_current_opt_in_consent".to_owned(),
        RestrictedExpression::new_bool(consent.current),
    ));
    context.push((
        "opted_out".to_owned(),
        RestrictedExpression::new_bool(facts.subject.opted_out_of(request.purpose)),
    ));
    context.push((
        "source_department_excluded".to_owned(),
        RestrictedExpression::new_bool(facts.source_department_excluded),
    ));
    context.push((
        "patient_excluded".to_owned(),
        RestrictedExpression::new_bool(facts.patient_excluded()),
    ));
    context.push((
        "patient_has_exclusions".to_owned(),
        RestrictedExpression::new_bool(
            !facts.subject.excluded_by_facilities.is_empty()
                || !facts.subject.excluded_by_groups.is_empty(),
        ),
    ));
    if let Some(size) = request.cohort_size {
        context.push((
            "cohort_size".to_owned(),
            RestrictedExpression::new_long(i64::try_from(size).unwrap_or(i64::MAX)),
        ));
    }
    let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
    cedar_policy::Request::new(principal_uid, action.clone(), resource, context, None)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) fn schema_for_tests() -> cedar_policy::Schema {
    cedar_policy::Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .unwrap()
}

#[cfg(test)]
pub(crate) fn build_for_tests(
    request: &Request,
    facts: &Facts,
    now: Timestamp,
) -> cedar_policy::Request {
    let statics = statics().unwrap();
    let principal = facts.principal.as_ref().unwrap();
    let category = Facts::category(request).unwrap();
    let matched = facts.matching_consents(request, now);
    let consent = ConsentFacts {
        any: !matched.is_empty(),
        current: facts.has_current_consent(request, &matched),
    };
    let action = &statics.action(request.action).unwrap().uid;
    build_request(
        statics, action, request, facts, principal, category, consent,
    )
    .unwrap()
}

//! The Cedar facade: schema-validated policy sets ([`PolicyEngine`]), their canonical text and
//! hash, strict validation with locations ([`validate`]), and decisions ([`PolicyEngine::decide`]).
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
//!
//! # Canonical text and hash
//!
//! A policy set is identified by `SHA-256(canonical text)`, where the canonical text of a policy
//! source is: a leading UTF-8 byte-order mark removed; line endings `\r\n` (and lone `\r`) turned
//! into `\n`; trailing spaces and tabs removed from every line; trailing blank lines removed; and,
//! unless the text is then empty, exactly one final `\n`. It is a pure text transformation, so
//! anyone can recompute a hash with `sha256sum` on the text the log records, and it does not
//! depend on the Cedar version.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, EntityUid, PolicyId, PolicySet, RestrictedExpression,
    Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decision::{Decision, PolicySetHash, Request};
use crate::directory::{self, Directory, Names, uid};
use crate::domain::{Action, DataCategory, Effect, PrincipalType, Purpose, Timestamp};
use crate::explain;
use crate::facts::{Facts, PrincipalFacts};
use crate::limits::{self, LimitError};
use crate::state::{self, KvRead, StateError};

#[cfg(test)]
mod tests;

/// Largest policy-set text accepted, in bytes.
pub const MAX_POLICY_TEXT: usize = 256 * 1024;
/// Most policies in a set.
pub const MAX_POLICIES: usize = 1000;
/// Longest `@id` of a policy, in bytes.
pub const MAX_POLICY_ID_LEN: usize = 128;
/// Longest `@reason` of a policy, in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// The Cedar schema every policy set is validated against.
pub const SCHEMA: &str = include_str!("../schema/akashi.cedarschema");

/// The default policy set: the rule files of `policies/`, in this order.
pub const DEFAULT_POLICIES: &str = concat!(
    include_str!("../policies/secondary_use.cedar"),
    "\n",
    include_str!("../policies/statistics.cedar"),
    "\n",
    include_str!("../policies/disclosure.cedar"),
    "\n",
    include_str!("../policies/ehr.cedar"),
    "\n",
    include_str!("../policies/break_glass.cedar"),
    "\n",
    include_str!("../policies/patient.cedar"),
);

/// The reason given when no policy permits a request.
pub const DEFAULT_DENY_REASON: &str = "no policy permits this request (deny by default)";

/// Why a policy set cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy set does not parse or validate; the issues say where and why.
    #[error("policy set is invalid: {}", issues.first().map_or_else(String::new, ToString::to_string))]
    Invalid {
        /// What is wrong, with locations.
        issues: Vec<ValidationIssue>,
    },
    /// A policy nests too deep or is too long for Cedar to parse safely (see [`crate::limits`]);
    /// the text was not parsed.
    #[error("policy set is invalid: {source}")]
    Limit {
        /// Which limit, where.
        source: LimitError,
    },
    /// The built-in schema does not load (a bug in this crate).
    #[error("built-in schema does not load: {message}")]
    Schema {
        /// Cedar's message.
        message: String,
    },
}

/// One problem found by [`validate`], with its location in the canonical text when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationIssue {
    /// What is wrong (Cedar's message, with its help when it gives one).
    pub message: String,
    /// The `@id` of the policy concerned, when known.
    pub policy: Option<String>,
    /// 1-based line in the canonical text.
    pub line: Option<u32>,
    /// 1-based column (in characters).
    pub column: Option<u32>,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "{line}:{column}: ")?;
        }
        if let Some(policy) = &self.policy {
            write!(f, "policy `{policy}`: ")?;
        }
        f.write_str(&self.message)
    }
}

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

#[derive(Debug, Clone)]
struct PolicyMeta {
    id: String,
    reason: String,
    review: bool,
    position: usize,
}

impl PolicyEngine {
    /// Compiles a policy set after canonicalising and validating it (see [`validate`]).
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

/// Validates a policy set against [`SCHEMA`] in strict mode, after canonicalising it. Besides
/// Cedar's parse and type errors, every policy must carry a unique `@id("...")` (letters, digits,
/// `._:-`), a one-line `@reason("...")`, and `@review` only as `"true"` or `"false"`; templates
/// are refused; `Purpose` and `DataCategory` entity literals must name known values. The limits
/// of [`crate::limits`] are checked first, so that Cedar never parses text that nests too deep.
///
/// # Errors
///
/// Every issue found, each with its location in the canonical text when known.
pub fn validate(policies: &str) -> Result<(), Vec<ValidationIssue>> {
    let statics = statics().map_err(|e| {
        vec![ValidationIssue {
            message: e.to_string(),
            policy: None,
            line: None,
            column: None,
        }]
    })?;
    compile(&canonicalize(policies), statics).map(|_| ())
}

/// The canonical text of a policy source (see the module docs).
pub fn canonicalize(policies: &str) -> String {
    let text = policies.strip_prefix('\u{feff}').unwrap_or(policies);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        out.push_str(line.trim_end_matches([' ', '\t']));
        out.push('\n');
    }
    let trimmed = out.trim_end_matches('\n').len();
    out.truncate(trimmed);
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// SHA-256 of `text` (which should be canonical).
pub fn hash_text(text: &str) -> PolicySetHash {
    PolicySetHash(Sha256::digest(text.as_bytes()).into())
}

// ---------------------------------------------------------------------------------------------
// Compilation and validation
// ---------------------------------------------------------------------------------------------

/// A compiled set and the annotations of its policies.
type Compiled = (PolicySet, HashMap<PolicyId, PolicyMeta>);

/// [`compile`] or [`compile_unchecked`].
type CompileFn = fn(&str, &Statics) -> Result<Compiled, Vec<ValidationIssue>>;

fn compile(text: &str, statics: &Statics) -> Result<Compiled, Vec<ValidationIssue>> {
    let issue = |message: String| ValidationIssue {
        message,
        policy: None,
        line: None,
        column: None,
    };
    if text.len() > MAX_POLICY_TEXT {
        return Err(vec![issue(format!(
            "policy set is too large ({} bytes, at most {MAX_POLICY_TEXT})",
            text.len()
        ))]);
    }
    if let Err(limit) = limits::check(text) {
        let (line, column) = line_column(text, limit.offset());
        return Err(vec![ValidationIssue {
            message: limit.to_string(),
            policy: match limit.policy() {
                limits::PolicyName::Id(id) => Some(id.clone()),
                limits::PolicyName::Position(_) => None,
            },
            line: Some(line),
            column: Some(column),
        }]);
    }
    compile_unchecked(text, statics)
}

/// [`compile`] without the size and shape limits: only for text that passed them (and for the
/// tests that measure what Cedar does without them).
fn compile_unchecked(text: &str, statics: &Statics) -> Result<Compiled, Vec<ValidationIssue>> {
    let issue = |message: String| ValidationIssue {
        message,
        policy: None,
        line: None,
        column: None,
    };
    let set = PolicySet::from_str(text).map_err(|errors| {
        errors
            .iter()
            .map(|e| diagnostic_issue(text, e, None))
            .collect::<Vec<_>>()
    })?;
    let mut issues = Vec::new();
    if set.num_of_templates() > 0 {
        issues.push(issue(
            "templates are not supported; write static policies".to_owned(),
        ));
    }
    if set.num_of_policies() > MAX_POLICIES {
        issues.push(issue(format!(
            "policy set has too many policies ({}, at most {MAX_POLICIES})",
            set.num_of_policies()
        )));
    }
    if set.num_of_policies() == 0 {
        issues.push(issue("policy set has no policies".to_owned()));
    }
    let mut policies: Vec<(usize, &cedar_policy::Policy)> =
        set.policies().map(|p| (position_of(p.id()), p)).collect();
    policies.sort_by_key(|(position, _)| *position);

    let mut meta = HashMap::new();
    let mut seen = HashSet::new();
    let mut search_from = 0;
    for (position, policy) in policies {
        // Locate the policy's own text, to report annotation problems where they are.
        let offset = policy.to_cedar().and_then(|src| {
            let found = text.get(search_from..)?.find(&src)? + search_from;
            search_from = found + src.len();
            Some(found)
        });
        let located = |message: String, id: Option<String>| {
            let (line, column) = offset.map_or((None, None), |o| {
                let (l, c) = line_column(text, o);
                (Some(l), Some(c))
            });
            ValidationIssue {
                message,
                policy: id,
                line,
                column,
            }
        };
        let id = policy.annotation("id").map(str::to_owned);
        match &id {
            None => issues.push(located(
                "policy has no `@id(\"...\")` annotation".to_owned(),
                None,
            )),
            Some(id) if !valid_policy_id(id) => issues.push(located(
                format!("`@id` must be 1 to {MAX_POLICY_ID_LEN} ASCII letters, digits or `._:-`"),
                Some(id.clone()),
            )),
            Some(id) if !seen.insert(id.clone()) => {
                issues.push(located(
                    "`@id` is used by another policy".to_owned(),
                    Some(id.clone()),
                ));
            }
            Some(_) => {}
        }
        let reason = policy.annotation("reason").map(str::to_owned);
        match &reason {
            Some(r) if !r.trim().is_empty() && r.len() <= MAX_REASON_LEN && !r.contains('\n') => {}
            _ => issues.push(located(
                format!(
                    "policy needs a one-line `@reason(\"...\")` of at most {MAX_REASON_LEN} bytes"
                ),
                id.clone(),
            )),
        }
        let review = match policy.annotation("review") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                issues.push(located(
                    format!(
                        "`@review` must be \"true\" or \"false\", not `{}`",
                        other.escape_default()
                    ),
                    id.clone(),
                ));
                false
            }
        };
        for literal in policy.entity_literals() {
            if let Some(problem) = statics.unknown_literal(&literal) {
                issues.push(located(problem, id.clone()));
            }
        }
        meta.insert(
            policy.id().clone(),
            PolicyMeta {
                id: id.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
                review,
                position,
            },
        );
    }
    let result = statics.validator.validate(&set, ValidationMode::Strict);
    for error in result.validation_errors() {
        let id = meta.get(error.policy_id()).map(|m| m.id.clone());
        issues.push(diagnostic_issue(text, error, id));
    }
    if issues.is_empty() {
        Ok((set, meta))
    } else {
        Err(issues)
    }
}

/// Cedar names the policies of a parsed set `policy0`, `policy1`, ... in text order.
fn position_of(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

fn valid_policy_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_POLICY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn diagnostic_issue(
    text: &str,
    diagnostic: &(impl miette::Diagnostic + fmt::Display),
    policy: Option<String>,
) -> ValidationIssue {
    let mut message = diagnostic.to_string();
    // Cedar names policies by its internal ids (`policy0`, ...); the issue names the `@id`.
    if let Some(rest) = message.strip_prefix("for policy `")
        && let Some((_, after)) = rest.split_once("`, ")
    {
        message = after.to_owned();
    }
    if let Some(help) = diagnostic.help() {
        message.push_str(" (");
        message.push_str(&help.to_string());
        message.push(')');
    }
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = offset.map_or((None, None), |o| {
        let (l, c) = line_column(text, o);
        (Some(l), Some(c))
    });
    ValidationIssue {
        message: message.replace('\n', " "),
        policy,
        line,
        column,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let before = text.get(..end).unwrap_or_default();
    let line = before.matches('\n').count().saturating_add(1);
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |l| l.chars().count())
        .saturating_add(1);
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

// ---------------------------------------------------------------------------------------------
// Process-wide Cedar values: schema, validator, action ids
// ---------------------------------------------------------------------------------------------

/// What the schema says of an action.
struct ActionInfo {
    action: Action,
    uid: EntityUid,
    /// The principal types it applies to.
    principals: Vec<PrincipalType>,
    /// Whether its resource may be a `Patient` (a request that names one).
    on_patient: bool,
    /// Whether its resource may be the `Cohort` (a request that names no patient).
    on_cohort: bool,
}

struct Statics {
    validator: Validator,
    names: &'static Names,
    actions: Vec<ActionInfo>,
    cohort: EntityUid,
}

fn statics() -> Result<&'static Statics, PolicyError> {
    static STATICS: OnceLock<Result<Statics, String>> = OnceLock::new();
    STATICS
        .get_or_init(Statics::build)
        .as_ref()
        .map_err(|message| PolicyError::Schema {
            message: message.clone(),
        })
}

impl Statics {
    fn build() -> Result<Self, String> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| e.to_string())?;
        let names = directory::names().map_err(Clone::clone)?;
        let mut actions = Vec::new();
        for action in Action::ALL {
            let action_uid = uid(&names.action, action.as_str());
            let principals = schema
                .principals_for_action(&action_uid)
                .map(|types| {
                    types
                        .filter_map(|t| PrincipalType::from_str(&t.to_string()).ok())
                        .collect()
                })
                .unwrap_or_default();
            let resources: Vec<String> = schema
                .resources_for_action(&action_uid)
                .map(|types| types.map(ToString::to_string).collect())
                .unwrap_or_default();
            actions.push(ActionInfo {
                action: *action,
                uid: action_uid,
                principals,
                on_patient: resources.iter().any(|r| r == "Patient"),
                on_cohort: resources.iter().any(|r| r == "Cohort"),
            });
        }
        Ok(Self {
            validator: Validator::new(schema),
            names,
            actions,
            cohort: uid(&names.cohort, "cohort"),
        })
    }

    fn action(&self, action: Action) -> Option<&ActionInfo> {
        self.actions.iter().find(|a| a.action == action)
    }

    /// A problem with an entity literal of a policy, if it names an unknown purpose or category.
    fn unknown_literal(&self, literal: &EntityUid) -> Option<String> {
        let ty = literal.type_name();
        let id: &str = literal.id().unescaped();
        if ty == &self.names.purpose && Purpose::from_str(id).is_err() {
            return Some(format!("unknown purpose `{}`", id.escape_default()));
        }
        if ty == &self.names.data_category && DataCategory::from_str(id).is_err() {
            return Some(format!("unknown data category `{}`", id.escape_default()));
        }
        None
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
pub(crate) fn schema_for_tests() -> Schema {
    Schema::from_cedarschema_str(SCHEMA)
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

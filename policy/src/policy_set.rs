//! A policy set as an artefact: the limits on its text, the Cedar schema it is validated
//! against, the built-in default set, its canonical text and hash, and strict validation with
//! locations ([`validate`]). Everything here depends on the text alone (and on the schema), never
//! on the log's state: the state checks an activation with it, the engine compiles with it, and
//! an auditor recomputes a hash with it.
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
    Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Schema, ValidationMode,
    Validator,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decision::PolicySetHash;
use crate::domain::{Action, DataCategory, PrincipalType, Purpose};
use crate::limits::{self, LimitError, MAX_POLICY_ID_LEN};

/// Largest policy-set text accepted, in bytes.
pub const MAX_POLICY_TEXT: usize = 256 * 1024;
/// Most policies in a set.
pub const MAX_POLICIES: usize = 1000;
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

/// What the annotations of one policy say, and where it stands in its set.
#[derive(Debug, Clone)]
pub(crate) struct PolicyMeta {
    pub(crate) id: String,
    pub(crate) reason: String,
    pub(crate) review: bool,
    pub(crate) position: usize,
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
pub(crate) type Compiled = (PolicySet, HashMap<PolicyId, PolicyMeta>);

/// [`compile`] or [`compile_unchecked`].
pub(crate) type CompileFn = fn(&str, &Statics) -> Result<Compiled, Vec<ValidationIssue>>;

pub(crate) fn compile(text: &str, statics: &Statics) -> Result<Compiled, Vec<ValidationIssue>> {
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
pub(crate) fn compile_unchecked(
    text: &str,
    statics: &Statics,
) -> Result<Compiled, Vec<ValidationIssue>> {
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
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
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
pub(crate) struct ActionInfo {
    pub(crate) action: Action,
    pub(crate) uid: EntityUid,
    /// The principal types it applies to.
    pub(crate) principals: Vec<PrincipalType>,
    /// Whether its resource may be a `Patient` (a request that names one).
    pub(crate) on_patient: bool,
    /// Whether its resource may be the `Cohort` (a request that names no patient).
    pub(crate) on_cohort: bool,
}

/// The schema's validator, entity type names and actions, built once per process.
pub(crate) struct Statics {
    pub(crate) validator: Validator,
    pub(crate) names: &'static Names,
    pub(crate) actions: Vec<ActionInfo>,
    pub(crate) cohort: EntityUid,
}

pub(crate) fn statics() -> Result<&'static Statics, PolicyError> {
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
        let names = names().map_err(Clone::clone)?;
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

    pub(crate) fn action(&self, action: Action) -> Option<&ActionInfo> {
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
// Entity type names
// ---------------------------------------------------------------------------------------------

/// Cedar type names and the static hierarchy entities, built once per process.
pub(crate) struct Names {
    pub(crate) clinician: EntityTypeName,
    pub(crate) cohort: EntityTypeName,
    pub(crate) data_category: EntityTypeName,
    pub(crate) department: EntityTypeName,
    pub(crate) facility: EntityTypeName,
    pub(crate) facility_group: EntityTypeName,
    pub(crate) level: EntityTypeName,
    pub(crate) organization: EntityTypeName,
    pub(crate) patient: EntityTypeName,
    pub(crate) purpose: EntityTypeName,
    pub(crate) recipient_class: EntityTypeName,
    pub(crate) role: EntityTypeName,
    pub(crate) action: EntityTypeName,
    /// Every purpose and data category, each `in` its parent.
    pub(crate) hierarchies: Vec<Entity>,
}

pub(crate) fn names() -> Result<&'static Names, &'static String> {
    static NAMES: OnceLock<Result<Names, String>> = OnceLock::new();
    NAMES.get_or_init(Names::build).as_ref()
}

impl Names {
    fn build() -> Result<Self, String> {
        let name = |n: &str| EntityTypeName::from_str(n).map_err(|e| e.to_string());
        let mut names = Self {
            clinician: name("Clinician")?,
            cohort: name("Cohort")?,
            data_category: name("DataCategory")?,
            department: name("Department")?,
            facility: name("Facility")?,
            facility_group: name("FacilityGroup")?,
            level: name("Level")?,
            organization: name("Organization")?,
            patient: name("Patient")?,
            purpose: name("Purpose")?,
            recipient_class: name("RecipientClass")?,
            role: name("Role")?,
            action: name("Action")?,
            hierarchies: Vec::new(),
        };
        for p in Purpose::ALL {
            let parent = p.parent().map(|a| uid(&names.purpose, a.as_str()));
            names.hierarchies.push(Entity::new_no_attrs(
                uid(&names.purpose, p.as_str()),
                parent.into_iter().collect(),
            ));
        }
        for c in DataCategory::ALL {
            let parent = c.parent().map(|a| uid(&names.data_category, a.as_str()));
            names.hierarchies.push(Entity::new_no_attrs(
                uid(&names.data_category, c.as_str()),
                parent.into_iter().collect(),
            ));
        }
        Ok(names)
    }
}

/// The uid of entity `id` of type `ty`.
pub(crate) fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

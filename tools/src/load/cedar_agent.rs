//! The `cedar-agent` workload: the peer of the CPU-per-decision comparison (a Cedar service that
//! logs nothing). It asks cedar-agent (crates.io `cedar-agent`, HTTP/JSON, Cedar 2.x) exactly the
//! questions the `authorize` workload asks akashi with `--write-percent 0`, in the same mix and
//! over the same patients, under akashi's default rules rewritten for Cedar 2.x
//! (`tools/bench/cedar-agent/policies.cedar`) and the directory the `authorize` setup registers.
//!
//! akashi computes the consent facts of a request from its log; cedar-agent has no log, so each
//! request carries them in its context, computed from the `authorize` setup's pattern (research
//! consents for three patients in four, treatment sharing for half, a product-development
//! opt-out for a tenth). Every answer is checked against the decision akashi makes for the same
//! request: a mismatch is a `decision_mismatch` error (the run then exits 2), so the comparison
//! cannot drift into comparing different work.
//!
//! Setup (before the clock starts) stores the policies (`PUT /v1/policies`, one per `@id`) and
//! the entities (`PUT /v1/data`). Calls are `POST /v1/is_authorized` over HTTP/1.1 keep-alive.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{
    CallError, Workload,
    authorize::{DEPARTMENT, DOCTOR, HOSPITAL_A, HOSPITAL_B, UNIVERSITY, patient_id, spread},
};

/// Purposes and their parents, as akashi's vocabulary has them.
const PURPOSES: &[(&str, Option<&str>)] = &[
    ("treatment", None),
    ("emergency", Some("treatment")),
    ("research", None),
    ("clinical_trial", Some("research")),
    ("product_development", None),
    ("insurance", None),
    ("health_guidance", None),
    ("public_health", None),
    ("marketing", None),
    ("facility_operations", None),
];

/// Data categories and their parents, as akashi's vocabulary has them.
const CATEGORIES: &[(&str, Option<&str>)] = &[
    ("general", None),
    ("clinical", Some("general")),
    ("diagnosis", Some("clinical")),
    ("medication", Some("clinical")),
    ("lab_result", Some("clinical")),
    ("imaging", Some("clinical")),
    ("procedure", Some("clinical")),
    ("allergy", Some("clinical")),
    ("vital_sign", Some("clinical")),
    ("clinical_note", Some("clinical")),
    ("checkup", Some("general")),
    ("checkup_result", Some("checkup")),
    ("checkup_questionnaire", Some("checkup")),
    ("claims", Some("general")),
    ("lifelog", Some("general")),
    ("genomic", None),
    ("mental_health", None),
];

/// Recipient classes.
const CLASSES: &[&str] = &[
    "ai_vendor",
    "checkup_center",
    "device_maker",
    "hospital",
    "pharma",
    "private_insurer",
    "public_body",
    "university",
];

/// The workload.
pub struct CedarAgentWorkload {
    url: String,
    patients: u64,
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// A Cedar entity uid as cedar-agent's JSON takes it.
fn uid(kind: &str, id: &str) -> Value {
    json!({ "type": kind, "id": id })
}

/// An entity reference inside attributes or context (Cedar's JSON escape).
fn reference(kind: &str, id: &str) -> Value {
    json!({ "__entity": uid(kind, id) })
}

/// The Cedar text of an entity uid (`Type::"id"`).
fn uid_text(kind: &str, id: &str) -> String {
    format!("{kind}::\"{id}\"")
}

/// The policies of `text`, one per `@id("…")` annotation: `(id, policy text)`, the annotation
/// line left out (cedar-agent takes the id beside the text).
///
/// # Errors
///
/// When a policy has no `@id` or two share one.
pub fn split_policies(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("@id(\"") {
            let id = rest
                .split('"')
                .next()
                .filter(|id| !id.is_empty())
                .context("an `@id` annotation without an id")?;
            if out.iter().any(|(seen, _)| seen == id) {
                bail!("two policies share the id `{id}`");
            }
            out.push((id.to_owned(), String::new()));
        } else if let Some((_, policy)) = out.last_mut() {
            if !line.trim_start().starts_with("//") {
                policy.push_str(line);
                policy.push('\n');
            }
        } else if !line.trim().is_empty() && !line.trim_start().starts_with("//") {
            bail!("a policy without an `@id` annotation");
        }
    }
    if out.is_empty() {
        bail!("no policies");
    }
    Ok(out)
}

/// The directory the `authorize` setup registers, with the vocabularies' hierarchies, as
/// cedar-agent entities.
pub fn entities() -> Value {
    let mut out: Vec<Value> = Vec::new();
    for class in CLASSES {
        out.push(json!({ "uid": uid("RecipientClass", class), "attrs": {}, "parents": [] }));
    }
    for (id, class) in [
        (UNIVERSITY, "university"),
        (HOSPITAL_A, "hospital"),
        (HOSPITAL_B, "hospital"),
    ] {
        out.push(json!({
            "uid": uid("Organization", id),
            "attrs": { "class": reference("RecipientClass", class) },
            "parents": [uid("RecipientClass", class)],
        }));
    }
    for facility in [HOSPITAL_A, HOSPITAL_B] {
        out.push(json!({
            "uid": uid("Facility", facility),
            "attrs": { "excluded_departments": ["psychiatry"], "emergency_active": false },
            "parents": [],
        }));
        out.push(json!({
            "uid": uid("Department", &format!("{facility}/{DEPARTMENT}")),
            "attrs": {},
            "parents": [uid("Facility", facility)],
        }));
    }
    for role in ["doctor", "information_manager"] {
        out.push(json!({ "uid": uid("Role", role), "attrs": {}, "parents": [] }));
    }
    out.push(json!({
        "uid": uid("Clinician", DOCTOR),
        "attrs": {
            "role": reference("Role", "doctor"),
            "facility": reference("Facility", HOSPITAL_A),
            "department": DEPARTMENT,
        },
        "parents": [uid("Department", &format!("{HOSPITAL_A}/{DEPARTMENT}"))],
    }));
    for (kind, tree) in [("Purpose", PURPOSES), ("DataCategory", CATEGORIES)] {
        for (id, parent) in tree {
            let parents: Vec<Value> = parent.iter().map(|p| uid(kind, p)).collect();
            out.push(json!({ "uid": uid(kind, id), "attrs": {}, "parents": parents }));
        }
    }
    out.push(json!({ "uid": uid("Cohort", "cohort"), "attrs": {}, "parents": [] }));
    Value::Array(out)
}

impl CedarAgentWorkload {
    /// Stores `policies` (Cedar 2.x text, one `@id` per policy) and the directory in the
    /// cedar-agent at `target`, for calls over `patients` patients.
    ///
    /// # Errors
    ///
    /// When the target is not loopback, the policies do not split, or cedar-agent refuses either.
    pub async fn setup(target: &str, patients: u64, policies: &str) -> anyhow::Result<Self> {
        super::ensure_loopback(target).context("while checking --target")?;
        let base = target.trim_end_matches('/');
        let policies: Vec<Value> = split_policies(policies)?
            .into_iter()
            .map(|(id, content)| json!({ "id": id, "content": content }))
            .collect();
        let client = super::http_client();
        for (path, body) in [
            ("/v1/policies", Value::Array(policies)),
            ("/v1/data", entities()),
        ] {
            let request = http::Request::put(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .context("while building a setup request")?;
            let response = client
                .request(request)
                .await
                .with_context(|| format!("while storing {path} in cedar-agent"))?;
            let status = response.status();
            let answer = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!(
                    "cedar-agent refused {path}: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
        Ok(Self {
            url: format!("{base}/v1/is_authorized"),
            patients: patients.max(1),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        })
    }

    /// Call `n`'s question (the `authorize` workload's `n`-th) and the decision akashi makes.
    pub fn question(&self, n: u64) -> (Value, bool) {
        let i = spread(n, self.patients);
        let patient = uid_text("Patient", &patient_id(i));
        let facts = |purpose: &str,
                     level: &str,
                     category: &str,
                     facility: &str,
                     consent: bool,
                     opted_out: bool| {
            json!({
                "purpose": reference("Purpose", purpose),
                "level": reference("Level", level),
                "category": reference("DataCategory", category),
                "source_facility": reference("Facility", facility),
                "source_department": DEPARTMENT,
                "has_opt_in_consent": consent,
                "has_current_opt_in_consent": consent,
                "opted_out": opted_out,
                "source_department_excluded": false,
                "patient_excluded": false,
                "patient_has_exclusions": false,
            })
        };
        let university = uid_text("Organization", UNIVERSITY);
        match n % 20 {
            0..12 => {
                let consent = i % 4 != 3;
                (
                    json!({
                        "principal": university,
                        "action": uid_text("Action", "secondary_use"),
                        "resource": patient,
                        "context": facts("research", "PSEUDONYMIZED", "lab_result", HOSPITAL_A, consent, false),
                    }),
                    consent,
                )
            }
            12..16 => {
                let consent = i.is_multiple_of(2);
                (
                    json!({
                        "principal": uid_text("Clinician", DOCTOR),
                        "action": uid_text("Action", "view_record"),
                        "resource": patient,
                        "context": facts("treatment", "IDENTIFIED", "medication", HOSPITAL_B, consent, false),
                    }),
                    consent,
                )
            }
            16..19 => {
                let opted_out = i % 10 == 9;
                (
                    json!({
                        "principal": university,
                        "action": uid_text("Action", "secondary_use"),
                        "resource": patient,
                        "context": facts("product_development", "ANONYMIZED", "lab_result", HOSPITAL_A, false, opted_out),
                    }),
                    !opted_out,
                )
            }
            _ => {
                let mut context = facts(
                    "public_health",
                    "STATISTICAL",
                    "lab_result",
                    HOSPITAL_A,
                    false,
                    false,
                );
                if let Some(context) = context.as_object_mut() {
                    context.insert("cohort_size".into(), json!(50));
                }
                (
                    json!({
                        "principal": university,
                        "action": uid_text("Action", "export_statistics"),
                        "resource": uid_text("Cohort", "cohort"),
                        "context": context,
                    }),
                    true,
                )
            }
        }
    }
}

impl Workload for CedarAgentWorkload {
    type Client = super::HttpClient;

    fn name(&self) -> &'static str {
        "cedar-agent"
    }

    fn client(&self, _channel: Channel) -> Self::Client {
        super::http_client()
    }

    fn grpc(&self) -> bool {
        false
    }

    async fn call(&self, client: &mut Self::Client, n: u64) -> Result<(), CallError> {
        let (question, expected) = self.question(n);
        let answer = super::post_json(client, &self.url, None, &question).await?;
        let allowed = match answer.get("decision").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err(CallError::new("decision_missing")),
        };
        if allowed != expected {
            return Err(CallError::new("decision_mismatch"));
        }
        let counter = if allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn checks(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            (
                "decisions_allow".to_owned(),
                self.allowed.load(Ordering::Relaxed),
            ),
            (
                "decisions_deny".to_owned(),
                self.denied.load(Ordering::Relaxed),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_policies_split_one_per_id() {
        let text = include_str!("../../bench/cedar-agent/policies.cedar");
        let policies = split_policies(text).unwrap();
        // The same rules as akashi's default set, by id.
        let default_set = [
            include_str!("../../../policy/policies/secondary_use.cedar"),
            include_str!("../../../policy/policies/ehr.cedar"),
            include_str!("../../../policy/policies/break_glass.cedar"),
            include_str!("../../../policy/policies/patient.cedar"),
            include_str!("../../../policy/policies/statistics.cedar"),
            include_str!("../../../policy/policies/disclosure.cedar"),
        ]
        .join("\n");
        let mut ours: Vec<&str> = default_set
            .lines()
            .filter_map(|line| line.trim().strip_prefix("@id(\""))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        let mut peers: Vec<&str> = policies.iter().map(|(id, _)| id.as_str()).collect();
        ours.sort_unstable();
        peers.sort_unstable();
        assert_eq!(peers, ours);
        assert_eq!(policies[0].0, "secondary-use.opt-in-consent");
        assert!(
            policies
                .iter()
                .all(|(_, p)| p.trim_start().starts_with("permit")
                    || p.trim_start().starts_with("forbid"))
        );
        assert!(split_policies("permit (principal, action, resource);").is_err());
        assert!(split_policies("@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\nforbid (principal, action, resource);").is_err());
    }
}

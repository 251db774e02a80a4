//! HL7 FHIR R4 `Consent` in and out: a FHIR REST endpoint on an address of its own
//! (`--fhir-addr`, off unless set) for hospital systems and PHR apps that speak FHIR rather than
//! akashi's gRPC.
//!
//! - `POST /fhir/Consent` takes one R4 `Consent` resource (`application/fhir+json`) and records
//!   it through the consent service, exactly as the gRPC call would: a `permit` provision is a
//!   `GrantConsent`, a `deny` provision a `RecordOptOut` (its purposes added to the patient's
//!   opt-outs). The answer is `201 Created` with the resource as akashi now holds it and the
//!   receipt of its log entry in `X-Akashi-Leaf-Index`, `X-Akashi-Tree-Size` and
//!   `X-Akashi-Checkpoint` (the signed note, base64).
//! - `PUT /fhir/Consent/{id}` of an exported resource withdraws: a consent set `inactive` is
//!   revoked (`RevokeConsent`; the terms of a consent never change), and the opt-out resource's
//!   purposes become the patient's opt-outs exactly (`RecordOptOut` with `replace`).
//! - `GET /fhir/Consent?patient=ID` answers a `searchset` `Bundle`: one `Consent` per consent in
//!   force or not yet in force, and one `deny` `Consent` holding the patient's opt-outs, if any.
//! - `GET /fhir/Consent/{id}?patient=ID` answers one of those resources (a read names the
//!   patient: consents are kept per patient).
//! - `GET /fhir/metadata` answers the server's `CapabilityStatement`.
//!
//! The same bearer tokens and roles as gRPC: the platform for any patient, a patient for their
//! own patient id only. Errors are `OperationOutcome`s whose `expression` names the FHIR element
//! at fault (`Consent.provision.purpose[1]`), with the HTTP status of the gRPC code: 400 for
//! what cannot be mapped or is malformed, 401 without a token, 403 for a role that may not ask.
//!
//! The mapping (docs/api.md has the table): purposes are HL7 v3 `ActReason` codes where one means
//! exactly an akashi purpose (`HRESCH` research, `CLINTRCH` clinical trial, `TREAT`, `ETREAT`,
//! `PUBHLTH`, `HMARKT`, `HOPERAT`), else akashi's own system; data classes, levels
//! (`provision.securityLabel`), recipient organisations and recipient classes (`provision.actor`
//! with role `IRCP`) are in akashi's systems (`urn:akashi:…`); FHIR resource types that name one
//! akashi category (`Condition` → `diagnosis`, …) are accepted on import. Elements that would
//! change a consent's meaning and that akashi cannot hold — nested provisions, `provision.data`,
//! `provision.code`, `provision.dataPeriod`, any `modifierExtension`, a status other than
//! `active` — are refused by name rather than dropped.
//!
//! The resource is parsed as JSON into `serde_json::Value` and walked element by element, so
//! that every refusal can name its element; generated R4 model crates compile every resource of
//! the specification for the one this endpoint maps (ARCHITECTURE.md).

use std::{sync::Arc, time::SystemTime};

use axum::{
    Router,
    extract::{DefaultBodyLimit, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::Engine as _;
use proto::pb::{self, consent_service_server::ConsentService};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::auth::{Caller, Method, TokenVerifier};
use crate::service::{
    Core,
    budget::{self, AnswerBudget},
    consent::Consents,
};

/// The largest request body read, in bytes.
pub const MAX_BODY: usize = 256 * 1024;

/// FHIR's JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";

/// akashi's purposes that no HL7 code names exactly.
pub const PURPOSE_SYSTEM: &str = "urn:akashi:purpose";
/// HL7 v3 `ActReason` (purposes of use).
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// akashi's data categories (`provision.class`).
pub const CATEGORY_SYSTEM: &str = "urn:akashi:data-category";
/// FHIR resource types, accepted on import for the categories they name.
pub const RESOURCE_TYPE_SYSTEM: &str = "http://hl7.org/fhir/resource-types";
/// akashi's de-identification levels (`provision.securityLabel`).
pub const LEVEL_SYSTEM: &str = "urn:akashi:level";
/// akashi's recipient organisation ids (`provision.actor.reference.identifier`).
pub const ORGANIZATION_SYSTEM: &str = "urn:akashi:organization";
/// akashi's recipient classes (`provision.actor.reference.identifier`).
pub const RECIPIENT_CLASS_SYSTEM: &str = "urn:akashi:recipient-class";
/// akashi's consent ids (`Consent.identifier`).
pub const CONSENT_SYSTEM: &str = "urn:akashi:consent";
/// akashi's patient ids (`Consent.patient.identifier`, for ids that are not FHIR ids).
pub const PATIENT_SYSTEM: &str = "urn:akashi:patient";
const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const PARTICIPATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ACT_CODE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ACTION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
const LOINC: &str = "http://loinc.org";

/// akashi purposes and the HL7 v3 `ActReason` code that means exactly the same.
pub const PURPOSE_CODES: &[(&str, &str)] = &[
    ("treatment", "TREAT"),
    ("emergency", "ETREAT"),
    ("research", "HRESCH"),
    ("clinical_trial", "CLINTRCH"),
    ("public_health", "PUBHLTH"),
    ("marketing", "HMARKT"),
    ("facility_operations", "HOPERAT"),
];

/// FHIR resource types that name one akashi data category.
pub const RESOURCE_CATEGORIES: &[(&str, &str)] = &[
    ("Condition", "diagnosis"),
    ("MedicationRequest", "medication"),
    ("MedicationStatement", "medication"),
    ("MedicationAdministration", "medication"),
    ("MedicationDispense", "medication"),
    ("ImagingStudy", "imaging"),
    ("Procedure", "procedure"),
    ("AllergyIntolerance", "allergy"),
    ("Claim", "claims"),
    ("ExplanationOfBenefit", "claims"),
];

/// The elements of an R4 `Consent`.
const CONSENT_ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "status",
    "scope",
    "category",
    "patient",
    "dateTime",
    "performer",
    "organization",
    "sourceAttachment",
    "sourceReference",
    "policy",
    "policyRule",
    "verification",
    "provision",
];

/// The elements of an R4 `Consent.provision`.
const PROVISION_ELEMENTS: &[&str] = &[
    "id",
    "extension",
    "modifierExtension",
    "type",
    "period",
    "actor",
    "action",
    "securityLabel",
    "purpose",
    "class",
    "code",
    "dataPeriod",
    "data",
    "provision",
];

/// What the FHIR routes share.
#[derive(Clone)]
struct Fhir {
    consents: Arc<Consents>,
    verifier: TokenVerifier,
    budget: Arc<AnswerBudget>,
}

/// The FHIR routes over `core`, authenticating with `verifier` and counting large answers
/// against `budget` (the gRPC server's).
pub fn router(core: Core, verifier: TokenVerifier, budget: Arc<AnswerBudget>) -> Router {
    Router::new()
        .route("/fhir/Consent", post(create).get(search))
        .route("/fhir/Consent/{id}", put(update_handler).get(read_handler))
        .route("/fhir/metadata", get(metadata))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Fhir {
            consents: Arc::new(Consents(core)),
            verifier,
            budget,
        })
}

/// Why a request is refused: the HTTP status, the `OperationOutcome` issue code, the message
/// and the element at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The FHIR `IssueType` code (`invalid`, `not-supported`, `login`, `forbidden`, …).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// The FHIRPath of the element at fault, if one is.
    pub expression: Option<String>,
}

impl Refusal {
    /// A `400` naming `expression`: the element is malformed.
    fn invalid(expression: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    /// A `400` naming `expression`: the element is valid FHIR that akashi cannot map.
    fn unmappable(expression: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "not-supported",
            message: message.into(),
            expression: Some(expression.into()),
        }
    }

    /// The refusal of a gRPC status: the same meaning over HTTP, and for `INVALID_ARGUMENT` the
    /// FHIR element that carried the field named in the status's `BadRequest` details.
    fn of_status(status: &tonic::Status, fields: &dyn Fn(&str) -> Option<String>) -> Self {
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "login"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                (StatusCode::CONFLICT, "conflict")
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        };
        let expression = status
            .get_details_bad_request()
            .and_then(|details| details.field_violations.into_iter().next())
            .and_then(|violation| fields(&violation.field));
        Self {
            status: http,
            code,
            message: status.message().to_owned(),
            expression,
        }
    }

    /// The `OperationOutcome` answer.
    fn into_response(self) -> Response {
        let mut issue = Map::new();
        issue.insert("severity".into(), json!("error"));
        issue.insert("code".into(), json!(self.code));
        issue.insert("diagnostics".into(), json!(self.message));
        if let Some(expression) = self.expression {
            issue.insert("expression".into(), json!([expression]));
        }
        fhir_response(
            self.status,
            &json!({ "resourceType": "OperationOutcome", "issue": [issue] }),
        )
    }
}

/// A FHIR JSON answer.
fn fhir_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        value.to_string(),
    )
        .into_response()
}

/// What a `Consent` resource asks akashi to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    /// A `permit` provision: an opt-in consent.
    Grant(pb::GrantConsentRequest),
    /// A `deny` provision: opt-outs of its purposes, added to the patient's.
    OptOut(pb::RecordOptOutRequest),
}

/// Reads a `Consent` resource (already parsed as JSON) into what akashi records, or refuses it
/// naming the element.
///
/// # Errors
///
/// A [`Refusal`] (`400`) for a resource that is not an R4 `Consent`, or holds an element akashi
/// cannot map.
pub fn import(resource: &Value) -> Result<Import, Refusal> {
    let consent = consent_object(resource)?;
    match consent.get("status").and_then(Value::as_str) {
        Some("active") => {}
        Some(other) => {
            return Err(Refusal::unmappable(
                "Consent.status",
                format!(
                    "only an `active` consent can be recorded, not `{}`",
                    clip(other)
                ),
            ));
        }
        None => return Err(Refusal::invalid("Consent.status", "`status` is required")),
    }
    let scope = codings(consent.get("scope"), "Consent.scope")?;
    if !scope.iter().any(|(system, code)| {
        system == SCOPE_SYSTEM && (code == "research" || code == "patient-privacy")
    }) {
        return Err(Refusal::unmappable(
            "Consent.scope",
            format!(
                "the scope must be `research` or `patient-privacy` of {SCOPE_SYSTEM} (a consent \
                 to share data for secondary use or disclosure)"
            ),
        ));
    }
    let patient_id = patient(consent.get("patient"))?;
    let request_id = client_identifier(consent.get("identifier"))?;
    let provision = provision_object(consent)?;
    actions(provision.get("action"))?;
    let purposes = purposes(provision.get("purpose"))?;
    match provision.get("type").and_then(Value::as_str) {
        Some("permit") => {
            let (recipients, recipient_classes) = actors(provision.get("actor"))?;
            let (valid_from, valid_until) = period(provision.get("period"))?;
            Ok(Import::Grant(pb::GrantConsentRequest {
                patient_id,
                purposes,
                data_categories: classes(provision.get("class"))?,
                recipients,
                recipient_classes,
                max_level: level(provision.get("securityLabel"))?,
                valid_from,
                valid_until,
                request_id,
            }))
        }
        Some("deny") => {
            opt_out_only(provision)?;
            if purposes.is_empty() {
                return Err(Refusal::invalid(
                    "Consent.provision.purpose",
                    "a `deny` provision must name the purposes opted out of",
                ));
            }
            Ok(Import::OptOut(pb::RecordOptOutRequest {
                patient_id,
                purposes,
                replace: false,
                request_id,
            }))
        }
        Some(other) => Err(Refusal::invalid(
            "Consent.provision.type",
            format!("`type` must be `permit` or `deny`, not `{}`", clip(other)),
        )),
        None => Err(Refusal::invalid(
            "Consent.provision.type",
            "`type` is required (`permit` or `deny`)",
        )),
    }
}

/// The request id of a resource that carries the client's own business identifier (any
/// `Consent.identifier` but akashi's consent ids): a retried `POST` of the same identifier
/// returns the first answer and logs nothing, and the same identifier with other terms is a
/// conflict (FHIR's conditional create on `identifier`, without the header). Empty without one.
fn client_identifier(value: Option<&Value>) -> Result<String, Refusal> {
    let mut found: Option<String> = None;
    for (i, identifier) in array(value, "Consent.identifier")?.iter().enumerate() {
        let path = format!("Consent.identifier[{i}]");
        let identifier = object(identifier, &path)?;
        let system = identifier
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or("");
        if system == CONSENT_SYSTEM {
            continue;
        }
        let Some(value) = identifier.get("value").and_then(Value::as_str) else {
            continue;
        };
        if found.is_some() {
            return Err(Refusal::unmappable(
                path,
                "a consent carries at most one identifier of the client's own (it makes a \
                 retried create idempotent)",
            ));
        }
        let digest = Sha256::new()
            .chain_update(system.as_bytes())
            .chain_update(b"|")
            .chain_update(value.as_bytes())
            .finalize();
        found = Some(format!("fhir-identifier-{}", hex::encode(digest)));
    }
    Ok(found.unwrap_or_default())
}

/// What a `PUT /fhir/Consent/{id}` asks of an exported resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// `status` `inactive` on a consent: revoke it.
    Revoke(pb::RevokeConsentRequest),
    /// The opt-out resource: the patient's opt-outs become exactly its purposes (`status`
    /// `inactive`: none).
    OptOuts(pb::RecordOptOutRequest),
}

/// Reads an update of resource `id` (a consent withdrawn, or the opt-outs rewritten), or refuses
/// it naming the element.
///
/// # Errors
///
/// A [`Refusal`] (`400`) for a resource that is not an R4 `Consent` with this id, or asks a change
/// akashi does not make (the terms of a consent never change: revoke it and create another).
pub fn read_update(id: &str, resource: &Value) -> Result<Update, Refusal> {
    let consent = consent_object(resource)?;
    if consent.get("id").and_then(Value::as_str) != Some(id) {
        return Err(Refusal::invalid(
            "Consent.id",
            "an update must carry the id of the resource it updates",
        ));
    }
    let patient_id = patient(consent.get("patient"))?;
    let active = match consent.get("status").and_then(Value::as_str) {
        Some("active") => true,
        Some("inactive") => false,
        _ => {
            return Err(Refusal::unmappable(
                "Consent.status",
                "an update sets `status` to `inactive` (withdrawn) or, for the opt-out \
                 resource, `active`",
            ));
        }
    };
    if id.starts_with("optout-") {
        if id != opt_out_id(&patient_id) {
            return Err(Refusal::invalid(
                "Consent.id",
                "this is not the patient's opt-out resource",
            ));
        }
        let provision = provision_object(consent)?;
        if provision.get("type").and_then(Value::as_str) != Some("deny") {
            return Err(Refusal::invalid(
                "Consent.provision.type",
                "the opt-out resource's provision is a `deny`",
            ));
        }
        opt_out_only(provision)?;
        actions(provision.get("action"))?;
        let purposes = purposes(provision.get("purpose"))?;
        return Ok(Update::OptOuts(pb::RecordOptOutRequest {
            patient_id,
            purposes: if active { purposes } else { Vec::new() },
            replace: true,
            request_id: String::new(),
        }));
    }
    if active {
        return Err(Refusal::unmappable(
            "Consent.status",
            "the terms of a consent never change: set `status` to `inactive` to revoke it, and \
             create another",
        ));
    }
    let consent_id = array(consent.get("identifier"), "Consent.identifier")?
        .iter()
        .filter_map(Value::as_object)
        .find(|identifier| identifier.get("system").and_then(Value::as_str) == Some(CONSENT_SYSTEM))
        .and_then(|identifier| identifier.get("value").and_then(Value::as_str))
        .map_or_else(|| id.replacen("c-", "c_", 1), str::to_owned);
    if resource_id(&consent_id) != id {
        return Err(Refusal::invalid(
            "Consent.identifier",
            "the consent identifier is not the resource's",
        ));
    }
    Ok(Update::Revoke(pb::RevokeConsentRequest {
        patient_id,
        consent_id,
        request_id: String::new(),
    }))
}

/// The FHIR element that carried an akashi request field, for error messages.
fn element_of_field(field: &str) -> Option<String> {
    let (name, index) = match field.split_once('[') {
        Some((name, rest)) => (name, rest.split(']').next()),
        None => (field, None),
    };
    let element = match name {
        "patient_id" => "Consent.patient",
        "purposes" => "Consent.provision.purpose",
        "data_categories" => "Consent.provision.class",
        "recipients" | "recipient_classes" => "Consent.provision.actor",
        "max_level" => "Consent.provision.securityLabel",
        "consent_id" => "Consent.identifier",
        "valid_from" => return Some("Consent.provision.period.start".to_owned()),
        "valid_until" => return Some("Consent.provision.period.end".to_owned()),
        _ => return None,
    };
    // Recipients and classes share `actor`: their positions in it are not the list's.
    Some(match index {
        Some(index) if !matches!(name, "recipients" | "recipient_classes") => {
            format!("{element}[{index}]")
        }
        _ => element.to_owned(),
    })
}

/// `resource` as an R4 `Consent` object: its `resourceType`, only elements R4 defines, and no
/// modifier extension.
fn consent_object(resource: &Value) -> Result<&Map<String, Value>, Refusal> {
    let consent = object(resource, "Consent")?;
    if consent.get("resourceType").and_then(Value::as_str) != Some("Consent") {
        return Err(Refusal::invalid(
            "resourceType",
            "`resourceType` must be `Consent`",
        ));
    }
    known_elements(consent, "Consent", CONSENT_ELEMENTS)?;
    no_modifier_extension(consent, "Consent")?;
    Ok(consent)
}

/// The consent's `provision`, required, with only elements R4 defines and no modifier extension.
fn provision_object(consent: &Map<String, Value>) -> Result<&Map<String, Value>, Refusal> {
    let provision = object(
        consent
            .get("provision")
            .ok_or_else(|| Refusal::invalid("Consent.provision", "`provision` is required"))?,
        "Consent.provision",
    )?;
    known_elements(provision, "Consent.provision", PROVISION_ELEMENTS)?;
    no_modifier_extension(provision, "Consent.provision")?;
    // What would make a consent say more than akashi can hold.
    for element in ["provision", "data", "code", "dataPeriod"] {
        if provision.get(element).is_some_and(|v| !v.is_null()) {
            return Err(Refusal::unmappable(
                format!("Consent.provision.{element}"),
                format!(
                    "`provision.{element}` cannot be recorded: an akashi consent covers purposes, \
                     data categories, recipients, a level and a period"
                ),
            ));
        }
    }
    Ok(provision)
}

/// Refuses a `deny` provision narrower than an opt-out, which is per purpose and open-ended.
fn opt_out_only(provision: &Map<String, Value>) -> Result<(), Refusal> {
    for element in ["class", "actor", "securityLabel", "period"] {
        if provision.get(element).is_some_and(|v| !v.is_null()) {
            return Err(Refusal::unmappable(
                format!("Consent.provision.{element}"),
                "a `deny` provision is an opt-out of purposes: it cannot be narrowed by data \
                 class, actor, security label or period",
            ));
        }
    }
    Ok(())
}

/// The first 16 bytes of SHA-256 over `parts`, as 32 hex characters (resource ids derived from
/// what the caller already knows).
fn short_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hex::encode(
        hasher
            .finalize()
            .iter()
            .take(16)
            .copied()
            .collect::<Vec<u8>>(),
    )
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Refusal> {
    value
        .as_object()
        .ok_or_else(|| Refusal::invalid(path, format!("`{path}` must be a JSON object")))
}

fn array<'a>(value: Option<&'a Value>, path: &str) -> Result<&'a [Value], Refusal> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(Refusal::invalid(
            path,
            format!("`{path}` must be a JSON array"),
        )),
    }
}

fn known_elements(object: &Map<String, Value>, path: &str, known: &[&str]) -> Result<(), Refusal> {
    for key in object.keys() {
        // `_element` carries a primitive's id and extensions.
        let name = key.strip_prefix('_').unwrap_or(key);
        if !known.contains(&name) {
            return Err(Refusal::invalid(
                format!("{path}.{}", clip(key)),
                format!("`{}` is not an element of R4 `{path}`", clip(key)),
            ));
        }
    }
    Ok(())
}

fn no_modifier_extension(object: &Map<String, Value>, path: &str) -> Result<(), Refusal> {
    if array(object.get("modifierExtension"), path)?.is_empty() {
        return Ok(());
    }
    Err(Refusal::unmappable(
        format!("{path}.modifierExtension"),
        "a modifier extension changes the meaning of what holds it, and akashi knows none",
    ))
}

/// The `(system, code)` pairs of a `CodeableConcept`.
fn codings(concept: Option<&Value>, path: &str) -> Result<Vec<(String, String)>, Refusal> {
    let Some(concept) = concept.filter(|v| !v.is_null()) else {
        return Err(Refusal::invalid(path, format!("`{path}` is required")));
    };
    let concept = object(concept, path)?;
    array(concept.get("coding"), &format!("{path}.coding"))?
        .iter()
        .enumerate()
        .map(|(i, coding)| coding_of(coding, &format!("{path}.coding[{i}]")))
        .collect()
}

/// The `(system, code)` of a `Coding`.
fn coding_of(coding: &Value, path: &str) -> Result<(String, String), Refusal> {
    let coding = object(coding, path)?;
    let text = |element: &str| {
        coding
            .get(element)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::invalid(
                    format!("{path}.{element}"),
                    format!("`{element}` is required here"),
                )
            })
    };
    Ok((text("system")?, text("code")?))
}

fn patient(value: Option<&Value>) -> Result<String, Refusal> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Err(Refusal::invalid(
            "Consent.patient",
            "`patient` is required: the patient whose consent this is",
        ));
    };
    let reference = object(value, "Consent.patient")?;
    if let Some(text) = reference.get("reference").and_then(Value::as_str) {
        return text
            .strip_prefix("Patient/")
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                Refusal::invalid(
                    "Consent.patient.reference",
                    "the reference must be `Patient/<patient id>`",
                )
            });
    }
    if let Some(identifier) = reference.get("identifier") {
        let identifier = object(identifier, "Consent.patient.identifier")?;
        if identifier.get("system").and_then(Value::as_str) == Some(PATIENT_SYSTEM)
            && let Some(id) = identifier.get("value").and_then(Value::as_str)
        {
            return Ok(id.to_owned());
        }
        return Err(Refusal::unmappable(
            "Consent.patient.identifier",
            format!("a patient identifier must be of system {PATIENT_SYSTEM}"),
        ));
    }
    Err(Refusal::invalid(
        "Consent.patient",
        "`patient` must hold a `reference` (`Patient/<id>`) or an `identifier`",
    ))
}

fn actions(value: Option<&Value>) -> Result<(), Refusal> {
    for (i, action) in array(value, "Consent.provision.action")?.iter().enumerate() {
        let path = format!("Consent.provision.action[{i}]");
        for (system, code) in codings(Some(action), &path)? {
            if system != ACTION_SYSTEM || !matches!(code.as_str(), "access" | "use" | "disclose") {
                return Err(Refusal::unmappable(
                    path,
                    "an akashi consent covers access, use and disclosure together: the actions \
                     may be `access`, `use` or `disclose` of the consentaction system only",
                ));
            }
        }
    }
    Ok(())
}

fn purposes(value: Option<&Value>) -> Result<Vec<String>, Refusal> {
    array(value, "Consent.provision.purpose")?
        .iter()
        .enumerate()
        .map(|(i, coding)| {
            let path = format!("Consent.provision.purpose[{i}]");
            let (system, code) = coding_of(coding, &path)?;
            match system.as_str() {
                PURPOSE_SYSTEM => Ok(code),
                ACT_REASON_SYSTEM => PURPOSE_CODES
                    .iter()
                    .find(|(_, hl7)| *hl7 == code)
                    .map(|(purpose, _)| (*purpose).to_owned())
                    .ok_or_else(|| {
                        Refusal::unmappable(
                            path,
                            format!("ActReason `{}` means no akashi purpose", clip(&code)),
                        )
                    }),
                _ => Err(Refusal::unmappable(
                    path,
                    format!("a purpose must be coded in {ACT_REASON_SYSTEM} or {PURPOSE_SYSTEM}"),
                )),
            }
        })
        .collect()
}

fn classes(value: Option<&Value>) -> Result<Vec<String>, Refusal> {
    let mut out: Vec<String> = Vec::new();
    for (i, coding) in array(value, "Consent.provision.class")?.iter().enumerate() {
        let path = format!("Consent.provision.class[{i}]");
        let (system, code) = coding_of(coding, &path)?;
        let category = match system.as_str() {
            CATEGORY_SYSTEM => code,
            RESOURCE_TYPE_SYSTEM => RESOURCE_CATEGORIES
                .iter()
                .find(|(resource, _)| *resource == code)
                .map(|(_, category)| (*category).to_owned())
                .ok_or_else(|| {
                    Refusal::unmappable(
                        &path,
                        format!(
                            "resource type `{}` names no single akashi data category (code the \
                             category in {CATEGORY_SYSTEM})",
                            clip(&code)
                        ),
                    )
                })?,
            _ => {
                return Err(Refusal::unmappable(
                    path,
                    format!(
                        "a data class must be coded in {CATEGORY_SYSTEM} or \
                         {RESOURCE_TYPE_SYSTEM}"
                    ),
                ));
            }
        };
        // Two resource types may name one category.
        if !out.contains(&category) {
            out.push(category);
        }
    }
    Ok(out)
}

fn level(value: Option<&Value>) -> Result<String, Refusal> {
    let labels = array(value, "Consent.provision.securityLabel")?;
    let mut found = None;
    for (i, coding) in labels.iter().enumerate() {
        let path = format!("Consent.provision.securityLabel[{i}]");
        let (system, code) = coding_of(coding, &path)?;
        if system != LEVEL_SYSTEM {
            return Err(Refusal::unmappable(
                path,
                format!("a security label must be a level of {LEVEL_SYSTEM}"),
            ));
        }
        if found.replace(code).is_some() {
            return Err(Refusal::invalid(path, "a consent has one highest level"));
        }
    }
    found.ok_or_else(|| {
        Refusal::invalid(
            "Consent.provision.securityLabel",
            format!(
                "a `permit` provision must state the highest level released, as a security \
                 label of {LEVEL_SYSTEM}"
            ),
        )
    })
}

fn actors(value: Option<&Value>) -> Result<(Vec<String>, Vec<String>), Refusal> {
    let (mut recipients, mut classes) = (Vec::new(), Vec::new());
    for (i, actor) in array(value, "Consent.provision.actor")?.iter().enumerate() {
        let path = format!("Consent.provision.actor[{i}]");
        let actor = object(actor, &path)?;
        let roles = codings(actor.get("role"), &format!("{path}.role"))?;
        if !roles
            .iter()
            .any(|(system, code)| system == PARTICIPATION_SYSTEM && code == "IRCP")
        {
            return Err(Refusal::unmappable(
                format!("{path}.role"),
                format!(
                    "an actor must be an information recipient (`IRCP` of {PARTICIPATION_SYSTEM})"
                ),
            ));
        }
        let reference_path = format!("{path}.reference");
        let reference = object(
            actor
                .get("reference")
                .ok_or_else(|| Refusal::invalid(&reference_path, "`reference` is required"))?,
            &reference_path,
        )?;
        if let Some(text) = reference.get("reference").and_then(Value::as_str) {
            let id = text
                .strip_prefix("Organization/")
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    Refusal::unmappable(
                        format!("{reference_path}.reference"),
                        "a recipient reference must be `Organization/<organisation id>`",
                    )
                })?;
            recipients.push(id.to_owned());
            continue;
        }
        let identifier_path = format!("{reference_path}.identifier");
        let identifier = object(
            reference.get("identifier").ok_or_else(|| {
                Refusal::invalid(
                    &reference_path,
                    "the recipient needs a `reference` or an `identifier`",
                )
            })?,
            &identifier_path,
        )?;
        let value = identifier
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Refusal::invalid(format!("{identifier_path}.value"), "`value` is required")
            })?
            .to_owned();
        match identifier.get("system").and_then(Value::as_str) {
            Some(ORGANIZATION_SYSTEM) => recipients.push(value),
            Some(RECIPIENT_CLASS_SYSTEM) => classes.push(value),
            _ => {
                return Err(Refusal::unmappable(
                    format!("{identifier_path}.system"),
                    format!(
                        "a recipient identifier must be of {ORGANIZATION_SYSTEM} or \
                         {RECIPIENT_CLASS_SYSTEM}"
                    ),
                ));
            }
        }
    }
    Ok((recipients, classes))
}

fn period(value: Option<&Value>) -> Result<(String, String), Refusal> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok((String::new(), String::new()));
    };
    let period = object(value, "Consent.provision.period")?;
    let text = |element: &str| match period.get(element) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(Refusal::invalid(
            format!("Consent.provision.period.{element}"),
            "a dateTime must be a string",
        )),
    };
    Ok((text("start")?, text("end")?))
}

/// Whether `id` may be a FHIR resource id (`[A-Za-z0-9\-\.]{1,64}`).
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The FHIR resource id of consent `consent_id` (`c_…` → `c-…`: FHIR ids have no `_`); the
/// consent id itself is the resource's `identifier`.
pub fn resource_id(consent_id: &str) -> String {
    let id = consent_id.replace('_', "-");
    if is_fhir_id(&id) {
        return id;
    }
    format!("c-{}", short_digest(&[consent_id.as_bytes()]))
}

/// `Consent.patient` for `patient_id`: a `Patient/` reference when the id can be a FHIR id, an
/// identifier otherwise.
fn patient_reference(patient_id: &str) -> Value {
    if is_fhir_id(patient_id) {
        json!({ "reference": format!("Patient/{patient_id}") })
    } else {
        json!({ "identifier": { "system": PATIENT_SYSTEM, "value": patient_id } })
    }
}

fn purpose_coding(purpose: &str) -> Value {
    match PURPOSE_CODES.iter().find(|(p, _)| *p == purpose) {
        Some((_, code)) => json!({ "system": ACT_REASON_SYSTEM, "code": code }),
        None => json!({ "system": PURPOSE_SYSTEM, "code": purpose }),
    }
}

/// The parts every exported `Consent` shares.
fn consent_resource(
    id: &str,
    patient_id: &str,
    scope: &str,
    rule: &str,
    provision: Map<String, Value>,
) -> Map<String, Value> {
    let resource = json!({
        "resourceType": "Consent",
        "id": id,
        "status": "active",
        "scope": { "coding": [{ "system": SCOPE_SYSTEM, "code": scope }] },
        "category": [{ "coding": [{ "system": LOINC, "code": "59284-0", "display": "Patient Consent" }] }],
        "patient": patient_reference(patient_id),
        "policyRule": { "coding": [{ "system": ACT_CODE_SYSTEM, "code": rule }] },
        "provision": provision,
    });
    match resource {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A consent as an R4 `Consent` (a `permit` provision).
pub fn export_consent(patient_id: &str, consent: &pb::Consent) -> Value {
    let research = consent
        .purposes
        .iter()
        .all(|p| p == "research" || p == "clinical_trial");
    let actors: Vec<Value> = consent
        .recipients
        .iter()
        .map(|id| (ORGANIZATION_SYSTEM, id))
        .chain(
            consent
                .recipient_classes
                .iter()
                .map(|class| (RECIPIENT_CLASS_SYSTEM, class)),
        )
        .map(|(system, value)| {
            json!({
                "role": { "coding": [{ "system": PARTICIPATION_SYSTEM, "code": "IRCP" }] },
                "reference": { "identifier": { "system": system, "value": value } },
            })
        })
        .collect();
    let mut provision = Map::new();
    provision.insert("type".into(), json!("permit"));
    if !actors.is_empty() {
        provision.insert("actor".into(), Value::Array(actors));
    }
    provision.insert(
        "securityLabel".into(),
        json!([{ "system": LEVEL_SYSTEM, "code": consent.max_level }]),
    );
    provision.insert(
        "purpose".into(),
        consent.purposes.iter().map(|p| purpose_coding(p)).collect(),
    );
    provision.insert(
        "class".into(),
        consent
            .data_categories
            .iter()
            .map(|c| json!({ "system": CATEGORY_SYSTEM, "code": c }))
            .collect(),
    );
    let mut period = Map::new();
    if !consent.valid_from.is_empty() {
        period.insert("start".into(), json!(consent.valid_from));
    }
    if !consent.valid_until.is_empty() {
        period.insert("end".into(), json!(consent.valid_until));
    }
    if !period.is_empty() {
        provision.insert("period".into(), Value::Object(period));
    }
    let mut resource = consent_resource(
        &resource_id(&consent.consent_id),
        patient_id,
        if research {
            "research"
        } else {
            "patient-privacy"
        },
        "OPTIN",
        provision,
    );
    resource.insert(
        "identifier".into(),
        json!([{ "system": CONSENT_SYSTEM, "value": consent.consent_id }]),
    );
    if !consent.granted_at.is_empty() {
        resource.insert("dateTime".into(), json!(consent.granted_at));
    }
    Value::Object(resource)
}

/// A patient's opt-outs as one R4 `Consent` (a `deny` provision); `None` without any. Its id
/// is stable for the patient and says nothing the caller does not know.
pub fn export_opt_outs(patient_id: &str, opt_outs: &[pb::OptOut]) -> Option<Value> {
    if opt_outs.is_empty() {
        return None;
    }
    let id = opt_out_id(patient_id);
    let mut provision = Map::new();
    provision.insert("type".into(), json!("deny"));
    provision.insert(
        "purpose".into(),
        opt_outs
            .iter()
            .map(|o| purpose_coding(&o.purpose))
            .collect(),
    );
    Some(Value::Object(consent_resource(
        &id,
        patient_id,
        "patient-privacy",
        "OPTOUT",
        provision,
    )))
}

/// The id of a patient's opt-out resource: stable for the patient, and saying nothing the
/// caller does not know.
pub fn opt_out_id(patient_id: &str) -> String {
    format!(
        "optout-{}",
        short_digest(&[b"akashi fhir opt-out\0", patient_id.as_bytes()])
    )
}

/// The base URL of this endpoint as the client addressed it.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}/fhir")
}

impl Fhir {
    /// The caller of a request for gRPC method `method`, or the `401`.
    async fn caller(&self, headers: &HeaderMap, method: &str) -> Result<Caller, Refusal> {
        let mut caller = self
            .verifier
            .authenticate_refreshing(headers.get(header::AUTHORIZATION), SystemTime::now())
            .await
            .map_err(|err| Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "login",
                message: err.to_string(),
                expression: None,
            })?;
        caller.method = Method::from_path(method);
        Ok(caller)
    }

    /// `request` as the consent service sees a gRPC call from `caller`.
    fn request<T>(&self, caller: &Caller, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(caller.clone());
        budget::admit(&mut request, &self.budget, caller);
        request
    }

    /// The patient's consent state, as FHIR resources.
    async fn resources(&self, caller: &Caller, patient_id: &str) -> Result<Vec<Value>, Refusal> {
        let state = self
            .consents
            .get_consent_state(self.request(
                caller,
                pb::GetConsentStateRequest {
                    patient_id: patient_id.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map_err(|status| Refusal::of_status(&status, &element_of_field))?
            .into_inner();
        let mut out: Vec<Value> = state
            .consents
            .iter()
            .map(|consent| export_consent(patient_id, consent))
            .collect();
        out.extend(export_opt_outs(patient_id, &state.opt_outs));
        Ok(out)
    }

    async fn create(&self, headers: &HeaderMap, body: &[u8]) -> Result<Response, Refusal> {
        check_media(headers)?;
        // Authenticate before parsing the resource: a caller without a token learns nothing.
        let grant_caller = self
            .caller(headers, "/akashi.v1.ConsentService/GrantConsent")
            .await?;
        let resource = parse_body(body)?;
        let mut reader = grant_caller.clone();
        reader.method = Method::from_path("/akashi.v1.ConsentService/GetConsentState");
        let (patient_id, receipt, created) = match import(&resource)? {
            Import::Grant(grant) => {
                let patient_id = grant.patient_id.clone();
                let answer = self
                    .consents
                    .grant_consent(self.request(&grant_caller, grant))
                    .await
                    .map_err(|status| Refusal::of_status(&status, &element_of_field))?
                    .into_inner();
                (patient_id, answer.receipt, Some(answer.consent_id))
            }
            Import::OptOut(opt_out) => {
                let mut caller = grant_caller;
                caller.method = Method::from_path("/akashi.v1.ConsentService/RecordOptOut");
                let patient_id = opt_out.patient_id.clone();
                let answer = self
                    .consents
                    .record_opt_out(self.request(&caller, opt_out))
                    .await
                    .map_err(|status| Refusal::of_status(&status, &element_of_field))?
                    .into_inner();
                (patient_id, answer.receipt, None)
            }
        };
        // Answer with the resource as akashi now holds it.
        let resources = self.resources(&reader, &patient_id).await?;
        let stored = resources
            .into_iter()
            .find(|resource| match &created {
                Some(id) => {
                    resource.get("id").and_then(Value::as_str) == Some(resource_id(id).as_str())
                }
                None => resource.pointer("/provision/type").and_then(Value::as_str) == Some("deny"),
            })
            .unwrap_or(Value::Null);
        let mut response = fhir_response(StatusCode::CREATED, &stored);
        if let Some(id) = stored.get("id").and_then(Value::as_str)
            && let Ok(location) =
                HeaderValue::from_str(&format!("{}/Consent/{id}", base_url(headers)))
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
        with_receipt(&mut response, receipt);
        Ok(response)
    }

    async fn update(
        &self,
        headers: &HeaderMap,
        id: &str,
        body: &[u8],
    ) -> Result<Response, Refusal> {
        check_media(headers)?;
        let caller = self
            .caller(headers, "/akashi.v1.ConsentService/RevokeConsent")
            .await?;
        let resource = parse_body(body)?;
        let (status, receipt) = match read_update(id, &resource)? {
            Update::Revoke(revoke) => {
                let answer = self
                    .consents
                    .revoke_consent(self.request(&caller, revoke))
                    .await
                    .map_err(|status| Refusal::of_status(&status, &element_of_field))?
                    .into_inner();
                ("inactive", answer.receipt)
            }
            Update::OptOuts(opt_out) => {
                let mut caller = caller;
                caller.method = Method::from_path("/akashi.v1.ConsentService/RecordOptOut");
                let status = if opt_out.purposes.is_empty() {
                    "inactive"
                } else {
                    "active"
                };
                let answer = self
                    .consents
                    .record_opt_out(self.request(&caller, opt_out))
                    .await
                    .map_err(|status| Refusal::of_status(&status, &element_of_field))?
                    .into_inner();
                (status, answer.receipt)
            }
        };
        // The resource as akashi now holds it: what was sent, with the status it now has.
        let mut stored = resource;
        if let Some(object) = stored.as_object_mut() {
            object.insert("status".into(), json!(status));
        }
        let mut response = fhir_response(StatusCode::OK, &stored);
        with_receipt(&mut response, receipt);
        Ok(response)
    }

    /// `GET /fhir/Consent/{id}?patient=ID`: one resource of the patient's consent state.
    async fn read(
        &self,
        headers: &HeaderMap,
        id: &str,
        query: &[(String, String)],
    ) -> Result<Response, Refusal> {
        let caller = self
            .caller(headers, "/akashi.v1.ConsentService/GetConsentState")
            .await?;
        let patient_id = one_patient(query)?;
        self.resources(&caller, patient_id)
            .await?
            .into_iter()
            .find(|resource| resource.get("id").and_then(Value::as_str) == Some(id))
            .map(|resource| fhir_response(StatusCode::OK, &resource))
            .ok_or_else(|| Refusal {
                status: StatusCode::NOT_FOUND,
                code: "not-found",
                message: "the patient holds no consent in force, and no opt-outs, under this id"
                    .to_owned(),
                expression: None,
            })
    }

    async fn search(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
    ) -> Result<Response, Refusal> {
        let caller = self
            .caller(headers, "/akashi.v1.ConsentService/GetConsentState")
            .await?;
        let patient_id = one_patient(query)?;
        let resources = self.resources(&caller, patient_id).await?;
        let base = base_url(headers);
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|resource| {
                json!({
                    "fullUrl": format!("{base}/Consent/{}", resource.get("id").and_then(Value::as_str).unwrap_or("")),
                    "resource": resource,
                    "search": { "mode": "match" },
                })
            })
            .collect();
        let mut self_url = format!("{base}/Consent?patient=");
        self_url.extend(url_escape(patient_id));
        Ok(fhir_response(
            StatusCode::OK,
            &json!({
                "resourceType": "Bundle",
                "type": "searchset",
                "total": entries.len(),
                "link": [{ "relation": "self", "url": self_url }],
                "entry": entries,
            }),
        ))
    }
}

/// The one `patient` a read names (`ID` or `Patient/ID`): akashi keeps consents per patient, so
/// a read says whose.
fn one_patient(query: &[(String, String)]) -> Result<&str, Refusal> {
    let patients: Vec<&str> = query
        .iter()
        .filter(|(name, _)| name == "patient")
        .map(|(_, value)| value.strip_prefix("Patient/").unwrap_or(value))
        .collect();
    match patients.as_slice() {
        [patient_id] => Ok(patient_id),
        _ => Err(Refusal::invalid(
            "patient",
            "name exactly one `patient` (`?patient=ID`): consents are read one patient at a time",
        )),
    }
}

/// Refuses a body that is not FHIR JSON by its media type (`415`).
fn check_media(headers: &HeaderMap) -> Result<(), Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(FHIR_JSON) || media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Refusal {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "not-supported",
        message: format!("send the resource as {FHIR_JSON}"),
        expression: None,
    })
}

/// The body as JSON, or the `400`.
fn parse_body(body: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|err| Refusal {
        status: StatusCode::BAD_REQUEST,
        code: "structure",
        message: format!("the body is not JSON: {err}"),
        expression: None,
    })
}

/// Puts the receipt of a write's log entry into the answer's headers.
fn with_receipt(response: &mut Response, receipt: Option<pb::Receipt>) {
    let Some(receipt) = receipt else {
        return;
    };
    let headers = response.headers_mut();
    headers.insert("x-akashi-leaf-index", HeaderValue::from(receipt.leaf_index));
    headers.insert("x-akashi-tree-size", HeaderValue::from(receipt.tree_size));
    if let Ok(checkpoint) = HeaderValue::from_str(
        &base64::engine::general_purpose::STANDARD.encode(receipt.checkpoint.as_bytes()),
    ) {
        headers.insert("x-akashi-checkpoint", checkpoint);
    }
}

/// The `name=value` pairs of a query string (`application/x-www-form-urlencoded`), decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// `text` percent-encoded for a query value.
fn url_escape(text: &str) -> impl Iterator<Item = char> + '_ {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
        .flat_map(str::chars)
}

async fn create(State(fhir): State<Fhir>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    fhir.create(&headers, &body)
        .await
        .unwrap_or_else(Refusal::into_response)
}

async fn update_handler(
    State(fhir): State<Fhir>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    fhir.update(&headers, &id, &body)
        .await
        .unwrap_or_else(Refusal::into_response)
}

async fn read_handler(
    State(fhir): State<Fhir>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    fhir.read(&headers, &id, &query_pairs(query.as_deref().unwrap_or("")))
        .await
        .unwrap_or_else(Refusal::into_response)
}

async fn search(
    State(fhir): State<Fhir>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    fhir.search(&headers, &query_pairs(query.as_deref().unwrap_or("")))
        .await
        .unwrap_or_else(Refusal::into_response)
}

/// The `CapabilityStatement` (FHIR's metadata): Consent create and search by patient.
async fn metadata() -> Response {
    fhir_response(
        StatusCode::OK,
        &json!({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": policy::domain::Timestamp::now().to_rfc3339(),
            "publisher": "akashi",
            "kind": "instance",
            "software": { "name": "akashi", "version": env!("CARGO_PKG_VERSION") },
            "implementation": { "description": "akashi consent ledger: FHIR R4 Consent in and out" },
            "fhirVersion": FHIR_VERSION,
            "format": [FHIR_JSON],
            "rest": [{
                "mode": "server",
                "security": {
                    "description": "Bearer tokens of akashi's roles: platform (any patient), patient (own consents only)"
                },
                "resource": [{
                    "type": "Consent",
                    "interaction": [
                        { "code": "create" },
                        { "code": "read" },
                        { "code": "update" },
                        { "code": "search-type" }
                    ],
                    "searchParam": [{ "name": "patient", "type": "reference" }],
                }],
            }],
        }),
    )
}

#[cfg(test)]
mod tests;

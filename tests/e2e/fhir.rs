//! The FHIR R4 `Consent` endpoint against a running server: a PHR app's consent in standard
//! codes is recorded as the gRPC call would record it (and logged), the patient's consent state
//! comes back as a `Bundle` that an R4 validator accepts, and that export imported for another
//! patient gives the same consent state; patients act for themselves only; what cannot be mapped
//! is refused naming the element, and nothing is logged for it.

use std::net::SocketAddr;

use crate::{
    api::Api,
    harness::{Answer, TestServer, exchange},
};
use akashi::auth::Role;
use proto::pb;
use serde_json::{Value, json};

async fn post(addr: SocketAddr, token: Option<&str>, resource: &Value) -> Answer {
    exchange(
        addr,
        "POST",
        "/fhir/Consent",
        token,
        "application/fhir+json",
        &resource.to_string(),
    )
    .await
}

async fn search(addr: SocketAddr, token: &str, patient: &str) -> Answer {
    exchange(
        addr,
        "GET",
        &format!("/fhir/Consent?patient={patient}"),
        Some(token),
        "application/fhir+json",
        "",
    )
    .await
}

/// A research consent as a PHR app sends it: standard codes where HL7 has them.
fn research_consent(patient: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "dateTime": "2026-12-01T09:00:00+09:00",
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN" }] },
        "provision": {
            "type": "permit",
            "period": { "end": "2031-12-31T00:00:00Z" },
            "actor": [
                {
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                    "reference": { "reference": "Organization/univ-x" }
                },
                {
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP" }] },
                    "reference": { "identifier": { "system": "urn:akashi:recipient-class", "value": "pharma" } }
                }
            ],
            "securityLabel": [{ "system": "urn:akashi:level", "code": "PSEUDONYMIZED" }],
            "purpose": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH" }],
            "class": [
                { "system": "http://hl7.org/fhir/resource-types", "code": "Condition" },
                { "system": "urn:akashi:data-category", "code": "lab_result" }
            ]
        }
    })
}

/// Whether akashi lets the university use `patient`'s lab results, pseudonymised, for research.
async fn research_allowed(api: &Api, patient: &str) -> bool {
    let decision = api
        .authorize(crate::api::ask(
            "Organization",
            "univ-x",
            "secondary_use",
            patient,
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    crate::api::allowed(&decision)
}

/// An opt-out of marketing and clinical trials.
fn opt_out(patient: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": format!("Patient/{patient}") },
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT" }] },
        "provision": {
            "type": "deny",
            "purpose": [
                { "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HMARKT" },
                { "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "CLINTRCH" }
            ]
        }
    })
}

/// A consent state with what differs between two grants of the same consent left out: the
/// consent's id, the grant's time and entry. Sorted, so that order does not count.
fn comparable(state: &pb::GetConsentStateResponse) -> (Vec<String>, Vec<String>) {
    let mut consents: Vec<String> = state
        .consents
        .iter()
        .map(|c| {
            format!(
                "{:?} {:?} {:?} {:?} {} {} {} {} {}",
                c.purposes,
                c.data_categories,
                c.recipients,
                c.recipient_classes,
                c.max_level,
                c.valid_from,
                c.valid_until,
                c.in_force,
                c.status
            )
        })
        .collect();
    consents.sort();
    let mut opt_outs: Vec<String> = state.opt_outs.iter().map(|o| o.purpose.clone()).collect();
    opt_outs.sort();
    (consents, opt_outs)
}

/// The Python that can run `tools/fhir/validate_r4.py`: `AKASHI_FHIR_PYTHON` (which `.ci/run`
/// sets up; it must work when set), else a `python3` that has `fhir.resources` for R4.
fn validator() -> Option<std::path::PathBuf> {
    if let Some(python) = std::env::var_os("AKASHI_FHIR_PYTHON") {
        return Some(python.into());
    }
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import fhir.resources as r, sys; sys.exit(r.__fhir_version__ != '4.0.1')",
        ])
        .output()
        .ok()?;
    probe.status.success().then(|| "python3".into())
}

/// Validates each resource with the R4 validator; `false` when no validator is installed.
fn validate(resources: &[(&str, &Value)]) -> bool {
    let Some(python) = validator() else {
        return false;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![format!(
        "{}/tools/fhir/validate_r4.py",
        env!("CARGO_MANIFEST_DIR")
    )];
    for (name, resource) in resources {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, resource.to_string()).unwrap();
        args.push(path.display().to_string());
    }
    let output = std::process::Command::new(&python)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the R4 validator refused akashi's FHIR: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

#[tokio::test]
async fn fhir_consents_round_trip_and_validate_as_r4() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("univ-x", "university").await;
    let token = server.token(Role::Platform, None);
    let addr = server.fhir_addr;

    // A permit is a grant: logged, with its receipt in the headers.
    let before = api.size().await;
    let created = post(addr, Some(&token), &research_consent("alice")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.header("content-type"),
        Some("application/fhir+json")
    );
    assert_eq!(
        created.header("x-akashi-leaf-index"),
        Some(&*before.to_string())
    );
    assert_eq!(api.size().await, before + 1);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body["identifier"][0]["system"],
        "urn:akashi:consent"
    );
    assert!(
        created
            .header("location")
            .unwrap()
            .ends_with(&format!("/fhir/Consent/{id}"))
    );
    let state = api.consent_state("alice").await;
    assert_eq!(state.consents.len(), 1);
    let consent = &state.consents[0];
    assert_eq!(
        created.body["identifier"][0]["value"],
        json!(consent.consent_id)
    );
    assert_eq!(consent.consent_id.replace('_', "-"), id);
    assert_eq!(consent.purposes, ["research"]);
    assert_eq!(consent.data_categories, ["diagnosis", "lab_result"]);
    assert_eq!(consent.recipients, ["univ-x"]);
    assert_eq!(consent.recipient_classes, ["pharma"]);
    assert_eq!(consent.max_level, "PSEUDONYMIZED");
    assert!(consent.valid_until.starts_with("2031-12-31T00:00:00"));
    // The grant decides as a gRPC grant would.
    assert!(research_allowed(&api, "alice").await);

    // A deny is an opt-out of its purposes.
    let denied = post(addr, Some(&token), &opt_out("alice")).await;
    assert_eq!(denied.status, 201, "{}", denied.body);
    assert_eq!(denied.body["provision"]["type"], "deny");
    let state = api.consent_state("alice").await;
    let mut opted: Vec<&str> = state.opt_outs.iter().map(|o| o.purpose.as_str()).collect();
    opted.sort_unstable();
    assert_eq!(opted, ["clinical_trial", "marketing"]);

    // The export: a searchset Bundle of the consent and the opt-outs.
    let bundle = search(addr, &token, "alice").await;
    assert_eq!(bundle.status, 200, "{}", bundle.body);
    assert_eq!(bundle.header("content-type"), Some("application/fhir+json"));
    assert_eq!(bundle.body["resourceType"], "Bundle");
    assert_eq!(bundle.body["type"], "searchset");
    assert_eq!(bundle.body["total"], 2);
    let entries = bundle.body["entry"].as_array().unwrap().clone();
    assert_eq!(entries[0]["resource"]["id"], json!(id));
    assert_eq!(
        entries[0]["resource"]["provision"]["purpose"][0]["code"], "HRESCH",
        "research goes out as the HL7 code"
    );
    // The created resource reads back at its location, with the patient named.
    let location = created.header("location").unwrap();
    let path = &location[location.find("/fhir/").unwrap()..];
    let read = exchange(
        addr,
        "GET",
        &format!("{path}?patient=alice"),
        Some(&token),
        "",
        "",
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body, entries[0]["resource"]);
    let unnamed = exchange(addr, "GET", path, Some(&token), "", "").await;
    assert_eq!(unnamed.status, 400);
    assert_eq!(unnamed.body["issue"][0]["expression"][0], "patient");
    let elsewhere = exchange(
        addr,
        "GET",
        &format!("{path}?patient=bob"),
        Some(&token),
        "",
        "",
    )
    .await;
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.body);
    let metadata = exchange(
        addr,
        "GET",
        "/fhir/metadata",
        None,
        "application/fhir+json",
        "",
    )
    .await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.body["fhirVersion"], "4.0.1");
    let refused = post(addr, Some(&token), &json!({ "resourceType": "Consent" })).await;
    assert_eq!(refused.body["resourceType"], "OperationOutcome");
    if !validate(&[
        ("bundle", &bundle.body),
        ("created", &created.body),
        ("opt-out", &denied.body),
        ("metadata", &metadata.body),
        ("outcome", &refused.body),
    ]) {
        eprintln!(
            "no FHIR R4 validator (tools/fhir/requirements.txt; .ci/run installs it): the \
             export's R4 validation did not run"
        );
    }

    // The export imported for another patient gives the same consent state.
    for entry in &entries {
        let mut resource = entry["resource"].clone();
        resource["patient"] = json!({ "reference": "Patient/bob" });
        let answer = post(addr, Some(&token), &resource).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    assert_eq!(
        comparable(&api.consent_state("bob").await),
        comparable(&api.consent_state("alice").await)
    );

    // Withdrawal is an update: the consent set `inactive` is revoked (and decides so), the
    // opt-out resource rewritten is the patient's opt-outs exactly.
    let mut withdrawn = entries[0]["resource"].clone();
    let path = format!("/fhir/Consent/{}", withdrawn["id"].as_str().unwrap());
    let put = |resource: Value| {
        let (path, token) = (path.clone(), token.clone());
        async move {
            exchange(
                addr,
                "PUT",
                &path,
                Some(&token),
                "application/fhir+json",
                &resource.to_string(),
            )
            .await
        }
    };
    let unchanged = put(withdrawn.clone()).await;
    assert_eq!(unchanged.status, 400, "the terms of a consent never change");
    assert_eq!(
        unchanged.body["issue"][0]["expression"][0],
        "Consent.status"
    );
    withdrawn["status"] = json!("inactive");
    let size = api.size().await;
    let revoked = put(withdrawn).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(revoked.body["status"], "inactive");
    assert_eq!(
        revoked.header("x-akashi-leaf-index"),
        Some(&*size.to_string())
    );
    assert!(api.consent_state("alice").await.consents.is_empty());
    assert!(!research_allowed(&api, "alice").await);
    let mut opt_outs = entries[1]["resource"].clone();
    opt_outs["provision"]["purpose"] = json!([{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HMARKT"
    }]);
    let rewritten = exchange(
        addr,
        "PUT",
        &format!("/fhir/Consent/{}", opt_outs["id"].as_str().unwrap()),
        Some(&token),
        "application/fhir+json",
        &opt_outs.to_string(),
    )
    .await;
    assert_eq!(rewritten.status, 200, "{}", rewritten.body);
    let state = api.consent_state("alice").await;
    assert_eq!(
        state
            .opt_outs
            .iter()
            .map(|o| o.purpose.as_str())
            .collect::<Vec<_>>(),
        ["marketing"]
    );
    server.stop().await;
}

#[tokio::test]
async fn fhir_patients_act_for_themselves_and_refusals_name_the_element() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("univ-x", "university").await;
    let addr = server.fhir_addr;
    let carol = server.token(Role::Patient, Some("carol"));

    // A patient records and reads their own consent.
    let own = post(addr, Some(&carol), &research_consent("carol")).await;
    assert_eq!(own.status, 201, "{}", own.body);
    let read = search(addr, &carol, "Patient/carol").await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["total"], 1);

    // Another patient's: refused, and nothing logged.
    let size = api.size().await;
    let other = post(addr, Some(&carol), &research_consent("alice")).await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(other.body["resourceType"], "OperationOutcome");
    assert_eq!(other.body["issue"][0]["code"], "forbidden");
    let other = post(addr, Some(&carol), &opt_out("alice")).await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(search(addr, &carol, "alice").await.status, 403);
    let mut alices = research_consent("alice");
    alices["id"] = json!("c-0123456789abcdef0123456789abcdef");
    alices["status"] = json!("inactive");
    let revoke_other = exchange(
        addr,
        "PUT",
        "/fhir/Consent/c-0123456789abcdef0123456789abcdef",
        Some(&carol),
        "application/fhir+json",
        &alices.to_string(),
    )
    .await;
    assert_eq!(revoke_other.status, 403, "{}", revoke_other.body);
    // Under her own patient id, a consent that is not hers is not found.
    alices["patient"] = json!({ "reference": "Patient/carol" });
    let not_hers = exchange(
        addr,
        "PUT",
        "/fhir/Consent/c-0123456789abcdef0123456789abcdef",
        Some(&carol),
        "application/fhir+json",
        &alices.to_string(),
    )
    .await;
    assert_eq!(not_hers.status, 404, "{}", not_hers.body);
    assert_eq!(api.size().await, size, "a refused consent is not logged");

    // No token: 401, before the body is parsed.
    let anonymous = post(addr, None, &json!("not even a resource")).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body["issue"][0]["code"], "login");

    // The client's own identifier makes a retried create idempotent; the same identifier with
    // other terms is a conflict.
    let platform = server.token(Role::Platform, None);
    let mut identified = research_consent("erin");
    identified["identifier"] = json!([{ "system": "https://phr.example/consents", "value": "42" }]);
    let first = post(addr, Some(&platform), &identified).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let size = api.size().await;
    let retried = post(addr, Some(&platform), &identified).await;
    assert_eq!(retried.status, 201, "{}", retried.body);
    assert_eq!(retried.body["id"], first.body["id"]);
    assert_eq!(
        retried.header("x-akashi-leaf-index"),
        first.header("x-akashi-leaf-index")
    );
    assert_eq!(api.size().await, size, "a retry logs nothing");
    assert_eq!(api.consent_state("erin").await.consents.len(), 1);
    identified["provision"]["securityLabel"] =
        json!([{ "system": "urn:akashi:level", "code": "IDENTIFIED" }]);
    let conflict = post(addr, Some(&platform), &identified).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["issue"][0]["code"], "conflict");

    // What cannot be mapped, and what akashi's vocabulary refuses, name their FHIR element.
    let mut nested = research_consent("dave");
    nested["provision"]["provision"] = json!([{ "type": "deny" }]);
    let mut unknown_purpose = research_consent("dave");
    unknown_purpose["provision"]["purpose"] =
        json!([{ "system": "urn:akashi:purpose", "code": "astrology" }]);
    let mut partial_date = research_consent("dave");
    partial_date["provision"]["period"] = json!({ "end": "2031" });
    for (resource, expression) in [
        (nested, "Consent.provision.provision"),
        (unknown_purpose, "Consent.provision.purpose"),
        (partial_date, "Consent.provision.period.end"),
    ] {
        let answer = post(addr, Some(&platform), &resource).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(
            answer.body["issue"][0]["expression"][0], expression,
            "{}",
            answer.body
        );
    }
    let not_json = exchange(
        addr,
        "POST",
        "/fhir/Consent",
        Some(&platform),
        "application/fhir+json",
        "{",
    )
    .await;
    assert_eq!(not_json.status, 400);
    let xml = exchange(
        addr,
        "POST",
        "/fhir/Consent",
        Some(&platform),
        "application/fhir+xml",
        "<Consent/>",
    )
    .await;
    assert_eq!(xml.status, 415);
    let no_patient = exchange(addr, "GET", "/fhir/Consent", Some(&platform), "", "").await;
    assert_eq!(no_patient.status, 400);
    assert_eq!(no_patient.body["issue"][0]["expression"][0], "patient");
    assert_eq!(api.size().await, size, "nothing refused was logged");
    server.stop().await;
}

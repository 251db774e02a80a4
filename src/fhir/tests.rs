// The cases edit resources by JSON index: a missing element is a test bug worth a panic.
#![allow(clippy::indexing_slicing)]

use serde_json::{Value, json};

use super::*;

/// A research consent as a PHR app would send it, in standard codes where they exist.
fn permit() -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": { "coding": [{ "system": SCOPE_SYSTEM, "code": "research" }] },
        "category": [{ "coding": [{ "system": LOINC, "code": "59284-0" }] }],
        "patient": { "reference": "Patient/p-1" },
        "policyRule": { "coding": [{ "system": ACT_CODE_SYSTEM, "code": "OPTIN" }] },
        "provision": {
            "type": "permit",
            "period": { "start": "2026-01-01T00:00:00Z", "end": "2030-01-01T00:00:00+09:00" },
            "actor": [
                {
                    "role": { "coding": [{ "system": PARTICIPATION_SYSTEM, "code": "IRCP" }] },
                    "reference": { "reference": "Organization/univ-x" }
                },
                {
                    "role": { "coding": [{ "system": PARTICIPATION_SYSTEM, "code": "IRCP" }] },
                    "reference": { "identifier": { "system": RECIPIENT_CLASS_SYSTEM, "value": "pharma" } }
                }
            ],
            "action": [{ "coding": [{ "system": ACTION_SYSTEM, "code": "disclose" }] }],
            "securityLabel": [{ "system": LEVEL_SYSTEM, "code": "PSEUDONYMIZED" }],
            "purpose": [
                { "system": ACT_REASON_SYSTEM, "code": "HRESCH" },
                { "system": PURPOSE_SYSTEM, "code": "product_development" }
            ],
            "class": [
                { "system": RESOURCE_TYPE_SYSTEM, "code": "Condition" },
                { "system": CATEGORY_SYSTEM, "code": "lab_result" }
            ]
        }
    })
}

fn refused(resource: &Value) -> Refusal {
    match import(resource) {
        Err(refusal) => refusal,
        Ok(import) => panic!("accepted: {import:?}"),
    }
}

#[test]
fn a_permit_becomes_the_grant_it_says() {
    let Ok(Import::Grant(grant)) = import(&permit()) else {
        panic!("not a grant");
    };
    assert_eq!(
        grant,
        pb::GrantConsentRequest {
            patient_id: "p-1".into(),
            purposes: vec!["research".into(), "product_development".into()],
            data_categories: vec!["diagnosis".into(), "lab_result".into()],
            recipients: vec!["univ-x".into()],
            recipient_classes: vec!["pharma".into()],
            max_level: "PSEUDONYMIZED".into(),
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2030-01-01T00:00:00+09:00".into(),
            request_id: String::new(),
        }
    );
}

#[test]
fn a_deny_is_an_opt_out_of_its_purposes_and_nothing_narrower() {
    let mut deny = permit();
    deny["provision"] = json!({
        "type": "deny",
        "purpose": [{ "system": ACT_REASON_SYSTEM, "code": "CLINTRCH" }]
    });
    assert_eq!(
        import(&deny),
        Ok(Import::OptOut(pb::RecordOptOutRequest {
            patient_id: "p-1".into(),
            purposes: vec!["clinical_trial".into()],
            replace: false,
            request_id: String::new(),
        }))
    );
    deny["provision"]["class"] = json!([{ "system": CATEGORY_SYSTEM, "code": "genomic" }]);
    let refusal = refused(&deny);
    assert_eq!(
        refusal.expression.as_deref(),
        Some("Consent.provision.class")
    );
    assert_eq!(refusal.code, "not-supported");
}

/// A change to a resource.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn what_akashi_cannot_hold_is_refused_by_its_element() {
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|c| c["status"] = json!("draft")), "Consent.status"),
        (
            Box::new(|c| c["scope"]["coding"][0]["code"] = json!("adr")),
            "Consent.scope",
        ),
        (
            Box::new(|c| c["provision"]["provision"] = json!([{ "type": "deny" }])),
            "Consent.provision.provision",
        ),
        (
            Box::new(|c| c["provision"]["data"] = json!([{ "meaning": "instance" }])),
            "Consent.provision.data",
        ),
        (
            Box::new(|c| c["modifierExtension"] = json!([{ "url": "urn:x" }])),
            "Consent.modifierExtension",
        ),
        (
            Box::new(|c| c["provision"]["purpose"][0]["code"] = json!("HPAYMT")),
            "Consent.provision.purpose[0]",
        ),
        (
            Box::new(|c| c["provision"]["purpose"][1]["system"] = json!("urn:other")),
            "Consent.provision.purpose[1]",
        ),
        (
            Box::new(|c| c["provision"]["class"][0]["code"] = json!("Observation")),
            "Consent.provision.class[0]",
        ),
        (
            Box::new(|c| c["provision"]["actor"][0]["role"]["coding"][0]["code"] = json!("PRCP")),
            "Consent.provision.actor[0].role",
        ),
        (
            Box::new(|c| {
                c["provision"]["actor"][0]["reference"] = json!({ "reference": "Practitioner/d" })
            }),
            "Consent.provision.actor[0].reference.reference",
        ),
        (
            Box::new(|c| c["provision"]["action"][0]["coding"][0]["code"] = json!("correct")),
            "Consent.provision.action[0]",
        ),
        (
            Box::new(|c| {
                c["provision"]["securityLabel"] = json!([]);
            }),
            "Consent.provision.securityLabel",
        ),
        (
            Box::new(|c| c["provision"]["type"] = json!("maybe")),
            "Consent.provision.type",
        ),
        (
            Box::new(|c| c["patient"] = json!({ "reference": "Group/g" })),
            "Consent.patient.reference",
        ),
        (
            Box::new(|c| c["provision"]["bogus"] = json!(1)),
            "Consent.provision.bogus",
        ),
        (
            Box::new(|c| c["resourceType"] = json!("Patient")),
            "resourceType",
        ),
    ];
    for (edit, expression) in cases {
        let mut resource = permit();
        edit(&mut resource);
        let refusal = refused(&resource);
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{expression}");
        assert_eq!(
            refusal.expression.as_deref(),
            Some(expression),
            "{}",
            refusal.message
        );
    }
}

#[test]
fn export_then_import_gives_the_same_grant() {
    let consent = pb::Consent {
        consent_id: "c_0123456789abcdef0123456789abcdef".into(),
        purposes: vec!["research".into(), "insurance".into()],
        data_categories: vec!["lab_result".into()],
        recipients: vec!["univ-x".into()],
        recipient_classes: vec!["university".into()],
        max_level: "ANONYMIZED".into(),
        valid_from: String::new(),
        valid_until: "2030-01-01T00:00:00Z".into(),
        granted_at: "2026-12-03T00:00:00Z".into(),
        in_force: true,
        status: "active".into(),
        ..Default::default()
    };
    let resource = export_consent("p 2/x", &consent);
    assert_eq!(resource["id"], "c-0123456789abcdef0123456789abcdef");
    assert_eq!(
        resource["identifier"][0]["value"],
        json!(consent.consent_id)
    );
    // A patient id that cannot be a FHIR id travels as an identifier.
    assert_eq!(
        resource["patient"],
        json!({ "identifier": { "system": PATIENT_SYSTEM, "value": "p 2/x" } })
    );
    assert_eq!(resource["scope"]["coding"][0]["code"], "patient-privacy");
    let Ok(Import::Grant(grant)) = import(&resource) else {
        panic!("the export does not import");
    };
    assert_eq!(grant.patient_id, "p 2/x");
    assert_eq!(grant.purposes, consent.purposes);
    assert_eq!(grant.data_categories, consent.data_categories);
    assert_eq!(grant.recipients, consent.recipients);
    assert_eq!(grant.recipient_classes, consent.recipient_classes);
    assert_eq!(grant.max_level, consent.max_level);
    assert_eq!(grant.valid_from, consent.valid_from);
    assert_eq!(grant.valid_until, consent.valid_until);

    let opt_outs = [pb::OptOut {
        purpose: "marketing".into(),
    }];
    let resource = export_opt_outs("p-1", &opt_outs).unwrap();
    assert_eq!(
        import(&resource),
        Ok(Import::OptOut(pb::RecordOptOutRequest {
            patient_id: "p-1".into(),
            purposes: vec!["marketing".into()],
            replace: false,
            request_id: String::new(),
        }))
    );
    assert_eq!(
        resource["id"],
        export_opt_outs("p-1", &opt_outs).unwrap()["id"],
        "the opt-out resource's id is stable"
    );
    assert!(export_opt_outs("p-1", &[]).is_none());
}

#[test]
fn akashi_fields_are_named_as_fhir_elements() {
    assert_eq!(
        element_of_field("purposes[2]").as_deref(),
        Some("Consent.provision.purpose[2]")
    );
    assert_eq!(
        element_of_field("recipients[1]").as_deref(),
        Some("Consent.provision.actor")
    );
    assert_eq!(
        element_of_field("valid_until").as_deref(),
        Some("Consent.provision.period.end")
    );
    assert_eq!(element_of_field("request_id"), None);
}

#[test]
fn query_strings_are_decoded() {
    assert_eq!(
        query_pairs("patient=Patient%2Fp%201&_format=json&x"),
        vec![
            ("patient".to_owned(), "Patient/p 1".to_owned()),
            ("_format".to_owned(), "json".to_owned()),
            ("x".to_owned(), String::new()),
        ]
    );
}

#[test]
fn an_update_revokes_a_consent_or_rewrites_the_opt_outs() {
    let consent = pb::Consent {
        consent_id: "c_0123456789abcdef0123456789abcdef".into(),
        purposes: vec!["research".into()],
        data_categories: vec!["lab_result".into()],
        recipient_classes: vec!["university".into()],
        max_level: "ANONYMIZED".into(),
        ..Default::default()
    };
    let mut resource = export_consent("p-1", &consent);
    let id = resource["id"].as_str().unwrap().to_owned();
    // The terms never change.
    let refusal = read_update(&id, &resource).unwrap_err();
    assert_eq!(refusal.expression.as_deref(), Some("Consent.status"));
    resource["status"] = json!("inactive");
    assert_eq!(
        read_update(&id, &resource),
        Ok(Update::Revoke(pb::RevokeConsentRequest {
            patient_id: "p-1".into(),
            consent_id: consent.consent_id.clone(),
            request_id: String::new(),
        }))
    );
    // The id in the path is the resource's.
    let refusal = read_update("c-ffff", &resource).unwrap_err();
    assert_eq!(refusal.expression.as_deref(), Some("Consent.id"));

    let opt_outs = [
        pb::OptOut {
            purpose: "marketing".into(),
        },
        pb::OptOut {
            purpose: "insurance".into(),
        },
    ];
    let mut resource = export_opt_outs("p-1", &opt_outs).unwrap();
    let id = opt_out_id("p-1");
    resource["provision"]["purpose"] = json!([{ "system": PURPOSE_SYSTEM, "code": "insurance" }]);
    assert_eq!(
        read_update(&id, &resource),
        Ok(Update::OptOuts(pb::RecordOptOutRequest {
            patient_id: "p-1".into(),
            purposes: vec!["insurance".into()],
            replace: true,
            request_id: String::new(),
        }))
    );
    resource["status"] = json!("inactive");
    let Ok(Update::OptOuts(withdrawn)) = read_update(&id, &resource) else {
        panic!("not an opt-out update");
    };
    assert!(withdrawn.purposes.is_empty() && withdrawn.replace);
    // Another patient's opt-out resource id under this patient.
    let refusal = read_update(&opt_out_id("p-2"), &{
        let mut other = resource.clone();
        other["id"] = json!(opt_out_id("p-2"));
        other
    })
    .unwrap_err();
    assert_eq!(refusal.expression.as_deref(), Some("Consent.id"));
}

#[test]
fn the_clients_own_identifier_makes_a_create_idempotent() {
    let mut resource = permit();
    let Ok(Import::Grant(plain)) = import(&resource) else {
        panic!("not a grant");
    };
    assert_eq!(plain.request_id, "", "no identifier: no request id");
    // akashi's own consent ids are not the client's: an export imported again is a new grant.
    resource["identifier"] = json!([{ "system": CONSENT_SYSTEM, "value": "c_00" }]);
    let Ok(Import::Grant(exported)) = import(&resource) else {
        panic!("not a grant");
    };
    assert_eq!(exported.request_id, "");
    resource["identifier"] = json!([
        { "system": CONSENT_SYSTEM, "value": "c_00" },
        { "system": "https://phr.example/consents", "value": "42" }
    ]);
    let Ok(Import::Grant(first)) = import(&resource) else {
        panic!("not a grant");
    };
    assert!(first.request_id.starts_with("fhir-identifier-"));
    assert!(first.request_id.len() <= crate::idempotency::MAX_REQUEST_ID_LEN);
    let Ok(Import::Grant(again)) = import(&resource) else {
        panic!("not a grant");
    };
    assert_eq!(first.request_id, again.request_id);
    resource["identifier"][1]["value"] = json!("43");
    let Ok(Import::Grant(other)) = import(&resource) else {
        panic!("not a grant");
    };
    assert_ne!(first.request_id, other.request_id);
    resource["identifier"] = json!([
        { "system": "https://phr.example/consents", "value": "42" },
        { "system": "https://phr.example/consents", "value": "43" }
    ]);
    assert_eq!(
        refused(&resource).expression.as_deref(),
        Some("Consent.identifier[1]")
    );
}

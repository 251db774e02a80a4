//! Roles: which token may call what, and a patient never reads another patient's data.

use akashi::auth::Role;
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, grant},
    harness::TestServer,
};

#[tokio::test]
async fn each_role_reaches_only_its_methods() {
    let server = TestServer::start().await;
    let platform = Api::new(&server, Role::Platform, None).await;
    platform.org("uni", "university").await;
    platform
        .grant(grant(
            "alice",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "ANONYMIZED",
        ))
        .await;
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let auditor = Api::new(&server, Role::Auditor, None).await;
    let size = platform.size().await;

    // A patient reads their own consent state and history...
    let own = alice
        .consent()
        .get_consent_state(alice.req(pb::GetConsentStateRequest {
            patient_id: "alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.consents.len(), 1);
    // ...and nobody else's.
    let other = alice
        .consent()
        .get_consent_state(alice.req(pb::GetConsentStateRequest {
            patient_id: "bob".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(!other.message().contains("bob"), "{}", other.message());
    assert_eq!(
        other.message(),
        "the patient role may call `ConsentService/GetConsentState` only about the patient its \
         token names"
    );
    let other = alice.subject_history("bob").await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    // A patient cannot write, decide or read the audit log.
    let write = alice
        .consent()
        .grant_consent(alice.req(grant(
            "alice",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "ANONYMIZED",
        )))
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::PermissionDenied);
    // A role refused a whole method is told so, not that it asked about the wrong patient.
    assert_eq!(
        write.message(),
        "the patient role may not call `ConsentService/GrantConsent`"
    );
    let audit = alice
        .audit()
        .get_entries(alice.req(pb::GetEntriesRequest { start: 0, count: 1 }))
        .await
        .unwrap_err();
    assert_eq!(audit.code(), Code::PermissionDenied);
    // A regulator reads history and validates policies, but does not write.
    regulator.subject_history("alice").await.unwrap();
    let write = regulator
        .directory()
        .upsert_organization(regulator.req(pb::UpsertOrganizationRequest {
            id: "x".into(),
            name: "X".into(),
            recipient_class: "pharma".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::PermissionDenied);
    // An auditor reads the audit log but not consent state.
    auditor
        .audit()
        .get_entries(auditor.req(pb::GetEntriesRequest { start: 0, count: 1 }))
        .await
        .unwrap();
    let state = auditor
        .consent()
        .get_consent_state(auditor.req(pb::GetConsentStateRequest {
            patient_id: "alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(state.code(), Code::PermissionDenied);
    assert_eq!(
        state.message(),
        "the auditor role may not call `ConsentService/GetConsentState`"
    );
    // A platform service may not read the audit log.
    let audit = platform
        .audit()
        .get_entries(platform.req(pb::GetEntriesRequest { start: 0, count: 1 }))
        .await
        .unwrap_err();
    assert_eq!(audit.code(), Code::PermissionDenied);
    assert_eq!(platform.size().await, size);
    server.stop().await;
}

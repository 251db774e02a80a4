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
    // A patient writes consent only for itself, and cannot decide or read the audit log.
    let write = alice
        .consent()
        .grant_consent(alice.req(grant(
            "bob",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "ANONYMIZED",
        )))
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::PermissionDenied);
    assert_eq!(
        write.message(),
        "the patient role may call `ConsentService/GrantConsent` only about the patient its \
         token names"
    );
    let decide = alice
        .access()
        .authorize(alice.req(crate::api::ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "clinical",
            "research",
            "ANONYMIZED",
        )))
        .await
        .unwrap_err();
    assert_eq!(decide.code(), Code::PermissionDenied);
    // A role refused a whole method is told so, not that it asked about the wrong patient.
    assert_eq!(
        decide.message(),
        "the patient role may not call `AccessService/Authorize`"
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
            request_id: String::new(),
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

/// The consent-capture interface of a PHR app: a patient's own token grants, revokes and opts
/// out for that patient, and reads the result; acting for anyone else is refused before anything
/// is logged, and another patient's consent id is not found (its existence is not revealed).
#[tokio::test]
async fn patients_write_their_own_consent_and_no_one_else_s() {
    let server = TestServer::start().await;
    let platform = Api::new(&server, Role::Platform, None).await;
    platform.org("uni", "university").await;
    let bobs = platform
        .grant(grant(
            "bob",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "ANONYMIZED",
        ))
        .await;
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;

    let granted = alice
        .consent()
        .grant_consent(alice.req(grant(
            "alice",
            &["research"],
            &["lab_result"],
            &["uni"],
            &[],
            "PSEUDONYMIZED",
        )))
        .await
        .unwrap()
        .into_inner();
    let receipt = granted.receipt.unwrap();
    crate::api::verify_receipt(&receipt, &server.vkey);
    alice
        .consent()
        .record_opt_out(alice.req(pb::RecordOptOutRequest {
            request_id: String::new(),
            patient_id: "alice".into(),
            purposes: vec!["marketing".into()],
            replace: false,
        }))
        .await
        .unwrap();
    // The platform sees what the patient recorded, and so does the patient.
    let state = platform.consent_state("alice").await;
    assert_eq!(state.consents.len(), 1);
    assert_eq!(state.consents[0].consent_id, granted.consent_id);
    assert_eq!(state.opt_outs.len(), 1);
    // The decision a recipient gets follows the patient's own grant.
    let allowed = platform
        .authorize(crate::api::ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    assert!(crate::api::allowed(&allowed));

    let size = platform.size().await;
    // Acting for another patient: refused, nothing logged, the other id not repeated.
    for refused in [
        alice
            .consent()
            .grant_consent(alice.req(grant(
                "bob",
                &["research"],
                &["clinical"],
                &["uni"],
                &[],
                "ANONYMIZED",
            )))
            .await
            .map(|_| ()),
        alice
            .consent()
            .revoke_consent(alice.req(pb::RevokeConsentRequest {
                request_id: String::new(),
                patient_id: "bob".into(),
                consent_id: bobs.clone(),
            }))
            .await
            .map(|_| ()),
        alice
            .consent()
            .record_opt_out(alice.req(pb::RecordOptOutRequest {
                request_id: String::new(),
                patient_id: "bob".into(),
                purposes: vec!["research".into()],
                replace: false,
            }))
            .await
            .map(|_| ()),
    ] {
        let err = refused.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(!err.message().contains("bob"), "{}", err.message());
    }
    // Bob's consent id under alice's own id: not found, as for any unknown consent.
    let hidden = alice
        .consent()
        .revoke_consent(alice.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "alice".into(),
            consent_id: bobs,
        }))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(platform.size().await, size);
    assert_eq!(platform.consent_state("bob").await.consents.len(), 1);

    // The patient withdraws its own consent, and the next decision follows.
    alice
        .consent()
        .revoke_consent(alice.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "alice".into(),
            consent_id: granted.consent_id,
        }))
        .await
        .unwrap();
    let denied = platform
        .authorize(crate::api::ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    assert!(!crate::api::allowed(&denied));
    server.stop().await;
}

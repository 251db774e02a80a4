//! Idempotent writes through the real server: a retry with the same `request_id` returns the
//! first answer (same entry, same consent id) and appends nothing — also when the retries race
//! the original, and after a restart; the same id with another request is `ALREADY_EXISTS`; ids
//! of different callers never meet.

use akashi::auth::Role;
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, grant, verify_receipt},
    harness::{TestServer, expect_status},
};

fn org(id: &str, request_id: &str) -> pb::UpsertOrganizationRequest {
    pb::UpsertOrganizationRequest {
        id: id.into(),
        name: "University".into(),
        recipient_class: "university".into(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn a_retried_write_returns_its_first_answer_and_appends_nothing() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("univ-a", "university").await;

    // A grant, retried: the same consent id and entry, one entry in the log.
    let mut first = grant(
        "patient-1",
        &["research"],
        &["lab_result"],
        &["univ-a"],
        &[],
        "PSEUDONYMIZED",
    );
    first.request_id = "grant-0001".into();
    let granted = api
        .consent()
        .grant_consent(api.req(first.clone()))
        .await
        .unwrap()
        .into_inner();
    let size = api.size().await;
    let again = api
        .consent()
        .grant_consent(api.req(first.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.consent_id, granted.consent_id);
    let (a, b) = (granted.receipt.unwrap(), again.receipt.unwrap());
    assert_eq!(a.leaf_index, b.leaf_index);
    assert_eq!(a.leaf_hash, b.leaf_hash);
    verify_receipt(&b, &server.vkey);
    assert_eq!(api.size().await, size);

    // The same id with another request is refused, naming why; nothing is logged.
    let mut other = first.clone();
    other.purposes = vec!["insurance".into()];
    expect_status(
        "another request under the same id",
        api.consent().grant_consent(api.req(other)).await,
        Code::AlreadyExists,
        "request_id",
    );
    assert_eq!(api.size().await, size);

    // Retries racing their original: one entry, every caller told the same.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                api.directory()
                    .upsert_organization(api.req(org("univ-b", "org-b-1")))
                    .await
                    .unwrap()
                    .into_inner()
                    .receipt
                    .unwrap()
                    .leaf_index
            })
        })
        .collect();
    let mut indices = Vec::new();
    for task in racing {
        indices.push(task.await.unwrap());
    }
    indices.dedup();
    assert_eq!(indices.len(), 1, "{indices:?}");
    assert_eq!(api.size().await, size + 1);

    // Every kind of write takes an id: a revocation, an opt-out, an activation.
    let revoke = pb::RevokeConsentRequest {
        patient_id: "patient-1".into(),
        consent_id: granted.consent_id.clone(),
        request_id: "revoke-1".into(),
    };
    let opt_out = pb::RecordOptOutRequest {
        patient_id: "patient-2".into(),
        purposes: vec!["marketing".into()],
        replace: false,
        request_id: "opt-out-1".into(),
    };
    let policies = api
        .policy()
        .get_active_policy_set(api.req(pb::GetActivePolicySetRequest {}))
        .await
        .unwrap()
        .into_inner()
        .policies;
    let activate = pb::ActivatePolicySetRequest {
        policies,
        request_id: "activate-1".into(),
    };
    for round in 0..2 {
        let before = api.size().await;
        let r1 = api
            .consent()
            .revoke_consent(api.req(revoke.clone()))
            .await
            .unwrap()
            .into_inner();
        let r2 = api
            .consent()
            .record_opt_out(api.req(opt_out.clone()))
            .await
            .unwrap()
            .into_inner();
        let r3 = api
            .policy()
            .activate_policy_set(api.req(activate.clone()))
            .await
            .unwrap()
            .into_inner();
        // The first round logs three entries; the retry of all three logs none (a revocation
        // retried without its id would be FAILED_PRECONDITION: already revoked).
        let logged = api.size().await - before;
        assert_eq!(logged, if round == 0 { 3 } else { 0 }, "round {round}");
        assert_eq!(
            r3.receipt.unwrap().leaf_index,
            r2.receipt.unwrap().leaf_index + 1
        );
        assert!(r1.receipt.is_some());
    }

    // Another caller's id of the same text is another request: a patient's own grant.
    let patient = Api::new(&server, Role::Patient, Some("patient-3")).await;
    let mut own = first.clone();
    own.patient_id = "patient-3".into();
    let theirs = patient
        .consent()
        .grant_consent(patient.req(own))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(theirs.consent_id, granted.consent_id);

    // A malformed id is refused before anything else.
    expect_status(
        "a request id too long",
        api.directory()
            .upsert_organization(api.req(org("univ-c", &"x".repeat(129))))
            .await,
        Code::InvalidArgument,
        "request_id",
    );

    // After a restart the first answer still stands.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let size = api.size().await;
    let after = api
        .consent()
        .grant_consent(api.req(first))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.consent_id, granted.consent_id);
    assert_eq!(after.receipt.unwrap().leaf_index, a.leaf_index);
    assert_eq!(api.size().await, size);
    server.stop().await;
}

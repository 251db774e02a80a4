//! A restart keeps the log, the derived state and every checkpoint: the new tree is consistent
//! with checkpoints handed out before.

use akashi::auth::Role;
use ledger::{Hash, TreeSize, proof::ConsistencyProof};
use proto::pb;

use crate::{
    api::{Api, allowed, ask, checkpoint_root, grant, verify_receipt},
    harness::TestServer,
};

#[tokio::test]
async fn restart_keeps_state_and_checkpoints() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let consent = api
        .grant(grant(
            "p1",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED",
        ))
        .await;
    let before = api
        .authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "p1",
            "lab_result",
            "research",
            "IDENTIFIED",
        ))
        .await;
    assert!(allowed(&before));
    let old_receipt = before.receipt.unwrap();
    let (old_size, old_root) = checkpoint_root(&old_receipt.checkpoint, &server.vkey);
    let vkey = server.vkey.clone();
    let dir = server.stop().await;

    let server = TestServer::start_in(dir).await;
    assert_eq!(server.vkey, vkey, "the same signing key after restart");
    let api = Api::new(&server, Role::Platform, None).await;
    assert_eq!(api.size().await, old_size.get());
    // The consent survived: the same question gets the same answer, and it can be revoked.
    let after = api
        .authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "p1",
            "lab_result",
            "research",
            "IDENTIFIED",
        ))
        .await;
    assert!(allowed(&after));
    let receipt = after.receipt.unwrap();
    let new_size = verify_receipt(&receipt, &vkey);
    let (_, new_root) = checkpoint_root(&receipt.checkpoint, &vkey);
    let proof = api
        .transparency()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old_size.get(),
            new_size,
        })
        .await
        .unwrap()
        .into_inner();
    ConsistencyProof {
        old_size,
        new_size: TreeSize(new_size),
        path: proof
            .path
            .iter()
            .map(|h| Hash::from_slice(h).unwrap())
            .collect(),
    }
    .verify(&old_root, &new_root)
    .unwrap();
    api.consent()
        .revoke_consent(api.req(pb::RevokeConsentRequest {
            patient_id: "p1".into(),
            consent_id: consent,
        }))
        .await
        .unwrap();
    // The first start's activation is not repeated.
    let active = api
        .policy()
        .get_active_policy_set(api.req(pb::GetActivePolicySetRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.activated_at_index, 0);
    server.stop().await;
}

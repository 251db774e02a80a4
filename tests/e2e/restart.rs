//! A restart keeps the log, the derived state and every checkpoint: the new tree is consistent
//! with checkpoints handed out before. A data dir whose derived state has another key layout is
//! refused.

use akashi::{
    auth::Role,
    config::Config,
    keys::Keys,
    server::{LEDGER_DIR, Server},
};
use ledger::{
    hash::{Hash, LeafIndex, TreeSize},
    log::Log,
    proof::ConsistencyProof,
    store::{SledOptions, SledStore, Store as _},
};
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
            request_id: String::new(),
            patient_id: "p1".into(),
            consent_id: consent,
        }))
        .await
        .unwrap();
    // The patient's listing survived too, in order, with the entries after the restart.
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("p1").await.unwrap();
    let indices: Vec<u64> = history.entries.iter().map(|e| e.leaf_index).collect();
    assert_eq!(
        indices.len(),
        4,
        "grant, two decisions, revocation: {indices:?}"
    );
    assert!(indices.is_sorted_by(|a, b| a < b), "{indices:?}");
    assert_eq!(indices[1], old_receipt.leaf_index);
    assert_eq!(indices[2], receipt.leaf_index);
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

#[tokio::test]
async fn a_data_dir_with_an_older_state_layout_is_refused() {
    let server = TestServer::start().await;
    // A batch after the first, so that recovery's replay of the last commit record does not
    // write the marker back.
    Api::new(&server, Role::Platform, None)
        .await
        .org("uni", "university")
        .await;
    let data = server.data_dir();
    let dir = server.stop().await;
    {
        // What a server from before the paged patient listing left: no layout marker. (`s` is
        // the ledger's prefix for derived state.)
        let store = SledStore::open(&data.join(LEDGER_DIR), &SledOptions::default()).unwrap();
        assert!(store.get(b"smeta/layout").unwrap().is_some());
        store.delete(b"smeta/layout").unwrap();
        store.sync().unwrap();
    }
    let Err(err) = Server::open(Config {
        data_dir: data,
        ..Config::default()
    }) else {
        panic!("an older layout must be refused");
    };
    assert!(
        err.to_string().contains(
            "the derived state has key layout 1 but this server reads layout 4: the data dir \
             was written by another version of akashi"
        ),
        "{err}"
    );
    drop(dir);
}

#[tokio::test]
async fn get_public_body_does_not_tell_an_erased_private_body_from_a_kept_one() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let mut indices = Vec::new();
    for patient in ["p1", "p2"] {
        let granted = api
            .consent()
            .grant_consent(api.req(grant(
                patient,
                &["research"],
                &["clinical"],
                &["uni"],
                &[],
                "PSEUDONYMIZED",
            )))
            .await
            .unwrap()
            .into_inner();
        indices.push(granted.receipt.unwrap().leaf_index);
    }
    let (kept, erased) = (indices[0], indices[1]);
    let data = server.data_dir();
    let dir = server.stop().await;
    {
        // A lawful erasure of p2's grant (no API erases yet: through the ledger directly).
        let keys = Keys::load_or_generate(&data, &Config::default().origin).unwrap();
        let store = SledStore::open(&data.join(LEDGER_DIR), &SledOptions::default()).unwrap();
        let log = Log::open(std::sync::Arc::new(store), keys.checkpoint_signer.clone()).unwrap();
        assert!(log.redact_body(LeafIndex(erased)).unwrap());
    }
    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let mut answers = Vec::new();
    for index in [kept, erased] {
        let status = api
            .transparency()
            .get_public_body(pb::GetPublicBodyRequest { leaf_index: index })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        answers.push(status.message().replace(&index.to_string(), "N"));
    }
    assert_eq!(
        answers[0], answers[1],
        "an erased private body must read like a kept one"
    );
    server.stop().await;
}

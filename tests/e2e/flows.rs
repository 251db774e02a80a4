//! Every akashi.v1 method's happy path through the real server and sled store, with receipts
//! verified by the ledger's verifier, and the revocation-then-Authorize flow.

use akashi::auth::Role;
use ledger::{
    hash::{Hash, LeafIndex, TreeSize, hash_leaf},
    proof::ConsistencyProof,
};
use proto::pb;

use crate::{
    api::{Api, allowed, ask, checkpoint_root, grant, verify_receipt},
    harness::TestServer,
};

#[tokio::test]
async fn every_write_returns_a_receipt_that_verifies() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    // The first entry is the default policy set's activation.
    let first = api.size().await;
    assert_eq!(first, 1);

    let r = api.org("uni-tokyo", "university").await;
    assert_eq!(r.leaf_index, 1);
    verify_receipt(&r, &server.vkey);

    let group = api
        .directory()
        .upsert_facility_group(api.req(pb::UpsertFacilityGroupRequest {
            request_id: String::new(),
            id: "grp".into(),
            excluded_departments: vec!["psychiatry".into()],
            excluded_patients: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&group.receipt.unwrap(), &server.vkey);
    api.org("hosp-a", "hospital").await;
    let facility = api
        .directory()
        .upsert_facility(api.req(pb::UpsertFacilityRequest {
            request_id: String::new(),
            id: "hosp-a".into(),
            name: "Hospital A".into(),
            group: "grp".into(),
            excluded_departments: vec![],
            excluded_patients: vec!["patient-9".into()],
            recipient_class: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&facility.receipt.unwrap(), &server.vkey);
    let clinician = api
        .directory()
        .upsert_clinician(api.req(pb::UpsertClinicianRequest {
            request_id: String::new(),
            id: "dr-a".into(),
            facility: "hosp-a".into(),
            department: "internal".into(),
            role: "doctor".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&clinician.receipt.unwrap(), &server.vkey);
    let emergency = api
        .directory()
        .set_emergency(api.req(pb::SetEmergencyRequest {
            request_id: String::new(),
            facility: "hosp-a".into(),
            active: true,
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&emergency.receipt.unwrap(), &server.vkey);

    let granted = api
        .consent()
        .grant_consent(api.req(grant(
            "patient-1",
            &["research"],
            &["clinical"],
            &["uni-tokyo"],
            &[],
            "PSEUDONYMIZED",
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.consent_id.starts_with("c_"));
    verify_receipt(&granted.receipt.unwrap(), &server.vkey);
    let opt_out = api
        .consent()
        .record_opt_out(api.req(pb::RecordOptOutRequest {
            request_id: String::new(),
            patient_id: "patient-1".into(),
            purposes: vec!["marketing".into()],
            replace: false,
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&opt_out.receipt.unwrap(), &server.vkey);

    let state = api.consent_state("patient-1").await;
    assert_eq!(state.consents.len(), 1);
    assert_eq!(state.consents[0].consent_id, granted.consent_id);
    assert!(state.consents[0].in_force);
    assert_eq!(state.opt_outs[0].purpose, "marketing");

    let decision = api
        .authorize(ask(
            "Organization",
            "uni-tokyo",
            "secondary_use",
            "patient-1",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    assert!(allowed(&decision), "{:?}", decision.reasons);
    assert_eq!(
        decision.determining_policies,
        vec!["secondary-use.opt-in-consent".to_owned()]
    );
    let receipt = decision.receipt.unwrap();
    verify_receipt(&receipt, &server.vkey);

    let revoked = api
        .consent()
        .revoke_consent(api.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "patient-1".into(),
            consent_id: granted.consent_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    verify_receipt(&revoked.receipt.unwrap(), &server.vkey);
    // A revocation acknowledged to the caller affects the very next decision.
    let after = api
        .authorize(ask(
            "Organization",
            "uni-tokyo",
            "secondary_use",
            "patient-1",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    assert!(!allowed(&after));
    assert!(after.receipt.is_some(), "a deny is logged too");

    server.stop().await;
}

#[tokio::test]
async fn policy_service_reads_validates_and_activates() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    let active = api
        .policy()
        .get_active_policy_set(api.req(pb::GetActivePolicySetRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.policy_set_hash.len(), 64);
    assert!(active.schema.contains("entity"));
    assert_eq!(active.activated_at_index, 0);

    let invalid = api
        .policy()
        .validate_policy_set(api.req(pb::ValidatePolicySetRequest {
            policies: "permit (principal, action == Action::\"no_such_action\", resource);".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!invalid.valid);
    assert!(!invalid.errors.is_empty());
    let valid = api
        .policy()
        .validate_policy_set(api.req(pb::ValidatePolicySetRequest {
            policies: active.policies.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid, "{:?}", valid.errors);

    // A stricter set: only statistics. Activation is a log entry; decisions then cite it.
    let stricter = active
        .policies
        .split("@id(")
        .filter(|p| !p.contains("secondary-use.anonymized-opt-out"))
        .collect::<Vec<_>>()
        .join("@id(");
    let activated = api
        .policy()
        .activate_policy_set(api.req(pb::ActivatePolicySetRequest {
            request_id: String::new(),
            policies: stricter,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(activated.policy_set_hash, active.policy_set_hash);
    verify_receipt(&activated.receipt.unwrap(), &server.vkey);
    let now_active = api
        .policy()
        .get_active_policy_set(api.req(pb::GetActivePolicySetRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now_active.policy_set_hash, activated.policy_set_hash);
    assert!(!now_active.policies.contains("anonymized-opt-out"));

    api.org("pharma-x", "pharma").await;
    let decision = api
        .authorize(ask(
            "Organization",
            "pharma-x",
            "secondary_use",
            "patient-2",
            "lab_result",
            "research",
            "ANONYMIZED",
        ))
        .await;
    assert!(
        !allowed(&decision),
        "the opt-out rule is gone from the active set"
    );
    server.stop().await;
}

#[tokio::test]
async fn transparency_serves_checkpoints_proofs_and_leaves_without_a_token() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    let mut receipts = Vec::new();
    for i in 0..20 {
        receipts.push(api.org(&format!("org-{i}"), "university").await);
    }
    let public = proto::pb::transparency_service_client::TransparencyServiceClient::new(
        server.channel().await,
    );
    let mut t = public.clone();
    let cp = t
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cp.verifier_key, server.vkey);
    let (size, root) = checkpoint_root(&cp.checkpoint, &server.vkey);
    assert_eq!(size, TreeSize(21));

    let leaves = t
        .get_leaves(pb::GetLeavesRequest {
            start: 0,
            count: 21,
        })
        .await
        .unwrap()
        .into_inner()
        .leaves;
    assert_eq!(leaves.len(), 21);
    for (i, receipt) in receipts.iter().enumerate() {
        assert_eq!(hash_leaf(&leaves[i + 1]).0.to_vec(), receipt.leaf_hash);
    }
    // Public leaves name organisations and kinds, never patients.
    let text = String::from_utf8(leaves[1].clone()).unwrap();
    assert!(
        text.starts_with("akashi/v1 directory.organization\n"),
        "{text}"
    );

    let proof = t
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf_index: 5,
            tree_size: 21,
        })
        .await
        .unwrap()
        .into_inner();
    ledger::proof::InclusionProof {
        leaf_index: LeafIndex(5),
        tree_size: TreeSize(21),
        path: proof
            .path
            .iter()
            .map(|h| Hash::from_slice(h).unwrap())
            .collect(),
    }
    .verify(&hash_leaf(&leaves[5]), &root)
    .unwrap();

    let first = receipts[3].clone();
    let (old_size, old_root) = checkpoint_root(&first.checkpoint, &server.vkey);
    let consistency = t
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old_size.get(),
            new_size: 21,
        })
        .await
        .unwrap()
        .into_inner();
    ConsistencyProof {
        old_size,
        new_size: TreeSize(21),
        path: consistency
            .path
            .iter()
            .map(|h| Hash::from_slice(h).unwrap())
            .collect(),
    }
    .verify(&old_root, &root)
    .unwrap();

    // Directory bodies are public and verify against their commitment.
    let body = t
        .get_public_body(pb::GetPublicBodyRequest { leaf_index: 1 })
        .await
        .unwrap()
        .into_inner()
        .body;
    let leaf = ledger::entry::Leaf::decode(&leaves[1]).unwrap();
    ledger::entry::verify_commitment(&leaf, &body).unwrap();
    server.stop().await;
}

#[tokio::test]
async fn history_shows_a_patient_their_own_entries_with_proofs() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "alice",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "ANONYMIZED",
    ))
    .await;
    api.grant(grant(
        "bob",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "ANONYMIZED",
    ))
    .await;
    for _ in 0..3 {
        api.authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "diagnosis",
            "research",
            "ANONYMIZED",
        ))
        .await;
    }
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let history = alice.subject_history("alice").await.unwrap();
    assert_eq!(history.entries.len(), 4, "one grant and three decisions");
    let (size, root) = checkpoint_root(&history.checkpoint, &server.vkey);
    assert_eq!(size.get(), history.tree_size);
    for entry in &history.entries {
        let leaf = ledger::entry::Leaf::decode(&entry.leaf).unwrap();
        ledger::entry::verify_commitment(&leaf, &entry.body).unwrap();
        ledger::proof::InclusionProof {
            leaf_index: LeafIndex(entry.leaf_index),
            tree_size: size,
            path: entry
                .inclusion_proof
                .iter()
                .map(|h| Hash::from_slice(h).unwrap())
                .collect(),
        }
        .verify(&hash_leaf(&entry.leaf), &root)
        .unwrap();
    }
    // Paging.
    let page = alice
        .history()
        .get_subject_history(alice.req(pb::GetSubjectHistoryRequest {
            patient_id: "alice".into(),
            after_index: Some(history.entries[1].leaf_index),
            limit: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].leaf_index, history.entries[2].leaf_index);
    assert!(page.more);

    // A regulator may read anyone's history.
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let bob = regulator.subject_history("bob").await.unwrap();
    assert_eq!(bob.entries.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_long_history_pages_across_listing_pages_in_order() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    // 70 entries for alice (more than two pages of the state's listing), bob's in between.
    let ask_about = |patient: &str| {
        ask(
            "Organization",
            "uni",
            "secondary_use",
            patient,
            "diagnosis",
            "research",
            "ANONYMIZED",
        )
    };
    let mut alice_indices = Vec::new();
    for i in 0..70 {
        let reply = api.authorize(ask_about("alice")).await;
        alice_indices.push(reply.receipt.unwrap().leaf_index);
        if i % 4 == 0 {
            api.authorize(ask_about("bob")).await;
        }
    }
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = alice
            .history()
            .get_subject_history(alice.req(pb::GetSubjectHistoryRequest {
                patient_id: "alice".into(),
                after_index: after,
                limit: 9,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 9);
        seen.extend(page.entries.iter().map(|e| e.leaf_index));
        after = seen.last().copied();
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, alice_indices);
    server.stop().await;
}

#[tokio::test]
async fn audit_service_returns_every_entry_with_its_body_and_every_checkpoint() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    for i in 0..5 {
        api.org(&format!("o{i}"), "pharma").await;
    }
    let auditor = Api::new(&server, Role::Auditor, None).await;
    let entries = auditor
        .audit()
        .get_entries(auditor.req(pb::GetEntriesRequest {
            start: 0,
            count: 100,
        }))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len(), 6);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.leaf_index, i as u64);
        let leaf = ledger::entry::Leaf::decode(&entry.leaf).unwrap();
        ledger::entry::verify_commitment(&leaf, &entry.body).unwrap();
    }
    let checkpoints = auditor
        .audit()
        .list_checkpoints(auditor.req(pb::ListCheckpointsRequest {
            from_size: 0,
            limit: 100,
        }))
        .await
        .unwrap()
        .into_inner()
        .checkpoints;
    let sizes: Vec<u64> = checkpoints
        .iter()
        .map(|c| checkpoint_root(c, &server.vkey).0.get())
        .collect();
    assert_eq!(sizes, vec![0, 1, 2, 3, 4, 5, 6]);
    server.stop().await;
}

//! `AccessService/AuthorizeCohort` through the real server: every patient's decision equals the
//! one `Authorize` gives for the same request (over random directories and consents), each is
//! its own entry at consecutive positions covered by one checkpoint, a revocation sequenced
//! before a cohort affects it, statistics are judged by the patients they really cover, a retry
//! with the same `request_id` is answered from the log, and bad input names its item.

use akashi::auth::Role;
use ledger::{
    entry::Leaf,
    hash::{Hash, LeafIndex, hash_leaf},
    proof::InclusionProof,
};
use proto::pb;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tonic::Code;

use crate::{
    api::{Api, allowed, ask, checkpoint_root, grant},
    harness::{TestServer, expect_status},
};

const CATEGORIES: [&str; 4] = ["lab_result", "diagnosis", "clinical", "genomic"];
const PURPOSES: [&str; 4] = ["research", "insurance", "product_development", "treatment"];
const LEVELS: [&str; 4] = ["IDENTIFIED", "PSEUDONYMIZED", "ANONYMIZED", "STATISTICAL"];
const ORGS: [(&str, &str); 3] = [
    ("uni", "university"),
    ("insurer", "private_insurer"),
    ("adco", "ai_vendor"),
];

fn subject(patient: &str) -> pb::CohortSubject {
    pb::CohortSubject {
        patient_id: patient.into(),
        ..Default::default()
    }
}

/// The cohort request for `template` (an `Authorize` request without its patient).
fn cohort(
    template: &pb::AuthorizeRequest,
    subjects: Vec<pb::CohortSubject>,
) -> pb::AuthorizeCohortRequest {
    pb::AuthorizeCohortRequest {
        principal: template.principal.clone(),
        action: template.action.clone(),
        data_category: template.data_category.clone(),
        source_facility: template.source_facility.clone(),
        source_department: template.source_department.clone(),
        purpose: template.purpose.clone(),
        level: template.level.clone(),
        cohort_size: template.cohort_size,
        subjects,
        with_proofs: false,
        request_id: String::new(),
    }
}

async fn authorize_cohort(
    api: &Api,
    request: pb::AuthorizeCohortRequest,
) -> pb::AuthorizeCohortResponse {
    api.access()
        .max_decoding_message_size(64 << 20)
        .authorize_cohort(api.req(request))
        .await
        .unwrap()
        .into_inner()
}

/// A random world: organisations, two facilities (one excluding a department and some patients),
/// and patients with random consents and opt-outs.
async fn random_world(api: &Api, rng: &mut StdRng, patients: &[String]) {
    for (id, class) in ORGS {
        api.org(id, class).await;
    }
    let excluded: Vec<&str> = patients
        .iter()
        .filter(|_| rng.gen_bool(0.1))
        .map(String::as_str)
        .collect();
    api.facility("hosp-a", "", &["psychiatry"], &excluded).await;
    api.facility("hosp-b", "", &[], &[]).await;
    for patient in patients {
        for _ in 0..rng.gen_range(0..3) {
            let org = ORGS.choose(rng).unwrap().0;
            let purposes: Vec<&str> = PURPOSES
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if purposes.is_empty() {
                continue;
            }
            let category = *CATEGORIES.choose(rng).unwrap();
            let level = *LEVELS.choose(rng).unwrap();
            api.grant(grant(patient, &purposes, &[category], &[org], &[], level))
                .await;
        }
        if rng.gen_bool(0.2) {
            api.consent()
                .record_opt_out(api.req(pb::RecordOptOutRequest {
                    request_id: String::new(),
                    patient_id: patient.clone(),
                    purposes: vec![(*PURPOSES[..3].choose(rng).unwrap()).into()],
                    replace: false,
                }))
                .await
                .unwrap();
        }
    }
}

fn random_template(rng: &mut StdRng) -> pb::AuthorizeRequest {
    let org = ORGS.choose(rng).unwrap().0;
    let mut template = ask(
        "Organization",
        org,
        "secondary_use",
        "",
        CATEGORIES.choose(rng).unwrap(),
        PURPOSES.choose(rng).unwrap(),
        LEVELS.choose(rng).unwrap(),
    );
    if rng.gen_bool(0.5) {
        template.source_facility = (*["hosp-a", "hosp-b"].choose(rng).unwrap()).into();
    }
    if rng.gen_bool(0.3) {
        template.source_department = (*["psychiatry", "internal"].choose(rng).unwrap()).into();
    }
    template
}

#[tokio::test]
async fn cohort_decisions_equal_unary_decisions_over_random_worlds() {
    let mut compared = 0;
    let mut allows = 0;
    for seed in 0..3_u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let server = TestServer::start().await;
        let api = Api::new(&server, Role::Platform, None).await;
        let patients: Vec<String> = (0..40).map(|i| format!("patient-{seed}-{i}")).collect();
        random_world(&api, &mut rng, &patients).await;
        for _ in 0..4 {
            let template = random_template(&mut rng);
            let mut subjects: Vec<pb::CohortSubject> =
                patients.iter().map(|p| subject(p)).collect();
            // Some patients' records are held elsewhere than the template says.
            for s in &mut subjects {
                if rng.gen_bool(0.2) {
                    s.source_facility = "hosp-b".into();
                }
            }
            let before = api.size().await;
            let answer = authorize_cohort(&api, cohort(&template, subjects.clone())).await;
            assert_eq!(answer.decisions.len(), patients.len());
            assert_eq!(
                api.size().await,
                before + patients.len() as u64,
                "one entry per patient"
            );
            let (size, _) = checkpoint_root(&answer.checkpoint, &server.vkey);
            assert_eq!(size.get(), answer.tree_size);
            let first = answer.decisions[0].leaf_index;
            assert!(first >= before && first + patients.len() as u64 <= size.get());
            let mut count = 0;
            for (offset, (decision, s)) in answer.decisions.iter().zip(&subjects).enumerate() {
                assert_eq!(
                    decision.leaf_index,
                    first + offset as u64,
                    "in the order asked"
                );
                let unary = api
                    .authorize(pb::AuthorizeRequest {
                        patient_id: s.patient_id.clone(),
                        source_facility: if s.source_facility.is_empty() {
                            template.source_facility.clone()
                        } else {
                            s.source_facility.clone()
                        },
                        ..template.clone()
                    })
                    .await;
                assert_eq!(
                    (
                        decision.decision,
                        &decision.determining_policies,
                        &decision.reasons
                    ),
                    (unary.decision, &unary.determining_policies, &unary.reasons),
                    "seed {seed}, patient {offset}, template {template:?}"
                );
                assert_eq!(decision.patient_ref, unary.patient_ref);
                // The logged leaf states the same decision.
                let leaf = api
                    .transparency()
                    .get_leaves(pb::GetLeavesRequest {
                        start: decision.leaf_index,
                        count: 1,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .leaves
                    .remove(0);
                let leaf = Leaf::decode(&leaf).unwrap();
                let logged = if decision.decision == pb::Decision::Allow as i32 {
                    "ALLOW"
                } else {
                    "DENY"
                };
                assert_eq!(leaf.attribute("decision"), Some(logged));
                count += u64::from(decision.decision == pb::Decision::Allow as i32);
                compared += 1;
            }
            assert_eq!(answer.allowed, count);
            allows += count;
        }
        server.stop().await;
    }
    assert_eq!(compared, 3 * 4 * 40);
    // The random worlds are not all denials: the comparison covers both answers.
    assert!(allows > 0, "no cohort allowed anyone");
}

#[tokio::test]
async fn a_cohort_with_proofs_verifies_and_shows_in_each_patients_history() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    for p in ["p1", "p2"] {
        api.grant(grant(
            p,
            &["research"],
            &["lab_result"],
            &["uni"],
            &[],
            "PSEUDONYMIZED",
        ))
        .await;
    }
    let template = ask(
        "Organization",
        "uni",
        "secondary_use",
        "",
        "lab_result",
        "research",
        "PSEUDONYMIZED",
    );
    let mut request = cohort(&template, vec![subject("p1"), subject("p2"), subject("p3")]);
    request.with_proofs = true;
    let answer = authorize_cohort(&api, request).await;
    assert_eq!(answer.allowed, 2);
    let (size, root) = checkpoint_root(&answer.checkpoint, &server.vkey);
    for decision in &answer.decisions {
        let proof = InclusionProof {
            leaf_index: LeafIndex(decision.leaf_index),
            tree_size: size,
            path: decision
                .inclusion_proof
                .iter()
                .map(|h| Hash::from_slice(h).unwrap())
                .collect(),
        };
        proof.verify(&hash_leaf(&decision.leaf), &root).unwrap();
    }
    // The patient sees the decision about them in their own history.
    let patient = Api::new(&server, Role::Patient, Some("p3")).await;
    let history = patient.subject_history("p3").await.unwrap();
    assert!(
        history
            .entries
            .iter()
            .any(|e| e.leaf_index == answer.decisions[2].leaf_index),
        "the cohort's decision is in the patient's history"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_revocation_sequenced_before_a_cohort_affects_it() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let mut consents = Vec::new();
    for p in ["r1", "r2", "r3"] {
        consents.push(
            api.grant(grant(
                p,
                &["research"],
                &["lab_result"],
                &["uni"],
                &[],
                "PSEUDONYMIZED",
            ))
            .await,
        );
    }
    let template = ask(
        "Organization",
        "uni",
        "secondary_use",
        "",
        "lab_result",
        "research",
        "PSEUDONYMIZED",
    );
    let subjects = || vec![subject("r1"), subject("r2"), subject("r3")];
    assert_eq!(
        authorize_cohort(&api, cohort(&template, subjects()))
            .await
            .allowed,
        3
    );
    // Revocations racing a cohort: each patient's decision follows the order of the log.
    let revoke = |patient: &'static str, consent: String| {
        let api = api.clone();
        tokio::spawn(async move {
            api.consent()
                .revoke_consent(api.req(pb::RevokeConsentRequest {
                    patient_id: patient.into(),
                    consent_id: consent,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .receipt
                .unwrap()
                .leaf_index
        })
    };
    let revoked = revoke("r2", consents[1].clone());
    let racing = {
        let api = api.clone();
        let request = cohort(&template, subjects());
        tokio::spawn(async move { authorize_cohort(&api, request).await })
    };
    let revoked_at = revoked.await.unwrap();
    let raced = racing.await.unwrap();
    let expected_r2 = revoked_at > raced.decisions[1].leaf_index;
    assert_eq!(
        raced.decisions[1].decision == pb::Decision::Allow as i32,
        expected_r2,
        "the revocation at {revoked_at} and the decision at {}",
        raced.decisions[1].leaf_index
    );
    // Sequenced before: denied, the others still allowed.
    let after = authorize_cohort(&api, cohort(&template, subjects())).await;
    let effects: Vec<bool> = after
        .decisions
        .iter()
        .map(|d| d.decision == pb::Decision::Allow as i32)
        .collect();
    assert_eq!(effects, vec![true, false, true]);
    assert_eq!(after.allowed, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_statistics_cohort_is_judged_by_the_patients_it_really_covers() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let patients: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    let template = pb::AuthorizeRequest {
        cohort_size: 0,
        ..ask(
            "Organization",
            "uni",
            "export_statistics",
            "",
            "lab_result",
            "research",
            "STATISTICAL",
        )
    };
    let subjects = || patients.iter().map(|p| subject(p)).collect::<Vec<_>>();
    let all = authorize_cohort(&api, cohort(&template, subjects())).await;
    assert_eq!((all.allowed, all.cohort_size), (12, 12));
    // Three opt out: nine remain, below the threshold of ten, so the release is refused for all.
    for p in &patients[..3] {
        api.consent()
            .record_opt_out(api.req(pb::RecordOptOutRequest {
                request_id: String::new(),
                patient_id: p.clone(),
                purposes: vec!["research".into()],
                replace: false,
            }))
            .await
            .unwrap();
    }
    let few = authorize_cohort(&api, cohort(&template, subjects())).await;
    assert_eq!((few.allowed, few.cohort_size), (0, 9));
    // The same twelve as part of a cohort of 100 stated across calls: 97 remain.
    let part = authorize_cohort(
        &api,
        pb::AuthorizeCohortRequest {
            cohort_size: 100,
            ..cohort(&template, subjects())
        },
    )
    .await;
    assert_eq!((part.allowed, part.cohort_size), (9, 97));
    // Each logged decision states that size, so a unary question with it decides the same.
    let unary = api
        .authorize(pb::AuthorizeRequest {
            patient_id: patients[5].clone(),
            cohort_size: 9,
            ..template.clone()
        })
        .await;
    assert!(!allowed(&unary));
    // A stated size below the number of patients is refused.
    expect_status(
        "cohort_size below the patients given",
        api.access()
            .authorize_cohort(api.req(pb::AuthorizeCohortRequest {
                cohort_size: 5,
                ..cohort(&template, subjects())
            }))
            .await,
        Code::InvalidArgument,
        "cohort_size",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_retried_cohort_returns_its_first_answer_and_logs_nothing() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "i1",
        &["research"],
        &["lab_result"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    let template = ask(
        "Organization",
        "uni",
        "secondary_use",
        "",
        "lab_result",
        "research",
        "PSEUDONYMIZED",
    );
    let request = pb::AuthorizeCohortRequest {
        request_id: "extract-2026-001".into(),
        ..cohort(&template, vec![subject("i1"), subject("i2")])
    };
    let first = authorize_cohort(&api, request.clone()).await;
    let size = api.size().await;
    let again = authorize_cohort(&api, request.clone()).await;
    assert_eq!(api.size().await, size, "a retry appends nothing");
    assert_eq!(first.decisions, again.decisions);
    assert_eq!(first.allowed, again.allowed);
    // A cohort larger than one read of the log (1,024 entries) is read back whole.
    let large = pb::AuthorizeCohortRequest {
        request_id: "extract-2026-002".into(),
        ..cohort(
            &template,
            (0..1_100).map(|i| subject(&format!("l{i}"))).collect(),
        )
    };
    let first_large = authorize_cohort(&api, large.clone()).await;
    let size = api.size().await;
    let again_large = authorize_cohort(&api, large).await;
    assert_eq!(api.size().await, size);
    assert_eq!(again_large.decisions, first_large.decisions);
    // After a restart too.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let restarted = authorize_cohort(&api, request.clone()).await;
    assert_eq!(restarted.decisions, first.decisions);
    // The same id with another request.
    expect_status(
        "another cohort under the same id",
        api.access()
            .authorize_cohort(api.req(pb::AuthorizeCohortRequest {
                subjects: vec![subject("i1")],
                ..request
            }))
            .await,
        Code::AlreadyExists,
        "request_id",
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_cohorts_are_refused_naming_the_item_and_log_nothing() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let template = ask(
        "Organization",
        "uni",
        "secondary_use",
        "",
        "lab_result",
        "research",
        "PSEUDONYMIZED",
    );
    let size = api.size().await;
    let refused = |request: pb::AuthorizeCohortRequest| {
        let api = api.clone();
        async move { api.access().authorize_cohort(api.req(request)).await }
    };
    expect_status(
        "no subjects",
        refused(cohort(&template, Vec::new())).await,
        Code::InvalidArgument,
        "subjects",
    );
    expect_status(
        "a patient twice",
        refused(cohort(
            &template,
            vec![subject("a"), subject("b"), subject("a")],
        ))
        .await,
        Code::InvalidArgument,
        "subjects[2].patient_id",
    );
    expect_status(
        "an empty patient id",
        refused(cohort(&template, vec![subject("a"), subject("")])).await,
        Code::InvalidArgument,
        "subjects[1].patient_id",
    );
    let mut bad_facility = subject("b");
    bad_facility.source_facility = "no such\nfacility".into();
    expect_status(
        "a malformed facility",
        refused(cohort(&template, vec![subject("a"), bad_facility])).await,
        Code::InvalidArgument,
        "subjects[1].source_facility",
    );
    expect_status(
        "too many",
        refused(cohort(
            &template,
            (0..10_001).map(|i| subject(&format!("q{i}"))).collect(),
        ))
        .await,
        Code::InvalidArgument,
        "subjects",
    );
    let patient = pb::AuthorizeRequest {
        principal: Some(pb::Principal {
            r#type: "Patient".into(),
            id: "a".into(),
        }),
        ..template.clone()
    };
    expect_status(
        "a patient principal",
        refused(cohort(&patient, vec![subject("a")])).await,
        Code::InvalidArgument,
        "principal.type",
    );
    let regulator = Api::new(&server, Role::Regulator, None).await;
    expect_status(
        "a regulator",
        regulator
            .access()
            .authorize_cohort(regulator.req(cohort(&template, vec![subject("a")])))
            .await,
        Code::PermissionDenied,
        "",
    );
    assert_eq!(api.size().await, size, "nothing was logged");
    server.stop().await;
}

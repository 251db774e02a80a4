//! `WatchConsentChanges` through the real server: a recipient hears, in log order and with a
//! signed checkpoint, of the grants and revocations of consents that name it or its class and
//! of the opt-outs of patients it was allowed data about — nothing else — live as they are
//! logged, and a subscription resumes from a leaf index with no gap and no duplicate, also after
//! the server restarts.

use std::time::Duration;

use akashi::auth::Role;
use ledger::{checkpoint::SignedCheckpoint, note::NoteVerifier};
use proto::pb;
use tonic::{Code, Streaming};

use crate::{
    api::{Api, allowed, ask, grant},
    harness::{TIMEOUT, TestServer, expect_status},
};

async fn watch(
    api: &Api,
    recipient: &str,
    after_index: Option<u64>,
) -> Result<Streaming<pb::WatchConsentChangesResponse>, tonic::Status> {
    api.consent()
        .watch_consent_changes(api.req(pb::WatchConsentChangesRequest {
            recipient: recipient.into(),
            after_index,
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// Reads messages until `count` changes have arrived (checking each message's checkpoint covers
/// its changes), then returns them; fails after [`TIMEOUT`].
async fn next_changes(
    stream: &mut Streaming<pb::WatchConsentChangesResponse>,
    vkey: &str,
    count: usize,
) -> Vec<pb::ConsentChange> {
    let verifier = NoteVerifier::from_vkey(vkey).unwrap();
    let mut changes = Vec::new();
    let read = async {
        while changes.len() < count {
            let message = stream.message().await.unwrap().expect("the stream ended");
            let checkpoint = SignedCheckpoint::verify(&message.checkpoint, &verifier).unwrap();
            let size = checkpoint.checkpoint().size.get();
            assert!(message.scanned_to <= size);
            for change in &message.changes {
                assert!(change.leaf_index < message.scanned_to, "{change:?}");
            }
            changes.extend(message.changes);
        }
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("fewer than {count} changes arrived"));
    changes
}

fn summary(changes: &[pb::ConsentChange]) -> Vec<(&str, &str)> {
    changes
        .iter()
        .map(|c| (c.kind.as_str(), c.consent_id.as_str()))
        .collect()
}

#[tokio::test]
async fn a_recipient_hears_of_the_changes_that_concern_it_live_and_resumes_without_gap() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    for (org, class) in [
        ("univ-a", "university"),
        ("univ-b", "university"),
        ("pharma-x", "pharma"),
    ] {
        api.org(org, class).await;
    }
    let consent = |patient: &str, recipients: &[&str], classes: &[&str]| {
        grant(
            patient,
            &["research"],
            &["lab_result"],
            recipients,
            classes,
            "PSEUDONYMIZED",
        )
    };
    let c1 = api.grant(consent("patient-1", &["univ-a"], &[])).await;
    let c2 = api.grant(consent("patient-2", &[], &["pharma"])).await;
    let c3 = api.grant(consent("patient-3", &["univ-b"], &[])).await;
    let c4 = api.grant(consent("patient-1", &["univ-b"], &[])).await;
    // univ-a is allowed anonymised data about patient-4 (opt-out rule), then patient-4 opts
    // out; patient-5 opts out too, but univ-a never received anything about them.
    let anonymised = api
        .authorize(ask(
            "Organization",
            "univ-a",
            "secondary_use",
            "patient-4",
            "lab_result",
            "research",
            "ANONYMIZED",
        ))
        .await;
    assert!(allowed(&anonymised), "{:?}", anonymised.reasons);
    for patient in ["patient-4", "patient-5"] {
        api.consent()
            .record_opt_out(api.req(pb::RecordOptOutRequest {
                request_id: String::new(),
                patient_id: patient.into(),
                purposes: vec!["research".into()],
                replace: false,
            }))
            .await
            .unwrap();
    }
    for (patient, id) in [("patient-1", &c1), ("patient-3", &c3)] {
        api.consent()
            .revoke_consent(api.req(pb::RevokeConsentRequest {
                request_id: String::new(),
                patient_id: patient.into(),
                consent_id: id.clone(),
            }))
            .await
            .unwrap();
    }

    // univ-a: its consent's grant, the opt-out of the patient it received data about, and the
    // revocation — in log order, nothing about univ-b's, pharma's, or patient-5.
    let mut univ_a = watch(&api, "univ-a", None).await.unwrap();
    let seen = next_changes(&mut univ_a, &server.vkey, 3).await;
    assert_eq!(
        summary(&seen),
        [
            ("grant", c1.as_str()),
            ("opt_out", ""),
            ("revoke", c1.as_str())
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].leaf_index < w[1].leaf_index));
    let (grant_1, opt_out_4, revoke_1) = (&seen[0], &seen[1], &seen[2]);
    assert_eq!(grant_1.purposes, ["research"]);
    assert_eq!(grant_1.data_categories, ["lab_result"]);
    assert_eq!(grant_1.max_level, "PSEUDONYMIZED");
    assert!(!grant_1.time.is_empty());
    assert_eq!(opt_out_4.purposes, ["research"]);
    // One patient, one reference for this recipient; not the patient id.
    assert_eq!(grant_1.patient_ref, revoke_1.patient_ref);
    assert_ne!(grant_1.patient_ref, opt_out_4.patient_ref);
    // The recipient can act on the opt-out: the decision that gave it the data named the
    // patient by the same reference.
    assert_eq!(anonymised.patient_ref, opt_out_4.patient_ref);
    assert!(!grant_1.patient_ref.contains("patient-1"));

    // univ-b sees its own consents, and patient-1 under another reference than univ-a's.
    let mut univ_b = watch(&api, "univ-b", None).await.unwrap();
    let seen_b = next_changes(&mut univ_b, &server.vkey, 3).await;
    assert_eq!(
        summary(&seen_b),
        [
            ("grant", c3.as_str()),
            ("grant", c4.as_str()),
            ("revoke", c3.as_str())
        ]
    );
    assert_ne!(seen_b[1].patient_ref, grant_1.patient_ref);
    // A consent to a class reaches the class's members.
    let mut pharma = watch(&api, "pharma-x", None).await.unwrap();
    assert_eq!(
        summary(&next_changes(&mut pharma, &server.vkey, 1).await),
        [("grant", c2.as_str())]
    );

    // Live: a revocation logged now reaches the open subscription.
    let c5 = api.grant(consent("patient-6", &["univ-a"], &[])).await;
    api.consent()
        .revoke_consent(api.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "patient-6".into(),
            consent_id: c5.clone(),
        }))
        .await
        .unwrap();
    let live = next_changes(&mut univ_a, &server.vkey, 2).await;
    assert_eq!(
        summary(&live),
        [("grant", c5.as_str()), ("revoke", c5.as_str())]
    );

    // Resumed after the opt-out: the same changes from there, none twice, none missing.
    let mut resumed = watch(&api, "univ-a", Some(opt_out_4.leaf_index))
        .await
        .unwrap();
    let again = next_changes(&mut resumed, &server.vkey, 3).await;
    assert_eq!(
        again.iter().map(|c| c.leaf_index).collect::<Vec<_>>(),
        [revoke_1.leaf_index, live[0].leaf_index, live[1].leaf_index]
    );
    // The platform's own view has every consent change: five grants, two opt-outs, three
    // revocations.
    let mut all = watch(&api, "", None).await.unwrap();
    let everything = next_changes(&mut all, &server.vkey, 10).await;
    assert_eq!(everything.len(), 10, "{everything:?}");

    // Refusals.
    expect_status(
        "an unknown recipient",
        watch(&api, "nobody", None).await,
        Code::NotFound,
        "nobody",
    );
    expect_status(
        "past the log",
        watch(&api, "univ-a", Some(1_000_000)).await,
        Code::OutOfRange,
        "after_index",
    );
    let patient = Api::new(&server, Role::Patient, Some("patient-1")).await;
    expect_status(
        "a patient",
        watch(&patient, "univ-a", None).await,
        Code::PermissionDenied,
        "",
    );
    // Stopping the server ends the open streams rather than waiting for them.
    let vkey = server.vkey.clone();
    let dir = tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("the server did not stop with streams open");
    drop((univ_a, univ_b, pharma, resumed, all));

    // After a restart the recipient resumes where it was: the changes logged before the stop
    // that it had not read, then one logged since, none twice, none missing.
    let server = TestServer::start_in(dir).await;
    assert_eq!(server.vkey, vkey);
    let api = Api::new(&server, Role::Platform, None).await;
    let c6 = api.grant(consent("patient-7", &["univ-a"], &[])).await;
    let mut restarted = watch(&api, "univ-a", Some(opt_out_4.leaf_index))
        .await
        .unwrap();
    let after_restart = next_changes(&mut restarted, &server.vkey, 4).await;
    assert_eq!(
        after_restart[..3]
            .iter()
            .map(|c| c.leaf_index)
            .collect::<Vec<_>>(),
        [revoke_1.leaf_index, live[0].leaf_index, live[1].leaf_index]
    );
    assert_eq!(
        (
            after_restart[3].kind.as_str(),
            after_restart[3].consent_id.as_str()
        ),
        ("grant", c6.as_str())
    );
    // The same patient keeps the same reference for the recipient across the restart.
    assert_eq!(after_restart[1].patient_ref, live[0].patient_ref);
    drop(restarted);
    server.stop().await;
}

//! The service edge through the real server: identifiers compare after one normalisation (NFC,
//! then ASCII lowercase) in writes and requests alike, department names may be Japanese and
//! reach public leaves percent-encoded (the auditor's replay agrees), a patient principal never
//! asks about another patient, consents that could never be in force and opt-outs of
//! `treatment` are refused, and the consent history lists revoked and expired consents.

use akashi::auth::Role;
use auditor::cli::{ReplayConfig, replay};
use ledger::note::NoteVerifier;
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, allowed, ask, grant},
    harness::{TestServer, expect_status},
};

/// The leaf of entry `index`, as text.
async fn leaf(api: &Api, index: u64) -> String {
    let leaves = api
        .transparency()
        .get_leaves(pb::GetLeavesRequest {
            start: index,
            count: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .leaves;
    String::from_utf8(leaves[0].clone()).unwrap()
}

#[tokio::test]
async fn ids_compare_after_nfc_and_ascii_case_folding_in_writes_and_requests() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("Uni", "university").await;
    api.org("Hosp-A", "hospital").await;
    api.directory()
        .upsert_facility_group(api.req(pb::UpsertFacilityGroupRequest {
            request_id: String::new(),
            id: "GRP".into(),
            excluded_departments: vec!["Genetics".into()],
            excluded_patients: vec![],
        }))
        .await
        .unwrap();
    // `ガン科` written composed; asked below decomposed (`カ` + U+3099).
    let facility = api
        .directory()
        .upsert_facility(api.req(pb::UpsertFacilityRequest {
            request_id: String::new(),
            id: "HOSP-A".into(),
            name: "Hospital A".into(),
            group: "grp".into(),
            excluded_departments: vec!["Psychiatry".into(), "精神科".into(), "\u{30ac}ン科".into()],
            excluded_patients: vec![],
            recipient_class: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    // The public leaf holds the normalised ids; what is not printable ASCII is percent-encoded.
    let text = leaf(&api, facility.leaf_index).await;
    assert!(text.contains("\nfacility hosp-a\n"), "{text}");
    assert!(text.contains("\ngroup grp\n"), "{text}");
    assert!(
        text.contains(
            "\nexcluded_departments psychiatry,%E7%B2%BE%E7%A5%9E%E7%A7%91,%E3%82%AC%E3%83%B3%E7%A7%91\n"
        ),
        "{text}"
    );
    api.grant(grant(
        "p1",
        &["research"],
        &["clinical"],
        &["UNI"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    let from = |department: &str| pb::AuthorizeRequest {
        source_facility: "Hosp-A".into(),
        source_department: department.into(),
        ..ask(
            "Organization",
            "uNi",
            "secondary_use",
            "p1",
            "lab_result",
            "research",
            "IDENTIFIED",
        )
    };
    // The consent names `UNI` and the principal is `uNi`: the same organisation.
    assert!(allowed(&api.authorize(from("internal")).await));
    for department in [
        "psychiatry",
        "Psychiatry",
        "PSYCHIATRY",
        "精神科",
        "\u{30ab}\u{3099}ン科",
        "GENETICS",
    ] {
        let d = api.authorize(from(department)).await;
        assert!(!allowed(&d), "{department} is excluded");
        assert_eq!(
            d.determining_policies,
            vec!["disclosure.excluded-department".to_owned()],
            "{department}"
        );
    }
    // A clinician registered in `精神科` is echoed readably; a name that is not one is refused
    // with the name as written, not as escapes.
    api.clinician("Dr.Sato", "hosp-a", "精神科", "doctor").await;
    let clinician = api.size().await - 1;
    let text = leaf(&api, clinician).await;
    assert!(text.contains("\nclinician dr.sato\n"), "{text}");
    assert!(
        text.contains("\ndepartment %E7%B2%BE%E7%A5%9E%E7%A7%91\n"),
        "{text}"
    );
    let size = api.size().await;
    expect_status(
        "a department with a slash",
        api.directory()
            .upsert_clinician(api.req(pb::UpsertClinicianRequest {
                request_id: String::new(),
                id: "dr-x".into(),
                facility: "hosp-a".into(),
                department: "精神/科".into(),
                role: "doctor".into(),
            }))
            .await,
        Code::InvalidArgument,
        "`精神/科`",
    );
    assert_eq!(api.size().await, size);

    // The regulator's replay recomputes every public leaf header (the percent-encoded ones
    // included) and re-decides every decision: nothing differs.
    let report = replay(
        &ReplayConfig {
            tls: Default::default(),
            verifier: NoteVerifier::from_vkey(&server.vkey).unwrap(),
            grpc: format!("http://{}", server.grpc_addr),
            token: server.token(Role::Regulator, None),
        },
        false,
    )
    .await
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.decisions_checked, report.decisions_matching);
    server.stop().await;
}

#[tokio::test]
async fn a_patient_principal_asking_about_another_patient_is_refused_and_nothing_is_logged() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let size = api.size().await;
    let foreign = ask(
        "Patient",
        "alice",
        "view_record",
        "bob",
        "diagnosis",
        "treatment",
        "IDENTIFIED",
    );
    expect_status(
        "a patient asks about another",
        api.access().authorize(api.req(foreign)).await,
        Code::PermissionDenied,
        "a `Patient` principal may ask only about their own records",
    );
    assert_eq!(api.size().await, size, "nothing is logged");
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let bob = regulator.subject_history("bob").await.unwrap();
    assert!(bob.entries.is_empty(), "bob's history never names alice");
    // About themself, a patient is decided and logged as before.
    let own = ask(
        "Patient",
        "alice",
        "view_record",
        "alice",
        "diagnosis",
        "treatment",
        "IDENTIFIED",
    );
    api.authorize(own).await;
    assert_eq!(api.size().await, size + 1);
    server.stop().await;
}

#[tokio::test]
async fn consents_that_could_never_be_in_force_and_opt_outs_of_treatment_are_refused() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let size = api.size().await;
    let open = grant(
        "p",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    );
    let ended = pb::GrantConsentRequest {
        valid_until: "2021-01-01T00:00:00Z".into(),
        ..open.clone()
    };
    let status = api
        .consent()
        .grant_consent(api.req(ended))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("`valid_until` is not after the server's clock"),
        "{}",
        status.message()
    );
    let empty = pb::GrantConsentRequest {
        valid_from: "2999-01-01T00:00:00Z".into(),
        valid_until: "2999-01-01T00:00:00Z".into(),
        ..open.clone()
    };
    expect_status(
        "an empty validity period",
        api.consent().grant_consent(api.req(empty)).await,
        Code::InvalidArgument,
        "`valid_until` must be after `valid_from`",
    );
    let opt_out = |purposes: &[&str], replace: bool| pb::RecordOptOutRequest {
        request_id: String::new(),
        patient_id: "p".into(),
        purposes: purposes.iter().map(|p| (*p).into()).collect(),
        replace,
    };
    for replace in [false, true] {
        for purpose in ["treatment", "facility_operations"] {
            expect_status(
                "an opt-out of the patient's care or the facility's operations",
                api.consent()
                    .record_opt_out(api.req(opt_out(&["research", purpose], replace)))
                    .await,
                Code::InvalidArgument,
                &format!("`purposes` may not hold `{purpose}`"),
            );
        }
    }
    assert_eq!(api.size().await, size, "nothing refused is logged");
    // An opt-out of `emergency` is valid: the patient refuses emergency access by others.
    api.consent()
        .record_opt_out(api.req(opt_out(&["emergency"], false)))
        .await
        .unwrap();
    assert_eq!(
        api.consent_state("p").await.opt_outs,
        vec![pb::OptOut {
            purpose: "emergency".into()
        }]
    );
    server.stop().await;
}

#[tokio::test]
async fn consent_history_lists_revoked_and_expired_consents_with_their_entries() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let research = grant(
        "alice",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    );
    let first = api
        .consent()
        .grant_consent(api.req(research.clone()))
        .await
        .unwrap()
        .into_inner();
    let revocation = api
        .consent()
        .revoke_consent(api.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "alice".into(),
            consent_id: first.consent_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let kept = api.grant(research).await;
    // Decisions about alice lie between her consent entries in the walk.
    for _ in 0..3 {
        api.authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "lab_result",
            "research",
            "IDENTIFIED",
        ))
        .await;
    }

    // Without `include_inactive`, as before: the active consent only.
    let state = api.consent_state("alice").await;
    assert_eq!(state.consents.len(), 1);
    assert_eq!(state.consents[0].consent_id, kept);
    assert_eq!(state.consents[0].status, "active");
    assert!(state.inactive.is_empty());

    // The patient reads her own history, a page at a time.
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let ask_page = |after_index: Option<u64>| {
        alice.req(pb::GetConsentStateRequest {
            patient_id: "alice".into(),
            include_inactive: true,
            after_index,
        })
    };
    let all = alice
        .consent()
        .get_consent_state(ask_page(None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.consents.len(),
        1,
        "the active consent, as without the flag"
    );
    assert_eq!(all.inactive.len(), 1);
    let revoked = &all.inactive[0];
    assert_eq!(revoked.consent_id, first.consent_id);
    assert_eq!(revoked.status, "revoked");
    assert!(!revoked.in_force);
    assert_eq!(
        revoked.granted_index,
        first.receipt.as_ref().unwrap().leaf_index
    );
    assert_eq!(revoked.revoked_index, Some(revocation.leaf_index));
    assert!(!revoked.revoked_at.is_empty());
    assert_eq!(revoked.purposes, vec!["research".to_owned()]);
    assert!(!all.more);
    // Asking after the last entry walked finds nothing more.
    let rest = alice
        .consent()
        .get_consent_state(ask_page(all.next_after_index))
        .await
        .unwrap()
        .into_inner();
    assert!(rest.inactive.is_empty() && !rest.more);
    assert_eq!(rest.next_after_index, None);
    // Starting after the revoked consent's grant, it is not walked again.
    let later = alice
        .consent()
        .get_consent_state(ask_page(Some(revoked.granted_index)))
        .await
        .unwrap()
        .into_inner();
    assert!(later.inactive.is_empty());
    // Another patient's history stays closed to her.
    expect_status(
        "another patient's history",
        alice
            .consent()
            .get_consent_state(alice.req(pb::GetConsentStateRequest {
                patient_id: "bob".into(),
                include_inactive: true,
                after_index: None,
            }))
            .await,
        Code::PermissionDenied,
        "only about the patient its token names",
    );
    server.stop().await;
}

//! The nine default rules of docs/design.md §5, each driven once (or a few times) through the real
//! gRPC path: directory and consents written with the API, decisions asked with Authorize.

use akashi::auth::Role;
use proto::pb;

use crate::{
    api::{Api, allowed, ask, grant},
    harness::TestServer,
};

async fn setup() -> (TestServer, Api) {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.org("insurer", "private_insurer").await;
    api.org("adco", "ai_vendor").await;
    (server, api)
}

fn secondary(org: &str, patient: &str, purpose: &str, level: &str) -> pb::AuthorizeRequest {
    ask(
        "Organization",
        org,
        "secondary_use",
        patient,
        "lab_result",
        purpose,
        level,
    )
}

#[tokio::test]
async fn rule_1_deny_unless_a_rule_permits() {
    let (server, api) = setup().await;
    // No rule ever lets an organisation view records.
    let d = api
        .authorize(ask(
            "Organization",
            "uni",
            "view_record",
            "p1",
            "diagnosis",
            "treatment",
            "IDENTIFIED",
        ))
        .await;
    assert!(!allowed(&d));
    assert!(d.determining_policies.is_empty());
    assert!(!d.reasons.is_empty(), "a deny says why");
    // An unknown principal is a deny with a reason, never an allow or an error.
    let d = api
        .authorize(secondary("nobody", "p1", "research", "ANONYMIZED"))
        .await;
    assert!(!allowed(&d));
    assert!(
        d.reasons.iter().any(|r| r.contains("nobody")),
        "{:?}",
        d.reasons
    );
    server.stop().await;
}

#[tokio::test]
async fn rule_2_identified_and_pseudonymised_use_needs_covering_opt_in() {
    let (server, api) = setup().await;
    assert!(!allowed(
        &api.authorize(secondary("uni", "p2", "research", "PSEUDONYMIZED"))
            .await
    ));
    // Consent to the recipient's class covers a named university.
    api.grant(grant(
        "p2",
        &["research"],
        &["clinical"],
        &[],
        &["university"],
        "PSEUDONYMIZED",
    ))
    .await;
    assert!(allowed(
        &api.authorize(secondary("uni", "p2", "research", "PSEUDONYMIZED"))
            .await
    ));
    // The purpose hierarchy: a research consent covers a clinical trial.
    assert!(allowed(
        &api.authorize(secondary("uni", "p2", "clinical_trial", "PSEUDONYMIZED"))
            .await
    ));
    // Not more identifiable than consented.
    assert!(!allowed(
        &api.authorize(secondary("uni", "p2", "research", "IDENTIFIED"))
            .await
    ));
    // Not another recipient class, not another purpose.
    assert!(!allowed(
        &api.authorize(secondary("adco", "p2", "research", "PSEUDONYMIZED"))
            .await
    ));
    assert!(!allowed(
        &api.authorize(secondary("uni", "p2", "marketing", "PSEUDONYMIZED"))
            .await
    ));
    // A consent whose validity ended is not in force.
    let mut expired = grant(
        "p3",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    );
    expired.valid_from = "2020-01-01T00:00:00Z".into();
    expired.valid_until = "2021-01-01T00:00:00Z".into();
    api.grant(expired).await;
    assert!(!allowed(
        &api.authorize(secondary("uni", "p3", "research", "IDENTIFIED"))
            .await
    ));
    server.stop().await;
}

#[tokio::test]
async fn rule_3_anonymised_research_runs_on_opt_out_but_insurance_needs_opt_in() {
    let (server, api) = setup().await;
    let d = api
        .authorize(secondary("adco", "p4", "product_development", "ANONYMIZED"))
        .await;
    assert!(allowed(&d));
    assert_eq!(
        d.determining_policies,
        vec!["secondary-use.anonymized-opt-out".to_owned()]
    );
    api.consent()
        .record_opt_out(api.req(pb::RecordOptOutRequest {
            patient_id: "p4".into(),
            purposes: vec!["product_development".into()],
            replace: false,
        }))
        .await
        .unwrap();
    assert!(!allowed(
        &api.authorize(secondary("adco", "p4", "product_development", "ANONYMIZED"))
            .await
    ));
    // Still allowed for research, which was not opted out of.
    assert!(allowed(
        &api.authorize(secondary("adco", "p4", "research", "ANONYMIZED"))
            .await
    ));
    // Insurance with anonymised data and no opt-in: deny.
    assert!(!allowed(
        &api.authorize(secondary("insurer", "p5", "insurance", "ANONYMIZED"))
            .await
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_later_opt_out_adds_to_earlier_ones_and_only_replace_withdraws_them() {
    let (server, api) = setup().await;
    let opt_out = |purposes: &[&str], replace: bool| {
        api.req(pb::RecordOptOutRequest {
            patient_id: "p4".into(),
            purposes: purposes.iter().map(|p| (*p).into()).collect(),
            replace,
        })
    };
    let opted_out = || async {
        let state = api.consent_state("p4").await;
        let mut purposes: Vec<String> = state.opt_outs.into_iter().map(|o| o.purpose).collect();
        purposes.sort();
        purposes
    };
    let research = || secondary("adco", "p4", "research", "ANONYMIZED");
    let mut consent = api.consent();
    consent
        .record_opt_out(opt_out(&["research"], false))
        .await
        .unwrap();
    // A second, narrower call must not undo the first: research stays opted out.
    consent
        .record_opt_out(opt_out(&["product_development", "research"], false))
        .await
        .unwrap();
    assert_eq!(opted_out().await, ["product_development", "research"]);
    assert!(!allowed(&api.authorize(research()).await));
    consent
        .record_opt_out(opt_out(&["marketing"], false))
        .await
        .unwrap();
    assert_eq!(
        opted_out().await,
        ["marketing", "product_development", "research"]
    );
    // `replace` sets the list exactly; an empty one withdraws every opt-out.
    consent
        .record_opt_out(opt_out(&["marketing"], true))
        .await
        .unwrap();
    assert_eq!(opted_out().await, ["marketing"]);
    assert!(allowed(&api.authorize(research()).await));
    consent.record_opt_out(opt_out(&[], true)).await.unwrap();
    assert!(opted_out().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn rule_4_statistics_need_a_cohort_of_k_and_never_serve_marketing() {
    let (server, api) = setup().await;
    let stats = |purpose: &str, cohort: u64, patient: &str| pb::AuthorizeRequest {
        cohort_size: cohort,
        ..ask(
            "Organization",
            "uni",
            "export_statistics",
            patient,
            "lab_result",
            purpose,
            "STATISTICAL",
        )
    };
    assert!(!allowed(&api.authorize(stats("research", 9, "")).await));
    assert!(allowed(&api.authorize(stats("research", 10, "")).await));
    let d = api.authorize(stats("marketing", 1000, "")).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.determining_policies,
        vec!["statistics.no-marketing".to_owned()]
    );
    // An opted-out patient may not be counted.
    assert!(allowed(&api.authorize(stats("research", 0, "p6")).await));
    api.consent()
        .record_opt_out(api.req(pb::RecordOptOutRequest {
            patient_id: "p6".into(),
            purposes: vec!["research".into()],
            replace: false,
        }))
        .await
        .unwrap();
    assert!(!allowed(&api.authorize(stats("research", 0, "p6")).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_5_facility_disclosure_settings_override_consent() {
    let (server, api) = setup().await;
    api.directory()
        .upsert_facility_group(api.req(pb::UpsertFacilityGroupRequest {
            id: "grp".into(),
            excluded_departments: vec!["genetics".into()],
            excluded_patients: vec![],
        }))
        .await
        .unwrap();
    api.facility("hosp-a", "grp", &["psychiatry"], &["p8"])
        .await;
    for p in ["p7", "p8"] {
        api.grant(grant(
            p,
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED",
        ))
        .await;
    }
    let from = |patient: &str, department: &str| pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        source_department: department.into(),
        ..secondary("uni", patient, "research", "IDENTIFIED")
    };
    assert!(allowed(&api.authorize(from("p7", "internal")).await));
    // The facility excludes psychiatry.
    let d = api.authorize(from("p7", "psychiatry")).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.determining_policies,
        vec!["disclosure.excluded-department".to_owned()]
    );
    // The group excludes genetics, which reaches its member facility.
    assert!(!allowed(&api.authorize(from("p7", "genetics")).await));
    // The facility excludes patient p8 altogether.
    let d = api.authorize(from("p8", "internal")).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.determining_policies,
        vec!["disclosure.excluded-patient".to_owned()]
    );
    server.stop().await;
}

#[tokio::test]
async fn rule_6_clinical_viewing_across_facilities() {
    let (server, api) = setup().await;
    api.facility("hosp-a", "", &[], &[]).await;
    api.facility("hosp-b", "", &[], &[]).await;
    api.clinician("dr-b", "hosp-b", "internal", "doctor").await;
    api.clinician("im-a", "hosp-a", "records", "information_manager")
        .await;
    api.clinician("im-b", "hosp-b", "records", "information_manager")
        .await;
    let view = |who: &str, patient: &str| pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        ..ask(
            "Clinician",
            who,
            "view_record",
            patient,
            "diagnosis",
            "treatment",
            "IDENTIFIED",
        )
    };
    assert!(!allowed(&api.authorize(view("dr-b", "p9")).await));
    api.grant(grant(
        "p9",
        &["treatment"],
        &["clinical"],
        &["hosp-b"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    let d = api.authorize(view("dr-b", "p9")).await;
    assert!(allowed(&d), "{:?}", d.reasons);
    assert_eq!(
        d.determining_policies,
        vec!["ehr.inter-facility-consent".to_owned()]
    );
    // An information manager sees all of their own facility's records, not another's.
    assert!(allowed(&api.authorize(view("im-a", "p10")).await));
    assert!(!allowed(&api.authorize(view("im-b", "p10")).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_7_break_glass_only_during_a_declared_emergency_and_always_reviewed() {
    let (server, api) = setup().await;
    api.facility("hosp-a", "", &[], &[]).await;
    api.clinician("dr-a", "hosp-a", "er", "doctor").await;
    let glass = || pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        ..ask(
            "Clinician",
            "dr-a",
            "emergency_view",
            "p11",
            "diagnosis",
            "emergency",
            "IDENTIFIED",
        )
    };
    assert!(!allowed(&api.authorize(glass()).await));
    let set = |active: bool| {
        let api = api.clone();
        async move {
            api.directory()
                .set_emergency(api.req(pb::SetEmergencyRequest {
                    facility: "hosp-a".into(),
                    active,
                }))
                .await
                .unwrap();
        }
    };
    set(true).await;
    let d = api.authorize(glass()).await;
    assert!(allowed(&d));
    assert!(d.review_required);
    set(false).await;
    assert!(!allowed(&api.authorize(glass()).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_8_a_patient_may_view_their_own_records_only() {
    let (server, api) = setup().await;
    let own = ask(
        "Patient",
        "p12",
        "view_record",
        "p12",
        "diagnosis",
        "treatment",
        "IDENTIFIED",
    );
    let d = api.authorize(own).await;
    assert!(allowed(&d));
    assert_eq!(
        d.determining_policies,
        vec!["patient.own-records".to_owned()]
    );
    let other = ask(
        "Patient",
        "p12",
        "view_record",
        "p13",
        "diagnosis",
        "treatment",
        "IDENTIFIED",
    );
    assert!(!allowed(&api.authorize(other).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_9_a_revocation_takes_effect_for_every_later_decision_then_a_new_grant_counts() {
    let (server, api) = setup().await;
    let id = api
        .grant(grant(
            "p14",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED",
        ))
        .await;
    let q = || secondary("uni", "p14", "research", "IDENTIFIED");
    assert!(allowed(&api.authorize(q()).await));
    api.consent()
        .revoke_consent(api.req(pb::RevokeConsentRequest {
            patient_id: "p14".into(),
            consent_id: id,
        }))
        .await
        .unwrap();
    assert!(!allowed(&api.authorize(q()).await));
    api.grant(grant(
        "p14",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    assert!(allowed(&api.authorize(q()).await));
    server.stop().await;
}

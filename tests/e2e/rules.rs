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
    // A consent whose validity has not begun is not in force. (One that has already ended is
    // refused at the edge, see bad_input.rs; expiry itself is a policy scenario.)
    let mut later = grant(
        "p3",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    );
    later.valid_from = "2999-01-01T00:00:00Z".into();
    later.valid_until = "3000-01-01T00:00:00Z".into();
    api.grant(later).await;
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
            request_id: String::new(),
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
            request_id: String::new(),
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
            request_id: String::new(),
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
            request_id: String::new(),
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
                    request_id: String::new(),
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
    // About another patient the request is refused at the edge and not logged (see edge.rs).
    let refused = api.access().authorize(api.req(other)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
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
            request_id: String::new(),
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

// Issue 22: the rule corrections of the default set (docs/design.md §5).

#[tokio::test]
async fn rule_3_sensitive_categories_never_take_the_opt_out_path() {
    let (server, api) = setup().await;
    let anonymised = |category: &str| pb::AuthorizeRequest {
        data_category: category.into(),
        ..secondary("adco", "p20", "product_development", "ANONYMIZED")
    };
    assert!(allowed(&api.authorize(anonymised("lab_result")).await));
    for category in ["genomic", "mental_health"] {
        let d = api.authorize(anonymised(category)).await;
        assert!(!allowed(&d), "{category}");
        assert_eq!(
            d.determining_policies,
            vec!["secondary-use.sensitive-needs-opt-in".to_owned()]
        );
    }
    // An opt-in consent naming genomic data covers it.
    api.grant(grant(
        "p20",
        &["product_development"],
        &["genomic"],
        &["adco"],
        &[],
        "ANONYMIZED",
    ))
    .await;
    let d = api.authorize(anonymised("genomic")).await;
    assert!(allowed(&d), "{:?}", d.reasons);
    assert!(
        d.determining_policies
            .contains(&"secondary-use.opt-in-consent".to_owned()),
        "{:?}",
        d.determining_policies
    );
    // The consent names genomic data only.
    assert!(!allowed(&api.authorize(anonymised("mental_health")).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_2_a_later_opt_out_overrides_an_earlier_consent_and_a_later_consent_counts() {
    let (server, api) = setup().await;
    let opt_out = |purposes: &[&str]| {
        api.req(pb::RecordOptOutRequest {
            request_id: String::new(),
            patient_id: "p21".into(),
            purposes: purposes.iter().map(|p| (*p).into()).collect(),
            replace: true,
        })
    };
    let research = || secondary("uni", "p21", "research", "PSEUDONYMIZED");
    let trial = || secondary("uni", "p21", "clinical_trial", "PSEUDONYMIZED");
    api.grant(grant(
        "p21",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    assert!(allowed(&api.authorize(research()).await));
    let mut consent = api.consent();
    consent
        .record_opt_out(opt_out(&["research"]))
        .await
        .unwrap();
    // The opt-out is the later word: it covers research and clinical trials.
    assert!(!allowed(&api.authorize(research()).await));
    assert!(!allowed(&api.authorize(trial()).await));
    // A consent granted after it is in force for its own scope.
    api.grant(grant(
        "p21",
        &["clinical_trial"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    let d = api.authorize(trial()).await;
    assert!(allowed(&d), "{:?}", d.reasons);
    assert!(!allowed(&api.authorize(research()).await));
    // Adding an opt-out keeps research's where it was: the later consent stays in force.
    consent
        .record_opt_out(opt_out(&["research", "marketing"]))
        .await
        .unwrap();
    assert!(allowed(&api.authorize(trial()).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_2_a_consent_allows_every_less_identifiable_level() {
    let (server, api) = setup().await;
    api.grant(grant(
        "p22",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    for level in ["IDENTIFIED", "PSEUDONYMIZED", "ANONYMIZED", "STATISTICAL"] {
        let d = api
            .authorize(secondary("uni", "p22", "research", level))
            .await;
        assert!(allowed(&d), "{level}: {:?}", d.reasons);
        // At ANONYMIZED the opt-out rule allows research too; the consent does at every level.
        assert!(
            d.determining_policies
                .contains(&"secondary-use.opt-in-consent".to_owned()),
            "{level}: {:?}",
            d.determining_policies
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn rule_4_counting_one_patient_honours_disclosure_settings_and_k() {
    let (server, api) = setup().await;
    api.facility("hosp-a", "", &["psychiatry"], &["p23"]).await;
    let count = |patient: &str, department: &str, cohort: u64| pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        source_department: department.into(),
        cohort_size: cohort,
        ..ask(
            "Organization",
            "uni",
            "export_statistics",
            patient,
            "lab_result",
            "research",
            "STATISTICAL",
        )
    };
    assert!(allowed(&api.authorize(count("p24", "internal", 0)).await));
    let policies = |d: pb::AuthorizeResponse| d.determining_policies;
    assert_eq!(
        policies(api.authorize(count("p23", "internal", 0)).await),
        ["disclosure.excluded-patient"]
    );
    assert_eq!(
        policies(api.authorize(count("p24", "psychiatry", 0)).await),
        ["disclosure.excluded-department"]
    );
    assert_eq!(
        policies(api.authorize(count("p24", "internal", 9)).await),
        ["statistics.patient-cohort-below-k"]
    );
    assert!(allowed(&api.authorize(count("p24", "internal", 10)).await));
    server.stop().await;
}

#[tokio::test]
async fn rule_6_an_information_managers_view_has_a_purpose() {
    let (server, api) = setup().await;
    api.facility("hosp-a", "", &[], &[]).await;
    api.clinician("im-a", "hosp-a", "records", "information_manager")
        .await;
    let view = |purpose: &str| pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        ..ask(
            "Clinician",
            "im-a",
            "view_record",
            "p25",
            "diagnosis",
            purpose,
            "IDENTIFIED",
        )
    };
    for purpose in ["treatment", "emergency", "facility_operations"] {
        assert!(allowed(&api.authorize(view(purpose)).await), "{purpose}");
    }
    for purpose in ["marketing", "research", "insurance"] {
        assert!(!allowed(&api.authorize(view(purpose)).await), "{purpose}");
    }
    server.stop().await;
}

#[tokio::test]
async fn rule_7b_a_doctor_of_another_facility_may_view_in_an_emergency_unless_refused() {
    let (server, api) = setup().await;
    api.facility("hosp-a", "", &["psychiatry"], &[]).await;
    api.facility("hosp-b", "", &[], &[]).await;
    api.clinician("dr-b", "hosp-b", "er", "doctor").await;
    let glass = |patient: &str, department: &str, purpose: &str| pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        source_department: department.into(),
        ..ask(
            "Clinician",
            "dr-b",
            "emergency_view",
            patient,
            "diagnosis",
            purpose,
            "IDENTIFIED",
        )
    };
    // No emergency is declared anywhere, and no consent exists: the patient's life comes first.
    let d = api.authorize(glass("p26", "internal", "emergency")).await;
    assert!(allowed(&d), "{:?}", d.reasons);
    assert!(d.review_required);
    assert_eq!(
        d.determining_policies,
        vec!["break-glass.other-facility-emergency".to_owned()]
    );
    // Only for emergencies; the source facility's disclosure settings still apply.
    let d = api.authorize(glass("p26", "internal", "treatment")).await;
    assert_eq!(
        d.determining_policies,
        vec!["break-glass.emergency-purpose-only".to_owned()]
    );
    let d = api.authorize(glass("p26", "psychiatry", "emergency")).await;
    assert_eq!(
        d.determining_policies,
        vec!["disclosure.excluded-department".to_owned()]
    );
    // The patient's history shows the access prominently: flagged for review.
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("p26").await.unwrap();
    let flags: Vec<bool> = history.entries.iter().map(|e| e.review_required).collect();
    assert_eq!(flags, [true, false, false]);
    // A patient who refused emergency access by other facilities is not viewed.
    api.consent()
        .record_opt_out(api.req(pb::RecordOptOutRequest {
            request_id: String::new(),
            patient_id: "p27".into(),
            purposes: vec!["emergency".into()],
            replace: false,
        }))
        .await
        .unwrap();
    let d = api.authorize(glass("p27", "internal", "emergency")).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.determining_policies,
        vec!["break-glass.refused-by-patient".to_owned()]
    );
    server.stop().await;
}

/// Issue 22 item 13: a deny by default names the condition that failed, first among its reasons,
/// and the reason stays out of the public leaf.
#[tokio::test]
async fn a_deny_by_default_names_the_condition_that_failed() {
    let (server, api) = setup().await;
    api.grant(grant(
        "p2",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    let d = api
        .authorize(secondary("uni", "p2", "research", "IDENTIFIED"))
        .await;
    assert!(!allowed(&d));
    assert!(d.determining_policies.is_empty());
    assert_eq!(
        d.reasons,
        [
            "the patient's consent allows at most `PSEUDONYMIZED`, and `IDENTIFIED` was asked for",
            "no policy permits this request (deny by default)",
        ]
    );
    let leaf = String::from_utf8(d.receipt.unwrap().leaf).unwrap();
    assert!(leaf.contains("\ndecision DENY\n"), "{leaf}");
    assert!(!leaf.contains("at most"), "{leaf}");
    let d = api
        .authorize(secondary("insurer", "p2", "insurance", "ANONYMIZED"))
        .await;
    assert_eq!(
        d.reasons.first().map(String::as_str),
        Some("no consent of the patient covers the purpose `insurance`")
    );
    server.stop().await;
}

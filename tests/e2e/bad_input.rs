//! Bad input through the real server: each case gets the right status code and a message naming
//! what is wrong, and none appends anything to the log.

use akashi::auth::Role;
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, ask, grant},
    harness::{TestServer, expect_status as expect, with_token},
};

#[tokio::test]
async fn bad_input_is_refused_with_the_right_code_and_appends_nothing() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.facility("hosp-a", "", &[], &[]).await;
    let size = api.size().await;
    let mut cases = 0;
    let mut dir = api.directory();
    let mut consent = api.consent();
    let mut access = api.access();
    let mut policy = api.policy();
    let mut transparency = api.transparency();

    macro_rules! case {
        ($name:literal, $call:expr, $code:expr, $needle:literal) => {{
            expect($name, $call.await, $code, $needle);
            cases += 1;
        }};
    }

    let org = |id: &str, name: &str, class: &str| pb::UpsertOrganizationRequest {
        request_id: String::new(),
        id: id.into(),
        name: name.into(),
        recipient_class: class.into(),
    };
    case!(
        "missing id",
        dir.upsert_organization(api.req(org("", "X", "university"))),
        Code::InvalidArgument,
        "`id`"
    );
    case!(
        "id with a space",
        dir.upsert_organization(api.req(org("a b", "X", "university"))),
        Code::InvalidArgument,
        "`id`"
    );
    case!(
        "unknown class",
        dir.upsert_organization(api.req(org("o1", "X", "bank"))),
        Code::InvalidArgument,
        "`recipient_class`"
    );
    case!(
        "control character in name",
        dir.upsert_organization(api.req(org("o1", "a\u{7}b", "pharma"))),
        Code::InvalidArgument,
        "`name`"
    );
    case!(
        "unknown facility group",
        dir.upsert_facility(api.req(pb::UpsertFacilityRequest {
            id: "hosp-b".into(),
            name: "B".into(),
            group: "nope".into(),
            ..Default::default()
        })),
        Code::NotFound,
        "nope"
    );
    case!(
        "unknown clinician role",
        dir.upsert_clinician(api.req(pb::UpsertClinicianRequest {
            request_id: String::new(),
            id: "dr".into(),
            facility: "hosp-a".into(),
            department: "er".into(),
            role: "surgeon-general".into(),
        })),
        Code::InvalidArgument,
        "`role`"
    );
    case!(
        "emergency at an unknown facility",
        dir.set_emergency(api.req(pb::SetEmergencyRequest {
            request_id: String::new(),
            facility: "hosp-z".into(),
            active: true,
        })),
        Code::NotFound,
        "hosp-z"
    );
    case!(
        "grant without patient",
        consent.grant_consent(api.req(grant(
            "",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED"
        ))),
        Code::InvalidArgument,
        "`patient_id`"
    );
    case!(
        "patient id too long",
        consent.grant_consent(api.req(grant(
            &"x".repeat(300),
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED"
        ))),
        Code::InvalidArgument,
        "`patient_id`"
    );
    case!(
        "unknown purpose",
        consent.grant_consent(api.req(grant(
            "p",
            &["curiosity"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED"
        ))),
        Code::InvalidArgument,
        "`purposes`"
    );
    case!(
        "unknown level",
        consent.grant_consent(api.req(grant(
            "p",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "SECRET"
        ))),
        Code::InvalidArgument,
        "`max_level`"
    );
    let mut bad_time = grant(
        "p",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    );
    bad_time.valid_from = "yesterday".into();
    case!(
        "malformed valid_from",
        consent.grant_consent(api.req(bad_time)),
        Code::InvalidArgument,
        "`valid_from`"
    );
    let mut backwards = grant(
        "p",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    );
    backwards.valid_from = "2030-01-01T00:00:00Z".into();
    backwards.valid_until = "2029-01-01T00:00:00Z".into();
    case!(
        "validity ends before it starts",
        consent.grant_consent(api.req(backwards)),
        Code::InvalidArgument,
        "valid"
    );
    case!(
        "no recipient at all",
        consent.grant_consent(api.req(grant(
            "p",
            &["research"],
            &["clinical"],
            &[],
            &[],
            "IDENTIFIED"
        ))),
        Code::InvalidArgument,
        "recipient"
    );
    let many: Vec<&str> = std::iter::repeat_n("research", 17).collect();
    case!(
        "too many purposes",
        consent.grant_consent(api.req(grant(
            "p",
            &many,
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED"
        ))),
        Code::InvalidArgument,
        "`purposes`"
    );
    case!(
        "revoke an unknown consent",
        consent.revoke_consent(api.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "p".into(),
            consent_id: "c_0000".into(),
        })),
        Code::NotFound,
        "c_0000"
    );
    case!(
        "revoke without consent id",
        consent.revoke_consent(api.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "p".into(),
            consent_id: String::new(),
        })),
        Code::InvalidArgument,
        "`consent_id`"
    );
    case!(
        "authorize without principal",
        access.authorize(api.req(pb::AuthorizeRequest {
            principal: None,
            ..ask(
                "Organization",
                "uni",
                "secondary_use",
                "p",
                "lab_result",
                "research",
                "ANONYMIZED"
            )
        })),
        Code::InvalidArgument,
        "`principal`"
    );
    case!(
        "unknown principal type",
        access.authorize(api.req(ask(
            "Robot",
            "uni",
            "secondary_use",
            "p",
            "lab_result",
            "research",
            "ANONYMIZED"
        ))),
        Code::InvalidArgument,
        "`principal.type`"
    );
    case!(
        "unknown action",
        access.authorize(api.req(ask(
            "Organization",
            "uni",
            "sell",
            "p",
            "lab_result",
            "research",
            "ANONYMIZED"
        ))),
        Code::InvalidArgument,
        "`action`"
    );
    case!(
        "secondary use without a patient",
        access.authorize(api.req(ask(
            "Organization",
            "uni",
            "secondary_use",
            "",
            "lab_result",
            "research",
            "ANONYMIZED"
        ))),
        Code::InvalidArgument,
        "`patient_id` is required"
    );
    case!(
        "cohort statistics without a cohort size",
        access.authorize(api.req(ask(
            "Organization",
            "uni",
            "export_statistics",
            "",
            "lab_result",
            "research",
            "STATISTICAL"
        ))),
        Code::InvalidArgument,
        "`cohort_size` is required"
    );
    case!(
        "missing level",
        access.authorize(api.req(ask(
            "Organization",
            "uni",
            "secondary_use",
            "p",
            "lab_result",
            "research",
            ""
        ))),
        Code::InvalidArgument,
        "`level`"
    );
    case!(
        "invalid policy set",
        policy.activate_policy_set(api.req(pb::ActivatePolicySetRequest {
            request_id: String::new(),
            policies: "permit (principal, action, resource) when { context.nope };".into(),
        })),
        Code::InvalidArgument,
        "`policies`"
    );
    case!(
        "empty policy set",
        policy.activate_policy_set(api.req(pb::ActivatePolicySetRequest {
            request_id: String::new(),
            policies: "  ".into(),
        })),
        Code::InvalidArgument,
        "`policies`"
    );
    case!(
        "inclusion proof beyond the tree",
        transparency.get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf_index: 0,
            tree_size: 1_000_000,
        }),
        Code::OutOfRange,
        "`tree_size`"
    );
    case!(
        "consistency proof with old > new",
        transparency.get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: 3,
            new_size: 2,
        }),
        Code::InvalidArgument,
        "`old_size`"
    );
    case!(
        "consistency proof beyond the tree",
        transparency.get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: 1,
            new_size: 1_000_000,
        }),
        Code::OutOfRange,
        "`new_size`"
    );
    case!(
        "too many leaves at once",
        transparency.get_leaves(pb::GetLeavesRequest {
            start: 0,
            count: 5000
        }),
        Code::InvalidArgument,
        "`count`"
    );
    case!(
        "leaves beyond the tree",
        transparency.get_leaves(pb::GetLeavesRequest {
            start: 1_000_000,
            count: 1
        }),
        Code::OutOfRange,
        "`start`"
    );
    // Lists whose items are each fine but which, joined as the public leaf shows them, are
    // longer than a leaf value may be.
    let departments: Vec<String> = (0..40).map(|i| format!("dept-{i:02}")).collect();
    case!(
        "excluded departments too long together for the leaf",
        dir.upsert_facility(api.req(pb::UpsertFacilityRequest {
            id: "hosp-a".into(),
            name: "A".into(),
            excluded_departments: departments,
            ..Default::default()
        })),
        Code::InvalidArgument,
        "`excluded_departments` is too long for the public log entry"
    );
    let recipients: Vec<String> = (0..12)
        .map(|i| format!("organisation-{i:02}-xxxxxxxx"))
        .collect();
    let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
    case!(
        "consent recipients too long together for the leaf",
        consent.grant_consent(api.req(grant(
            "p1",
            &["research"],
            &["clinical"],
            &recipients,
            &[],
            "IDENTIFIED"
        ))),
        Code::InvalidArgument,
        "`recipients` is too long for the public log entry"
    );
    case!(
        "opt-out without purposes",
        consent.record_opt_out(api.req(pb::RecordOptOutRequest {
            request_id: String::new(),
            patient_id: "p1".into(),
            purposes: Vec::new(),
            replace: false,
        })),
        Code::InvalidArgument,
        "`purposes` is required"
    );
    case!(
        "no token",
        dir.upsert_organization(org("o2", "X", "pharma")),
        Code::Unauthenticated,
        ""
    );
    case!(
        "garbage token",
        dir.upsert_organization(with_token(org("o2", "X", "pharma"), "not-a-jwt")),
        Code::Unauthenticated,
        ""
    );
    let huge = pb::ActivatePolicySetRequest {
        request_id: String::new(),
        policies: "x".repeat(2 * 1024 * 1024),
    };
    expect(
        "oversized message",
        policy.activate_policy_set(api.req(huge)).await,
        Code::ResourceExhausted,
        "more than the limit of 1048576",
    );
    cases += 1;

    assert!(cases >= 15, "{cases} cases");
    assert_eq!(
        api.size().await,
        size,
        "a refused request appended something"
    );
    server.stop().await;
}

//! Outside input that used to take the server down: policy text that nests too deep or chains
//! too long for Cedar's recursive parser (a stack overflow aborts the process), and consent
//! times past the year 9999 once converted to UTC (a panic in the request). Each is refused with
//! `INVALID_ARGUMENT` naming the limit or field, and the same server keeps serving.

use akashi::auth::Role;
use policy::limits::{MAX_EXPRESSION_TERMS, MAX_NESTING};
use proto::pb;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    api::{Api, allowed, ask, grant},
    harness::{TestServer, expect_status},
};

/// A statistics permit whose `when` clause is `condition`.
fn policy(condition: &str) -> String {
    format!(
        "@id(\"p3\")\n@reason(\"r\")\npermit (principal, action == Action::\"export_statistics\", resource)\nwhen {{ {condition} }};\n"
    )
}

/// The bombs of the hardening issue, each under the 1 MiB message limit, with the limit each one
/// breaks (the `==` of the action scope is one term too).
fn bombs() -> Vec<(&'static str, String, String)> {
    let nesting =
        |found: usize| format!("policy `p3` nests brackets {found} deep, at most {MAX_NESTING}");
    let terms = |found: usize| {
        format!("policy `p3` has {found} operators and keywords, at most {MAX_EXPRESSION_TERMS}")
    };
    vec![
        (
            "160 nested parentheses",
            policy(&format!("{}true{}", "(".repeat(160), ")".repeat(160))),
            nesting(161),
        ),
        (
            "sets nested 200 deep",
            policy(&format!(
                "{}1{}.contains(1)",
                "[".repeat(200),
                "]".repeat(200)
            )),
            nesting(201),
        ),
        (
            "2,000 nested if-then",
            policy(&format!(
                "{}true{}",
                "if true then ".repeat(2000),
                " else false".repeat(2000)
            )),
            terms(6001),
        ),
        (
            "a 60,000-term sum",
            policy(&format!("{} > 0", vec!["1"; 60_000].join("+"))),
            terms(60_001),
        ),
    ]
}

/// The server still decides and reports itself healthy.
async fn still_serving(server: &TestServer, api: &Api) {
    let decision = api
        .authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "p",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    assert!(allowed(&decision), "{decision:?}");
    let health = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
}

async fn world(server: &TestServer) -> Api {
    let api = Api::new(server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "p",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    api
}

fn expect_invalid<T: std::fmt::Debug>(case: &str, result: Result<T, tonic::Status>, needle: &str) {
    expect_status(case, result, Code::InvalidArgument, needle);
}

#[tokio::test]
async fn policy_bombs_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let api = world(&server).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    still_serving(&server, &api).await;
    for (case, text, limit) in bombs() {
        let size = api.size().await;
        assert!(text.len() < 1024 * 1024, "{case}: {} bytes", text.len());
        let validated = regulator
            .policy()
            .validate_policy_set(regulator.req(pb::ValidatePolicySetRequest {
                policies: text.clone(),
            }))
            .await;
        expect_invalid(case, validated, &limit);
        let activated = api
            .policy()
            .activate_policy_set(api.req(pb::ActivatePolicySetRequest {
                request_id: String::new(),
                policies: text,
            }))
            .await;
        expect_invalid(case, activated, &limit);
        assert_eq!(api.size().await, size, "{case}: nothing was appended");
        still_serving(&server, &api).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn policies_at_the_limits_activate_and_decide() {
    let server = TestServer::start().await;
    let api = world(&server).await;
    let parens = format!(
        "{}true{}",
        "(".repeat(MAX_NESTING - 1),
        ")".repeat(MAX_NESTING - 1)
    );
    // `==` in the scope, `>` and the `+`s: exactly the limit.
    let sum = format!("{} > 0", vec!["1"; MAX_EXPRESSION_TERMS - 1].join(" + "));
    for condition in [parens, sum] {
        let text = policy(&condition);
        let validated = api
            .policy()
            .validate_policy_set(api.req(pb::ValidatePolicySetRequest {
                policies: text.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(validated.valid, "{:?}", validated.errors);
        api.policy()
            .activate_policy_set(api.req(pb::ActivatePolicySetRequest {
                request_id: String::new(),
                policies: text,
            }))
            .await
            .unwrap();
        let mut stats = ask(
            "Organization",
            "uni",
            "export_statistics",
            "",
            "lab_result",
            "research",
            "STATISTICAL",
        );
        stats.cohort_size = 50;
        let decision = api.authorize(stats).await;
        assert!(allowed(&decision), "{decision:?}");
        assert_eq!(decision.determining_policies, vec!["p3"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn consent_times_past_year_9999_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let api = world(&server).await;
    let late = "9999-12-31T23:59:59-00:01";
    for field in ["valid_from", "valid_until"] {
        let mut request = grant(
            "p",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "PSEUDONYMIZED",
        );
        match field {
            "valid_from" => request.valid_from = late.into(),
            _ => request.valid_until = late.into(),
        }
        let size = api.size().await;
        let result = api.consent().grant_consent(api.req(request)).await;
        expect_invalid(field, result, &format!("`{field}`"));
        assert_eq!(api.size().await, size, "{field}: nothing was appended");
        still_serving(&server, &api).await;
    }
    // The last instant of 9999 in UTC, written with an offset, is still accepted.
    let mut edge = grant(
        "p",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    );
    edge.valid_until = "9999-12-31T23:59:59+01:00".into();
    let size = api.size().await;
    api.grant(edge).await;
    assert_eq!(api.size().await, size + 1);
    server.stop().await;
}

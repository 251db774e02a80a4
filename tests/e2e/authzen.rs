//! The OpenID AuthZEN 1.0 API against a running server: the spec's request shapes in akashi's
//! vocabulary, answered exactly as `Authorize` answers (and logged as one), with the same tokens
//! and roles; batches with each `evaluations_semantic`; the metadata document; bad bodies.

use std::net::SocketAddr;

use crate::{
    api::{Api, grant},
    harness::{TestServer, exchange},
};
use akashi::auth::Role;
use serde_json::{Value, json};

/// One HTTP/1.1 exchange: status and body as JSON (or `Null` when the body is not JSON).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let answer = exchange(addr, method, path, token, "application/json", body).await;
    (answer.status, answer.body)
}

fn evaluation(org: &str, patient: &str, purpose: &str) -> Value {
    json!({
        "subject": { "type": "organization", "id": org },
        "action": { "name": "secondary_use" },
        "resource": {
            "type": "patient",
            "id": patient,
            "properties": { "data_category": "lab_result" }
        },
        "context": { "purpose": purpose, "level": "PSEUDONYMIZED" }
    })
}

#[tokio::test]
async fn authzen_evaluations_are_authorize_decisions_logged_the_same_way() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "alice",
        &["research"],
        &["lab_result"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    let token = server.token(Role::Platform, None);
    let addr = server.authzen_addr;

    // One evaluation: allowed, with the reasons and a receipt of the logged decision.
    let before = api.size().await;
    let (status, answer) = call(
        addr,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        &evaluation("uni", "alice", "research").to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], true, "{answer}");
    let receipt = &answer["context"]["receipt"];
    assert_eq!(receipt["leaf_index"], before);
    assert_eq!(
        api.size().await,
        before + 1,
        "logged exactly as an Authorize is"
    );
    assert!(
        receipt["checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("akashi.dev/log\n")
    );
    assert!(
        !answer["context"]["determining_policies"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The same question through gRPC gets the same answer.
    let grpc = api
        .authorize(crate::api::ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    assert!(crate::api::allowed(&grpc));
    let (_, denied) = call(
        addr,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        &evaluation("uni", "bob", "research").to_string(),
    )
    .await;
    assert_eq!(denied["decision"], false, "{denied}");
    assert!(!denied["context"]["reasons"].as_array().unwrap().is_empty());

    // Tokens and roles as for gRPC: none is 401, a patient's is 403.
    let body = evaluation("uni", "alice", "research").to_string();
    let (status, _) = call(addr, "POST", "/access/v1/evaluation", None, &body).await;
    assert_eq!(status, 401);
    let patient = server.token(Role::Patient, Some("alice"));
    let (status, refused) =
        call(addr, "POST", "/access/v1/evaluation", Some(&patient), &body).await;
    assert_eq!(status, 403, "{refused}");
    // Bad bodies are 400 naming the field.
    let (status, bad) = call(
        addr,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        r#"{"subject":{"type":"organization","id":"uni"}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("action"), "{bad}");
    let mut wrong = evaluation("uni", "alice", "research");
    wrong["subject"]["type"] = json!("robot");
    let (status, bad) = call(
        addr,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        &wrong.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        bad["error"].as_str().unwrap().contains("subject.type"),
        "{bad}"
    );
    let mut wrong = evaluation("uni", "alice", "research");
    wrong["context"]["level"] = json!("SECRET");
    let (status, bad) = call(
        addr,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        &wrong.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("level"), "{bad}");
    let size = api.size().await;

    // Batches: defaults from the request, items override; each semantic stops where it says.
    let batch = |semantic: &str| {
        json!({
            "subject": { "type": "organization", "id": "uni" },
            "action": { "name": "secondary_use" },
            "context": { "purpose": "research", "level": "PSEUDONYMIZED" },
            "evaluations": [
                { "resource": { "type": "patient", "id": "bob", "properties": { "data_category": "lab_result" } } },
                { "resource": { "type": "patient", "id": "alice", "properties": { "data_category": "lab_result" } } },
                { "resource": { "type": "patient", "id": "carol", "properties": { "data_category": "lab_result" } } }
            ],
            "options": { "evaluations_semantic": semantic }
        })
        .to_string()
    };
    let decisions = |answer: &Value| -> Vec<bool> {
        answer["evaluations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"].as_bool().unwrap())
            .collect()
    };
    let (status, all) = call(
        addr,
        "POST",
        "/access/v1/evaluations",
        Some(&token),
        &batch("execute_all"),
    )
    .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(decisions(&all), [false, true, false]);
    let (_, first_deny) = call(
        addr,
        "POST",
        "/access/v1/evaluations",
        Some(&token),
        &batch("deny_on_first_deny"),
    )
    .await;
    assert_eq!(decisions(&first_deny), [false]);
    let (_, first_permit) = call(
        addr,
        "POST",
        "/access/v1/evaluations",
        Some(&token),
        &batch("permit_on_first_permit"),
    )
    .await;
    assert_eq!(decisions(&first_permit), [false, true]);
    assert_eq!(
        api.size().await,
        size + 3 + 1 + 2,
        "every evaluation made is logged"
    );
    // An item that cannot be asked is a deny that says why; the others are still decided.
    let partly = json!({
        "subject": { "type": "organization", "id": "uni" },
        "evaluations": [
            { "action": { "name": "secondary_use" }, "resource": { "type": "patient", "id": "alice", "properties": { "data_category": "lab_result" } }, "context": { "purpose": "research", "level": "PSEUDONYMIZED" } },
            { "resource": { "type": "patient", "id": "alice" } }
        ]
    });
    let (status, partly) = call(
        addr,
        "POST",
        "/access/v1/evaluations",
        Some(&token),
        &partly.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{partly}");
    assert_eq!(decisions(&partly), [true, false]);
    assert_eq!(partly["evaluations"][1]["context"]["error"]["status"], 400);

    // Where the endpoints are.
    let (status, metadata) =
        call(addr, "GET", "/.well-known/authzen-configuration", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        metadata["access_evaluation_endpoint"],
        format!("http://{addr}/access/v1/evaluation")
    );
    server.stop().await;
}

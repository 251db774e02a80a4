//! The OpenID AuthZEN 1.0 Authorization API (openid.net/specs/authorization-api-1_0): JSON over
//! HTTP on an address of its own (`--authzen-addr`, off unless set), for clients that speak the
//! standard rather than akashi's gRPC.
//!
//! `POST /access/v1/evaluation` asks one question, `POST /access/v1/evaluations` several (with
//! `options.evaluations_semantic`: `execute_all`, `deny_on_first_deny`, `permit_on_first_permit`),
//! and `GET /.well-known/authzen-configuration` says where they are. Each evaluation is mapped
//! onto an `Authorize` request and answered by the very same code path as the gRPC call
//! ([`Access`]'s `authorize`): the same bearer tokens and roles, the same parsing, the same
//! decision, logged exactly as an `Authorize` is, with its reasons and receipt (leaf index, tree
//! size, checkpoint) in the answer's `context`.
//!
//! Mapping: `subject.type` `organization` / `clinician` / `patient` and `subject.id` → the
//! principal; `action.name` → the action; `resource.type` must be `patient`, `resource.id` is
//! the patient id (empty for statistics over a cohort), `resource.properties` `data_category`,
//! `source_facility`, `source_department`; `context` `purpose`, `level`, `cohort_size`.
//! A body that is not such JSON is `400` with serde's message, which names the field; no token
//! is `401`; a role that may not ask is `403`.

use std::time::SystemTime;

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use proto::pb::{self, access_service_server::AccessService};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Code;

use crate::auth::{Caller, Method, TokenVerifier};
use crate::service::{Core, access::Access};

/// The largest request body read, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// The most evaluations in one `evaluations` request.
pub const MAX_EVALUATIONS: usize = 1_000;

/// What the AuthZEN routes share.
#[derive(Clone)]
struct AuthZen {
    access: std::sync::Arc<Access>,
    verifier: TokenVerifier,
}

/// The AuthZEN routes over `core`, authenticating with `verifier`.
pub fn router(core: Core, verifier: TokenVerifier) -> Router {
    Router::new()
        .route("/access/v1/evaluation", post(evaluation))
        .route("/access/v1/evaluations", post(evaluations))
        .route("/.well-known/authzen-configuration", get(configuration))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AuthZen {
            access: std::sync::Arc::new(Access(core)),
            verifier,
        })
}

/// `subject`.
#[derive(Debug, Clone, Deserialize)]
struct Subject {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

/// `action`.
#[derive(Debug, Clone, Deserialize)]
struct Action {
    name: String,
}

/// `resource`.
#[derive(Debug, Clone, Deserialize)]
struct Resource {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    properties: ResourceProperties,
}

/// `resource.properties`.
#[derive(Debug, Clone, Default, Deserialize)]
struct ResourceProperties {
    #[serde(default)]
    data_category: String,
    #[serde(default)]
    source_facility: String,
    #[serde(default)]
    source_department: String,
}

/// `context`.
#[derive(Debug, Clone, Default, Deserialize)]
struct Context {
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    cohort_size: Option<u64>,
}

/// One evaluation: every part given.
#[derive(Debug, Clone, Deserialize)]
struct Evaluation {
    subject: Subject,
    action: Action,
    resource: Resource,
    #[serde(default)]
    context: Option<Context>,
}

/// One item of `evaluations`: parts it leaves out come from the request's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
struct Partial {
    subject: Option<Subject>,
    action: Option<Action>,
    resource: Option<Resource>,
    context: Option<Context>,
}

/// `evaluations`: defaults, items and options.
#[derive(Debug, Clone, Deserialize)]
struct Evaluations {
    #[serde(flatten)]
    defaults: Partial,
    #[serde(default)]
    evaluations: Vec<Partial>,
    #[serde(default)]
    options: Options,
}

/// `options`.
#[derive(Debug, Clone, Default, Deserialize)]
struct Options {
    #[serde(default)]
    evaluations_semantic: Semantic,
}

/// How a batch of evaluations runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Semantic {
    /// Every item, in order.
    #[default]
    ExecuteAll,
    /// Stop after the first deny.
    DenyOnFirstDeny,
    /// Stop after the first permit.
    PermitOnFirstPermit,
}

/// A JSON answer.
fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// An error answer: the status and `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

/// The HTTP status of a refused `Authorize`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl AuthZen {
    /// The caller of a request, or why it is `401`.
    async fn caller(&self, headers: &HeaderMap) -> Result<Caller, String> {
        let mut caller = self
            .verifier
            .authenticate_refreshing(headers.get(header::AUTHORIZATION), SystemTime::now())
            .await
            .map_err(|err| err.to_string())?;
        caller.method = Method::from_path("/akashi.v1.AccessService/Authorize");
        Ok(caller)
    }

    /// Decides one evaluation through `Authorize`: `(decision, context)` or the refusal.
    async fn decide(
        &self,
        caller: &Caller,
        evaluation: Evaluation,
    ) -> Result<(bool, Value), (StatusCode, String)> {
        let request = authorize_request(evaluation).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
        let mut request = tonic::Request::new(request);
        request.extensions_mut().insert(caller.clone());
        let answer = self
            .access
            .authorize(request)
            .await
            .map_err(|status| (http_status(status.code()), status.message().to_owned()))?
            .into_inner();
        let allowed = answer.decision == i32::from(pb::Decision::Allow);
        let receipt = answer.receipt.unwrap_or_default();
        Ok((
            allowed,
            json!({
                "reasons": answer.reasons,
                "determining_policies": answer.determining_policies,
                "review_required": answer.review_required,
                "receipt": {
                    "leaf_index": receipt.leaf_index,
                    "tree_size": receipt.tree_size,
                    "checkpoint": receipt.checkpoint,
                },
            }),
        ))
    }
}

/// The `Authorize` request an evaluation asks, or what is wrong with it (naming the field).
fn authorize_request(evaluation: Evaluation) -> Result<pb::AuthorizeRequest, String> {
    let principal_type = match evaluation.subject.kind.as_str() {
        "organization" => "Organization",
        "clinician" => "Clinician",
        "patient" => "Patient",
        other => {
            return Err(format!(
                "`subject.type` must be `organization`, `clinician` or `patient`, not `{}`",
                other.chars().take(64).collect::<String>()
            ));
        }
    };
    if evaluation.resource.kind != "patient" {
        return Err("`resource.type` must be `patient`".to_owned());
    }
    let context = evaluation.context.unwrap_or_default();
    let properties = evaluation.resource.properties;
    Ok(pb::AuthorizeRequest {
        principal: Some(pb::Principal {
            r#type: principal_type.to_owned(),
            id: evaluation.subject.id,
        }),
        action: evaluation.action.name,
        patient_id: evaluation.resource.id,
        data_category: properties.data_category,
        source_facility: properties.source_facility,
        source_department: properties.source_department,
        purpose: context.purpose,
        level: context.level,
        cohort_size: context.cohort_size.unwrap_or(0),
    })
}

/// Parses a JSON body; the error is serde's message, which names the field.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| err.to_string())
}

async fn evaluation(
    State(authzen): State<AuthZen>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = match authzen.caller(&headers).await {
        Ok(caller) => caller,
        Err(message) => return error(StatusCode::UNAUTHORIZED, message),
    };
    let evaluation: Evaluation = match parse(&body) {
        Ok(evaluation) => evaluation,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match authzen.decide(&caller, evaluation).await {
        Ok((decision, context)) => json_response(
            StatusCode::OK,
            &json!({ "decision": decision, "context": context }),
        ),
        Err((status, message)) => error(status, message),
    }
}

async fn evaluations(
    State(authzen): State<AuthZen>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let caller = match authzen.caller(&headers).await {
        Ok(caller) => caller,
        Err(message) => return error(StatusCode::UNAUTHORIZED, message),
    };
    let request: Evaluations = match parse(&body) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if request.evaluations.len() > MAX_EVALUATIONS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`evaluations` holds more than {MAX_EVALUATIONS} items"),
        );
    }
    let items = if request.evaluations.is_empty() {
        // No items: the request itself is the one evaluation.
        vec![Partial::default()]
    } else {
        request.evaluations
    };
    let defaults = request.defaults;
    let semantic = request.options.evaluations_semantic;
    let merged: Vec<Result<Evaluation, (StatusCode, String)>> = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            match (
                item.subject.or_else(|| defaults.subject.clone()),
                item.action.or_else(|| defaults.action.clone()),
                item.resource.or_else(|| defaults.resource.clone()),
            ) {
                (Some(subject), Some(action), Some(resource)) => Ok(Evaluation {
                    subject,
                    action,
                    resource,
                    context: item.context.or_else(|| defaults.context.clone()),
                }),
                (None, _, _) => Err(format!("`evaluations[{i}].subject` is missing")),
                (_, None, _) => Err(format!("`evaluations[{i}].action` is missing")),
                (_, _, None) => Err(format!("`evaluations[{i}].resource` is missing")),
            }
            .map_err(|message| (StatusCode::BAD_REQUEST, message))
        })
        .collect();
    let answer = |outcome: Result<(bool, Value), (StatusCode, String)>| match outcome {
        Ok((decision, context)) => (
            decision,
            json!({ "decision": decision, "context": context }),
        ),
        // A refused item is a deny that says why (AuthZEN 1.0 §7.2.2).
        Err((status, message)) => (
            false,
            json!({
                "decision": false,
                "context": { "error": { "status": status.as_u16(), "message": message } },
            }),
        ),
    };
    let mut answers = Vec::with_capacity(merged.len());
    match semantic {
        // Every item is decided: all at once, so that they share the sequencer's batches (one
        // durable commit for many decisions) rather than wait for one commit each; answers
        // keep the items' order.
        Semantic::ExecuteAll => {
            let decided = futures::future::join_all(merged.into_iter().map(|item| {
                let (authzen, caller) = (&authzen, &caller);
                async move {
                    match item {
                        Ok(evaluation) => authzen.decide(caller, evaluation).await,
                        Err(refused) => Err(refused),
                    }
                }
            }))
            .await;
            answers.extend(decided.into_iter().map(|outcome| answer(outcome).1));
        }
        // Short-circuiting semantics decide one item after another: no decision past the stop
        // is made, or logged.
        Semantic::DenyOnFirstDeny | Semantic::PermitOnFirstPermit => {
            for item in merged {
                let outcome = match item {
                    Ok(evaluation) => authzen.decide(&caller, evaluation).await,
                    Err(refused) => Err(refused),
                };
                let (decision, json) = answer(outcome);
                answers.push(json);
                let stop = match semantic {
                    Semantic::DenyOnFirstDeny => !decision,
                    Semantic::PermitOnFirstPermit => decision,
                    Semantic::ExecuteAll => false,
                };
                if stop {
                    break;
                }
            }
        }
    }
    json_response(StatusCode::OK, &json!({ "evaluations": answers }))
}

/// The PDP metadata (AuthZEN 1.0 §9): where the endpoints are, on the host the client used.
async fn configuration(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let base = format!("http://{host}");
    json_response(
        StatusCode::OK,
        &json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        }),
    )
}

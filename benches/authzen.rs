//! AuthZEN `evaluations` against the same decisions through gRPC: 100-item batches through
//! `POST /access/v1/evaluations` (`execute_all`), beside 100 `Authorize` calls over one gRPC
//! channel, all at once and one after another — the real server in-process (sled in a temp dir,
//! loopback), one run.
//!
//! Setup: the default policy set, one university, research consents for 1,000 patients. Each
//! measured round asks about 100 patients (half with a consent, half without, so allows and
//! denies are logged alike); every decision is logged as an entry either way. Prints the time per
//! 100 decisions (p50, p99) and decisions per second for each way.
//!
//! ```sh
//! cargo bench -p akashi --bench authzen   # AKASHI_AUTHZEN_ROUNDS=N (default 100)
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs,
    reason = "benchmark code"
)]

use std::time::{Duration, Instant};

use akashi::{auth::Role, config::Config, server::Server};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use proto::pb::{
    self, access_service_client::AccessServiceClient, consent_service_client::ConsentServiceClient,
    directory_service_client::DirectoryServiceClient,
};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

const BATCH: u64 = 100;

fn req<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn ask(patient: u64) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        principal: Some(pb::Principal {
            r#type: "Organization".into(),
            id: "univ-a".into(),
        }),
        action: "secondary_use".into(),
        patient_id: format!("patient-{patient}"),
        data_category: "lab_result".into(),
        purpose: "research".into(),
        level: "PSEUDONYMIZED".into(),
        ..Default::default()
    }
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what:<40} per 100: p50 {:>9.2?} p99 {:>9.2?}   {:>7.0} decisions/s",
        p(0.5),
        p(0.99),
        (times.len() as u64 * BATCH) as f64 / total.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: u64 = std::env::var("AKASHI_AUTHZEN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authzen = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authzen_addr = authzen.local_addr().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        grpc_addr: grpc.local_addr().unwrap(),
        http_addr: http.local_addr().unwrap(),
        authzen_addr: Some(authzen_addr),
        ..Config::default()
    };
    let data_dir = config.data_dir.clone();
    let mut server = Server::open(config).unwrap();
    server.serve_authzen(authzen);
    let grpc_addr = grpc.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(grpc, http, async {
        let _ = stop_rx.await;
    }));
    let token =
        akashi::keys::mint_token(&data_dir, Role::Platform, None, Duration::from_secs(3600))
            .unwrap();
    let channel: Channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    DirectoryServiceClient::new(channel.clone())
        .upsert_organization(req(
            pb::UpsertOrganizationRequest {
                id: "univ-a".into(),
                name: "University A".into(),
                recipient_class: "university".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    for patient in 0..1000 {
        ConsentServiceClient::new(channel.clone())
            .grant_consent(req(
                pb::GrantConsentRequest {
                    patient_id: format!("patient-{patient}"),
                    purposes: vec!["research".into()],
                    data_categories: vec!["lab_result".into()],
                    recipients: vec!["univ-a".into()],
                    max_level: "PSEUDONYMIZED".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap();
    }

    // AuthZEN: one keep-alive HTTP/1.1 connection, one request of 100 items per round.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{authzen_addr}/access/v1/evaluations");
    let mut times = Vec::new();
    for round in 0..rounds {
        let evaluations: Vec<_> = (0..BATCH)
            .map(|i| {
                json!({"resource": {"type": "patient", "id": format!("patient-{}", (round * BATCH + i) % 2000),
                    "properties": {"data_category": "lab_result"}}})
            })
            .collect();
        let body = json!({
            "subject": {"type": "organization", "id": "univ-a"},
            "action": {"name": "secondary_use"},
            "context": {"purpose": "research", "level": "PSEUDONYMIZED"},
            "evaluations": evaluations,
        })
        .to_string();
        let request = http::Request::post(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let started = Instant::now();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        times.push(started.elapsed());
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answer["evaluations"].as_array().unwrap().len(),
            BATCH as usize
        );
    }
    report("AuthZEN evaluations (100 items)", times);

    // gRPC: the same 100 questions, all in flight at once on one channel.
    let mut times = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let calls = (0..BATCH).map(|i| {
            let mut access = AccessServiceClient::new(channel.clone());
            let token = token.clone();
            async move {
                access
                    .authorize(req(ask((round * BATCH + i) % 2000), &token))
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(calls).await;
        times.push(started.elapsed());
    }
    report("gRPC Authorize x100, concurrent", times);

    // gRPC, one after another (what a naive loop does).
    let mut times = Vec::new();
    let mut access = AccessServiceClient::new(channel.clone());
    for round in 0..rounds.min(20) {
        let started = Instant::now();
        for i in 0..BATCH {
            access
                .authorize(req(ask((round * BATCH + i) % 2000), &token))
                .await
                .unwrap();
        }
        times.push(started.elapsed());
    }
    report("gRPC Authorize x100, one by one", times);

    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

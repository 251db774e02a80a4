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
    unreachable_pub,
    reason = "benchmark code"
)]

use std::time::{Duration, Instant};

use akashi::auth::Role;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use proto::pb::access_service_client::AccessServiceClient;
use serde_json::json;

#[allow(
    dead_code,
    reason = "shared by the gRPC-path benchmarks; each uses part"
)]
mod support;

use support::{Running, env_number, req, research, research_consent, university};

const BATCH: u64 = 100;

fn ask(patient: u64) -> proto::pb::AuthorizeRequest {
    research("univ-a", &format!("patient-{patient}"))
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
    let rounds = env_number("AKASHI_AUTHZEN_ROUNDS", 100);
    let server = Running::start(true).await;
    let authzen_addr = server.authzen_addr.unwrap();
    let token = server.token(Role::Platform);
    let channel = server.channel.clone();
    university(&channel, &token, "univ-a").await;
    for patient in 0..1000 {
        research_consent(&channel, &token, &format!("patient-{patient}"), "univ-a").await;
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

    server.stop().await;
}

//! How soon a recipient hears of a revocation through `WatchConsentChanges`, and how fast a
//! subscription catches up on a backlog — through the real server (in-process, loopback gRPC,
//! sled in a temp dir).
//!
//! Latency: a subscription for `univ-a` is open and caught up; then, N times, a consent naming
//! `univ-a` is granted and revoked, and the time from the revocation's acknowledgement to the
//! revocation's arrival on the stream is taken (the grant arrives first and is read too).
//! Catch-up: a log of B decisions and consent changes for other recipients (none concern
//! `univ-a`), then one change for it at the end; a new subscription from the first entry, timed
//! until that change arrives.
//!
//! ```sh
//! cargo bench -p akashi --bench consent_changes   # AKASHI_WATCH_ROUNDS=N (200), AKASHI_WATCH_BACKLOG=B (50000)
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
use proto::pb::{
    self, access_service_client::AccessServiceClient, consent_service_client::ConsentServiceClient,
};
use tonic::transport::Channel;

#[allow(
    dead_code,
    reason = "shared by the gRPC-path benchmarks; each uses part"
)]
mod support;

use support::{Running, env_number, req, research, research_consent, university};

async fn revoke(channel: &Channel, token: &str, patient: &str, consent_id: String) {
    ConsentServiceClient::new(channel.clone())
        .revoke_consent(req(
            pb::RevokeConsentRequest {
                patient_id: patient.into(),
                consent_id,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

/// Reads the stream until a change of `kind` for `consent_id` arrives.
async fn until(
    stream: &mut tonic::Streaming<pb::WatchConsentChangesResponse>,
    kind: &str,
    consent_id: &str,
) {
    loop {
        let message = stream.message().await.unwrap().expect("the stream ended");
        if message
            .changes
            .iter()
            .any(|c| c.kind == kind && c.consent_id == consent_id)
        {
            return;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_number("AKASHI_WATCH_ROUNDS", 200);
    let backlog = env_number("AKASHI_WATCH_BACKLOG", 50_000);
    let server = Running::start(false).await;
    let token = server.token(Role::Platform);
    let channel = server.channel.clone();
    for org in ["univ-a", "univ-b"] {
        university(&channel, &token, org).await;
    }

    // Latency of a revocation to an open, caught-up subscription.
    let mut stream = ConsentServiceClient::new(channel.clone())
        .watch_consent_changes(req(
            pb::WatchConsentChangesRequest {
                recipient: "univ-a".into(),
                after_index: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut after_ack = Vec::new();
    let mut after_call = Vec::new();
    for round in 0..rounds {
        let patient = format!("patient-{round}");
        let id = research_consent(&channel, &token, &patient, "univ-a").await;
        until(&mut stream, "grant", &id).await;
        let called = Instant::now();
        revoke(&channel, &token, &patient, id.clone()).await;
        let acknowledged = Instant::now();
        until(&mut stream, "revoke", &id).await;
        after_ack.push(acknowledged.elapsed());
        after_call.push(called.elapsed());
    }
    for (what, latencies) in [
        ("acknowledged", &mut after_ack),
        ("called", &mut after_call),
    ] {
        latencies.sort_unstable();
        println!(
            "revocation {what} -> on the stream, {rounds} rounds: p50 {:?} p99 {:?} max {:?}",
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            latencies.last().unwrap()
        );
    }

    // Catch-up over a backlog that does not concern the recipient.
    let started = Instant::now();
    let workers = 32;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (channel, token) = (channel.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut access = AccessServiceClient::new(channel.clone());
            let mut call = worker;
            while call < backlog {
                if call % 10 == 0 {
                    research_consent(&channel, &token, &format!("other-{call}"), "univ-b").await;
                } else {
                    access
                        .authorize(req(
                            research("univ-b", &format!("other-{}", call % 1000)),
                            &token,
                        ))
                        .await
                        .unwrap();
                }
                call += workers;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let last = research_consent(&channel, &token, "patient-last", "univ-a").await;
    println!(
        "built a backlog of {backlog} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let size = pb::transparency_service_client::TransparencyServiceClient::new(channel.clone())
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .checkpoint;
    let size: u64 = size.lines().nth(1).unwrap().parse().unwrap();
    let started = Instant::now();
    let mut fresh = ConsentServiceClient::new(channel.clone())
        .watch_consent_changes(req(
            pb::WatchConsentChangesRequest {
                recipient: "univ-a".into(),
                after_index: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    until(&mut fresh, "grant", &last).await;
    let elapsed = started.elapsed();
    println!(
        "catch-up from entry 0 over {size} entries: {:.2} s, {:.0} entries/s",
        elapsed.as_secs_f64(),
        size as f64 / elapsed.as_secs_f64()
    );
    drop((stream, fresh));
    server.stop().await;
}

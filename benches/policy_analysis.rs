//! What a policy preview costs: `PolicyService/AnalyzePolicySet` over a log of N logged
//! decisions, beside the auditor's `replay` and `policy-diff` over the same log, all through the
//! real server (in-process, loopback gRPC, sled in a temp dir), in one run.
//!
//! Setup (timed, printed): the default policy set, one university, research consents for 1,000
//! patients, then N `Authorize` calls over 2,000 patients (half of them with no consent, so the
//! permit-all candidate turns about half of the decisions around), 64 in flight. Measured: one
//! analysis of the whole log by the server (a replay from the first entry plus one extra Cedar
//! evaluation per decision), the auditor's verified replay, and the auditor's `policy-diff` (the
//! replay plus the same analysis), with the resident memory the process gained during each.
//! Asserts that the server and the auditor computed the same analysis id.
//!
//! ```sh
//! cargo bench -p akashi --bench policy_analysis   # AKASHI_ANALYSIS_DECISIONS=N (default 100000)
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
use auditor::cli::{DiffStart, PolicyDiff, ReplayConfig, policy_diff, replay};
use ledger::note::NoteVerifier;
use policy::engine::PolicyEngine;
use proto::pb::{
    self, access_service_client::AccessServiceClient, consent_service_client::ConsentServiceClient,
    directory_service_client::DirectoryServiceClient, policy_service_client::PolicyServiceClient,
};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

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

fn report(what: &str, entries: u64, elapsed: Duration, rss_before: u64) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{what:<34} {seconds:>7.2} s {:>9.0} entries/s  rss +{} MiB",
        entries as f64 / seconds,
        rss_mib().saturating_sub(rss_before)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let decisions: u64 = std::env::var("AKASHI_ANALYSIS_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        grpc_addr: grpc.local_addr().unwrap(),
        http_addr: http.local_addr().unwrap(),
        ..Config::default()
    };
    let data_dir = config.data_dir.clone();
    let server = Server::open(config).unwrap();
    let vkey = server.keys().verifier_key();
    let grpc_addr = grpc.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(grpc, http, async {
        let _ = stop_rx.await;
    }));
    let token =
        |role| akashi::keys::mint_token(&data_dir, role, None, Duration::from_secs(3600)).unwrap();
    let platform = token(Role::Platform);
    let regulator = token(Role::Regulator);
    let channel: Channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let started = Instant::now();
    DirectoryServiceClient::new(channel.clone())
        .upsert_organization(req(
            pb::UpsertOrganizationRequest {
                request_id: String::new(),
                id: "univ-a".into(),
                name: "University A".into(),
                recipient_class: "university".into(),
            },
            &platform,
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
                &platform,
            ))
            .await
            .unwrap();
    }
    let workers = 64;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let channel = channel.clone();
        let platform = platform.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = AccessServiceClient::new(channel);
            let mut call = worker;
            while call < decisions {
                client
                    .authorize(req(ask(call % 2000), &platform))
                    .await
                    .unwrap();
                call += workers;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut policies = PolicyServiceClient::new(channel.clone());
    let active = policies
        .get_active_policy_set(req(pb::GetActivePolicySetRequest {}, &platform))
        .await
        .unwrap()
        .into_inner();
    let size = active.activated_at_index; // 0: the default set is the first entry.
    assert_eq!(size, 0);
    println!(
        "built a log of {} decisions (and 1,002 other entries) in {:.1} s",
        decisions,
        started.elapsed().as_secs_f64()
    );
    let candidate = format!(
        "{}\n@id(\"open-everything\")\n@reason(\"everything is allowed\")\npermit (principal, action, resource);\n",
        active.policies
    );

    let rss = rss_mib();
    let t = Instant::now();
    let analysis = policies
        .analyze_policy_set(req(
            pb::AnalyzePolicySetRequest {
                policies: candidate.clone(),
                ..Default::default()
            },
            &platform,
        ))
        .await
        .unwrap()
        .into_inner();
    let entries = analysis.to_index;
    report("server AnalyzePolicySet (gRPC)", entries, t.elapsed(), rss);
    assert_eq!(analysis.decisions, decisions);
    println!(
        "  {} decisions re-decided, {} would change",
        analysis.decisions,
        analysis.allow_to_deny + analysis.deny_to_allow
    );

    let config = ReplayConfig {
        verifier: NoteVerifier::from_vkey(&vkey).unwrap(),
        grpc: format!("http://{grpc_addr}"),
        token: regulator,
    };
    let rss = rss_mib();
    let t = Instant::now();
    let replayed = replay(&config, false).await.unwrap();
    report("akashi-audit replay (gRPC)", entries, t.elapsed(), rss);
    assert!(replayed.is_clean(), "{replayed}");

    let rss = rss_mib();
    let t = Instant::now();
    let diff = policy_diff(
        &config,
        PolicyDiff {
            candidate: PolicyEngine::new(&candidate).unwrap(),
            start: DiffStart::From(analysis.from_index),
            end: Some(analysis.to_index),
        },
        Some(&analysis.analysis_id),
        false,
    )
    .await
    .unwrap();
    report("akashi-audit policy-diff (gRPC)", entries, t.elapsed(), rss);
    assert_eq!(diff.expected_id_matches, Some(true), "{diff}");

    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
}

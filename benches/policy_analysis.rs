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
    unreachable_pub,
    reason = "benchmark code"
)]

use std::time::{Duration, Instant};

use akashi::auth::Role;
use auditor::cli::{DiffStart, PolicyDiff, ReplayConfig, policy_diff, replay};
use ledger::note::NoteVerifier;
use policy::engine::PolicyEngine;
use proto::pb::{
    self, access_service_client::AccessServiceClient, policy_service_client::PolicyServiceClient,
};

#[allow(
    dead_code,
    reason = "shared by the gRPC-path benchmarks; each uses part"
)]
mod support;

use support::{Running, env_number, req, research, research_consent, university};

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn ask(patient: u64) -> pb::AuthorizeRequest {
    research("univ-a", &format!("patient-{patient}"))
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
    let decisions = env_number("AKASHI_ANALYSIS_DECISIONS", 100_000);
    let server = Running::start(false).await;
    let (vkey, grpc_addr) = (server.vkey.clone(), server.grpc_addr);
    let platform = server.token(Role::Platform);
    let regulator = server.token(Role::Regulator);
    let channel = server.channel.clone();

    let started = Instant::now();
    university(&channel, &platform, "univ-a").await;
    for patient in 0..1000 {
        research_consent(&channel, &platform, &format!("patient-{patient}"), "univ-a").await;
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
        tls: Default::default(),
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

    server.stop().await;
}

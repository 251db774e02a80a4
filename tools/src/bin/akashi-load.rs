//! `akashi-load`: loads a local akashi server and reports throughput, latency percentiles and
//! errors, as text or `--json`. Modes: `health` (grpc.health.v1 Check, the baseline) and
//! `authorize` (a consent/Authorize mix that also verifies receipts; needs a platform token) and
//! `cohort` (AuthorizeCohort over the same patients, `--cohort-size` per call) and `authzen`
//! (the AuthZEN API's evaluations, `--evaluations` per call, at `--authzen-target`).
//! Exits 2 when a correctness check failed under load (a missing or invalid receipt).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tools::load::{
    self, LoadOptions, MAX_DURATION, Report,
    authorize::{AuthorizeOptions, AuthorizeWorkload},
    authzen::AuthZenWorkload,
    cedar_agent::CedarAgentWorkload,
    cohort::CohortWorkload,
    health::HealthWorkload,
};

/// The same allocator as the server: the load generator shares the machine's cores with the
/// server it measures, so every cycle it saves is one the server gets (BENCHMARKS.md, “A paged
/// patient listing”).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Load generator for a local akashi server.
#[derive(Debug, Parser)]
#[command(name = "akashi-load", version)]
struct Cli {
    /// What to call.
    #[arg(long, value_enum, default_value_t = Mode::Health)]
    mode: Mode,
    /// Patients per AuthorizeCohort call (cohort mode; at most 10,000 and --patients).
    #[arg(long, default_value_t = 10_000)]
    cohort_size: u64,
    /// AuthZEN items per call (authzen mode; 1 asks `/access/v1/evaluation`).
    #[arg(long, default_value_t = 100)]
    evaluations: u64,
    /// The server's AuthZEN address (authzen mode; loopback only), its `--authzen-addr`.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    authzen_target: String,
    /// Server URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Run time in seconds (at most 600); with --requests, whichever comes first.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u64>,
    /// Stop after this many calls.
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: start calls at this many per second, whatever the server's pace, and time
    /// each from when it was due (default: closed loop, each caller calls again on its answer).
    /// Give enough --connections x --in-flight to keep this many calls outstanding.
    #[arg(long, value_name = "CALLS_PER_SECOND")]
    rate: Option<f64>,
    /// Also report latency and errors for each interval of this many seconds (e.g. 1 or 0.5),
    /// by when calls were due (open loop) or started (closed loop).
    #[arg(long, value_name = "SECONDS")]
    interval: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Platform bearer token (authorize mode), e.g. from `akashi token --role platform`.
    #[arg(long, env = "AKASHI_LOAD_TOKEN")]
    token: Option<String>,
    /// Patients to set up and spread Authorize calls over (authorize mode).
    #[arg(long, default_value_t = 1000)]
    patients: u64,
    /// Consent writes per 100 calls (authorize mode).
    #[arg(long, default_value_t = 5)]
    write_percent: u64,
    /// Verify every n-th receipt fully: signature and inclusion proof (0 = none).
    #[arg(long, default_value_t = 100)]
    verify_every: u64,
    /// The log's verifier key (note vkey); fetched with GetCheckpoint when absent.
    #[arg(long)]
    vkey: Option<String>,
    /// Cedar 2.x policies for cedar-agent, one `@id` per policy (cedar-agent mode), e.g.
    /// tools/bench/cedar-agent/policies.cedar.
    #[arg(long, value_name = "FILE")]
    cedar_policies: Option<std::path::PathBuf>,
    /// The server's process id: report the CPU time it spent on the run's calls (user +
    /// system, all threads, setup excluded), read from /proc (Linux).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// grpc.health.v1.Health/Check.
    Health,
    /// AccessService/Authorize over many patients with some consent writes.
    Authorize,
    /// AccessService/AuthorizeCohort over the same patients.
    Cohort,
    /// The AuthZEN API's evaluations over the same patients.
    Authzen,
    /// The peer: the `authorize` mode's decisions asked of cedar-agent at `--target`.
    CedarAgent,
}

/// `value` seconds as a duration, refusing what is not a finite number of seconds ≥ 0.
fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("--interval must be a number of seconds, got {value}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let default_duration = if cli.requests.is_some() {
        MAX_DURATION
    } else {
        Duration::from_secs(10)
    };
    let options = LoadOptions {
        target: cli.target.clone(),
        connections: cli.connections,
        in_flight: cli.in_flight,
        duration: cli.duration.map_or(default_duration, Duration::from_secs),
        requests: cli.requests,
        rate: cli.rate,
        interval: cli.interval.map(seconds).transpose()?,
    };
    options.validate()?;
    let cpu = || cli.server_pid.map(load::cpu_seconds).transpose();
    let (mut report, before) = match cli.mode {
        Mode::CedarAgent => {
            let path = cli
                .cedar_policies
                .as_ref()
                .context("--mode cedar-agent needs --cedar-policies")?;
            let policies = std::fs::read_to_string(path)
                .with_context(|| format!("while reading {}", path.display()))?;
            let workload =
                CedarAgentWorkload::setup(&options.target, cli.patients, &policies).await?;
            let before = cpu()?;
            (load::run(&options, Arc::new(workload)).await?, before)
        }
        Mode::Health => {
            let before = cpu()?;
            (load::run(&options, Arc::new(HealthWorkload)).await?, before)
        }
        Mode::Authorize | Mode::Cohort | Mode::Authzen => {
            let token = cli
                .token
                .clone()
                .context("--mode authorize, cohort and authzen need --token")?;
            let channel = load::connect(&options.target).await?;
            let workload = AuthorizeWorkload::setup(
                channel,
                AuthorizeOptions {
                    token: token.clone(),
                    patients: cli.patients,
                    write_percent: cli.write_percent,
                    verify_every: cli.verify_every,
                    vkey: cli.vkey.clone(),
                },
            )
            .await
            .context("while setting up the workload's patients")?;
            if cli.mode == Mode::Cohort {
                let workload = CohortWorkload::new(workload, cli.patients, cli.cohort_size)?;
                let before = cpu()?;
                (load::run(&options, Arc::new(workload)).await?, before)
            } else if cli.mode == Mode::Authzen {
                let workload = AuthZenWorkload::new(
                    workload,
                    &cli.authzen_target,
                    &token,
                    cli.patients,
                    cli.evaluations,
                )?;
                let before = cpu()?;
                (load::run(&options, Arc::new(workload)).await?, before)
            } else {
                let before = cpu()?;
                (load::run(&options, Arc::new(workload)).await?, before)
            }
        }
    };
    if let (Some(before), Some(after)) = (before, cpu()?) {
        report.server_cpu = Some(load::ServerCpu::between(before, after, report.requests));
    }
    print_report(&report, cli.json)?;
    let broken = report
        .errors
        .keys()
        .any(|kind| kind.starts_with("receipt_") || kind.starts_with("decision_"));
    Ok(if broken {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

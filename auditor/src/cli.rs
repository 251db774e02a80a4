//! The `akashi-audit` commands, as library functions that tests (and other programs) can call
//! in-process: [`verify_receipt`], [`watch_once`] and [`watch`], [`replay`], [`policy_diff`],
//! [`history`] and [`history_file`], [`disclosure`], [`replay_recording`]. Each
//! returns what it found; [`run`] parses nothing, prints the result and maps it to an exit code
//! (0 valid, 2 invalid, 1 error).
//!
//! The network clients live here: tonic for gRPC (`TransparencyService`, `AuditService`,
//! `HistoryService`), and a tiny blocking HTTP/1.1 client for C2SP tiles ([`http`]). This module
//! decides nothing about validity itself; the verification library does.

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ledger::note::NoteVerifier;

mod disclosure_cmd;
pub mod http;
mod net;
mod policy_diff_cmd;
mod render;
mod replay_cmd;
pub mod saved;
pub mod tls;
pub use tls::ClientTls;
mod watch_cmd;
mod witness_cmd;

pub use disclosure_cmd::{DisclosureConfig, DisclosureReport, MAX_DOCUMENT_SIZE, disclosure};
pub use policy_diff_cmd::{PolicyDiffReport, policy_diff};
pub use replay_cmd::{
    DiffStart, HistoryConfig, PolicyDiff, ReplayConfig, fetch_history, history, history_file,
    history_file_witnessed, replay, replay_analysing, replay_recording, replay_streaming,
    verify_responses, witness_history,
};
pub use watch_cmd::{LogSource, WatchConfig, WatchStep, watch, watch_once};
pub use witness_cmd::{
    BODY_READ_TIMEOUT, EVIDENCE_DIR, HEADER_READ_TIMEOUT, MAX_EVIDENCE, STATE_FILE, WitnessArgs,
    WitnessKeygenArgs, WitnessPolicyArgs, WitnessServer, witness_keygen,
};

use crate::exit::AuditExitCode;
use crate::quorum::WitnessPolicy;
use crate::receipt::{MAX_RECEIPT_SIZE, Receipt, ReceiptError, VerifiedReceipt};

/// The largest leaf or body file read, in bytes.
pub const MAX_INPUT_FILE: usize = ledger::entry::MAX_BODY_SIZE + 1024;

/// `akashi-audit`: verify akashi's transparency log without trusting its operator.
#[derive(Debug, Parser)]
#[command(name = "akashi-audit", version, about)]
pub struct Cli {
    /// PEM CA certificates trusted for `https://` servers and tile URLs (TLS 1.2 or 1.3)
    /// [default: the system's bundle, /etc/ssl/certs/ca-certificates.crt].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain for a gRPC port that requires mTLS (with `--key`); it may
    /// name the caller's role.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// What to verify.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a patient's own history: every entry's proof, body and the per-subject chain, and
    /// that the entries shown are all the log holds about them (exit 0 complete and valid, 2
    /// anything missing, invalid or not provable, 1 error).
    History(HistoryArgs),
    /// Re-check the whole log as a regulator: tree, checkpoints, bodies, and every decision.
    Replay(ReplayArgs),
    /// Replay the log as `replay` does and count the logged decisions of a window that a
    /// candidate policy set would decide the other way, by direction, rule and purpose: the
    /// analysis (and id) the server's AnalyzePolicySet gives (exit 0 the log replays cleanly
    /// and the id is the one expected, 2 otherwise, 1 error).
    PolicyDiff(PolicyDiffArgs),
    /// Verify a receipt offline (proto3 JSON as grpcurl prints it, alone or in a whole response,
    /// or a C2SP tlog-proof); for an `Authorize` response, also that its answer is the logged one.
    VerifyReceipt(VerifyReceiptArgs),
    /// Follow the log as a witness: demand a consistency proof to every new checkpoint.
    Watch(WatchArgs),
    /// Run a c2sp.org/tlog-witness witness of one log: cosign its checkpoints over HTTP.
    Witness(WitnessArgs),
    /// Write a new witness key and print its verifier key.
    WitnessKeygen(WitnessKeygenArgs),
    /// Recompute the public disclosure statistics from the public leaves and compare every
    /// number with what the server publishes (exit 0 all match, 2 a difference, 1 error).
    Disclosure(DisclosureArgs),
    /// Export the records of third-party provision (APPI 29条; with --recipient, that
    /// recipient's 30条 confirmation record) of a period, from a verified replay of the whole
    /// log: every row cites its decision's leaf index (exit 0 the log replays cleanly, 2 it
    /// does not — the rows are printed either way and the findings go to stderr —, 1 error).
    ProvisionRecords(ProvisionRecordsArgs),
}

/// `provision-records`.
#[derive(Debug, Args)]
pub struct ProvisionRecordsArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE`.
    #[arg(long)]
    pub vkey: String,
    /// The server's gRPC address (`host:port`, `http://…`, or `https://…` over TLS).
    #[arg(long)]
    pub grpc: String,
    /// A regulator or auditor bearer token, or `@FILE` (`AuditService` serves bodies to those
    /// roles only).
    #[arg(long, env = "AKASHI_TOKEN", hide_env_values = true)]
    pub token: String,
    /// First day of the period (`YYYY-MM-DD`, UTC), inclusive.
    #[arg(long, value_name = "DAY")]
    pub from: String,
    /// Last day of the period (`YYYY-MM-DD`, UTC), inclusive.
    #[arg(long, value_name = "DAY")]
    pub to: String,
    /// Only the provisions to this recipient organisation (its id).
    #[arg(long, value_name = "ID")]
    pub recipient: Option<String>,
    /// `csv` (RFC 4180, a header line) or `json` (an array of rows).
    #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
    pub format: String,
}

/// `disclosure`.
#[derive(Debug, Args)]
pub struct DisclosureArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE`.
    #[arg(long)]
    pub vkey: String,
    /// The server's public HTTP URL (`http://` or `https://host:port[/prefix]`).
    #[arg(long)]
    pub http: String,
    /// Witnesses whose cosignatures the pinned checkpoint must carry.
    #[command(flatten)]
    pub witness_policy: WitnessPolicyArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `verify-receipt`.
#[derive(Debug, Args)]
pub struct VerifyReceiptArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE` to read it from a file.
    #[arg(long)]
    pub vkey: String,
    /// The receipt file, or a whole response holding one (e.g. an `Authorize` response).
    pub receipt: PathBuf,
    /// The entry's public leaf bytes, to check against the leaf hash (needed for a tlog-proof,
    /// and for an `Authorize` response whose receipt carries no leaf).
    #[arg(long)]
    pub leaf: Option<PathBuf>,
    /// The entry's private body bytes, to check against the leaf's commitment (needs a leaf);
    /// for an `Authorize` response, also its determining policies and reasons.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Witnesses whose cosignatures the checkpoint must carry.
    #[command(flatten)]
    pub witness_policy: WitnessPolicyArgs,
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE`.
    #[arg(long)]
    pub vkey: String,
    /// Where to fetch checkpoints and proofs.
    #[command(flatten)]
    pub source: SourceArgs,
    /// The file holding the last trusted checkpoint (created when missing).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Seconds between checks.
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
    /// Check once and exit.
    #[arg(long)]
    pub once: bool,
    /// Witnesses whose cosignatures a checkpoint must carry before it is trusted (the watcher
    /// then follows the log's witnessed checkpoint).
    #[command(flatten)]
    pub witness_policy: WitnessPolicyArgs,
}

/// Where a watcher reads the log: one of gRPC or HTTP tiles.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// The server's gRPC address (`host:port`, `http://host:port`, or `https://host:port` over TLS).
    #[arg(long)]
    pub grpc: Option<String>,
    /// The log's C2SP tlog-tiles URL prefix (`http://` or `https://host:port[/prefix]`).
    #[arg(long)]
    pub http: Option<String>,
}

/// `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE`.
    #[arg(long)]
    pub vkey: String,
    /// The server's gRPC address (`host:port`, `http://…`, or `https://…` over TLS).
    #[arg(long)]
    pub grpc: String,
    /// A regulator or auditor bearer token, or `@FILE`.
    #[arg(long, env = "AKASHI_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `policy-diff`.
#[derive(Debug, Args)]
pub struct PolicyDiffArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE`.
    #[arg(long)]
    pub vkey: String,
    /// The server's gRPC address (`host:port`, `http://…`, or `https://…` over TLS).
    #[arg(long)]
    pub grpc: String,
    /// A regulator or auditor bearer token, or `@FILE`.
    #[arg(long, env = "AKASHI_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The candidate policy set (Cedar text).
    #[arg(long, value_name = "FILE")]
    pub policies: PathBuf,
    /// The window starts among the last N entries of the newest checkpoint.
    #[arg(long, value_name = "N", conflicts_with_all = ["days", "from_index"])]
    pub last: Option<u64>,
    /// The window starts at the first decision logged in the last D days.
    #[arg(long, value_name = "D", conflicts_with = "from_index")]
    pub days: Option<u32>,
    /// The window starts at this leaf index (an analysis's `from_index`).
    #[arg(long, value_name = "INDEX")]
    pub from_index: Option<u64>,
    /// The window ends before this leaf index (an analysis's `to_index`); default: the newest
    /// checkpoint's size.
    #[arg(long, value_name = "INDEX")]
    pub to_index: Option<u64>,
    /// The analysis id expected (from `AnalyzePolicySet`, or an approval entry): exit 2 when
    /// the analysis computed here has another.
    #[arg(long, value_name = "HEX")]
    pub expect_id: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `history`: online (`--grpc`, `--token`) or from a saved response (`--input`, `--patient`).
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The log's verifier key (note `vkey` text), or `@FILE`.
    #[arg(long)]
    pub vkey: String,
    /// The server's gRPC address (`host:port`, `http://…`, or `https://…` over TLS).
    #[arg(long, required_unless_present = "input", conflicts_with = "input")]
    pub grpc: Option<String>,
    /// The patient's bearer token (or a regulator's), or `@FILE` (with `--grpc`).
    #[arg(long, env = "AKASHI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A saved `GetSubjectHistory` response in proto3 JSON as grpcurl prints it, or a JSON
    /// array of them (the pages, oldest first): check it offline (needs `--patient`).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The patient id; by default the one the token names.
    #[arg(long)]
    pub patient: Option<String>,
    /// Also save what the server sent (with `--grpc`) to this file, in the form `--input`
    /// reads, to verify it again later with no server.
    #[arg(long, conflicts_with = "input")]
    pub save: Option<PathBuf>,
    /// Witnesses who must vouch for the checkpoint the history is proven complete at.
    #[command(flatten)]
    pub witness_policy: WitnessPolicyArgs,
    /// With `--grpc` and `--witness`: how long to wait, in seconds, for the witnesses to cosign
    /// a checkpoint that contains the history's, when its own is not cosigned yet.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "grpc")]
    pub witness_wait: u64,
    /// Print the history as JSON.
    #[arg(long)]
    pub json: bool,
    /// `text` (the default), `json` (as `--json`), `csv` or `html`: the rows for the patient to
    /// keep (APPI 33条5項), with the domain's words labelled in `--lang`.
    #[arg(long, value_parser = ["text", "json", "csv", "html"], conflicts_with = "json")]
    pub format: Option<String>,
    /// The language of `--format csv` and `html`: `ja` or `en`.
    #[arg(long, default_value = "ja", value_parser = ["ja", "en"])]
    pub lang: String,
}

/// Writes the provision rows arriving on `rows` to `out` as CSV or a JSON array, one at a
/// time, until the replay drops its end of the channel.
fn write_provision_rows(
    out: &mut dyn Write,
    format: &str,
    rows: std::sync::mpsc::Receiver<crate::provision::ProvisionRow>,
) -> anyhow::Result<()> {
    if format == "json" {
        write!(out, "[")?;
        for (n, row) in rows.into_iter().enumerate() {
            write!(out, "{}\n  ", if n == 0 { "" } else { "," })?;
            serde_json::to_writer(&mut *out, &row)?;
        }
        writeln!(out, "\n]")?;
    } else {
        write!(out, "{}", crate::provision::CSV_HEADER)?;
        for row in rows {
            write!(out, "{}", crate::provision::csv_row(&row))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs a parsed command, printing results to `out` and problems to `err`.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> AuditExitCode {
    match dispatch(cli, out, err) {
        Ok(code) => code,
        Err(error) => {
            // Printing can only fail if stderr is gone; nothing is left to tell then.
            let _ = writeln!(err, "error: {error:#}");
            AuditExitCode::Error
        }
    }
}

fn dispatch(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<AuditExitCode> {
    let tls = ClientTls {
        ca: cli.ca,
        identity: cli.cert.zip(cli.key),
    };
    match cli.command {
        Command::ProvisionRecords(args) => {
            let config = ReplayConfig {
                verifier: read_vkey(&args.vkey)?,
                grpc: args.grpc,
                tls: tls.clone(),
                token: read_secret(&args.token)?,
            };
            let window =
                crate::provision::ProvisionWindow::new(&args.from, &args.to, args.recipient)
                    .map_err(|e| anyhow::anyhow!(e))?;
            let progress = std::io::stderr().is_terminal();
            let runtime = runtime()?;
            // The replay runs on its own thread and hands each row over as it is made; this
            // thread writes it out, so memory stays flat however long the period.
            let (sink, rows) = std::sync::mpsc::sync_channel(1024);
            let (outcome, written) = std::thread::scope(|scope| {
                let replaying = scope.spawn(|| {
                    runtime.block_on(replay_streaming(&config, progress, window.clone(), sink))
                });
                let written = write_provision_rows(&mut *out, &args.format, rows);
                let outcome = replaying
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the replay thread panicked")));
                (outcome, written)
            });
            let (report, records) = outcome?;
            written?;
            let unreadable = records.unreadable;
            writeln!(err, "{}", crate::provision::summary(records.count, &window))?;
            if unreadable > 0 {
                writeln!(
                    err,
                    "{unreadable} allowed decisions of the period had a basis that could not be \
                     read from the replayed state"
                )?;
            }
            let code = report.exit_code();
            if code != AuditExitCode::Valid {
                write!(err, "{report}")?;
            }
            Ok(if unreadable > 0 {
                AuditExitCode::Invalid
            } else {
                code
            })
        }
        Command::VerifyReceipt(args) => {
            let verifier = read_vkey(&args.vkey)?;
            let result = verify_receipt_witnessed(
                &verifier,
                &args.witness_policy.policy()?,
                &args.receipt,
                args.leaf.as_deref(),
                args.body.as_deref(),
            )?;
            write!(out, "{}", render::receipt(&result))?;
            Ok(match &result {
                Ok(_) => AuditExitCode::Valid,
                Err(error) => error.exit_code(),
            })
        }
        Command::Watch(args) => {
            let config = WatchConfig {
                verifier: read_vkey(&args.vkey)?,
                source: match (args.source.grpc, args.source.http) {
                    (Some(addr), _) => LogSource::Grpc(addr),
                    (None, Some(url)) => LogSource::Http(url),
                    (None, None) => anyhow::bail!("give `--grpc` or `--http`"),
                },
                tls: tls.clone(),
                state: args.state,
                witnesses: args.witness_policy.policy()?,
            };
            let runtime = runtime()?;
            let step = if args.once {
                let step = runtime.block_on(watch_once(&config))?;
                write!(out, "{}", render::watch(&step))?;
                step
            } else {
                let interval = Duration::from_secs(args.interval.max(1));
                runtime.block_on(watch(&config, interval, |result| {
                    // A closed stdout must not stop the watcher; the exit code still tells.
                    let _ = match result {
                        Ok(step) => write!(out, "{}", render::watch(step)),
                        Err(error) => writeln!(out, "error: {error:#} (retrying)"),
                    };
                    let _ = out.flush();
                }))?
            };
            Ok(step.exit_code())
        }
        Command::Replay(args) => {
            let config = ReplayConfig {
                verifier: read_vkey(&args.vkey)?,
                grpc: args.grpc,
                tls: tls.clone(),
                token: read_secret(&args.token)?,
            };
            let progress = !args.json && std::io::stderr().is_terminal();
            let report = runtime()?.block_on(replay(&config, progress))?;
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{report}")?;
            }
            Ok(report.exit_code())
        }
        Command::PolicyDiff(args) => {
            let config = ReplayConfig {
                verifier: read_vkey(&args.vkey)?,
                grpc: args.grpc,
                tls: tls.clone(),
                token: read_secret(&args.token)?,
            };
            let text = read_capped(&args.policies, policy::policy_set::MAX_POLICY_TEXT)?;
            let text = String::from_utf8(text)
                .with_context(|| format!("`{}` is not text", args.policies.display()))?;
            policy::limits::check(&text)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("the candidate policy set (`--policies`)")?;
            let candidate = policy::engine::PolicyEngine::new(&text)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("the candidate policy set (`--policies`) does not compile")?;
            let start = match (args.last, args.days, args.from_index) {
                (Some(n), _, _) => DiffStart::Last(n),
                (_, Some(d), _) => DiffStart::Days(d),
                (_, _, Some(i)) => DiffStart::From(i),
                _ => DiffStart::All,
            };
            let diff = PolicyDiff {
                candidate,
                start,
                end: args.to_index,
            };
            let progress = !args.json && std::io::stderr().is_terminal();
            let report = runtime()?.block_on(policy_diff(
                &config,
                diff,
                args.expect_id.as_deref(),
                progress,
            ))?;
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{report}")?;
            }
            Ok(report.exit_code())
        }
        Command::WitnessKeygen(args) => {
            writeln!(out, "{}", witness_keygen(&args.name, &args.key)?)?;
            Ok(AuditExitCode::Valid)
        }
        Command::Witness(args) => {
            let server = WitnessServer::open(&args.key, read_vkey(&args.log_vkey)?, &args.state)?;
            runtime()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.addr)
                    .await
                    .with_context(|| format!("while binding {}", args.addr))?;
                writeln!(out, "witness  {}", server.vkey())?;
                writeln!(out, "submit   http://{}", listener.local_addr()?)?;
                out.flush()?;
                server
                    .serve(listener, async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
            })?;
            Ok(AuditExitCode::Valid)
        }
        Command::Disclosure(args) => {
            let config = DisclosureConfig {
                verifier: read_vkey(&args.vkey)?,
                http: args.http,
                tls: tls.clone(),
                witnesses: args.witness_policy.policy()?,
            };
            let progress = !args.json && std::io::stderr().is_terminal();
            let report = disclosure(&config, progress)?;
            if args.json {
                serde_json::to_writer_pretty(&mut *out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{report}")?;
            }
            Ok(report.exit_code())
        }
        Command::History(args) => {
            let verifier = read_vkey(&args.vkey)?;
            let policy = args.witness_policy.policy()?;
            let result = match (args.input, args.grpc) {
                (Some(input), _) => {
                    let patient = args
                        .patient
                        .context("`--input` needs the patient id: pass `--patient`")?;
                    history_file_witnessed(&verifier, &policy, &patient, &input)?
                }
                (None, Some(grpc)) => {
                    let token = args.token.context("give `--token` (or AKASHI_TOKEN)")?;
                    let config = HistoryConfig {
                        verifier,
                        grpc,
                        tls: tls.clone(),
                        token: read_secret(&token)?,
                        patient: args.patient,
                    };
                    let runtime = runtime()?;
                    let (patient, responses) = runtime.block_on(fetch_history(&config))?;
                    if let Some(path) = &args.save {
                        let json = serde_json::to_vec_pretty(&saved::history_json(&responses))?;
                        saved::write_atomically(path, &json, "the history")?;
                    }
                    let note = responses
                        .last()
                        .map(|r| r.checkpoint.clone())
                        .unwrap_or_default();
                    let mut result = verify_responses(&config.verifier, &patient, responses)?;
                    if let Ok(history) = &mut result {
                        let wait = std::time::Duration::from_secs(args.witness_wait);
                        runtime.block_on(witness_history(
                            history,
                            &config.verifier,
                            &policy,
                            &note,
                            Some((&config.grpc, &config.tls, wait)),
                        ))?;
                    }
                    result
                }
                (None, None) => anyhow::bail!("give `--grpc` or `--input`"),
            };
            let format = match (args.format.as_deref(), args.json) {
                (Some(format), _) => format,
                (None, true) => "json",
                (None, false) => "text",
            };
            let lang = if args.lang == "en" {
                crate::history::export::Lang::En
            } else {
                crate::history::export::Lang::Ja
            };
            match (&result, format) {
                (Ok(history), "json") => {
                    serde_json::to_writer_pretty(&mut *out, history)?;
                    writeln!(out)?;
                }
                (Ok(history), "csv") => {
                    write!(out, "{}", crate::history::export::to_csv(history, lang))?;
                }
                (Ok(history), "html") => {
                    write!(out, "{}", crate::history::export::to_html(history, lang))?;
                }
                _ => write!(out, "{}", render::history(&result))?,
            }
            Ok(match &result {
                Ok(history) => history.exit_code(),
                Err(error) => error.exit_code(),
            })
        }
    }
}

/// Reads a receipt file (and the leaf and body files, when given) and verifies it. The outer
/// error is a file that could not be read; the inner result is the verdict.
///
/// # Errors
///
/// When a file cannot be read or is larger than the caps.
pub fn verify_receipt(
    verifier: &NoteVerifier,
    receipt: &Path,
    leaf: Option<&Path>,
    body: Option<&Path>,
) -> anyhow::Result<Result<VerifiedReceipt, ReceiptError>> {
    verify_receipt_witnessed(verifier, &WitnessPolicy::default(), receipt, leaf, body)
}

/// [`verify_receipt`], and also that the receipt's checkpoint carries the cosignatures that
/// `policy` asks for ([`ReceiptError::Witnesses`] otherwise).
///
/// # Errors
///
/// As for [`verify_receipt`].
pub fn verify_receipt_witnessed(
    verifier: &NoteVerifier,
    policy: &WitnessPolicy,
    receipt: &Path,
    leaf: Option<&Path>,
    body: Option<&Path>,
) -> anyhow::Result<Result<VerifiedReceipt, ReceiptError>> {
    let text = read_capped(receipt, MAX_RECEIPT_SIZE)?;
    let Ok(text) = String::from_utf8(text) else {
        return Ok(Err(ReceiptError::Json));
    };
    let leaf = leaf.map(|p| read_capped(p, MAX_INPUT_FILE)).transpose()?;
    let body = body.map(|p| read_capped(p, MAX_INPUT_FILE)).transpose()?;
    let verified =
        Receipt::parse(&text).and_then(|r| r.verify(verifier, leaf.as_deref(), body.as_deref()));
    Ok(verified.and_then(|v| {
        if policy.is_required() {
            policy
                .check(verifier, v.checkpoint().note())
                .map_err(ReceiptError::Witnesses)?;
        }
        Ok(v)
    }))
}

/// Parses a verifier key given as note `vkey` text or `@FILE`.
///
/// # Errors
///
/// When the file cannot be read or the text is not a `vkey`.
pub fn read_vkey(arg: &str) -> anyhow::Result<NoteVerifier> {
    let text = read_secret(arg)?;
    NoteVerifier::from_vkey(text.trim())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("while reading the verifier key (`--vkey`)")
}

/// A value given inline or as `@FILE` (trimmed).
fn read_secret(arg: &str) -> anyhow::Result<String> {
    let Some(path) = arg.strip_prefix('@') else {
        return Ok(arg.trim().to_owned());
    };
    let bytes = read_capped(Path::new(path), 64 * 1024)?;
    let text = String::from_utf8(bytes).with_context(|| format!("`{path}` is not text"))?;
    Ok(text.trim().to_owned())
}

pub(crate) fn read_capped(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().with_context(|| format!("while reading `{}`", path.display()))?;
    if bytes.len() > max {
        anyhow::bail!("`{}` is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("while starting the async runtime")
}

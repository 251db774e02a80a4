//! `akashi-audit replay` (regulator: the whole log over `AuditService`) and `akashi-audit
//! history` (a patient: their own entries over `HistoryService`, or from a saved response).
//!
//! Replay runs as a pipeline of three stages, so that they overlap: a task pages entries and
//! checkpoints from the server (checkpoints always ahead of the entries that reach their size);
//! a thread runs [`EntryCheck`] (tree, checkpoints, commitments, event decoding, headers); a
//! second thread runs [`DecisionCheck`] (state and decisions, in log order).

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    hash::{LeafIndex, TreeSize},
    note::NoteVerifier,
};
use policy::engine::PolicyEngine;
use policy::event::Event;
use policy::whatif::{Analysis, Analyzer, WindowStart};
use proto::pb;

use super::tls::ClientTls;
use tokio::sync::mpsc;

use super::net::{self, MAX_MESSAGE_SIZE};
use crate::history::{
    CompletenessProof, History, HistoryEntry, HistoryError, HistoryPage, MAX_HISTORY_ENTRIES,
    MAX_HISTORY_JSON, Witnessed, pages_from_json, verify_history,
};
use crate::provision::{ProvisionRecords, ProvisionWindow};
use crate::quorum::WitnessPolicy;
use crate::replay::{DecisionCheck, EntryCheck, merge};
use crate::report::{Finding, Report};

/// Entries asked for per `GetEntries` call (the server's cap).
const PAGE: u32 = 1024;

/// Entries asked for per `GetSubjectHistory` call (the server's cap).
const HISTORY_PAGE: u32 = 1000;

/// Pages in flight between the fetching task and the checking thread.
const PIPELINE_DEPTH: usize = 4;

/// What a regulator's replay needs.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The log key.
    pub verifier: NoteVerifier,
    /// The server's gRPC address (`https://` over TLS).
    pub grpc: String,
    /// How to connect to an `https://` address.
    pub tls: ClientTls,
    /// A regulator or auditor bearer token.
    pub token: String,
}

/// What a patient's history check needs.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// The log key.
    pub verifier: NoteVerifier,
    /// The server's gRPC address (`https://` over TLS).
    pub grpc: String,
    /// How to connect to an `https://` address.
    pub tls: ClientTls,
    /// The patient's (or a regulator's) bearer token.
    pub token: String,
    /// The patient id; none to take it from the token.
    pub patient: Option<String>,
}

/// Replays the whole log up to its latest checkpoint: every entry and body (`GetEntries`), every
/// checkpoint ever signed up to that size (`ListCheckpoints`), compared with the recomputed tree.
/// `progress` draws a progress bar on stderr.
///
/// # Errors
///
/// When the server cannot be reached or refuses (a bad token), or serves entries out of order.
/// What is wrong with the log itself is in the report.
pub async fn replay(config: &ReplayConfig, progress: bool) -> anyhow::Result<Report> {
    Ok(replay_analysing(config, progress, None).await?.0)
}

/// A candidate policy set to analyse during a replay (`akashi-audit policy-diff`), and its
/// window.
#[derive(Debug)]
pub struct PolicyDiff {
    /// The candidate.
    pub candidate: PolicyEngine,
    /// Where the window starts.
    pub start: DiffStart,
    /// Where it ends (exclusive); none: at the replayed checkpoint's size.
    pub end: Option<u64>,
}

/// Where a [`PolicyDiff`] window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffStart {
    /// At the first entry.
    All,
    /// Among the last this many entries of the replayed checkpoint.
    Last(u64),
    /// At the first decision logged in the last this many days.
    Days(u32),
    /// At this leaf index.
    From(u64),
}

/// [`replay`], also analysing `diff`'s candidate set over its window: the report, and the
/// analysis (with `diff`).
///
/// # Errors
///
/// As [`replay`].
pub async fn replay_analysing(
    config: &ReplayConfig,
    progress: bool,
    diff: Option<PolicyDiff>,
) -> anyhow::Result<(Report, Option<Analysis>)> {
    let (report, analysis, _) = replay_full(config, progress, diff, None).await?;
    Ok((report, analysis))
}

/// [`replay`], also keeping the records of third-party provision of `window`
/// (`akashi-audit provision-records`).
///
/// # Errors
///
/// As [`replay`].
pub async fn replay_recording(
    config: &ReplayConfig,
    progress: bool,
    window: ProvisionWindow,
) -> anyhow::Result<(Report, ProvisionRecords)> {
    let records = ProvisionRecords::new(window.clone());
    let (report, _, records) = replay_full(config, progress, None, Some(records)).await?;
    Ok((
        report,
        records.unwrap_or_else(|| ProvisionRecords::new(window)),
    ))
}

/// [`replay_recording`], sending each record to `sink` as it is made (memory flat in the
/// period's length); the records returned hold the counts only.
///
/// # Errors
///
/// As [`replay`].
pub async fn replay_streaming(
    config: &ReplayConfig,
    progress: bool,
    window: ProvisionWindow,
    sink: std::sync::mpsc::SyncSender<crate::provision::ProvisionRow>,
) -> anyhow::Result<(Report, ProvisionRecords)> {
    let records = ProvisionRecords::streaming(window.clone(), sink);
    let (report, _, records) = replay_full(config, progress, None, Some(records)).await?;
    let mut records = records.unwrap_or_else(|| ProvisionRecords::new(window));
    // The receiver reads until every sender is gone.
    records.close();
    Ok((report, records))
}

async fn replay_full(
    config: &ReplayConfig,
    progress: bool,
    diff: Option<PolicyDiff>,
    provisions: Option<ProvisionRecords>,
) -> anyhow::Result<(Report, Option<Analysis>, Option<ProvisionRecords>)> {
    let channel = net::connect(&config.grpc, &config.tls).await?;
    let latest = net::checkpoint(channel.clone()).await?;
    let mut entries = EntryCheck::new(config.verifier.clone());
    let Ok(target) = SignedCheckpoint::verify(&latest, &config.verifier) else {
        // Recorded as a finding; nothing else can be checked against a log that signs badly.
        entries.add_checkpoint(&latest)?;
        return Ok((entries.finish(), None, None));
    };
    let size = target.checkpoint().size;
    if let Some(end) = diff.as_ref().and_then(|diff| diff.end) {
        anyhow::ensure!(
            end <= size.get(),
            "the log's newest checkpoint (tree size {size}) has not reached the window's end \
             {end}"
        );
    }
    let analyzer = diff
        .map(|diff| -> anyhow::Result<Analyzer> {
            let start = match diff.start {
                DiffStart::All => WindowStart::Index(0),
                DiffStart::Last(n) => WindowStart::Index(size.get().saturating_sub(n)),
                DiffStart::From(index) => WindowStart::Index(index),
                DiffStart::Days(days) => {
                    let since = policy::domain::Timestamp::now()
                        .unix_millis()
                        .saturating_sub(i64::from(days).saturating_mul(86_400_000));
                    WindowStart::Since(
                        policy::domain::Timestamp::from_unix_millis(since.max(0))
                            .context("the clock is outside 1970-9999")?,
                    )
                }
            };
            Ok(Analyzer::new(diff.candidate, start, diff.end))
        })
        .transpose()?;
    entries.add_checkpoint(&latest)?;
    let bar = if progress {
        let bar = ProgressBar::new(size.get());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} entries {per_sec} eta {eta}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let (pages_tx, mut pages) = mpsc::channel::<Page>(PIPELINE_DEPTH);
    let (events_tx, events) = std::sync::mpsc::sync_channel::<Vec<(u64, Event)>>(PIPELINE_DEPTH);
    let fetch = tokio::spawn(fetch_pages(
        channel,
        config.token.clone(),
        size,
        latest,
        pages_tx,
    ));
    let check_bar = bar.clone();
    let check = tokio::task::spawn_blocking(move || -> anyhow::Result<Report> {
        while let Some(page) = pages.blocking_recv() {
            match page {
                Page::Checkpoints(notes) => {
                    for note in notes {
                        entries.add_checkpoint(&note)?;
                    }
                }
                Page::Erasures(erasures) => {
                    for erasure in erasures {
                        let body = (!erasure.redacted).then_some(erasure.body.as_slice());
                        entries.look_ahead(erasure.leaf_index, &erasure.leaf, body);
                    }
                }
                Page::Entries(page) => {
                    // Erasures of this page, ahead of the entries before them they erased.
                    let erasures: std::collections::HashSet<u64> =
                        page.iter().filter_map(|e| e.erased_by).collect();
                    for entry in page
                        .iter()
                        .filter(|e| !e.redacted && erasures.contains(&e.leaf_index))
                    {
                        entries.look_ahead(entry.leaf_index, &entry.leaf, Some(&entry.body));
                    }
                    let mut decoded = Vec::with_capacity(page.len());
                    for entry in page {
                        let body = (!entry.redacted).then_some(entry.body.as_slice());
                        let index = LeafIndex(entry.leaf_index);
                        if let Some(event) =
                            entries.check_erased(index, &entry.leaf, body, entry.erased_by)?
                        {
                            decoded.push((index.get(), event));
                        }
                    }
                    check_bar.set_position(entries.size().get());
                    if events_tx.send(decoded).is_err() {
                        break;
                    }
                }
            }
        }
        Ok(entries.finish())
    });
    let decide = tokio::task::spawn_blocking(move || {
        let mut decisions = DecisionCheck::new();
        if let Some(analyzer) = analyzer {
            decisions = decisions.with_analyzer(analyzer);
        }
        if let Some(records) = provisions {
            decisions = decisions.with_provisions(records);
        }
        for batch in events {
            for (index, event) in batch {
                decisions.replay(index, &event);
            }
        }
        decisions.finish_all(size.get())
    });
    let fetched = fetch.await.context("the fetching task failed")?;
    let checked = check.await.context("the checking task failed")??;
    let (decided, analysis, records) = decide.await.context("the replaying task failed")?;
    fetched?;
    bar.finish_and_clear();
    let report = merge(checked, decided);
    anyhow::ensure!(
        report.tree_size == size.get(),
        "the server served {} entries, the checkpoint says {size}",
        report.tree_size
    );
    Ok((report, analysis, records))
}

/// Fetches and verifies a patient's history.
///
/// # Errors
///
/// When the server cannot be reached or refuses, or no patient id is known. A history that
/// fails verification is `Ok(Ok(history))` with findings, or `Ok(Err(..))` when its checkpoint
/// does not verify.
pub async fn history(config: &HistoryConfig) -> anyhow::Result<Result<History, HistoryError>> {
    let (patient, responses) = fetch_history(config).await?;
    verify_responses(&config.verifier, &patient, responses)
}

/// Fetches every page of a patient's history as the server sends them, unverified, with the
/// patient id asked for (`config.patient`, else the token's).
///
/// # Errors
///
/// When the server cannot be reached or refuses, no patient id is known, the pages do not move
/// forward, or there are more than [`MAX_HISTORY_ENTRIES`] entries.
pub async fn fetch_history(
    config: &HistoryConfig,
) -> anyhow::Result<(String, Vec<pb::GetSubjectHistoryResponse>)> {
    let patient = match &config.patient {
        Some(patient) => patient.clone(),
        None => token_subject(&config.token)?,
    };
    let channel = net::connect(&config.grpc, &config.tls).await?;
    let mut client = pb::history_service_client::HistoryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let mut responses = Vec::new();
    let mut after_index = None;
    let mut total = 0usize;
    loop {
        let response = client
            .get_subject_history(net::authorized(
                pb::GetSubjectHistoryRequest {
                    patient_id: patient.clone(),
                    after_index,
                    limit: HISTORY_PAGE,
                },
                &config.token,
            )?)
            .await
            .context("while fetching the history")?
            .into_inner();
        total = total.saturating_add(response.entries.len());
        anyhow::ensure!(
            total <= MAX_HISTORY_ENTRIES,
            "the history has more than {MAX_HISTORY_ENTRIES} entries"
        );
        let last = response.entries.last().map(|e| e.leaf_index);
        let more = response.more;
        responses.push(response);
        match last {
            // A page must move forward, or the listing would never end.
            Some(last) if more && after_index.is_none_or(|a| last > a) => {
                after_index = Some(last);
            }
            _ => break,
        }
    }
    Ok((patient, responses))
}

/// Verifies fetched pages for `patient`.
///
/// # Errors
///
/// When an inclusion proof is not a list of 32-byte hashes.
pub fn verify_responses(
    verifier: &NoteVerifier,
    patient: &str,
    responses: Vec<pb::GetSubjectHistoryResponse>,
) -> anyhow::Result<Result<History, HistoryError>> {
    let pages = responses
        .into_iter()
        .map(|response| {
            let entries = response
                .entries
                .into_iter()
                .map(|e| {
                    Ok(HistoryEntry {
                        leaf_index: LeafIndex(e.leaf_index),
                        inclusion_proof: net::hashes(&e.inclusion_proof, "inclusion proof")?,
                        // An empty body the server does not call erased is checked (and fails
                        // its commitment) rather than taken as an erasure.
                        body: (!e.redacted).then_some(e.body),
                        leaf: e.leaf,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(HistoryPage {
                checkpoint: response.checkpoint,
                entries,
                completeness: response.completeness.map(completeness_proof),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(verify_history(verifier, patient, &pages))
}

/// Checks that the witnesses `policy` trusts vouch for `note`, the checkpoint a history's
/// completeness was judged at (its last page's), and records the outcome in `history`: a
/// `witnessed` verdict, or an [`Finding::Unwitnessed`] finding (which makes it invalid).
///
/// The checkpoint is vouched for **directly** when it carries the quorum of cosignatures itself
/// (then its subject-map line is witnessed as well). Otherwise, with `online` (the server's
/// address and how long to wait), the log's newest witnessed checkpoint is fetched until one of
/// at least the history's size exists and a consistency proof shows that it extends the
/// history's tree; offline, the history is unwitnessed.
///
/// # Errors
///
/// When the server cannot be reached or refuses while waiting.
pub async fn witness_history(
    history: &mut History,
    verifier: &NoteVerifier,
    policy: &WitnessPolicy,
    note: &str,
    online: Option<(&str, &ClientTls, Duration)>,
) -> anyhow::Result<()> {
    let Some((own, direct)) = witness_directly(history, verifier, policy, note) else {
        return Ok(());
    };
    let size = own.size.get();
    let Some((grpc, tls, wait)) = online else {
        history.findings.push(Finding::Unwitnessed {
            size,
            reason: direct,
        });
        return Ok(());
    };
    let channel = net::connect(grpc, tls).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let reason = loop {
        let newest = net::newest_witnessed(channel.clone()).await?;
        let last = match newest.as_deref().map(|n| policy.check(verifier, n)) {
            None => "the log has no witnessed checkpoint yet".to_owned(),
            Some(Err(e)) => e.to_string(),
            Some(Ok(witnessed)) => {
                let theirs = witnessed.signed().checkpoint();
                if theirs.size.get() >= size {
                    let outcome = if theirs.size == own.size {
                        (theirs.root == own.root).then_some(()).ok_or_else(|| {
                            "the witnesses cosigned another root at this size".to_owned()
                        })
                    } else {
                        net::consistency_proof(channel.clone(), own.size, theirs.size)
                            .await?
                            .verify(&own.root, &theirs.root).map_err(|e| {
                            format!(
                                "the witnessed checkpoint at tree size {} does not extend it: {e}",
                                theirs.size
                            )
                        })
                    };
                    match outcome {
                        Ok(()) => {
                            history.witnessed = Some(Witnessed {
                                tree_size: theirs.size.get(),
                                cosignatures: witnessed.cosignatures().len(),
                                direct: false,
                            });
                            return Ok(());
                        }
                        Err(reason) => break reason,
                    }
                }
                format!(
                    "the newest witnessed checkpoint is at tree size {}",
                    theirs.size
                )
            }
        };
        if tokio::time::Instant::now() >= deadline {
            break format!(
                "{direct}, and no witnessed checkpoint reached its size within {} s ({last})",
                wait.as_secs()
            );
        }
        tokio::time::sleep(WITNESS_POLL).await;
    };
    history.findings.push(Finding::Unwitnessed { size, reason });
    Ok(())
}

/// The direct half of [`witness_history`]: records the verdict and returns `None` when the
/// policy asks nothing, the checkpoint carries the quorum, or it does not verify; otherwise the
/// checkpoint and why its own signatures do not suffice.
fn witness_directly(
    history: &mut History,
    verifier: &NoteVerifier,
    policy: &WitnessPolicy,
    note: &str,
) -> Option<(Checkpoint, String)> {
    if !policy.is_required() {
        return None;
    }
    let own = match SignedCheckpoint::verify(note, verifier) {
        Ok(own) => own.checkpoint().clone(),
        Err(e) => {
            history.findings.push(Finding::Unwitnessed {
                size: history.tree_size,
                reason: format!("its checkpoint does not verify: {e}"),
            });
            return None;
        }
    };
    match policy.check(verifier, note) {
        Ok(witnessed) => {
            history.witnessed = Some(Witnessed {
                tree_size: own.size.get(),
                cosignatures: witnessed.cosignatures().len(),
                direct: true,
            });
            None
        }
        Err(e) => Some((own, e.to_string())),
    }
}

/// How often the log's witnessed checkpoint is asked for while waiting.
const WITNESS_POLL: Duration = Duration::from_millis(250);

/// Reads a saved history (`GetSubjectHistory` responses in proto3 JSON, see
/// [`pages_from_json`]) and verifies it for `patient`, offline.
///
/// # Errors
///
/// When the file cannot be read, is larger than [`MAX_HISTORY_JSON`], or is not such JSON.
/// A history that fails verification is `Ok(Ok(history))` with findings, or `Ok(Err(..))` when
/// its checkpoint does not verify.
pub fn history_file(
    verifier: &NoteVerifier,
    patient: &str,
    path: &std::path::Path,
) -> anyhow::Result<Result<History, HistoryError>> {
    history_file_witnessed(verifier, &WitnessPolicy::default(), patient, path)
}

/// [`history_file`], and also that the checkpoint its completeness is judged at (the last
/// page's) carries the cosignatures `policy` asks for ([`Finding::Unwitnessed`] otherwise: a
/// saved history cannot wait for the witnesses to catch up).
///
/// # Errors
///
/// As for [`history_file`].
pub fn history_file_witnessed(
    verifier: &NoteVerifier,
    policy: &WitnessPolicy,
    patient: &str,
    path: &std::path::Path,
) -> anyhow::Result<Result<History, HistoryError>> {
    let bytes = super::read_capped(path, MAX_HISTORY_JSON)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("`{}` is not UTF-8 text", path.display()))?;
    let pages = pages_from_json(&text)
        .with_context(|| format!("while reading the history in `{}`", path.display()))?;
    let mut result = verify_history(verifier, patient, &pages);
    if let (Ok(history), Some(last)) = (&mut result, pages.last())
        && let Some((own, reason)) = witness_directly(history, verifier, policy, &last.checkpoint)
    {
        history.findings.push(Finding::Unwitnessed {
            size: own.size.get(),
            reason,
        });
    }
    Ok(result)
}

/// The wire's `SubjectCompleteness`, field by field.
fn completeness_proof(c: pb::SubjectCompleteness) -> CompletenessProof {
    CompletenessProof {
        vrf_proof: c.vrf_proof,
        count: c.count,
        first_index: c.first_index,
        last_index: c.last_index,
        chain_head: c.chain_head,
        map_siblings: c.map_siblings,
        leaf_key: c.leaf_key,
        leaf_value: c.leaf_value,
    }
}

enum Page {
    Checkpoints(Vec<String>),
    Entries(Vec<pb::AuditEntry>),
    /// Erasure entries ahead of the entries they erased, fetched early so that the replay knows
    /// whose map record an erased entry updated.
    Erasures(Vec<pb::AuditEntry>),
}

async fn fetch_pages(
    channel: tonic::transport::Channel,
    token: String,
    size: TreeSize,
    latest: String,
    tx: mpsc::Sender<Page>,
) -> anyhow::Result<()> {
    let mut client = pb::audit_service_client::AuditServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let mut checkpoints = CheckpointPager::default();
    let mut fetched_erasures = std::collections::HashSet::new();
    let mut next = 0u64;
    while next < size.get() {
        let end = next.saturating_add(u64::from(PAGE)).min(size.get());
        // Every checkpoint that the coming entries reach goes first.
        while !checkpoints.done && checkpoints.from <= end {
            let response = client
                .list_checkpoints(net::authorized(
                    pb::ListCheckpointsRequest {
                        from_size: checkpoints.from,
                        limit: PAGE,
                    },
                    &token,
                )?)
                .await
                .context("while listing checkpoints")?
                .into_inner();
            let notes = checkpoints.take(response.checkpoints, size, &latest)?;
            if !notes.is_empty() && tx.send(Page::Checkpoints(notes)).await.is_err() {
                return Ok(());
            }
        }
        let count = u32::try_from(end - next).unwrap_or(PAGE);
        let response = client
            .get_entries(net::authorized(
                pb::GetEntriesRequest { start: next, count },
                &token,
            )?)
            .await
            .with_context(|| format!("while fetching entries from {next}"))?
            .into_inner();
        anyhow::ensure!(
            !response.entries.is_empty(),
            "the server returned no entries at {next}"
        );
        let mut entries = response.entries;
        entries.truncate(usize::try_from(end - next).unwrap_or(usize::MAX));
        next = next.saturating_add(entries.len() as u64);
        let mut wanted: Vec<u64> = entries
            .iter()
            .filter_map(|e| e.erased_by)
            .filter(|e| *e >= next && *e < size.get() && fetched_erasures.insert(*e))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut erasures = Vec::with_capacity(wanted.len());
        for erasure in wanted {
            let response = client
                .get_entries(net::authorized(
                    pb::GetEntriesRequest {
                        start: erasure,
                        count: 1,
                    },
                    &token,
                )?)
                .await
                .with_context(|| format!("while fetching erasure entry {erasure}"))?
                .into_inner();
            erasures.extend(response.entries.into_iter().take(1));
        }
        if !erasures.is_empty() && tx.send(Page::Erasures(erasures)).await.is_err() {
            return Ok(());
        }
        if tx.send(Page::Entries(entries)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Where listing checkpoints has got to.
#[derive(Default)]
struct CheckpointPager {
    /// The smallest size not listed yet.
    from: u64,
    done: bool,
}

impl CheckpointPager {
    /// The notes of one page worth checking: up to the replay's size, not the latest again (it is
    /// already checked). Sizes are read without verifying (replay verifies each note); a page that
    /// does not move forward ends the listing.
    fn take(
        &mut self,
        notes: Vec<String>,
        size: TreeSize,
        latest: &str,
    ) -> anyhow::Result<Vec<String>> {
        if notes.is_empty() {
            self.done = true;
            return Ok(notes);
        }
        let mut out = Vec::with_capacity(notes.len());
        let mut last = None;
        for note in notes {
            let note_size = note_size(&note);
            if let Some(s) = note_size {
                anyhow::ensure!(
                    s >= self.from && last.is_none_or(|l| s >= l),
                    "the server listed checkpoints out of order"
                );
                last = Some(s);
                if s > size.get() {
                    self.done = true;
                    break;
                }
            }
            if note != latest {
                out.push(note);
            }
        }
        match last {
            Some(last) if !self.done => self.from = last.saturating_add(1),
            Some(_) => {}
            // A page of nothing readable: let replay record them, and stop listing.
            None => self.done = true,
        }
        Ok(out)
    }
}

/// The tree size a checkpoint note claims, unverified.
fn note_size(note: &str) -> Option<u64> {
    let text = ledger::note::parse_note(note).ok()?.text;
    Checkpoint::parse(&text).ok().map(|c| c.size.get())
}

/// The `sub` claim of a JWT bearer token, read without verifying it (the server does that); it
/// only fills in the patient id of the request.
fn token_subject(token: &str) -> anyhow::Result<String> {
    let payload = token
        .split('.')
        .nth(1)
        .context("the token is not a JWT; pass `--patient`")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the token is not a JWT; pass `--patient`")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).context("the token is not a JWT; pass `--patient`")?;
    claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .context("the token names no patient; pass `--patient`")
}

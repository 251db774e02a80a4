//! A small Prometheus registry, hand-rolled on atomics: gRPC calls by method and status code
//! with latency histograms (recorded by [`MetricsLayer`]), and ledger counters that the
//! sequencer reports through [`Metrics::record_batch`] and [`Metrics::set_tree_size`], and how
//! many prepared decisions the writer took or redid ([`Metrics::watch_decisions`]).
//! [`Metrics::render`] writes the Prometheus text format (version 0.0.4) served at
//! `GET /metrics`.
//!
//! It deliberately has no labels that could carry request data: method labels come from the
//! request path only when it looks like `package.Service/Method`, and at most
//! [`MAX_METHOD_LABELS`] distinct ones are kept (the rest count as `other`), so a client cannot
//! grow memory by inventing paths. Once the server has said which methods it serves
//! ([`Metrics::set_methods`], from the services' descriptors), only those get labels: the
//! recording layer sits before authentication, so otherwise anyone could take up every label with
//! invented paths (or invented methods of a served service) and leave the real methods counted as
//! `other`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    pin::Pin,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::Frame;
use tonic::{Code, Status, body::Body};

use ledger::log::Log;
use tracing::{Instrument as _, Level};

use crate::state_machine::Decisions;
use crate::telemetry::TRACE_TARGET;
use crate::witness::{WitnessStats, Witnessed};

/// Most distinct method labels; further methods are counted as `other`.
pub const MAX_METHOD_LABELS: usize = 64;
/// Longest path used as a method label.
pub const MAX_METHOD_LABEL_LEN: usize = 128;

/// Upper bounds (seconds) of the call latency buckets.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];
/// Upper bounds of the batch size buckets (entries).
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];
/// Label of methods beyond [`MAX_METHOD_LABELS`] or with odd paths.
const OTHER_METHOD: &str = "other";

/// The server's metrics. Cheap to share (`Arc`) and to update (atomics).
#[derive(Debug)]
pub struct Metrics {
    methods: RwLock<HashMap<Box<str>, Arc<MethodMetrics>>>,
    /// The gRPC methods served (`package.Service/Method`); once set, only they get labels of
    /// their own.
    methods_served: OnceLock<std::collections::HashSet<Box<str>>>,
    other: Arc<MethodMetrics>,
    entries_appended: AtomicU64,
    batches: AtomicU64,
    batch_entries: Histogram,
    batch_duration: Histogram,
    batch_write: Histogram,
    batch_sync: Histogram,
    tree_size: AtomicU64,
    decisions: OnceLock<Arc<Decisions>>,
    health: OnceLock<Health>,
    /// The PostgreSQL store's lease, when the log is on PostgreSQL.
    store_lease: OnceLock<Arc<ledger::store::PostgresStore>>,
    /// The subject map's key, whose writer's write-behind is reported, when the log keeps one.
    subject_map: OnceLock<crate::subject_map::SubjectMapKey>,
}

/// What `/metrics` reads about the store's and the witnesses' health.
struct Health {
    log: Arc<Log>,
    witnessed: Witnessed,
    witnesses: Option<Arc<WitnessStats>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    fn render(&self, out: &mut String) {
        header(
            out,
            "akashi_ledger_poisoned",
            "gauge",
            "1 while a storage failure keeps writes and decisions refused (until the store is \
             reopened), else 0.",
        );
        let _ = writeln!(
            out,
            "akashi_ledger_poisoned {}",
            u8::from(self.log.is_poisoned())
        );
        let Some(witnesses) = &self.witnesses else {
            return;
        };
        header(
            out,
            "akashi_witness_quorum",
            "gauge",
            "Cosignatures a checkpoint needs before `/checkpoint` serves it.",
        );
        let _ = writeln!(out, "akashi_witness_quorum {}", self.witnessed.quorum());
        header(
            out,
            "akashi_witnessed_tree_size",
            "gauge",
            "Size of the newest checkpoint with the quorum's cosignatures (0: none yet); the \
             lag behind akashi_ledger_tree_size is how far witnessing trails the log.",
        );
        let _ = writeln!(
            out,
            "akashi_witnessed_tree_size {}",
            self.witnessed
                .newest()
                .map_or(0, |w| w.signed().checkpoint().size.get())
        );
        header(
            out,
            "akashi_witness_cosigned_tree_size",
            "gauge",
            "Size of the newest checkpoint each witness cosigned (0: none yet).",
        );
        for (name, size, _) in witnesses.each() {
            let _ = writeln!(
                out,
                "akashi_witness_cosigned_tree_size{{witness=\"{}\"}} {size}",
                label_value(name)
            );
        }
        header(
            out,
            "akashi_witness_failures_total",
            "counter",
            "Submissions to each witness that gave no cosignature (down, slow, refusing).",
        );
        for (name, _, failures) in witnesses.each() {
            let _ = writeln!(
                out,
                "akashi_witness_failures_total{{witness=\"{}\"}} {failures}",
                label_value(name)
            );
        }
    }
}

/// `value` as a Prometheus label value (backslash, quote and newline escaped).
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Tower layer recording every gRPC call (method, final `grpc-status`, latency until the last
/// byte of the response).
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

/// The service made by [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            methods: RwLock::new(HashMap::new()),
            methods_served: OnceLock::new(),
            other: Arc::new(MethodMetrics::new()),
            entries_appended: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_entries: Histogram::new(BATCH_SIZE_BUCKETS),
            batch_duration: Histogram::new(LATENCY_BUCKETS),
            batch_write: Histogram::new(LATENCY_BUCKETS),
            batch_sync: Histogram::new(LATENCY_BUCKETS),
            tree_size: AtomicU64::new(0),
            decisions: OnceLock::new(),
            health: OnceLock::new(),
            store_lease: OnceLock::new(),
            subject_map: OnceLock::new(),
        }
    }

    /// Reports the lease of the PostgreSQL store the log is on (set once, by the server).
    pub fn watch_store_lease(&self, store: Arc<ledger::store::PostgresStore>) {
        let _ = self.store_lease.set(store);
    }

    /// Reports the subject map's write-behind (set once, by the server, when the log keeps a
    /// map).
    pub fn watch_subject_map(&self, key: crate::subject_map::SubjectMapKey) {
        let _ = self.subject_map.set(key);
    }

    fn render_subject_map(&self, out: &mut String) {
        let Some(key) = self.subject_map.get() else {
            return;
        };
        let stats = key.write_behind();
        header(
            out,
            "akashi_subject_map_held_tiles",
            "gauge",
            "Tiles of the subject map held in memory, newer than the stored ones (about 1 KB \
             each; written out a chunk per batch past a fixed bound).",
        );
        let _ = writeln!(out, "akashi_subject_map_held_tiles {}", stats.held_tiles);
        header(
            out,
            "akashi_subject_map_journal_updates",
            "gauge",
            "Subject-map updates journaled since the stored tiles' generation: what a start \
             replays.",
        );
        let _ = writeln!(
            out,
            "akashi_subject_map_journal_updates {}",
            stats.journaled
        );
        header(
            out,
            "akashi_subject_map_write_outs_total",
            "counter",
            "Write-outs of the held subject-map tiles to the store completed (each spread over \
             several batches).",
        );
        let _ = writeln!(
            out,
            "akashi_subject_map_write_outs_total {}",
            stats.write_outs
        );
    }

    fn render_store_lease(&self, out: &mut String) {
        let Some(store) = self.store_lease.get() else {
            return;
        };
        let lease = store.lease();
        header(
            out,
            "akashi_follower",
            "gauge",
            "1 while this server follows the one holding the PostgreSQL store's lease (it forwards \
             every call there), 0 while it holds the lease itself.",
        );
        let _ = writeln!(out, "akashi_follower 0");
        header(
            out,
            "akashi_store_lease_epoch",
            "gauge",
            "The epoch of the PostgreSQL store's lease this server took: every commit checks \
             that the database still shows it.",
        );
        let _ = writeln!(out, "akashi_store_lease_epoch {}", lease.epoch);
        header(
            out,
            "akashi_store_lease_fenced",
            "gauge",
            "1 once another server took the store over: this one never commits again (its role \
             is then none), else 0 (it is the store's one writer).",
        );
        let _ = writeln!(out, "akashi_store_lease_fenced {}", u8::from(lease.fenced));
        header(
            out,
            "akashi_store_lease_age_seconds",
            "gauge",
            "Time since the lease was last renewed (renewed every quarter of its lifetime).",
        );
        let _ = writeln!(
            out,
            "akashi_store_lease_age_seconds {:.3}",
            lease.since_renewal.as_secs_f64()
        );
        header(
            out,
            "akashi_store_commits_total",
            "counter",
            "Transactions the PostgreSQL store committed (one per batch).",
        );
        let _ = writeln!(out, "akashi_store_commits_total {}", store.commits());
        header(
            out,
            "akashi_store_round_trips_total",
            "counter",
            "Reads the PostgreSQL store sent to the database (the others were answered from \
             writes not yet committed or from its read cache).",
        );
        let _ = writeln!(
            out,
            "akashi_store_round_trips_total {}",
            store.round_trips()
        );
    }

    /// Reports the health of `log`'s store, the newest checkpoint `witnessed`, and what each
    /// witness did (`witnesses`, when any is configured). Set once.
    pub fn set_health(
        &self,
        log: Arc<Log>,
        witnessed: Witnessed,
        witnesses: Option<Arc<WitnessStats>>,
    ) {
        let _ = self.health.set(Health {
            log,
            witnessed,
            witnesses,
        });
    }

    /// Reports how prepared decisions fared (set once, by the server).
    pub fn watch_decisions(&self, decisions: Arc<Decisions>) {
        let _ = self.decisions.set(decisions);
    }

    /// Records one committed ledger batch of `entries` entries that took `duration` (from the
    /// writer taking it to durable), `sync` of it in making the batch durable and `write` of it
    /// on the writer thread (applying, sealing, staging it and the state machine's bookkeeping
    /// after staging).
    pub fn record_batch(&self, entries: u64, duration: Duration, sync: Duration, write: Duration) {
        self.entries_appended.fetch_add(entries, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        #[expect(
            clippy::cast_precision_loss,
            reason = "histogram values are approximate"
        )]
        self.batch_entries.observe(entries as f64);
        self.batch_duration.observe(duration.as_secs_f64());
        self.batch_sync.observe(sync.as_secs_f64());
        self.batch_write.observe(write.as_secs_f64());
    }

    /// Sets the current tree size gauge.
    pub fn set_tree_size(&self, size: u64) {
        self.tree_size.store(size, Ordering::Relaxed);
    }

    /// Records one finished gRPC call of `path` (`/package.Service/Method`), and logs it at
    /// debug level: the method's label (never the raw path a client sent), the code and the
    /// latency — nothing from the request, so never a patient id.
    pub fn record_call(&self, path: &str, code: Code, elapsed: Duration) {
        self.method(path).record(code, elapsed);
        tracing::debug!(
            method = self.label(path),
            code = ?code,
            micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "call"
        );
    }

    /// The label `path` is counted under: its method when served (or before the served methods
    /// are known), else `other`.
    fn label<'a>(&self, path: &'a str) -> &'a str {
        method_label(path)
            .filter(|label| {
                self.methods_served
                    .get()
                    .is_none_or(|served| served.contains(*label))
            })
            .unwrap_or(OTHER_METHOD)
    }

    /// Total calls recorded for `path` with `code` (for tests and the load tool).
    pub fn calls(&self, path: &str, code: Code) -> u64 {
        self.method(path)
            .codes
            .get(code_index(code))
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// The registry in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut methods: Vec<(Box<str>, Arc<MethodMetrics>)> = self
            .methods
            .read()
            .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        methods.sort_by(|a, b| a.0.cmp(&b.0));
        methods.push((OTHER_METHOD.into(), self.other.clone()));

        header(
            &mut out,
            "akashi_grpc_requests_total",
            "counter",
            "gRPC calls finished, by method and status code.",
        );
        for (method, stats) in &methods {
            for (code, count) in CODE_NAMES.iter().zip(&stats.codes) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "akashi_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}"
                    );
                }
            }
        }
        header(
            &mut out,
            "akashi_grpc_request_duration_seconds",
            "histogram",
            "gRPC call latency until the end of the response, by method.",
        );
        for (method, stats) in &methods {
            if stats.latency.count.load(Ordering::Relaxed) > 0 {
                stats.latency.render(
                    &mut out,
                    "akashi_grpc_request_duration_seconds",
                    &format!("method=\"{method}\""),
                );
            }
        }
        header(
            &mut out,
            "akashi_ledger_entries_appended_total",
            "counter",
            "Log entries made durable.",
        );
        let _ = writeln!(
            out,
            "akashi_ledger_entries_appended_total {}",
            self.entries_appended.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "akashi_ledger_batches_total",
            "counter",
            "Group-commit batches made durable.",
        );
        let _ = writeln!(
            out,
            "akashi_ledger_batches_total {}",
            self.batches.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "akashi_ledger_batch_entries",
            "histogram",
            "Entries per group-commit batch.",
        );
        self.batch_entries
            .render(&mut out, "akashi_ledger_batch_entries", "");
        header(
            &mut out,
            "akashi_ledger_batch_duration_seconds",
            "histogram",
            "Time from the writer taking a batch to the batch durable and anchored.",
        );
        self.batch_duration
            .render(&mut out, "akashi_ledger_batch_duration_seconds", "");
        header(
            &mut out,
            "akashi_ledger_sync_duration_seconds",
            "histogram",
            "Time making a batch durable (store flush and device syncs), part of the batch duration.",
        );
        self.batch_sync
            .render(&mut out, "akashi_ledger_sync_duration_seconds", "");
        header(
            &mut out,
            "akashi_ledger_batch_write_seconds",
            "histogram",
            "Time the writer thread spent on a batch (applying its commands, sealing the subject map, staging it in the store, the bookkeeping after), part of the batch duration.",
        );
        self.batch_write
            .render(&mut out, "akashi_ledger_batch_write_seconds", "");
        header(
            &mut out,
            "akashi_ledger_tree_size",
            "gauge",
            "Size of the Merkle tree of the latest checkpoint.",
        );
        let _ = writeln!(
            out,
            "akashi_ledger_tree_size {}",
            self.tree_size.load(Ordering::Relaxed)
        );
        if let Some(decisions) = self.decisions.get() {
            header(
                &mut out,
                "akashi_authorize_prepared_total",
                "counter",
                "Decisions prepared off the writer thread, by whether the writer logged them as \
                 prepared or decided again because something they read had changed.",
            );
            for (outcome, count) in [
                ("accepted", decisions.accepted()),
                ("redone", decisions.redone()),
            ] {
                let _ = writeln!(
                    out,
                    "akashi_authorize_prepared_total{{outcome=\"{outcome}\"}} {count}"
                );
            }
            header(
                &mut out,
                "akashi_decisions_total",
                "counter",
                "Decisions answered, by action, purpose, de-identification level, decision and \
                 review flag (the fields of the public leaf; nothing about the patient).",
            );
            for ((action, purpose, level, effect, review), count) in decisions.answered().nonzero()
            {
                let _ = writeln!(
                    out,
                    "akashi_decisions_total{{action=\"{action}\",purpose=\"{purpose}\",level=\"{level}\",decision=\"{effect}\",review=\"{review}\"}} {count}"
                );
            }
            header(
                &mut out,
                "akashi_authorize_phase_seconds",
                "histogram",
                "Time an Authorize call spent before the writer (phase=\"prepare\": parsing it and \
                 preparing its decision) and from handing it to the writer to its receipt \
                 (phase=\"sequenced\": queued, decided, logged durably, the receipt built).",
            );
            let times = decisions.times();
            times.prepare.render(
                &mut out,
                "akashi_authorize_phase_seconds",
                "phase=\"prepare\"",
            );
            times.sequenced.render(
                &mut out,
                "akashi_authorize_phase_seconds",
                "phase=\"sequenced\"",
            );
        }
        self.render_store_lease(&mut out);
        self.render_subject_map(&mut out);
        if let Some(health) = self.health.get() {
            health.render(&mut out);
        }
        out
    }

    /// Limits method labels to `methods` (`package.Service/Method`, e.g.
    /// `akashi.v1.AccessService/Authorize`); calls to anything else, including invented methods
    /// of a served service, count as `other`. Set once.
    pub fn set_methods<S: AsRef<str>>(&self, methods: &[S]) {
        let _ = self.methods_served.set(
            methods
                .iter()
                .map(|name| Box::from(name.as_ref()))
                .collect(),
        );
    }

    /// The stats of `path`, registering it if there is room.
    fn method(&self, path: &str) -> Arc<MethodMetrics> {
        let Some(label) = method_label(path) else {
            return self.other.clone();
        };
        if let Some(served) = self.methods_served.get()
            && !served.contains(label)
        {
            return self.other.clone();
        }
        if let Some(stats) = self
            .methods
            .read()
            .ok()
            .and_then(|map| map.get(label).cloned())
        {
            return stats;
        }
        let Ok(mut map) = self.methods.write() else {
            return self.other.clone();
        };
        if let Some(stats) = map.get(label) {
            return stats.clone();
        }
        if map.len() >= MAX_METHOD_LABELS {
            return self.other.clone();
        }
        let stats = Arc::new(MethodMetrics::new());
        map.insert(label.into(), stats.clone());
        stats
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for MetricsService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let stats = self.metrics.method(request.uri().path());
        let start = Instant::now();
        // A span per request for OpenTelemetry (`crate::telemetry`), named by the method's
        // label, never the raw path; a disabled callsite when traces are off.
        let span = if tracing::enabled!(target: TRACE_TARGET, Level::TRACE) {
            let method = self.metrics.label(request.uri().path()).to_owned();
            tracing::trace_span!(
                target: TRACE_TARGET,
                "grpc.request",
                otel.name = %method,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let future = self.inner.call(request);
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = future.await?;
                // A trailers-only response (every error) carries the status in its headers;
                // otherwise it comes in the trailers at the end of the body.
                if let Some(code) = grpc_status(response.headers()) {
                    recorded.record("rpc.grpc.status_code", code as i32);
                    stats.record(code, start.elapsed());
                    return Ok(response);
                }
                // The handler answered: a unary call's OK comes in the trailers.
                recorded.record("rpc.grpc.status_code", Code::Ok as i32);
                Ok(response.map(|inner| {
                    Body::new(RecordingBody {
                        inner,
                        recorder: Some(Recorder { stats, start }),
                    })
                }))
            }
            .instrument(span),
        )
    }
}

/// Per-method counters.
#[derive(Debug)]
struct MethodMetrics {
    codes: [AtomicU64; 17],
    latency: Histogram,
}

impl MethodMetrics {
    fn new() -> Self {
        Self {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }

    fn record(&self, code: Code, elapsed: Duration) {
        if let Some(count) = self.codes.get(code_index(code)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// A fixed-bucket histogram (cumulative on render).
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound, plus `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(counter) = self.counts.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "non-negative observations; saturating float-to-int cast is intended"
        )]
        let micros = (value * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        #[expect(clippy::cast_precision_loss, reason = "the sum is approximate")]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {total}", braces(labels));
    }
}

/// Records a call when its response body ends (or is dropped).
struct Recorder {
    stats: Arc<MethodMetrics>,
    start: Instant,
}

/// A response body that reads `grpc-status` from the trailers as they pass.
struct RecordingBody {
    inner: Body,
    recorder: Option<Recorder>,
}

impl http_body::Body for RecordingBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.finish(status.code()),
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl RecordingBody {
    fn finish(&mut self, code: Code) {
        if let Some(recorder) = self.recorder.take() {
            recorder.stats.record(code, recorder.start.elapsed());
        }
    }
}

impl Drop for RecordingBody {
    fn drop(&mut self) {
        // Dropped before its trailers: the client went away.
        self.finish(Code::Cancelled);
    }
}

/// Names of codes 0..=16 as in the gRPC spec, indexed by code number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Index of `code` in [`CODE_NAMES`] (codes are 0..=16; anything else counts as UNKNOWN).
fn code_index(code: Code) -> usize {
    usize::try_from(i32::from(code))
        .ok()
        .filter(|index| *index < CODE_NAMES.len())
        .unwrap_or(2)
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code: i32 = value.to_str().ok()?.parse().ok()?;
    Some(Code::from(code))
}

/// `package.Service/Method` from a request path, if it looks like one.
fn method_label(path: &str) -> Option<&str> {
    let label = path.strip_prefix('/')?;
    let (service, method) = label.split_once('/')?;
    let ok = |part: &str, extra: char| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == extra)
    };
    (label.len() <= MAX_METHOD_LABEL_LEN && ok(service, '.') && ok(method, '_')).then_some(label)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests;

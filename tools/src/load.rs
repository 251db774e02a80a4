//! The load runner: opens N HTTP/2 connections to a loopback server, runs M concurrent callers
//! on each, stops at a deadline or a request count, and merges what the callers saw into a
//! [`Report`]. What a call is comes from a [`Workload`]; see [`health`] and [`authorize`].
//!
//! Two ways to load: **closed loop** (the default: every caller calls again as soon as it has its
//! answer, so the server sets the pace and throughput is what it can do at that concurrency) and
//! **open loop** (`rate`: call n is due at `n / rate` seconds after the start, whatever the server
//! does). Open loop is how latency at a given load is measured: when every caller is busy and a
//! call starts after it was due, its latency counts from when it was due, so a slow server cannot
//! hide its queueing by slowing the load down (no "coordinated omission").
//!
//! This module does not retry failed calls (a failure is counted under its gRPC code).

pub mod authorize;
pub mod health;

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Longest run allowed.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most requests allowed in one run.
pub const MAX_REQUESTS: u64 = 100_000_000;
/// Most connections.
pub const MAX_CONNECTIONS: usize = 256;
/// Most calls in flight per connection.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Highest open-loop rate, calls per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Slowest latency the histogram tracks exactly (slower calls are recorded as this).
const MAX_TRACKED_LATENCY_US: u64 = 60_000_000;

/// How to load the server.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Server URL, e.g. `http://127.0.0.1:50051`; must be a loopback address.
    pub target: String,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Calls in flight on each connection.
    pub in_flight: usize,
    /// Stop after this long (always set: [`MAX_DURATION`] at most).
    pub duration: Duration,
    /// Stop after this many calls, if set.
    pub requests: Option<u64>,
    /// Open loop at this many calls per second, if set (closed loop otherwise); the callers
    /// (`connections` × `in_flight`) bound how many calls can be outstanding at once.
    pub rate: Option<f64>,
}

/// One kind of call to repeat.
pub trait Workload: Send + Sync + 'static {
    /// Per-caller client state, made from the caller's connection.
    type Client: Send + 'static;

    /// The workload's name in reports.
    fn name(&self) -> &'static str;

    /// A client for one caller on `channel`.
    fn client(&self, channel: Channel) -> Self::Client;

    /// Makes call number `n` (0-based, unique across callers).
    fn call(
        &self,
        client: &mut Self::Client,
        n: u64,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Workload-specific counters for the report (e.g. receipts verified).
    fn checks(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// A failed call, counted under `kind` (a gRPC code name, or a check that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What went wrong, e.g. `UNAVAILABLE` or `receipt_missing`.
    pub kind: Cow<'static, str>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Workload name.
    pub mode: String,
    /// Server URL.
    pub target: String,
    /// Connections used.
    pub connections: usize,
    /// Calls in flight per connection.
    pub in_flight: usize,
    /// Calls made (successful or not).
    pub requests: u64,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Calls per second (all calls, failed ones included).
    pub throughput_rps: f64,
    /// The offered rate of an open-loop run, calls per second (`None`: closed loop).
    pub rate: Option<f64>,
    /// Open loop: calls that started after they were due, because every caller was busy (their
    /// latency counts from when they were due).
    pub late_starts: u64,
    /// Latency of all calls, microseconds.
    pub latency_us: Latency,
    /// Workload-specific counters.
    pub checks: BTreeMap<String, u64>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest call.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl CallError {
    /// A failure of kind `kind`.
    pub fn new(kind: impl Into<Cow<'static, str>>) -> Self {
        Self { kind: kind.into() }
    }

    /// A failed gRPC call, by its code.
    pub fn status(status: &tonic::Status) -> Self {
        Self::new(code_name(status.code()))
    }
}

impl LoadOptions {
    /// Checks the bounds and that the target is on this machine.
    ///
    /// # Errors
    ///
    /// When a bound is zero or too large, or the target is not a loopback address.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure_loopback(&self.target)?;
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            bail!("--connections must be between 1 and {MAX_CONNECTIONS}");
        }
        if self.in_flight == 0 || self.in_flight > MAX_IN_FLIGHT {
            bail!("--in-flight must be between 1 and {MAX_IN_FLIGHT}");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            bail!(
                "--duration must be between 1s and {}s",
                MAX_DURATION.as_secs()
            );
        }
        if self.requests.is_some_and(|n| n == 0 || n > MAX_REQUESTS) {
            bail!("--requests must be between 1 and {MAX_REQUESTS}");
        }
        if self
            .rate
            .is_some_and(|r| !r.is_finite() || r <= 0.0 || r > MAX_RATE)
        {
            bail!("--rate must be a number of calls per second above 0 and at most {MAX_RATE}");
        }
        Ok(())
    }
}

/// Refuses targets that are not on this machine (127.0.0.0/8, ::1 or `localhost`).
///
/// # Errors
///
/// When `target` is not a URL with a loopback host.
pub fn ensure_loopback(target: &str) -> anyhow::Result<()> {
    let uri: http::Uri = target
        .parse()
        .with_context(|| format!("while parsing target `{target}`"))?;
    let host = uri
        .host()
        .with_context(|| format!("target `{target}` has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("target `{target}` is not a loopback address; akashi-load only loads this machine");
    }
    Ok(())
}

/// Opens one connection to `target` (TCP_NODELAY, HTTP/2).
///
/// # Errors
///
/// When the target is not loopback or the connection fails.
pub async fn connect(target: &str) -> anyhow::Result<Channel> {
    ensure_loopback(target)?;
    Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("while parsing target `{target}`"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("while connecting to `{target}`"))
}

/// Runs `workload` as `options` say and reports what happened.
///
/// # Errors
///
/// When the options are out of bounds or a connection cannot be opened.
pub async fn run<W: Workload>(options: &LoadOptions, workload: Arc<W>) -> anyhow::Result<Report> {
    options.validate()?;
    let mut channels = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        channels.push(connect(&options.target).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + options.duration;
    let pace = options.rate.map(|rate| Pace { start, rate });
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..options.in_flight {
            let client = workload.client(channel.clone());
            tasks.spawn(caller(
                workload.clone(),
                client,
                issued.clone(),
                options.requests,
                deadline,
                pace,
            ));
        }
    }
    let mut total = CallerStats::new()?;
    while let Some(stats) = tasks.join_next().await {
        total.merge(&stats.context("a load caller failed")??)?;
    }
    let elapsed = start.elapsed();
    Ok(total.report(options, workload.name(), elapsed, workload.checks()))
}

/// What one caller saw.
struct CallerStats {
    latency: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    late_starts: u64,
}

/// An open-loop schedule: call `n` is due `n / rate` seconds after `start`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    start: Instant,
    rate: f64,
}

impl Pace {
    fn due(&self, n: u64) -> Instant {
        #[expect(clippy::cast_precision_loss, reason = "n is at most MAX_REQUESTS")]
        let offset = n as f64 / self.rate;
        self.start + Duration::from_secs_f64(offset)
    }
}

impl CallerStats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
                .context("while making a latency histogram")?,
            ok: 0,
            errors: BTreeMap::new(),
            late_starts: 0,
        })
    }

    fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .context("while merging latency histograms")?;
        self.ok += other.ok;
        self.late_starts += other.late_starts;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        Ok(())
    }

    fn report(
        &self,
        options: &LoadOptions,
        mode: &str,
        elapsed: Duration,
        checks: BTreeMap<String, u64>,
    ) -> Report {
        let requests = self.ok + self.errors.values().sum::<u64>();
        let elapsed_secs = elapsed.as_secs_f64();
        #[expect(clippy::cast_precision_loss, reason = "a rate is approximate")]
        let throughput_rps = if elapsed_secs > 0.0 {
            requests as f64 / elapsed_secs
        } else {
            0.0
        };
        let h = &self.latency;
        Report {
            mode: mode.to_owned(),
            target: options.target.clone(),
            connections: options.connections,
            in_flight: options.in_flight,
            requests,
            ok: self.ok,
            errors: self.errors.clone(),
            elapsed_secs,
            throughput_rps,
            rate: options.rate,
            late_starts: self.late_starts,
            latency_us: if h.is_empty() {
                Latency::default()
            } else {
                Latency {
                    p50: h.value_at_quantile(0.50),
                    p90: h.value_at_quantile(0.90),
                    p95: h.value_at_quantile(0.95),
                    p99: h.value_at_quantile(0.99),
                    max: h.max(),
                    mean: h.mean(),
                }
            },
            checks,
        }
    }
}

/// One caller: takes the next call number and makes the call (closed loop: at once; open loop:
/// when it is due), until the deadline or the request budget is reached.
async fn caller<W: Workload>(
    workload: Arc<W>,
    mut client: W::Client,
    issued: Arc<AtomicU64>,
    budget: Option<u64>,
    deadline: Instant,
    pace: Option<Pace>,
) -> anyhow::Result<CallerStats> {
    let mut stats = CallerStats::new()?;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if budget.is_some_and(|budget| n >= budget) {
            break;
        }
        let start = match pace.map(|pace| pace.due(n)) {
            None => Instant::now(),
            Some(due) if due >= deadline => break,
            Some(due) if due > Instant::now() => {
                tokio::time::sleep_until(due.into()).await;
                // The timer may wake a little late; that lateness is the load tool's, not the
                // server's, so the call is timed from when it really starts.
                Instant::now()
            }
            Some(due) => {
                // Every caller was busy when this call was due: it waited in our queue, which
                // is part of what a client at this rate would see.
                stats.late_starts += 1;
                due
            }
        };
        let result = workload.call(&mut client, n).await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats
            .latency
            .saturating_record(micros.clamp(1, MAX_TRACKED_LATENCY_US));
        match result {
            Ok(()) => stats.ok += 1,
            Err(err) => *stats.errors.entry(err.kind.into_owned()).or_default() += 1,
        }
    }
    Ok(stats)
}

impl Report {
    /// The report as a few lines of text.
    pub fn to_text(&self) -> String {
        let ms = |us: u64| {
            #[expect(clippy::cast_precision_loss, reason = "display only")]
            let ms = us as f64 / 1000.0;
            format!("{ms:.2} ms")
        };
        let failed: u64 = self.errors.values().sum();
        let mut out = String::new();
        let _ = writeln!(out, "mode        {}", self.mode);
        let _ = writeln!(
            out,
            "target      {} ({} connections x {} in flight)",
            self.target, self.connections, self.in_flight
        );
        let _ = writeln!(
            out,
            "requests    {} ({} ok, {failed} failed) in {:.2} s",
            self.requests, self.ok, self.elapsed_secs
        );
        let _ = writeln!(out, "throughput  {:.1} req/s", self.throughput_rps);
        if let Some(rate) = self.rate {
            let _ = writeln!(
                out,
                "offered     {rate:.1} req/s open loop ({} calls started late)",
                self.late_starts
            );
        }
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "latency     p50 {}  p90 {}  p95 {}  p99 {}  max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p95),
            ms(l.p99),
            ms(l.max)
        );
        for (kind, count) in &self.errors {
            let _ = writeln!(out, "error       {kind}: {count}");
        }
        for (check, count) in &self.checks {
            let _ = writeln!(out, "check       {check}: {count}");
        }
        out
    }
}

/// The gRPC spec name of `code` (e.g. `UNAVAILABLE`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests;

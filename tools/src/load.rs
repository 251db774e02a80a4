//! The load runner: opens N HTTP/2 connections to a loopback server, runs M concurrent callers
//! on each, stops at a deadline or a request count, and merges what the callers saw into a
//! [`Report`]. What a call is comes from a [`Workload`]; see [`health`], [`authorize`],
//! [`cohort`] and [`authzen`].
//!
//! Two ways to load: **closed loop** (the default: every caller calls again as soon as it has its
//! answer, so the server sets the pace and throughput is what it can do at that concurrency) and
//! **open loop** (`rate`: call n is due at `n / rate` seconds after the start, whatever the server
//! does). Open loop is how latency at a given load is measured: when every caller is busy and a
//! call starts after it was due, its latency counts from when it was due, so a slow server cannot
//! hide its queueing by slowing the load down (no "coordinated omission").
//!
//! The clock starts once every caller is spawned and holds its client: starting hundreds of
//! tasks is the load tool's work, not the server's latency.
//!
//! With `interval` set, the report also holds a time series: latency percentiles and errors of
//! the calls due (open loop) or started (closed loop) in each interval of the run, which shows
//! whether a high percentile comes from steady queueing or from a few bad moments.
//!
//! This module does not retry failed calls (a failure is counted under its gRPC code).

pub mod authorize;
pub mod authzen;
pub mod cedar_agent;
pub mod cohort;
pub mod health;

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    net::IpAddr,
    sync::{
        Arc, Mutex,
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
/// Shortest reporting interval. With [`MAX_DURATION`] it bounds a run to 6,000 intervals, each
/// kept as a histogram of about 20 KiB once a call falls in it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Significant digits of the per-interval histograms (one per caller and interval in use, so
/// kept small: 2 digits is 1% resolution).
const INTERVAL_SIGFIG: u8 = 2;

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
    /// Also report each interval of this length on its own, if set.
    pub interval: Option<Duration>,
}

/// One kind of call to repeat.
pub trait Workload: Send + Sync + 'static {
    /// Per-caller client state, made from the caller's connection.
    type Client: Send + 'static;

    /// The workload's name in reports.
    fn name(&self) -> &'static str;

    /// A client for one caller on `channel`.
    fn client(&self, channel: Channel) -> Self::Client;

    /// Whether calls go over the gRPC channels [`run`] opens to the target (a workload that
    /// speaks plain HTTP to a peer gets channels that never connect).
    fn grpc(&self) -> bool {
        true
    }

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
    /// Per-interval figures, in time order (empty unless an interval was asked for).
    pub intervals: Vec<IntervalReport>,
    /// CPU the server process spent during the run (setup excluded), when its pid was given.
    pub server_cpu: Option<ServerCpu>,
}

/// What the server process spent on the calls of a run: its user + system CPU time from
/// `/proc/PID/stat`, read just before the first call and just after the last.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerCpu {
    /// User + system CPU time over the run, seconds.
    pub seconds: f64,
    /// That, per call made, microseconds.
    pub micros_per_call: f64,
}

impl ServerCpu {
    /// The CPU spent between two readings of [`cpu_seconds`], spread over `calls`.
    #[must_use]
    pub fn between(before: f64, after: f64, calls: u64) -> Self {
        let seconds = (after - before).max(0.0);
        #[expect(clippy::cast_precision_loss, reason = "a call count far below 2^52")]
        let micros_per_call = if calls == 0 {
            0.0
        } else {
            seconds * 1e6 / calls as f64
        };
        Self {
            seconds,
            micros_per_call,
        }
    }
}

/// User + system CPU seconds of process `pid` (all its threads), from `/proc/PID/stat`.
///
/// # Errors
///
/// When the file cannot be read (no such process, not Linux) or does not parse.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

/// `utime + stime` of a `/proc/PID/stat` line, in seconds. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are counted after its last
/// `)`. The kernel reports both in `USER_HZ` ticks, which Linux fixes at 100 per second for
/// everything it shows to user space.
pub(crate) fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[expect(clippy::cast_precision_loss, reason = "tick counts far below 2^52")]
    let ticks = utime.saturating_add(stime) as f64;
    Some(ticks / USER_HZ)
}

/// The calls due (open loop) or started (closed loop) in one interval of a run.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalReport {
    /// When the interval starts, seconds from the start of the run.
    pub start_secs: f64,
    /// Calls made (successful or not).
    pub requests: u64,
    /// Failed calls.
    pub errors: u64,
    /// Latency of the interval's calls, microseconds (1% resolution).
    pub latency_us: Latency,
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

impl Latency {
    /// The percentiles of `h` (all zero for an empty histogram).
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
        }
    }
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
        if self
            .interval
            .is_some_and(|interval| interval < MIN_INTERVAL)
        {
            bail!(
                "--interval must be at least {} s",
                MIN_INTERVAL.as_secs_f64()
            );
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

/// The HTTP/1.1 client of the workloads that speak JSON over plain HTTP (one keep-alive
/// connection per caller).
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// A new [`HttpClient`].
#[must_use]
pub fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `POST`s `body` as JSON to `url` (with `authorization`, if given) and returns the answer's
/// JSON: a failed exchange is `UNAVAILABLE`, a status other than 2xx `HTTP_<status>`, an answer
/// that is not JSON `answer_not_json`.
///
/// # Errors
///
/// The [`CallError`] above.
pub async fn post_json(
    client: &HttpClient,
    url: &str,
    authorization: Option<&str>,
    body: &serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    use http_body_util::BodyExt as _;
    let mut request = http::Request::post(url).header("content-type", "application/json");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .map_err(|_| CallError::new("request_invalid"))?;
    let response = client
        .request(request)
        .await
        .map_err(|_| CallError::new("UNAVAILABLE"))?;
    let status = response.status();
    let answer = response
        .into_body()
        .collect()
        .await
        .map_err(|_| CallError::new("UNAVAILABLE"))?
        .to_bytes();
    if !status.is_success() {
        return Err(CallError::new(format!("HTTP_{}", status.as_u16())));
    }
    serde_json::from_slice(&answer).map_err(|_| CallError::new("answer_not_json"))
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
        channels.push(if workload.grpc() {
            connect(&options.target).await?
        } else {
            ensure_loopback(&options.target)?;
            Endpoint::from_shared(options.target.clone())
                .with_context(|| format!("while parsing target `{}`", options.target))?
                .connect_lazy()
        });
    }
    let issued = Arc::new(AtomicU64::new(0));
    let intervals = options.interval.map(|length| {
        Arc::new(Intervals {
            length,
            slots: Mutex::new(BTreeMap::new()),
        })
    });
    // Every caller is spawned and holds its client before the clock starts, so that starting
    // hundreds of tasks is not timed as the server's latency (it showed as a first interval
    // with a p99 of 20-60 ms, in health mode too).
    let callers = options.connections * options.in_flight;
    let ready = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let mut tasks = tokio::task::JoinSet::new();
    for channel in &channels {
        for _ in 0..options.in_flight {
            let client = workload.client(channel.clone());
            let setup = CallerSetup {
                issued: issued.clone(),
                budget: options.requests,
                duration: options.duration,
                rate: options.rate,
                intervals: intervals.clone(),
                ready: ready.clone(),
                start: start_rx.clone(),
            };
            tasks.spawn(caller(workload.clone(), client, setup));
        }
    }
    ready.wait().await;
    let start = Instant::now();
    // The callers hold receivers until they have read the start, so this cannot fail.
    start_tx
        .send(Some(start))
        .context("the load callers stopped before the start")?;
    let mut total = CallerStats::new()?;
    while let Some(stats) = tasks.join_next().await {
        total.merge(&stats.context("a load caller failed")??)?;
    }
    let elapsed = start.elapsed();
    let mut report = total.report(options, workload.name(), elapsed, workload.checks());
    if let Some(intervals) = intervals {
        report.intervals = intervals.report();
    }
    Ok(report)
}

/// The per-interval figures of a run, merged from the callers as they move on to a new
/// interval (so a caller holds one interval's histogram at a time, not one per interval).
struct Intervals {
    length: Duration,
    slots: Mutex<BTreeMap<u64, IntervalStats>>,
}

/// One interval's calls.
struct IntervalStats {
    latency: Histogram<u64>,
    errors: u64,
}

impl IntervalStats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, INTERVAL_SIGFIG)
                .context("while making an interval histogram")?,
            errors: 0,
        })
    }
}

impl Intervals {
    /// The interval a call belongs to, by when it was due or started (`start`: the run's).
    fn index(&self, start: Instant, at: Instant) -> u64 {
        let offset = at.saturating_duration_since(start).as_nanos();
        u64::try_from(offset / self.length.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// Adds a caller's figures for interval `index`.
    fn merge(&self, index: u64, stats: &IntervalStats) -> anyhow::Result<()> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| anyhow::anyhow!("a load caller panicked"))?;
        let slot = match slots.entry(index) {
            std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => slot.insert(IntervalStats::new()?),
        };
        slot.latency
            .add(&stats.latency)
            .context("while merging interval histograms")?;
        slot.errors += stats.errors;
        Ok(())
    }

    fn report(&self) -> Vec<IntervalReport> {
        let Ok(slots) = self.slots.lock() else {
            return Vec::new();
        };
        slots
            .iter()
            .map(|(index, stats)| {
                #[expect(clippy::cast_precision_loss, reason = "display only")]
                let start_secs = self.length.as_secs_f64() * *index as f64;
                IntervalReport {
                    start_secs,
                    requests: stats.latency.len(),
                    errors: stats.errors,
                    latency_us: Latency::of(&stats.latency),
                }
            })
            .collect()
    }
}

/// What a caller needs besides its workload and client.
struct CallerSetup {
    /// The next call number, shared by all callers.
    issued: Arc<AtomicU64>,
    /// Stop once this many calls were issued, if set.
    budget: Option<u64>,
    /// Stop this long after the start.
    duration: Duration,
    /// Open-loop rate, if set.
    rate: Option<f64>,
    /// Where per-interval figures go, if asked for.
    intervals: Option<Arc<Intervals>>,
    /// Met by every caller and the runner before the clock starts.
    ready: Arc<tokio::sync::Barrier>,
    /// The start of the run, once set.
    start: tokio::sync::watch::Receiver<Option<Instant>>,
}

/// What one caller holds of the interval it is in.
struct CallerInterval {
    index: u64,
    stats: IntervalStats,
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
            latency_us: Latency::of(h),
            checks,
            intervals: Vec::new(),
            server_cpu: None,
        }
    }
}

/// One caller: takes the next call number and makes the call (closed loop: at once; open loop:
/// when it is due), until the deadline or the request budget is reached.
async fn caller<W: Workload>(
    workload: Arc<W>,
    mut client: W::Client,
    setup: CallerSetup,
) -> anyhow::Result<CallerStats> {
    let CallerSetup {
        issued,
        budget,
        duration,
        rate,
        intervals,
        ready,
        mut start,
    } = setup;
    // First of all, so that no early return can leave the runner waiting at the barrier.
    ready.wait().await;
    let mut stats = CallerStats::new()?;
    let run_start = start
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|start| *start)
        .context("the load run ended before it started")?;
    let deadline = run_start + duration;
    let pace = rate.map(|rate| Pace {
        start: run_start,
        rate,
    });
    let mut current: Option<CallerInterval> = None;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if budget.is_some_and(|budget| n >= budget) {
            break;
        }
        let due = pace.map(|pace| pace.due(n));
        let start = match due {
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
        let micros = micros.clamp(1, MAX_TRACKED_LATENCY_US);
        stats.latency.saturating_record(micros);
        if let Some(intervals) = &intervals {
            // Open loop: the interval the call was due in, so that the split follows the
            // schedule; closed loop: the one it started in.
            let index = intervals.index(run_start, due.unwrap_or(start));
            if current.as_ref().is_some_and(|c| c.index != index)
                && let Some(done) = current.take()
            {
                intervals.merge(done.index, &done.stats)?;
            }
            if current.is_none() {
                current = Some(CallerInterval {
                    index,
                    stats: IntervalStats::new()?,
                });
            }
            if let Some(c) = current.as_mut() {
                c.stats.latency.saturating_record(micros);
                c.stats.errors += u64::from(result.is_err());
            }
        }
        match result {
            Ok(()) => stats.ok += 1,
            Err(err) => *stats.errors.entry(err.kind.into_owned()).or_default() += 1,
        }
    }
    if let (Some(intervals), Some(done)) = (&intervals, current) {
        intervals.merge(done.index, &done.stats)?;
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
        if let Some(cpu) = &self.server_cpu {
            let _ = writeln!(
                out,
                "server cpu  {:.2} s, {:.1} µs per call",
                cpu.seconds, cpu.micros_per_call
            );
        }
        for (kind, count) in &self.errors {
            let _ = writeln!(out, "error       {kind}: {count}");
        }
        for (check, count) in &self.checks {
            let _ = writeln!(out, "check       {check}: {count}");
        }
        if !self.intervals.is_empty() {
            let _ = writeln!(
                out,
                "interval    {:>8} {:>8} {:>7} {:>10} {:>10} {:>10}",
                "start", "calls", "failed", "p50", "p99", "max"
            );
            for i in &self.intervals {
                let l = &i.latency_us;
                let _ = writeln!(
                    out,
                    "interval    {:>7.2}s {:>8} {:>7} {:>10} {:>10} {:>10}",
                    i.start_secs,
                    i.requests,
                    i.errors,
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max)
                );
            }
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

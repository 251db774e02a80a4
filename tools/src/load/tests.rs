use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::Channel;

use super::{CallError, LoadOptions, Workload, ensure_loopback, health::HealthWorkload, run};

/// One connection with one caller: calls run strictly one after another.
fn one_caller(target: String) -> LoadOptions {
    LoadOptions {
        connections: 1,
        in_flight: 1,
        ..options(target)
    }
}

fn options(target: String) -> LoadOptions {
    LoadOptions {
        target,
        connections: 2,
        in_flight: 4,
        duration: Duration::from_secs(60),
        requests: Some(200),
        rate: None,
        interval: None,
    }
}

/// A plain tonic health server on 127.0.0.1:0 that stops when the returned sender drops.
async fn health_server() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, service) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (format!("http://{addr}"), stop)
}

#[test]
fn only_loopback_targets_are_accepted() {
    for ok in [
        "http://127.0.0.1:50051",
        "http://127.1.2.3:1",
        "http://localhost:50051",
        "http://[::1]:50051",
    ] {
        ensure_loopback(ok).unwrap();
    }
    for bad in [
        "http://10.0.0.1:50051",
        "http://192.168.1.1:1",
        "http://example.com:50051",
        "http://[2001:db8::1]:1",
        "not a url",
        "/path-only",
    ] {
        assert!(ensure_loopback(bad).is_err(), "{bad}");
    }
}

#[test]
fn options_are_bounded() {
    let good = options("http://127.0.0.1:1".into());
    good.validate().unwrap();
    let cases: [fn(&mut LoadOptions); 12] = [
        |o| o.connections = 0,
        |o| o.connections = 10_000,
        |o| o.in_flight = 0,
        |o| o.duration = Duration::ZERO,
        |o| o.duration = Duration::from_secs(3600),
        |o| o.requests = Some(0),
        |o| o.rate = Some(0.0),
        |o| o.rate = Some(-5.0),
        |o| o.rate = Some(f64::NAN),
        |o| o.rate = Some(1e9),
        |o| o.interval = Some(Duration::ZERO),
        |o| o.interval = Some(Duration::from_millis(50)),
    ];
    for edit in cases {
        let mut bad = good.clone();
        edit(&mut bad);
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn the_shortest_interval_is_accepted_for_the_longest_run() {
    let mut opts = options("http://127.0.0.1:1".into());
    opts.interval = Some(super::MIN_INTERVAL);
    opts.duration = super::MAX_DURATION;
    opts.validate().unwrap();
}

#[tokio::test]
async fn an_open_loop_run_splits_into_intervals_by_schedule() {
    let (target, _stop) = health_server().await;
    let mut opts = options(target);
    // 400 calls at 800/s are due over half a second: 100 in each 125 ms interval, whenever
    // they actually run, because open-loop calls are filed under the interval they were due in.
    opts.requests = Some(400);
    opts.rate = Some(800.0);
    opts.interval = Some(Duration::from_millis(125));
    let report = run(&opts, Arc::new(HealthWorkload)).await.unwrap();
    assert_eq!(report.ok, 400);
    let counts: Vec<u64> = report.intervals.iter().map(|i| i.requests).collect();
    assert_eq!(counts, [100, 100, 100, 100], "{:?}", report.intervals);
    let starts: Vec<f64> = report.intervals.iter().map(|i| i.start_secs).collect();
    assert_eq!(starts, [0.0, 0.125, 0.25, 0.375]);
    for i in &report.intervals {
        assert_eq!(i.errors, 0);
        assert!(i.latency_us.p50 >= 1 && i.latency_us.p50 <= i.latency_us.p99);
        // 1% resolution per interval against the exact overall maximum.
        assert!(i.latency_us.max <= report.latency_us.max + report.latency_us.max / 50);
    }
    let text = report.to_text();
    assert!(text.contains("interval       0.38s      100"), "{text}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["intervals"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["intervals"][3]["requests"], 100);
}

#[tokio::test]
async fn interval_figures_add_up_to_the_run() {
    let (target, _stop) = health_server().await;
    let mut opts = options(target);
    // Closed loop, failing every third call: however the calls fall into intervals, the
    // intervals hold every call and every failure once.
    opts.requests = Some(300);
    opts.interval = Some(Duration::from_millis(100));
    let report = run(&opts, Arc::new(Flaky)).await.unwrap();
    assert_eq!(report.requests, 300);
    let calls: u64 = report.intervals.iter().map(|i| i.requests).sum();
    let failed: u64 = report.intervals.iter().map(|i| i.errors).sum();
    assert_eq!(calls, 300);
    assert_eq!(failed, report.errors.values().sum::<u64>());
    assert!(failed > 0);
    // Without an interval there is no time series.
    opts.interval = None;
    let report = run(&opts, Arc::new(Flaky)).await.unwrap();
    assert!(report.intervals.is_empty());
}

#[tokio::test]
async fn health_run_makes_exactly_the_requested_calls() {
    let (target, _stop) = health_server().await;
    let report = run(&options(target), Arc::new(HealthWorkload))
        .await
        .unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(report.ok, 200);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.latency_us.p50 >= 1);
    assert!(report.latency_us.p50 <= report.latency_us.p99);
    assert!(report.latency_us.p99 <= report.latency_us.max);
    assert!(report.throughput_rps > 0.0);
    let text = report.to_text();
    assert!(text.contains("200 ok, 0 failed"), "{text}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["requests"], 200);
    assert_eq!(json["mode"], "health");
    assert!(json["latency_us"]["p99"].is_u64());
}

/// Fails every third call.
struct Flaky;

impl Workload for Flaky {
    type Client = ();

    fn name(&self) -> &'static str {
        "flaky"
    }

    fn client(&self, _channel: Channel) -> Self::Client {}

    async fn call(&self, _client: &mut (), n: u64) -> Result<(), CallError> {
        if n.is_multiple_of(3) {
            Err(CallError::new("UNAVAILABLE"))
        } else {
            Ok(())
        }
    }

    fn checks(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([("custom".to_owned(), 7)])
    }
}

#[tokio::test]
async fn failures_are_counted_by_kind() {
    let (target, _stop) = health_server().await;
    let mut opts = options(target);
    opts.requests = Some(300);
    let report = run(&opts, Arc::new(Flaky)).await.unwrap();
    assert_eq!(report.requests, 300);
    assert_eq!(report.ok, 200);
    assert_eq!(report.errors["UNAVAILABLE"], 100);
    assert_eq!(report.checks["custom"], 7);
    assert!(report.to_text().contains("error       UNAVAILABLE: 100"));
}

#[tokio::test]
async fn a_duration_bounds_the_run() {
    let (target, _stop) = health_server().await;
    let mut opts = options(target);
    opts.requests = None;
    opts.duration = Duration::from_millis(200);
    let report = run(&opts, Arc::new(HealthWorkload)).await.unwrap();
    assert!(report.requests > 0);
    assert_eq!(report.errors.len(), 0);
    // Bounded: the run ends soon after its deadline (generous slack for a loaded machine).
    assert!(report.elapsed_secs < 30.0, "{}", report.elapsed_secs);
}

#[tokio::test]
async fn an_open_loop_run_keeps_to_its_schedule() {
    let (target, _stop) = health_server().await;
    let mut opts = options(target);
    opts.requests = Some(60);
    opts.rate = Some(400.0);
    let report = run(&opts, Arc::new(HealthWorkload)).await.unwrap();
    assert_eq!(report.requests, 60);
    assert_eq!(report.ok, 60);
    // Call 59 is not due before 59/400 s: an open-loop run cannot finish sooner, however fast
    // the server is (a closed-loop run of 60 health checks takes a few milliseconds).
    assert!(
        report.elapsed_secs >= 59.0 / 400.0,
        "{}",
        report.elapsed_secs
    );
    assert_eq!(report.rate, Some(400.0));
    assert!(
        report
            .to_text()
            .contains("offered     400.0 req/s open loop")
    );
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rate"], 400.0);
    assert!(json["late_starts"].is_u64());
}

/// Takes 20 ms per call.
struct Slow;

impl Workload for Slow {
    type Client = ();

    fn name(&self) -> &'static str {
        "slow"
    }

    fn client(&self, _channel: Channel) -> Self::Client {}

    async fn call(&self, _client: &mut (), _n: u64) -> Result<(), CallError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

#[tokio::test]
async fn an_open_loop_run_counts_queueing_when_callers_fall_behind() {
    let (target, _stop) = health_server().await;
    let mut opts = one_caller(target);
    // One caller, calls of 20 ms, offered every 1 ms: every call after the first is late, and
    // call n waits about 19 n ms for the caller. Timing from the call's own start would hide
    // that and report about 20 ms for all of them.
    opts.requests = Some(20);
    opts.rate = Some(1000.0);
    let report = run(&opts, Arc::new(Slow)).await.unwrap();
    assert_eq!(report.ok, 20);
    // Call 0 is due at the very start, so it may count as late by microseconds as well.
    assert!(report.late_starts >= 19, "{}", report.late_starts);
    // The last call was due at 19 ms and cannot end before 20 × 20 ms = 400 ms.
    assert!(report.latency_us.max >= 380_000, "{:?}", report.latency_us);
}

#[tokio::test]
async fn a_closed_loop_run_splits_into_intervals_by_start_time() {
    let (target, _stop) = health_server().await;
    let mut opts = one_caller(target);
    // One caller, 20 calls of at least 20 ms each: they start at least 20 ms apart and over at
    // least 380 ms, so 100 ms intervals hold at most 5 calls each, in at least 4 intervals.
    opts.requests = Some(20);
    opts.interval = Some(Duration::from_millis(100));
    let report = run(&opts, Arc::new(Slow)).await.unwrap();
    assert_eq!(report.ok, 20);
    assert!(report.intervals.len() >= 4, "{:?}", report.intervals);
    assert!(
        report.intervals.iter().all(|i| i.requests <= 5),
        "{:?}",
        report.intervals
    );
    assert_eq!(report.intervals.iter().map(|i| i.requests).sum::<u64>(), 20);
}

#[test]
fn cpu_seconds_are_read_after_the_last_parenthesis_of_the_name() {
    // A name with a space and a parenthesis, as `prctl` allows; utime 1234, stime 56 ticks.
    let stat = "4242 (akashi (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 9 0 \
                 123 456 789";
    assert_eq!(super::parse_cpu_seconds(stat), Some(12.9));
    assert_eq!(super::parse_cpu_seconds("4242 (akashi) S 1 2"), None);
    assert_eq!(super::parse_cpu_seconds("no name here"), None);
    // The calling process itself: a real file that parses.
    let own = super::cpu_seconds(std::process::id()).unwrap();
    assert!(own >= 0.0);
    let cpu = super::ServerCpu::between(1.0, 1.5, 1000);
    assert!((cpu.micros_per_call - 500.0).abs() < 1e-9);
    assert_eq!(super::ServerCpu::between(1.0, 1.5, 0).micros_per_call, 0.0);
}

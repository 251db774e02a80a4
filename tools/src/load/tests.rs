use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::Channel;

use super::{CallError, LoadOptions, Workload, ensure_loopback, health::HealthWorkload, run};

fn options(target: String) -> LoadOptions {
    LoadOptions {
        target,
        connections: 2,
        in_flight: 4,
        duration: Duration::from_secs(60),
        requests: Some(200),
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
    let cases: [fn(&mut LoadOptions); 6] = [
        |o| o.connections = 0,
        |o| o.connections = 10_000,
        |o| o.in_flight = 0,
        |o| o.duration = Duration::ZERO,
        |o| o.duration = Duration::from_secs(3600),
        |o| o.requests = Some(0),
    ];
    for edit in cases {
        let mut bad = good.clone();
        edit(&mut bad);
        assert!(bad.validate().is_err(), "{bad:?}");
    }
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

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::BodyExt as _;
use tonic::{Code, body::Body};
use tower::{Layer as _, ServiceExt as _};

use super::{MAX_METHOD_LABELS, Metrics, MetricsLayer, method_label};

/// Held by every test here that records a call: each call is a `debug` event, and tracing caches
/// whether anyone wants an event the first time it fires, so an event fired on another thread
/// while the capturing test below installs its subscriber can be cached as unwanted and the
/// capture come out empty (seen when these tests run together).
static EVENTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn events() -> std::sync::MutexGuard<'static, ()> {
    EVENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn calls_are_counted_by_method_and_code() {
    let _events = events();
    let metrics = Metrics::new();
    let path = "/akashi.v1.AccessService/Authorize";
    metrics.record_call(path, Code::Ok, Duration::from_micros(300));
    metrics.record_call(path, Code::Ok, Duration::from_millis(3));
    metrics.record_call(path, Code::InvalidArgument, Duration::from_millis(1));
    assert_eq!(metrics.calls(path, Code::Ok), 2);
    let text = metrics.render();
    assert!(text.contains(
        "akashi_grpc_requests_total{method=\"akashi.v1.AccessService/Authorize\",code=\"OK\"} 2"
    ));
    assert!(text.contains(
        "akashi_grpc_requests_total{method=\"akashi.v1.AccessService/Authorize\",code=\"INVALID_ARGUMENT\"} 1"
    ));
    // Cumulative buckets: 300us is under 0.0005, 1ms and 3ms are not.
    assert!(text.contains(
        "akashi_grpc_request_duration_seconds_bucket{method=\"akashi.v1.AccessService/Authorize\",le=\"0.0005\"} 1"
    ));
    assert!(text.contains(
        "akashi_grpc_request_duration_seconds_bucket{method=\"akashi.v1.AccessService/Authorize\",le=\"0.005\"} 3"
    ));
    assert!(text.contains(
        "akashi_grpc_request_duration_seconds_bucket{method=\"akashi.v1.AccessService/Authorize\",le=\"+Inf\"} 3"
    ));
    assert!(text.contains(
        "akashi_grpc_request_duration_seconds_count{method=\"akashi.v1.AccessService/Authorize\"} 3"
    ));
    assert!(text.contains("# TYPE akashi_grpc_requests_total counter"));
}

#[test]
fn batches_and_tree_size_are_reported() {
    let metrics = Metrics::new();
    metrics.record_batch(
        3,
        Duration::from_millis(1),
        Duration::from_micros(300),
        Duration::from_micros(400),
    );
    metrics.record_batch(
        5,
        Duration::from_millis(2),
        Duration::from_millis(2),
        Duration::from_millis(30),
    );
    metrics.set_tree_size(8);
    let text = metrics.render();
    assert!(text.contains("akashi_ledger_entries_appended_total 8\n"));
    assert!(text.contains("akashi_ledger_batches_total 2\n"));
    assert!(text.contains("akashi_ledger_batch_entries_bucket{le=\"4\"} 1\n"));
    assert!(text.contains("akashi_ledger_batch_entries_bucket{le=\"8\"} 2\n"));
    assert!(text.contains("akashi_ledger_batch_entries_sum 8\n"));
    assert!(text.contains("akashi_ledger_tree_size 8\n"));
    assert!(text.contains("# TYPE akashi_ledger_sync_duration_seconds histogram\n"));
    assert!(
        text.contains("akashi_ledger_sync_duration_seconds_bucket{le=\"0.0005\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("akashi_ledger_sync_duration_seconds_bucket{le=\"0.0025\"} 2\n"));
    assert!(text.contains("akashi_ledger_sync_duration_seconds_count 2\n"));
    assert!(text.contains("# TYPE akashi_ledger_batch_write_seconds histogram\n"));
    assert!(text.contains("akashi_ledger_batch_write_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert!(text.contains("akashi_ledger_batch_write_seconds_bucket{le=\"0.025\"} 1\n"));
    assert!(text.contains("akashi_ledger_batch_write_seconds_bucket{le=\"0.05\"} 2\n"));
}

#[test]
fn odd_paths_and_too_many_methods_count_as_other() {
    let _events = events();
    assert_eq!(method_label("/a.B/C"), Some("a.B/C"));
    for bad in [
        "", "/", "no-slash", "/a.B/", "//C", "/a\"b/C", "/a.B/C/D", "/a b/C",
    ] {
        assert_eq!(method_label(bad), None, "{bad:?}");
    }
    assert_eq!(method_label(&format!("/a.B/{}", "x".repeat(200))), None);

    let metrics = Metrics::new();
    for i in 0..MAX_METHOD_LABELS + 10 {
        metrics.record_call(&format!("/x.Y/M{i}"), Code::Unimplemented, Duration::ZERO);
    }
    metrics.record_call("/\"}evil", Code::Unimplemented, Duration::ZERO);
    let text = metrics.render();
    assert!(
        text.contains("{method=\"other\",code=\"UNIMPLEMENTED\"} 11"),
        "{text}"
    );
    assert!(!text.contains("evil"));
}

fn grpc_response(status_in_headers: bool) -> http::Response<Body> {
    let mut builder = http::Response::builder();
    if status_in_headers {
        builder = builder.header("grpc-status", "5");
        return builder.body(Body::empty()).unwrap();
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = http_body_util::StreamBody::new(futures::stream::iter([
        Ok::<_, tonic::Status>(http_body::Frame::data(bytes::Bytes::from_static(b"x"))),
        Ok(http_body::Frame::trailers(trailers)),
    ]));
    builder.body(Body::new(body)).unwrap()
}

#[tokio::test]
#[expect(
    clippy::await_holding_lock,
    reason = "the lock only orders tests; this one runs alone on its own runtime"
)]
async fn layer_reads_the_status_from_headers_or_trailers() {
    let _events = events();
    let metrics = Arc::new(Metrics::new());
    let layer = MetricsLayer::new(metrics.clone());
    let service = |in_headers: bool| {
        layer.layer(tower::service_fn(move |_: http::Request<Body>| async move {
            Ok::<_, Infallible>(grpc_response(in_headers))
        }))
    };
    let request = |path: &str| {
        http::Request::builder()
            .uri(path)
            .body(Body::empty())
            .unwrap()
    };

    let response = service(true)
        .oneshot(request("/a.B/NotFound"))
        .await
        .unwrap();
    drop(response);
    assert_eq!(metrics.calls("/a.B/NotFound", Code::NotFound), 1);

    let response = service(false).oneshot(request("/a.B/Ok")).await.unwrap();
    assert_eq!(
        metrics.calls("/a.B/Ok", Code::Ok),
        0,
        "recorded before the body ended"
    );
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(metrics.calls("/a.B/Ok", Code::Ok), 1);

    // A body dropped before its trailers counts as cancelled.
    let response = service(false).oneshot(request("/a.B/Gone")).await.unwrap();
    drop(response);
    assert_eq!(metrics.calls("/a.B/Gone", Code::Cancelled), 1);
}

#[test]
fn invented_paths_cannot_take_the_labels_of_served_methods() {
    let _events = events();
    let metrics = Metrics::new();
    metrics.set_methods(&["akashi.v1.AccessService/Authorize"]);
    // An unauthenticated client inventing more paths than there are labels...
    for i in 0..MAX_METHOD_LABELS + 10 {
        metrics.record_call(
            &format!("/junk.S/M{i}"),
            Code::Unauthenticated,
            Duration::ZERO,
        );
    }
    // ...leaves the served methods their own labels.
    metrics.record_call(
        "/akashi.v1.AccessService/Authorize",
        Code::Ok,
        Duration::ZERO,
    );
    let text = metrics.render();
    assert!(
        text.contains(
            "akashi_grpc_requests_total{method=\"akashi.v1.AccessService/Authorize\",code=\"OK\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{{method=\"other\",code=\"UNAUTHENTICATED\"}} {}",
            MAX_METHOD_LABELS + 10
        )),
        "{text}"
    );
}

#[test]
fn invented_methods_of_a_served_service_count_as_other() {
    let _events = events();
    let metrics = Metrics::new();
    metrics.set_methods(&["akashi.v1.AccessService/Authorize"]);
    for i in 0..42 {
        metrics.record_call(
            &format!("/akashi.v1.AccessService/Invented{i}"),
            Code::Unauthenticated,
            Duration::ZERO,
        );
    }
    let text = metrics.render();
    assert!(!text.contains("Invented"), "{text}");
    assert!(
        text.contains("{method=\"other\",code=\"UNAUTHENTICATED\"} 42"),
        "{text}"
    );
}

/// A shared buffer the test's log subscriber writes to.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_call_is_one_debug_line_with_method_code_and_latency_only() {
    let _events = events();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let metrics = Metrics::new();
    metrics.set_methods(&["akashi.v1.AccessService/Authorize"]);
    tracing::subscriber::with_default(subscriber, || {
        // Another test thread may have registered the event's callsite while no subscriber
        // wanted it, caching "never": ask the subscribers again now that this one is set.
        tracing::callsite::rebuild_interest_cache();
        metrics.record_call(
            "/akashi.v1.AccessService/Authorize",
            Code::Ok,
            Duration::from_micros(420),
        );
        // A path nobody serves, carrying what a client might put there: logged as `other`.
        metrics.record_call("/alice.Records/Get", Code::Unimplemented, Duration::ZERO);
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with("call method=\"akashi.v1.AccessService/Authorize\" code=Ok micros=420"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("call method=\"other\" code=Unimplemented micros=0"),
        "{text}"
    );
    assert!(!text.contains("alice"), "{text}");
}

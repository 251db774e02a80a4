//! OpenTelemetry traces from the built binary to an OTLP/HTTP collector stand-in on loopback:
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every gRPC request and every sequenced batch is a span,
//! sent as protobuf when the server stops at the latest, and no span carries a patient id.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use akashi::auth::Role;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as Any,
};
use prost::Message as _;
use proto::pb;

use crate::{
    api::ask,
    harness::{TIMEOUT, mint, with_token},
};

const AKASHI: &str = env!("CARGO_BIN_EXE_akashi");

/// What the collector stand-in received: (content type, body) per request.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    store.lock().unwrap().push((content_type, body.to_vec()));
                    ""
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), received)
}

#[tokio::test]
async fn requests_and_batches_are_spans_sent_to_the_otlp_endpoint() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(AKASHI)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("AKASHI_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The banner names the gRPC address. Its reader drains stdout until the process exits: a
    // closed pipe would make the server's next line fail.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.trim().strip_prefix("gRPC") {
                let _ = addr_tx.send(addr.trim().to_owned());
            }
        }
    });
    let grpc = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(TIMEOUT))
        .await
        .unwrap()
        .expect("no gRPC line in the banner");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let platform = mint(&data, Role::Platform, None);
    let patient = mint(&data, Role::Patient, Some("patient-otel-1"));
    let mut access = pb::access_service_client::AccessServiceClient::new(channel.clone());
    let request = ask(
        "Organization",
        "nobody",
        "secondary_use",
        "patient-otel-1",
        "lab_result",
        "research",
        "PSEUDONYMIZED",
    );
    access
        .authorize(with_token(request.clone(), &platform))
        .await
        .unwrap();
    let denied = access.authorize(with_token(request, &patient)).await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);

    // Stopping sends what the batch processor still holds.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    // The export finished before the process exited; give the stand-in's task a moment to
    // store the body it has read.
    for _ in 0..100 {
        if !received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "nothing was exported");
    let mut spans = Vec::new();
    for (content_type, body) in &received {
        assert_eq!(content_type, "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for resource in export.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| v.value.clone());
            assert_eq!(service, Some(Any::StringValue("akashi".into())));
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let status_of = |name: &str| -> Vec<i64> {
        spans
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| {
                s.attributes
                    .iter()
                    .find(|a| a.key == "rpc.grpc.status_code")
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match v.value {
                        Some(Any::IntValue(code)) => Some(code),
                        _ => None,
                    })
            })
            .collect()
    };
    let mut codes = status_of("akashi.v1.AccessService/Authorize");
    codes.sort_unstable();
    assert_eq!(codes, vec![0, 7], "{spans:#?}");
    // The default policy set's activation and the decision were sequenced in batches.
    assert!(
        spans.iter().filter(|s| s.name == "sequencer.batch").count() >= 2,
        "{spans:#?}"
    );
    // Nothing exported names the patient.
    for (_, body) in &received {
        assert!(
            !body
                .windows(b"patient-otel-1".len())
                .any(|w| w == b"patient-otel-1"),
            "a span carries the patient id"
        );
    }
}

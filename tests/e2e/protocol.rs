//! The gRPC edge under malformed and abusive traffic, through the real server: raw request
//! bytes to every `akashi.v1` method (TransparencyService without a token), oversize messages
//! and metadata, ambiguous or unusual tokens, invented method names, silent connections, and
//! the answer budget of large answers.

use std::{
    str::FromStr as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use akashi::{auth::Role, keys::load_token_issuer, server::MAX_MESSAGE_LEN};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use proto::pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Code, Status, codegen::http::uri::PathAndQuery, transport::Channel};

use crate::{
    api::{Api, grant},
    harness::{TIMEOUT, TestServer, expect_status as expect, with_token},
};

/// One method of `akashi.v1`, from the descriptor set.
struct Method {
    path: String,
    public: bool,
    /// The number of a `string` field of its request message, if it has one.
    string_field: Option<i32>,
}

/// Every method of every `akashi.v1` service.
fn methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: Vec<(String, &prost_types::DescriptorProto)> = set
        .file
        .iter()
        .flat_map(|file| {
            file.message_type
                .iter()
                .map(move |message| (format!(".{}.{}", file.package(), message.name()), message))
        })
        .collect();
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let name = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                let input = messages
                    .iter()
                    .find(|(name, _)| name == method.input_type())
                    .map(|(_, message)| *message)
                    .unwrap();
                let string_field = input
                    .field
                    .iter()
                    .find(|field| {
                        field.r#type() == prost_types::field_descriptor_proto::Type::String
                    })
                    .map(|field| field.number());
                methods.push(Method {
                    path: format!("/{name}/{}", method.name()),
                    public: name == "akashi.v1.TransparencyService",
                    string_field,
                });
            }
        }
    }
    assert!(methods.len() > 20, "{} methods", methods.len());
    methods
}

/// `message` in a gRPC frame (uncompressed).
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Posts `body` (raw bytes, framing included) to `path` with `headers`; the call's status, or
/// its answer's bytes when it is OK.
async fn raw(
    channel: &Channel,
    path: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
) -> Result<Bytes, Status> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(http::Uri::from_str(path).unwrap())
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .unwrap();
    let mut channel = channel.clone();
    let call = async {
        std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
            .await
            .unwrap();
        tower::Service::call(&mut channel, request).await.unwrap()
    };
    let response = tokio::time::timeout(TIMEOUT, call).await.unwrap();
    if let Some(status) = Status::from_header_map(response.headers()) {
        assert_ne!(status.code(), Code::Ok, "{path}: OK without a body");
        return Err(status);
    }
    let collected = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = Status::from_header_map(&trailers).expect("no grpc-status in the trailers");
    if status.code() == Code::Ok {
        Ok(collected.to_bytes())
    } else {
        Err(status)
    }
}

/// `authorization: Bearer <token>` for `raw`.
fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// Protobuf that no request message decodes, named.
fn malformed(string_field: Option<i32>) -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = vec![
        ("11-byte varint", {
            let mut bytes = vec![0x08];
            bytes.extend([0xff; 10]);
            bytes.push(0x01);
            bytes
        }),
        ("wire type 6", vec![0x0e, 0x00]),
        ("wire type 7", vec![0x0f, 0x00]),
        ("tag 0", vec![0x00, 0x00]),
        ("truncated length", vec![0x0a, 0x05, b'a']),
        (
            "length past the end",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("nested groups", vec![0x0b; 200]),
        ("unterminated group", vec![0x0b]),
        ("end group without a start", vec![0x0c]),
    ];
    if let Some(field) = string_field {
        let tag = u8::try_from((field << 3) | 2).unwrap();
        cases.push(("invalid UTF-8 in a string", vec![tag, 2, 0xff, 0xfe]));
    }
    cases
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_on_every_method() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let token = server.token(Role::Platform, None);
    let size_before = Api::new(&server, Role::Platform, None).await.size().await;
    let mut cases = 0;
    for method in methods() {
        let headers = if method.public {
            vec![]
        } else {
            vec![bearer(&token)]
        };
        for (name, bytes) in malformed(method.string_field) {
            let case = format!("{} {name}", method.path);
            let result = raw(&channel, &method.path, frame(&bytes), &headers).await;
            expect(&case, result, Code::InvalidArgument, "not valid protobuf");
            cases += 1;
        }
    }
    assert!(cases > 200, "{cases} cases");
    let size_after = Api::new(&server, Role::Platform, None).await.size().await;
    assert_eq!(size_before, size_after, "a malformed request appended");
    server.stop().await;
}

#[tokio::test]
async fn oversize_and_truncated_requests_get_a_status_on_every_method() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let token = server.token(Role::Platform, None);
    let over = MAX_MESSAGE_LEN + 1;
    for method in methods() {
        let mut headers = if method.public {
            vec![]
        } else {
            vec![bearer(&token)]
        };
        let path = &method.path;
        // A prefix announcing one byte more than the limit: refused before the message is read.
        let mut announced = vec![0];
        announced.extend_from_slice(&u32::try_from(over).unwrap().to_be_bytes());
        announced.extend_from_slice(b"abc");
        let result = raw(&channel, path, announced, &headers).await;
        expect(
            &format!("{path} over the limit"),
            result,
            Code::ResourceExhausted,
            &format!("request message is {over} bytes, more than the limit of {MAX_MESSAGE_LEN}"),
        );
        let result = raw(&channel, path, vec![0, 0xff, 0xff, 0xff, 0xff], &headers).await;
        expect(
            &format!("{path} 4 GiB announced"),
            result,
            Code::ResourceExhausted,
            "request message is 4294967295 bytes",
        );
        let result = raw(&channel, path, vec![0, 0, 0, 0, 10, 1, 2], &headers).await;
        expect(
            &format!("{path} truncated frame"),
            result,
            Code::InvalidArgument,
            "request ends inside a message: 8 more bytes",
        );
        headers.push(("x-padding", "p".repeat(20 * 1024)));
        let result = raw(&channel, path, frame(&[]), &headers).await;
        expect(
            &format!("{path} oversize metadata"),
            result,
            Code::ResourceExhausted,
            "request metadata takes",
        );
    }
    // A whole message over the limit, sent in full.
    let result = raw(
        &channel,
        "/akashi.v1.TransparencyService/GetCheckpoint",
        frame(&vec![0; over]),
        &[],
    )
    .await;
    expect(
        "full oversize message",
        result,
        Code::ResourceExhausted,
        "request message is",
    );
    // The server still serves.
    let checkpoint = raw(
        &channel,
        "/akashi.v1.TransparencyService/GetCheckpoint",
        frame(&[]),
        &[],
    )
    .await
    .unwrap();
    assert!(checkpoint.len() > 5);
    server.stop().await;
}

#[tokio::test]
async fn two_authorization_entries_are_refused_even_when_both_are_good() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let token = server.token(Role::Regulator, None);
    let path = "/akashi.v1.AuditService/ListCheckpoints";
    let message = frame(
        &pb::ListCheckpointsRequest {
            from_size: 0,
            limit: 1,
        }
        .encode_to_vec(),
    );
    raw(&channel, path, message.clone(), &[bearer(&token)])
        .await
        .unwrap();
    let result = raw(&channel, path, message, &[bearer(&token), bearer(&token)]).await;
    expect(
        "two authorization entries",
        result,
        Code::Unauthenticated,
        "more than one `authorization` metadata entry",
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_with_crit_or_a_future_nbf_are_refused() {
    let server = TestServer::start().await;
    let issuer = load_token_issuer(&server.data_dir()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({
            "role": "regulator", "iat": now, "exp": now + 600, "jti": "00"
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
    let crit_header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "crit": ["exp"]});
    let mut audit = Api::new(&server, Role::Regulator, None).await.audit();
    let call = |token: String| {
        with_token(
            pb::ListCheckpointsRequest {
                from_size: 0,
                limit: 1,
            },
            &token,
        )
    };
    // The same claims signed without `crit` and with `nbf` in the past are accepted.
    audit
        .list_checkpoints(call(
            issuer.sign_raw(&header, &claims(serde_json::json!({}))),
        ))
        .await
        .unwrap();
    audit
        .list_checkpoints(call(
            issuer.sign_raw(&header, &claims(serde_json::json!({"nbf": now - 10}))),
        ))
        .await
        .unwrap();
    let status = audit
        .list_checkpoints(call(
            issuer.sign_raw(&crit_header, &claims(serde_json::json!({}))),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(status.message().contains("`crit`"), "{}", status.message());
    let status = audit
        .list_checkpoints(call(
            issuer.sign_raw(&header, &claims(serde_json::json!({"nbf": now + 3600}))),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert_eq!(status.message(), "token is not valid yet");
    server.stop().await;
}

#[tokio::test]
async fn invented_methods_get_no_metric_labels() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    for i in 0..42 {
        let result = raw(
            &channel,
            &format!("/akashi.v1.AccessService/Invented{i}"),
            frame(&[]),
            &[],
        )
        .await;
        expect(
            "invented, no token",
            result,
            Code::Unauthenticated,
            "authorization",
        );
    }
    let result = raw(
        &channel,
        "/akashi.v1.TransparencyService/InventedPublic",
        frame(&[]),
        &[],
    )
    .await;
    assert_eq!(result.unwrap_err().code(), Code::Unimplemented);
    raw(
        &channel,
        "/akashi.v1.TransparencyService/GetCheckpoint",
        frame(&[]),
        &[],
    )
    .await
    .unwrap();
    let (code, text) = crate::harness::http_get(server.admin_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(!text.contains("Invented"), "{text}");
    assert!(
        text.contains("{method=\"other\",code=\"UNAUTHENTICATED\"} 42"),
        "{text}"
    );
    assert!(
        text.contains("{method=\"akashi.v1.TransparencyService/GetCheckpoint\",code=\"OK\"} 1"),
        "{text}"
    );
    server.stop().await;
}

/// Reads from `stream` until the server closes it; what was read.
async fn read_until_closed(mut stream: tokio::net::TcpStream) -> Vec<u8> {
    let mut read = Vec::new();
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, closed)
        .await
        .expect("the server kept a silent connection open");
    read
}

#[tokio::test]
async fn silent_connections_are_closed_on_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |config| {
        config.limits.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let grpc = tokio::net::TcpStream::connect(server.grpc_addr)
        .await
        .unwrap();
    let http = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    // The gRPC port sends its HTTP/2 settings, then gives up on a client that never answers.
    read_until_closed(grpc).await;
    assert!(read_until_closed(http).await.is_empty());
    // A client that does talk is served.
    let (code, _) = crate::harness::http_get(server.http_addr, "/checkpoint").await;
    assert_eq!(code, 200);
    Api::new(&server, Role::Platform, None).await.size().await;
    server.stop().await;
}

#[tokio::test]
async fn http_headers_must_arrive_within_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |config| {
        config.limits.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut http = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    http.write_all(b"GET /checkpoint HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let read = read_until_closed(http).await;
    assert!(
        read.is_empty() || String::from_utf8_lossy(&read).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&read)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_caller_past_its_answer_budget_is_refused_and_others_are_served() {
    const ENTRIES: usize = 50;
    let server = TestServer::start().await;
    let platform = Api::new(&server, Role::Platform, None).await;
    platform.org("uni", "university").await;
    for _ in 0..ENTRIES {
        platform
            .grant(grant(
                "alice",
                &["research"],
                &["clinical"],
                &["uni"],
                &[],
                "PSEUDONYMIZED",
            ))
            .await;
    }
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let answer_len = regulator
        .subject_history("alice")
        .await
        .unwrap()
        .encoded_len();
    let dir = server.stop().await;
    // One answer fits a caller's budget, two do not; the server's budget fits several.
    let server = TestServer::start_with(dir, |config| {
        config.limits.answer_budget_per_caller = answer_len * 3 / 2;
        config.limits.answer_budget_total = answer_len * 10;
    })
    .await;
    let alice = server.token(Role::Patient, Some("alice"));
    let request = || {
        with_token(
            pb::GetSubjectHistoryRequest {
                patient_id: "alice".into(),
                ..Default::default()
            },
            &alice,
        )
    };
    // A client that asks and does not read: its stream window is far smaller than the answer,
    // so the answer stays in flight (and counted) until it reads.
    let slow = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(slow);
    grpc.ready().await.unwrap();
    let held = grpc
        .server_streaming(
            request(),
            PathAndQuery::from_static("/akashi.v1.HistoryService/GetSubjectHistory"),
            proto::codec::Codec::<pb::GetSubjectHistoryRequest, pb::GetSubjectHistoryResponse>::default(),
        )
        .await
        .unwrap();
    // The same caller on another connection is refused while the first answer is unread...
    let patient = Api::new(&server, Role::Patient, Some("alice")).await;
    let status = patient
        .history()
        .get_subject_history(request())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert_eq!(
        status.message(),
        format!(
            "too many answer bytes in flight for this caller (limit {}); retry after reading \
             earlier answers",
            answer_len * 3 / 2
        )
    );
    // ...another caller is served in full...
    let regulator = Api::new(&server, Role::Regulator, None).await;
    assert_eq!(
        regulator
            .subject_history("alice")
            .await
            .unwrap()
            .entries
            .len(),
        ENTRIES
    );
    // ...and once the first answer is read, complete, the caller is served again.
    let mut held = held.into_inner();
    let first = held.message().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), ENTRIES);
    assert!(held.message().await.unwrap().is_none());
    let again = patient
        .history()
        .get_subject_history(request())
        .await
        .unwrap();
    assert_eq!(again.into_inner().entries.len(), ENTRIES);
    server.stop().await;
}

//! What every akashi server offers before any akashi.v1 service: health, reflection v1 and
//! v1alpha, `/metrics`, the authentication layer in front of non-public services, and graceful
//! shutdown.

use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::harness::{TestServer, http_get, with_token};

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "grpc.health.v1.Health"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

async fn list_services_v1(server: &TestServer) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

async fn list_services_v1alpha(server: &TestServer) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_served_services() {
    let server = TestServer::start().await;
    for names in [
        list_services_v1(&server).await,
        list_services_v1alpha(&server).await,
    ] {
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("grpc.reflection.")),
            "{names:?}"
        );
        // Every listed service is one the server actually hosts: nothing advertised is missing.
        for name in &names {
            assert!(
                name.starts_with("grpc.") || name.starts_with("akashi.v1."),
                "{name}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_describes_the_akashi_v1_types() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "akashi.v1.Receipt".into(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("expected file descriptors, got {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for _ in 0..3 {
        health.check(HealthCheckRequest::default()).await.unwrap();
    }
    let (status, body) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "akashi_grpc_requests_total{method=\"grpc.health.v1.Health/Check\",code=\"OK\"} 3"
        ),
        "{body}"
    );
    assert!(body.contains("# TYPE akashi_ledger_entries_appended_total counter"));

    // Two writes: each batch reports how long making it durable took.
    let api = crate::api::Api::new(&server, akashi::auth::Role::Platform, None).await;
    api.org("metrics-org-1", "university").await;
    api.org("metrics-org-2", "university").await;
    let (_, body) = http_get(server.admin_addr, "/metrics").await;
    let count = |name: &str| -> u64 {
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let batches = count("akashi_ledger_batches_total");
    assert!(batches >= 1, "{body}");
    assert_eq!(
        count("akashi_ledger_sync_duration_seconds_count"),
        batches,
        "{body}"
    );
    assert_eq!(count("akashi_ledger_batch_duration_seconds_count"), batches);
    assert_eq!(count("akashi_ledger_batch_write_seconds_count"), batches);
    let (status, _) = http_get(server.http_addr, "/no-such-page").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn non_public_services_need_a_valid_token() {
    use akashi::auth::Role;
    use proto::pb::{
        AuthorizeRequest, GetCheckpointRequest, access_service_client::AccessServiceClient,
        transparency_service_client::TransparencyServiceClient,
    };
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut access = AccessServiceClient::new(channel.clone());

    let missing = access
        .authorize(AuthorizeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("authorization"),
        "{}",
        missing.message()
    );

    for bad in ["garbage", "a.b.c", ""] {
        let status = access
            .authorize(with_token(AuthorizeRequest::default(), bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}");
    }

    // A token from another data dir's issuer.
    let other = TestServer::start().await;
    let foreign = other.token(Role::Platform, None);
    let status = access
        .authorize(with_token(AuthorizeRequest::default(), &foreign))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("signature"),
        "{}",
        status.message()
    );
    other.stop().await;

    // A good token passes the layer (whatever the service then answers).
    let token = server.token(Role::Platform, None);
    let result = access
        .authorize(with_token(AuthorizeRequest::default(), &token))
        .await;
    if let Err(status) = result {
        assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    // Transparency is public: no token needed to get past the layer.
    let result = TransparencyServiceClient::new(channel)
        .get_checkpoint(GetCheckpointRequest::default())
        .await;
    if let Err(status) = result {
        assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_both_listeners() {
    let server = TestServer::start().await;
    let grpc = server.grpc_addr;
    let http = server.http_addr;
    let _dir = server.stop().await;
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
}

/// Metrics and health are for operators: on the admin address, not on the public port.
#[tokio::test]
async fn metrics_and_health_are_on_the_admin_address_only() {
    let server = TestServer::start().await;
    let (status, body) = http_get(server.admin_addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(server.admin_addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, body) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("akashi_ledger_tree_size"), "{body}");
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, _) = http_get(server.http_addr, path).await;
        assert_eq!(status, 404, "{path} on the public port");
    }
    // The public routes are not on the admin address either.
    let (status, _) = http_get(server.admin_addr, "/checkpoint").await;
    assert_eq!(status, 404);
    server.stop().await;
}

//! Optional mTLS on the gRPC port: with `tls.client_ca` set, a client certificate signed by that
//! CA is required, and it may name the caller's role. Certificates are generated per test
//! (rcgen), nothing is checked in.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use akashi::auth::Role;
use akashi::config::TlsConfig;
use proto::pb::{
    self, directory_service_client::DirectoryServiceClient,
    history_service_client::HistoryServiceClient,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::harness::{TIMEOUT, TestServer, with_token};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
    /// Client certificates naming a role (`urn:akashi:role:<role>`).
    platform: (String, String),
    regulator: (String, String),
    patient: (String, String),
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    role_leaf(names, None, usage, issuer)
}

fn role_leaf(
    names: &[&str],
    role: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    if let Some(role) = role {
        let uri = format!("{}{role}", akashi::auth::CERT_ROLE_PREFIX);
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
    }
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn pki() -> Pki {
    let (ca_pem, issuer) = ca();
    let (_, other_issuer) = ca();
    Pki {
        ca_pem,
        server: leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        ),
        client: leaf(&["platform"], ExtendedKeyUsagePurpose::ClientAuth, &issuer),
        stranger: leaf(
            &["stranger"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &other_issuer,
        ),
        platform: role_leaf(&["ehr-gateway"], Some("platform"), CLIENT_AUTH, &issuer),
        regulator: role_leaf(&["regulator"], Some("regulator"), CLIENT_AUTH, &issuer),
        patient: role_leaf(&["app"], Some("patient"), CLIENT_AUTH, &issuer),
    }
}

const CLIENT_AUTH: ExtendedKeyUsagePurpose = ExtendedKeyUsagePurpose::ClientAuth;

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

async fn tls_channel(
    server: &TestServer,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", server.grpc_addr))
        .unwrap()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .tls_config(tls)
        .unwrap();
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

async fn health_over_tls(
    server: &TestServer,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<ServingStatus, String> {
    let channel = tls_channel(server, ca_pem, identity).await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|status| format!("{status:?}"))?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsConfig {
        cert: write(dir.path(), "server.pem", &pki.server.0, 0o644),
        key: write(dir.path(), "server.key", &pki.server.1, 0o600),
        client_ca: Some(write(dir.path(), "ca.pem", &pki.ca_pem, 0o644)),
    };
    let server = TestServer::start_with(dir, |config| config.tls = Some(tls)).await;

    assert_eq!(
        health_over_tls(&server, &pki.ca_pem, Some(&pki.client)).await,
        Ok(ServingStatus::Serving)
    );
    assert!(health_over_tls(&server, &pki.ca_pem, None).await.is_err());
    assert!(
        health_over_tls(&server, &pki.ca_pem, Some(&pki.stranger))
            .await
            .is_err()
    );
    // Plaintext to the TLS port gets nowhere either.
    let plaintext = Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .timeout(TIMEOUT)
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_err()
        );
    }
    server.stop().await;
}

fn mtls_config(dir: &Path, pki: &Pki) -> TlsConfig {
    TlsConfig {
        cert: write(dir, "server.pem", &pki.server.0, 0o644),
        key: write(dir, "server.key", &pki.server.1, 0o600),
        client_ca: Some(write(dir, "ca.pem", &pki.ca_pem, 0o644)),
    }
}

async fn upsert_org(channel: &Channel, token: Option<&str>) -> Result<(), tonic::Status> {
    let message = pb::UpsertOrganizationRequest {
        request_id: String::new(),
        id: "uni".into(),
        name: "University".into(),
        recipient_class: "university".into(),
    };
    let request = match token {
        Some(token) => with_token(message, token),
        None => tonic::Request::new(message),
    };
    DirectoryServiceClient::new(channel.clone())
        .upsert_organization(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_client_certificate_may_name_the_callers_role_but_a_token_decides() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let tls = mtls_config(dir.path(), &pki);
    let server = TestServer::start_with(dir, |config| config.tls = Some(tls)).await;
    let channel = |identity| tls_channel(&server, &pki.ca_pem, Some(identity));

    // No token: the platform certificate's role decides, and the write lands.
    let platform = channel(&pki.platform).await.unwrap();
    upsert_org(&platform, None).await.unwrap();
    // A regulator certificate is a regulator: no directory writes.
    let regulator = channel(&pki.regulator).await.unwrap();
    assert_eq!(
        upsert_org(&regulator, None).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A certificate without a role, or naming `patient`, identifies nobody.
    let plain = channel(&pki.client).await.unwrap();
    let err = upsert_org(&plain, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let patient = channel(&pki.patient).await.unwrap();
    let err = upsert_org(&patient, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("patients use a token"),
        "{}",
        err.message()
    );

    // A token, when sent, decides over the certificate: a gateway holding the platform
    // certificate that forwards alice's token reads alice's history and nobody else's.
    let alice = server.token(Role::Patient, Some("alice"));
    let mut history = HistoryServiceClient::new(platform.clone());
    let ask = |patient: &str| {
        with_token(
            pb::GetSubjectHistoryRequest {
                patient_id: patient.into(),
                ..Default::default()
            },
            &alice,
        )
    };
    history.get_subject_history(ask("alice")).await.unwrap();
    assert_eq!(
        history
            .get_subject_history(ask("bob"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        upsert_org(&platform, Some(&alice))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // A bad token is refused even on a connection whose certificate names a role.
    assert_eq!(
        upsert_org(&platform, Some("not-a-token"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    server.stop().await;
}

/// `akashi-audit` reaches a gRPC port that requires client certificates: with `--cert` and
/// `--key` (a regulator's role certificate, beside the regulator's token `replay` asks for) it
/// replays the whole log over mTLS; without them the server refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_replays_over_mtls_with_its_client_certificate() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let tls = mtls_config(dir.path(), &pki);
    let files = tempfile::tempdir().unwrap();
    let ca = write(files.path(), "ca.pem", &pki.ca_pem, 0o644);
    let cert = write(files.path(), "regulator.pem", &pki.regulator.0, 0o644);
    let key = write(files.path(), "regulator.key", &pki.regulator.1, 0o600);
    let server = TestServer::start_with(dir, |config| config.tls = Some(tls)).await;
    let replay = |identity: bool| {
        let mut args = vec![
            "replay".to_owned(),
            "--vkey".to_owned(),
            server.vkey.clone(),
            "--grpc".to_owned(),
            format!("https://{}", server.grpc_addr),
            "--token".to_owned(),
            server.token(akashi::auth::Role::Regulator, None),
            "--ca".to_owned(),
            ca.display().to_string(),
        ];
        if identity {
            args.extend([
                "--cert".to_owned(),
                cert.display().to_string(),
                "--key".to_owned(),
                key.display().to_string(),
            ]);
        }
        crate::witness::audit_online(args)
    };
    let (code, text) = replay(false).await;
    assert_eq!(code, auditor::exit::AuditExitCode::Error, "{text}");
    let (code, text) = replay(true).await;
    assert_eq!(code, auditor::exit::AuditExitCode::Valid, "{text}");
    server.stop().await;
}

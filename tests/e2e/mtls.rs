//! Optional mTLS on the gRPC port: with `tls.client_ca` set, a client certificate signed by that
//! CA is required. Certificates are generated per test (rcgen), nothing is checked in.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use akashi::config::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::harness::{TIMEOUT, TestServer};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
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
    }
}

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

async fn health_over_tls(
    server: &TestServer,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<ServingStatus, String> {
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
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
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

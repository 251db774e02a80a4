//! Starts the real server in-process and connects clients to it.
//!
//! [`TestServer::start`] binds both listeners on 127.0.0.1:0 in a fresh temporary data dir, runs
//! `akashi::server::Server` on them and stops it through a shutdown channel ([`TestServer::stop`]).
//! Tokens are minted with `akashi::keys::mint_token`, the function `akashi token` uses.
//! With `AKASHI_E2E_STORE=postgres`, every server keeps its log in a fresh database of the
//! throwaway PostgreSQL cluster instead of the data dir's sled store.

use std::{net::SocketAddr, path::Path, time::Duration};

use akashi::{auth::Role, config::Config, server::Server};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// Upper bound on any single wait in these tests (never reached when things work).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running server with its data dir.
pub struct TestServer {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Public HTTP address.
    pub http_addr: SocketAddr,
    /// Admin HTTP address (metrics, liveness, readiness).
    pub admin_addr: SocketAddr,
    /// The AuthZEN API's address (on in every test server).
    pub authzen_addr: SocketAddr,
    /// The FHIR endpoint's address (on in every test server).
    pub fhir_addr: SocketAddr,
    /// The checkpoint verifier key the server loaded.
    pub vkey: String,
    dir: TempDir,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), akashi::error::StartError>>,
}

impl TestServer {
    /// Starts a server in a fresh data dir.
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Starts a server in `dir` (which may hold keys from an earlier run).
    pub async fn start_in(dir: TempDir) -> Self {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts a server in `dir` after `edit` adjusted the configuration.
    pub async fn start_with(dir: TempDir, edit: impl FnOnce(&mut Config)) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let authzen = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authzen_addr = authzen.local_addr().unwrap();
        let fhir = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fhir_addr = fhir.local_addr().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            grpc_addr: grpc.local_addr().unwrap(),
            http_addr: http.local_addr().unwrap(),
            admin_addr,
            authzen_addr: Some(authzen_addr),
            fhir_addr: Some(fhir_addr),
            ..Config::default()
        };
        if std::env::var("AKASHI_E2E_STORE").is_ok_and(|v| v == "postgres") {
            // One database per data dir, kept across restarts of the same dir.
            let named = dir.path().join("postgres-url");
            config.store = match std::fs::read_to_string(&named) {
                Ok(url) => Some(url),
                Err(_) => {
                    let url = ledger::store::postgres::testing::fresh_database("e2e");
                    if let Some(url) = &url {
                        std::fs::write(&named, url).unwrap();
                    }
                    url
                }
            };
        }
        edit(&mut config);
        let mut server = Server::open(config).unwrap();
        server
            .serve_admin(admin)
            .serve_authzen(authzen)
            .serve_fhir(fhir);
        let vkey = server.keys().verifier_key();
        let (shutdown, stop) = oneshot::channel::<()>();
        let grpc_addr = grpc.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        let task = tokio::spawn(server.run(grpc, http, async {
            let _ = stop.await;
        }));
        Self {
            grpc_addr,
            http_addr,
            admin_addr,
            authzen_addr,
            fhir_addr,
            vkey,
            dir,
            shutdown,
            task,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A connected plaintext channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .connect()
            .await
            .unwrap()
    }

    /// A token for `role` signed by this data dir's issuer key.
    pub fn token(&self, role: Role, patient: Option<&str>) -> String {
        mint(&self.data_dir(), role, patient)
    }

    /// Stops the server gracefully, checks it stopped cleanly, and hands back the data dir.
    pub async fn stop(self) -> TempDir {
        self.shutdown.send(()).unwrap();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("server did not stop in time")
            .unwrap()
            .unwrap();
        self.dir
    }
}

/// A token for `role` from the issuer key in `data_dir` (as `akashi token` makes it).
pub fn mint(data_dir: &Path, role: Role, patient: Option<&str>) -> String {
    akashi::keys::mint_token(data_dir, role, patient, Duration::from_secs(600)).unwrap()
}

/// Copies the key files of data dir `from` into `to` (created if missing): what every server of
/// one log needs, or a data dir the log was copied into.
pub fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in [
        akashi::keys::CHECKPOINT_KEY_FILE,
        akashi::keys::CHECKPOINT_VKEY_FILE,
        akashi::keys::TOKEN_ISSUER_KEY_FILE,
        akashi::keys::SUBJECT_KEY_FILE,
        akashi::keys::SUBJECT_MAP_KEY_FILE,
    ] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// `GET path` on the public HTTP port: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Asserts that `result` failed with `code` and a message containing `needle`.
pub fn expect_status<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Ok(ok) => panic!("{case}: expected {code:?}, got {ok:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{case}: {}", status.message());
            assert!(
                status.message().contains(needle),
                "{case}: message `{}` does not mention `{needle}`",
                status.message()
            );
        }
    }
}

/// An HTTP answer: status, header lines (lower-cased names) and the body as JSON.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) with an HTTP API of the server: the AuthZEN
/// API, the FHIR endpoint.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> Answer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nAccept: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(TIMEOUT, request).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = serde_json::from_slice(&response[split + 4..]).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// A certificate authority for the TLS tests, and a server certificate it signed for
/// `127.0.0.1`: (CA PEM, certificate PEM, key PEM).
pub fn tls_identity() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// A TLS front, as a reverse proxy would be: accepts TLS with `cert` and `key` on
/// a loopback port and relays each connection to `to` in the clear.
pub async fn tls_front(cert: &str, key: &str, to: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake: nothing
                // reaches the witness.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (addr, task)
}

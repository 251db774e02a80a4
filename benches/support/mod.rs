//! What the gRPC-path benchmarks share: the real server in-process on loopback ports with a
//! sled store in a temp dir, tokens of its issuer, and the requests they repeat.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use akashi::{auth::Role, config::Config, error::StartError, server::Server};
use proto::pb::{
    self, consent_service_client::ConsentServiceClient,
    directory_service_client::DirectoryServiceClient,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

/// A running server.
pub struct Running {
    /// A connected channel to its gRPC port.
    pub channel: Channel,
    /// Its gRPC address.
    pub grpc_addr: SocketAddr,
    /// Its AuthZEN address, when asked for.
    pub authzen_addr: Option<SocketAddr>,
    /// Its checkpoint verifier key.
    pub vkey: String,
    data_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), StartError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts a server on a fresh data dir (with the AuthZEN API when `authzen`).
    pub async fn start(authzen: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authzen = if authzen {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let authzen_addr = authzen.as_ref().map(|l| l.local_addr().unwrap());
        let config = Config {
            data_dir: dir.path().join("data"),
            grpc_addr: grpc.local_addr().unwrap(),
            http_addr: http.local_addr().unwrap(),
            authzen_addr,
            ..Config::default()
        };
        let data_dir = config.data_dir.clone();
        let mut server = Server::open(config).unwrap();
        if let Some(listener) = authzen {
            server.serve_authzen(listener);
        }
        let vkey = server.keys().verifier_key();
        let grpc_addr = grpc.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(grpc, http, async {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            channel,
            grpc_addr,
            authzen_addr,
            vkey,
            data_dir,
            stop,
            task,
            _dir: dir,
        }
    }

    /// A token for `role` from the server's issuer key, valid for an hour.
    pub fn token(&self, role: Role) -> String {
        akashi::keys::mint_token(&self.data_dir, role, None, Duration::from_secs(3600)).unwrap()
    }

    /// Stops the server and checks it stopped cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn req<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Registers the university `id`.
pub async fn university(channel: &Channel, token: &str, id: &str) {
    DirectoryServiceClient::new(channel.clone())
        .upsert_organization(req(
            pb::UpsertOrganizationRequest {
                id: id.into(),
                name: id.into(),
                recipient_class: "university".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap();
}

/// Grants `patient` a research consent on lab results for `recipient`; returns its id.
pub async fn research_consent(
    channel: &Channel,
    token: &str,
    patient: &str,
    recipient: &str,
) -> String {
    ConsentServiceClient::new(channel.clone())
        .grant_consent(req(
            pb::GrantConsentRequest {
                patient_id: patient.into(),
                purposes: vec!["research".into()],
                data_categories: vec!["lab_result".into()],
                recipients: vec![recipient.into()],
                max_level: "PSEUDONYMIZED".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .consent_id
}

/// `recipient`'s pseudonymised research request about `patient`.
pub fn research(recipient: &str, patient: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        principal: Some(pb::Principal {
            r#type: "Organization".into(),
            id: recipient.into(),
        }),
        action: "secondary_use".into(),
        patient_id: patient.into(),
        data_category: "lab_result".into(),
        purpose: "research".into(),
        level: "PSEUDONYMIZED".into(),
        ..Default::default()
    }
}

/// An environment variable's number, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

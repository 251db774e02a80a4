//! A follower: a server of a log on PostgreSQL that does not hold the store's lease answers
//! every call by forwarding it to the server that does, so that a client behind a plain TCP load
//! balancer reaches the log through any server.
//!
//! Only the lease holder writes the log, decides and signs: it is the one sequencer (see
//! `ledger::store::postgres`). A follower (`akashi serve --store … --standby` while another
//! server holds the lease) reads who holds it, and where that server serves, from the lease row
//! every [`WATCH_EVERY`] (each server records its endpoints there when it takes the lease,
//! `Config::advertised_endpoints`), and forwards:
//!
//! - gRPC calls, as HTTP/2 streams in both directions with their trailers, so unary calls and
//!   server streams (`WatchConsentChanges`) alike, bearer tokens included (the leader
//!   authenticates them: every server has the same token key);
//! - public HTTP, AuthZEN and FHIR requests, as HTTP/1.1.
//!
//! It answers `grpc.health.v1.Health` itself: `SERVING` while a live lease holder is known,
//! `NOT_SERVING` while none is (the holder died and its lease has not expired yet, or the
//! database cannot be reached), and then gRPC calls get `UNAVAILABLE` and HTTP requests `503`,
//! to be retried. A call whose holder lost the lease while it was being forwarded gets
//! `UNKNOWN` (HTTP `502`): it may have been carried out, so it is retried with its
//! `request_id`. Its admin port answers `/healthz`, `/readyz` (`503` without a leader) and
//! `/metrics` (the role, the leader's epoch, calls forwarded and failed).
//!
//! Forwarding adds a hop but never a second source of truth: a follower holds no log state, so
//! it can never answer from a stale copy. When the holder stops or dies, a follower takes the
//! lease ([`crate::supervisor`]): the forwarding ends ([`GRACE`] for calls in flight) and the
//! server is opened and serves on the same listeners.
//!
//! Not forwarded: calls over TLS to the leader. A follower speaks plaintext to the leader (a
//! private network between the servers), and client certificates do not cross the hop, so
//! roles taken from mTLS certificates are not available through a follower; bearer tokens are.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::TryStreamExt as _;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::{net::TcpListener, sync::watch};
use tonic::service::Routes;
use tonic_health::{
    ServingStatus,
    server::{HealthReporter, HealthService},
};

use ledger::store::{PostgresOptions, PostgresStore};

use crate::{
    config::Config,
    error::StartError,
    server::{grpc_builder, healthz, serve_http, stopped},
};

/// How often a follower reads who holds the lease.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long calls still being forwarded may take once the follower stops following.
pub const GRACE: Duration = Duration::from_secs(1);
/// The longest a lease row's expiry is believed: leases last seconds.
const MAX_LEASE: Duration = Duration::from_secs(3600);
/// How long a forwarded connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The gRPC services a follower reports: the ones a server hosts.
const SERVICES: [&str; 10] = [
    "",
    proto::pb::directory_service_server::SERVICE_NAME,
    proto::pb::consent_service_server::SERVICE_NAME,
    proto::pb::access_service_server::SERVICE_NAME,
    proto::pb::policy_service_server::SERVICE_NAME,
    proto::pb::history_service_server::SERVICE_NAME,
    proto::pb::transparency_service_server::SERVICE_NAME,
    proto::pb::audit_service_server::SERVICE_NAME,
    proto::pb::erasure_service_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
];

/// The header a follower adds to every call it forwards; a follower refuses a call that has it.
pub const FORWARDED: &str = "akashi-forwarded";

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1). `Host` is kept on
/// HTTP/1.1 (the leader names itself in some answers by the host the client asked for) and
/// dropped on HTTP/2, where the authority is the request's own.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];
/// HTTP/2 connections a follower keeps to the leader for gRPC: each carries at most the
/// leader's concurrent-stream limit (`crate::server::MAX_CONCURRENT_STREAMS`), so long streams
/// (`WatchConsentChanges`) on one leave the others free.
const UPSTREAM_CONNECTIONS: usize = 8;
/// Keepalive pings on the connections to the leader: a leader that stops answering them (it
/// died without closing, or stalled) has its connection, and the streams on it, ended.
const UPSTREAM_KEEPALIVE: Duration = Duration::from_secs(10);

/// The server that holds the lease, as its lease row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The lease's epoch.
    pub epoch: i64,
    /// Who took it (`host:pid`).
    pub holder: String,
    /// `(api, base URL)` pairs: `grpc`, `http`, and `authzen`, `fhir` when on.
    pub endpoints: Vec<(String, String)>,
}

impl Leader {
    /// The base URL of `api` (`grpc`, `http`, `authzen`, `fhir`), when the leader serves it.
    pub fn endpoint(&self, api: &str) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|(name, _)| name == api)
            .map(|(_, url)| url.as_str())
    }
}

/// The `(api, base URL)` pairs of an endpoints text (`grpc=http://h:p http=http://h:p …`).
/// Pairs that do not parse are left out.
pub fn parse_endpoints(text: &str) -> Vec<(String, String)> {
    text.split_ascii_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter(|(_, url)| url.starts_with("http://") && url.parse::<http::Uri>().is_ok())
        .map(|(name, url)| (name.to_owned(), url.to_owned()))
        .collect()
}

/// The listeners a follower answers on (the server's own, handed back when it stops following).
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// Public HTTP.
    pub http: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
    /// The AuthZEN API, when on.
    pub authzen: Option<TcpListener>,
    /// The FHIR endpoint, when on.
    pub fhir: Option<TcpListener>,
}

/// What the forwarding handlers share.
struct Shared {
    leader: watch::Receiver<Option<Leader>>,
    /// [`UPSTREAM_CONNECTIONS`] clients, each with its own HTTP/2 connection, taken in turn.
    grpc: Vec<Client<HttpConnector, Body>>,
    http: Client<HttpConnector, Body>,
    next: AtomicU64,
    forwarded: AtomicU64,
    failed: AtomicU64,
    /// When the followed lease runs out unless renewed, as last read (ms since the Unix epoch).
    lease_until_ms: Arc<AtomicU64>,
}

/// Why a call was not forwarded, or not answered.
enum Failure {
    /// Nothing reached the leader: safe to retry (`UNAVAILABLE`, `503`).
    NotSent(String),
    /// The call may have reached the leader and been carried out (`UNKNOWN`, `502`): retry with
    /// the same `request_id`.
    Unknown(String),
}

impl Shared {
    /// Forwards `request` to `api` of the leader.
    async fn forward(&self, api: &'static str, request: Request) -> Result<Response, Failure> {
        let mut watched = self.leader.clone();
        let (epoch, base) = {
            let leader = watched.borrow_and_update();
            let leader = leader.as_ref().ok_or_else(|| {
                Failure::NotSent("no server holds the log's store right now".to_owned())
            })?;
            let base = leader
                .endpoint(api)
                .ok_or_else(|| {
                    Failure::NotSent(format!(
                        "the server holding the log's store does not serve {api}"
                    ))
                })?
                .to_owned();
            (leader.epoch, base)
        };
        let (mut parts, body) = request.into_parts();
        if parts.headers.contains_key(FORWARDED) {
            // The lease holder's advertised address reached a follower: forwarding again could
            // go round for ever.
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::NotSent(
                "a call forwarded by another akashi server reached a follower: the lease \
                 holder's advertised address (advertise_host) does not reach it"
                    .to_owned(),
            ));
        }
        parts
            .headers
            .insert(FORWARDED, http::HeaderValue::from_static("1"));
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        parts.uri = format!("{}{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|err| {
                Failure::NotSent(format!("the leader's endpoint does not parse: {err}"))
            })?;
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        let client = if api == "grpc" {
            parts.headers.remove(http::header::HOST);
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            let count = u64::try_from(self.grpc.len()).unwrap_or(1).max(1);
            let at = usize::try_from(turn % count).unwrap_or(0);
            self.grpc.get(at).unwrap_or(&self.http)
        } else {
            parts.version = http::Version::HTTP_11;
            &self.http
        };
        // A call forwarded to a server that has since lost the lease (it died, or stalled and
        // its lease expired) will never be answered by it: it ends at once. It may have been
        // carried out before the server stalled, so its outcome is unknown.
        let answer = tokio::select! {
            answer = client.request(Request::from_parts(parts, body)) => answer,
            () = replaced(&mut watched, epoch) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::Unknown(
                    "the server holding the log's store was replaced while the call was \
                     forwarded: it may or may not have been carried out (retry with the same \
                     request_id)"
                        .to_owned(),
                ));
            }
        };
        let answer = answer.map_err(|err| {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let message = format!("the server holding the log's store did not answer: {err}");
            if err.is_connect() {
                Failure::NotSent(message)
            } else {
                Failure::Unknown(message)
            }
        })?;
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let (mut parts, body) = answer.into_parts();
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// Resolves once the leader is no longer the holder of lease `epoch` (or the follower stops).
async fn replaced(leader: &mut watch::Receiver<Option<Leader>>, epoch: i64) {
    loop {
        if leader.changed().await.is_err() {
            return;
        }
        if leader.borrow_and_update().as_ref().map(|l| l.epoch) != Some(epoch) {
            return;
        }
    }
}

async fn forward_grpc(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    match shared.forward("grpc", request).await {
        Ok(response) => response,
        Err(Failure::NotSent(message)) => tonic::Status::unavailable(message).into_http::<Body>(),
        Err(Failure::Unknown(message)) => tonic::Status::unknown(message).into_http::<Body>(),
    }
}

async fn forward_http(
    api: &'static str,
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response {
    match shared.forward(api, request).await {
        Ok(response) => response,
        Err(Failure::NotSent(message)) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("{message}\n"),
        )
            .into_response(),
        Err(Failure::Unknown(message)) => {
            (http::StatusCode::BAD_GATEWAY, format!("{message}\n")).into_response()
        }
    }
}

fn http_router(api: &'static str, shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(move |state, request| forward_http(api, state, request))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.leader.borrow().is_some() {
        "ready: following the server that holds the log's store\n".into_response()
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no server holds the log's store right now\n",
        )
            .into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let epoch = shared.leader.borrow().as_ref().map_or(0, |l| l.epoch);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    #[expect(
        clippy::cast_precision_loss,
        reason = "milliseconds of a lease, far below 2^52"
    )]
    let lease_left = shared
        .lease_until_ms
        .load(Ordering::Relaxed)
        .saturating_sub(now_ms) as f64
        / 1000.0;
    let has_leader = u8::from(shared.leader.borrow().is_some());
    let text = format!(
        "# HELP akashi_follower 1 while this server follows the one holding the PostgreSQL \
         store's lease (it forwards every call there).\n\
         # TYPE akashi_follower gauge\n\
         akashi_follower 1\n\
         # HELP akashi_follower_leader_known 1 while a live lease holder is known, else 0 \
         (calls are refused meanwhile).\n\
         # TYPE akashi_follower_leader_known gauge\n\
         akashi_follower_leader_known {has_leader}\n\
         # HELP akashi_follower_leader_epoch The epoch of the lease the followed server holds.\n\
         # TYPE akashi_follower_leader_epoch gauge\n\
         akashi_follower_leader_epoch {epoch}\n\
         # HELP akashi_follower_leader_lease_left_seconds How long the followed lease lasts \
         unless renewed, as last read (0 once it ran out).\n\
         # TYPE akashi_follower_leader_lease_left_seconds gauge\n\
         akashi_follower_leader_lease_left_seconds {lease_left:.3}\n\
         # HELP akashi_follower_forwarded_total Calls forwarded and answered by the leader.\n\
         # TYPE akashi_follower_forwarded_total counter\n\
         akashi_follower_forwarded_total {}\n\
         # HELP akashi_follower_forward_failures_total Calls the leader could not be reached \
         for.\n\
         # TYPE akashi_follower_forward_failures_total counter\n\
         akashi_follower_forward_failures_total {}\n",
        shared.forwarded.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed),
    );
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Reads who holds the lease every [`WATCH_EVERY`] until `stop`, publishing a live holder that
/// is not this server (`own` endpoints) and reporting health to match.
async fn watch_leader(
    url: String,
    own: String,
    leader: watch::Sender<Option<Leader>>,
    lease_until_ms: Arc<AtomicU64>,
    health: HealthReporter,
    stop: watch::Receiver<bool>,
) {
    let options = PostgresOptions {
        pool_size: 1,
        operation_timeout: Duration::from_secs(2),
        cache_bytes: 0,
        ..PostgresOptions::default()
    };
    let mut observer: Option<Arc<PostgresStore>> = None;
    let mut reported: Option<bool> = None;
    // The last holder seen, and until when its lease surely lasts: kept through a failed read
    // of the lease row, so that one lost round trip does not fail every forwarded call.
    let mut last: Option<(Leader, tokio::time::Instant)> = None;
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        if observer.is_none() {
            let (url, options) = (url.clone(), options.clone());
            match tokio::task::spawn_blocking(move || PostgresStore::observe(&url, &options)).await
            {
                Ok(Ok(store)) => observer = Some(Arc::new(store)),
                Ok(Err(err)) => {
                    tracing::warn!(cause = %err, "the follower cannot reach the database")
                }
                Err(err) => tracing::warn!(cause = %err, "the follower's database task failed"),
            }
        }
        // Taken before the read: the lease lasts from no later than this.
        let read_at = tokio::time::Instant::now();
        let seen = match observer.clone() {
            Some(store) => match tokio::task::spawn_blocking(move || store.holder()).await {
                Ok(Ok(holder)) => Some(holder),
                Ok(Err(err)) => {
                    tracing::warn!(cause = %err, "the follower cannot read the lease");
                    observer = None;
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        last = match seen {
            Some(h) if h.live && !h.endpoint.is_empty() && h.endpoint != own => {
                // The row's expiry is the database's word: bounded, so that no sum overflows.
                let expires_in = h.expires_in.min(MAX_LEASE);
                let left = expires_in.saturating_sub(read_at.elapsed());
                let until_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| {
                        u64::try_from((d + left).as_millis()).unwrap_or(u64::MAX)
                    });
                lease_until_ms.store(until_ms, Ordering::Relaxed);
                Some((
                    Leader {
                        epoch: h.epoch,
                        holder: h.holder,
                        endpoints: parse_endpoints(&h.endpoint),
                    },
                    read_at + expires_in,
                ))
            }
            Some(_) => None,
            None => last.filter(|(_, until)| tokio::time::Instant::now() < *until),
        };
        if last.is_none() {
            lease_until_ms.store(0, Ordering::Relaxed);
        }
        let now = last.as_ref().map(|(leader, _)| leader.clone());
        let serving = now.as_ref().is_some_and(|l| l.endpoint("grpc").is_some());
        leader.send_if_modified(|held| {
            if *held == now {
                return false;
            }
            match &now {
                Some(l) => tracing::info!(epoch = l.epoch, holder = %l.holder, "following"),
                None => tracing::warn!("no live server holds the log's store: calls are refused"),
            }
            *held = now;
            true
        });
        if reported != Some(serving) {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in SERVICES {
                health.set_service_status(name, status).await;
            }
            reported = Some(serving);
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

/// Follows the server holding the lease of `config`'s PostgreSQL store on `listeners` until
/// `stop` resolves; calls in flight then get [`GRACE`] to finish. Sets `joined` once a live
/// lease holder was seen.
///
/// # Errors
///
/// [`StartError::Config`] without a store; [`StartError::TlsFile`] and [`StartError::Transport`] (as for a server) for unusable
/// TLS settings; [`StartError::Transport`] when the gRPC listener fails.
pub async fn follow(
    config: &Config,
    listeners: Listeners,
    joined: &AtomicBool,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let Some(url) = config.store.clone() else {
        return Err(StartError::Config(crate::config::ConfigError::Invalid {
            field: "standby",
            reason: "needs `store`: a follower follows a PostgreSQL store's lease holder",
        }));
    };
    let leftover = config
        .data_dir
        .join(crate::server::VAULT_DIR)
        .join(ledger::vault::FILE_NAME);
    if leftover.exists() {
        tracing::warn!(
            path = %leftover.display(),
            "this data dir holds a key vault file: a shred in the database does not reach it \
             until this server takes the store over and moves it in (or it is deleted)"
        );
    }
    let (leader_tx, leader_rx) = watch::channel(None);
    let health = HealthReporter::new();
    for name in SERVICES {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let shared = Arc::new(Shared {
        leader: leader_rx,
        grpc: (0..UPSTREAM_CONNECTIONS)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .http2_only(true)
                    .http2_keep_alive_interval(UPSTREAM_KEEPALIVE)
                    .http2_keep_alive_timeout(UPSTREAM_KEEPALIVE)
                    .http2_keep_alive_while_idle(true)
                    .build(connector.clone())
            })
            .collect(),
        http: Client::builder(TokioExecutor::new()).build(connector),
        next: AtomicU64::new(0),
        lease_until_ms: Arc::default(),
        forwarded: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = watch_leader(
        url,
        config.advertised_endpoints(),
        leader_tx,
        shared.lease_until_ms.clone(),
        health.clone(),
        stop_rx.clone(),
    );
    let mut seen = shared.leader.clone();
    let joining = async move {
        if seen.wait_for(Option::is_some).await.is_ok() {
            joined.store(true, Ordering::SeqCst);
        }
    };

    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(tonic_health::pb::health_server::HealthServer::new(
        HealthService::from_health_reporter(health),
    ));
    let forwarding = shared.clone();
    let router = routes
        .routes()
        .into_axum_router()
        .fallback(move |request: Request| forward_grpc(State(forwarding.clone()), request));
    let mut builder = grpc_builder(config.tls.as_ref())?;
    let idle_timeout = config.limits.idle_timeout;
    let incoming = tonic::transport::server::TcpIncoming::from(listeners.grpc)
        .with_nodelay(Some(true))
        .map_ok(move |stream| crate::server::edge::IdleTimeout::new(stream, idle_timeout));
    let grpc = builder
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let limits = config.limits.clone();
    let http = serve_http(
        listeners.http,
        http_router("http", shared.clone()),
        &limits,
        stopped(stop_rx.clone()),
    );
    let admin_router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    let admin = serve_http(
        listeners.admin,
        admin_router,
        &limits,
        stopped(stop_rx.clone()),
    );
    let authzen = async {
        if let Some(listener) = listeners.authzen {
            let router = http_router("authzen", shared.clone());
            serve_http(listener, router, &limits, stopped(stop_rx.clone())).await;
        }
    };
    let fhir = async {
        if let Some(listener) = listeners.fhir {
            let router = http_router("fhir", shared.clone());
            serve_http(listener, router, &limits, stopped(stop_rx.clone())).await;
        }
    };
    let served = async { tokio::join!(grpc, http, admin, authzen, fhir, watcher, joining).0 };
    let mut served = std::pin::pin!(served);
    tokio::select! {
        result = &mut served => return result.map_err(StartError::from),
        () = stop => {}
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(GRACE, served).await {
        Ok(result) => result.map_err(StartError::from),
        Err(_) => {
            tracing::info!(
                "this server stopped following; calls it was still forwarding end on their own"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_into_pairs_and_junk_is_left_out() {
        let parsed = parse_endpoints(
            "grpc=http://10.0.0.7:50051 http=http://10.0.0.7:8080 fhir=ftp://x:1 junk \
             authzen=http://[::1]:8081",
        );
        assert_eq!(
            parsed,
            [
                ("grpc".to_owned(), "http://10.0.0.7:50051".to_owned()),
                ("http".to_owned(), "http://10.0.0.7:8080".to_owned()),
                ("authzen".to_owned(), "http://[::1]:8081".to_owned()),
            ]
        );
        let leader = Leader {
            epoch: 3,
            holder: "host:1".into(),
            endpoints: parsed,
        };
        assert_eq!(leader.endpoint("http"), Some("http://10.0.0.7:8080"));
        assert_eq!(leader.endpoint("fhir"), None);
        assert!(parse_endpoints("").is_empty());
    }
}

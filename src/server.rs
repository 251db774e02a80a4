//! The server: tonic on the gRPC listener (health, reflection v1 and v1alpha, and the
//! `akashi.v1` services), axum on the public HTTP listener (`GET /metrics`, and whatever public
//! routes are merged in), both stopped gracefully by one shutdown future.
//!
//! [`Server`] is the extension point: [`Server::open`] loads what every service needs, then
//! services are added with [`Server::add_service`] (authenticated unless listed in
//! [`crate::auth::PUBLIC_SERVICES`]) and public HTTP routes with [`Server::merge_http`], and
//! [`Server::run`] serves until shutdown. The server takes listeners rather than addresses, so
//! tests bind port 0. This module does not implement any `akashi.v1` method.

use std::{convert::Infallible, future::Future, path::Path, sync::Arc, time::Duration};

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use futures::TryStreamExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder as HttpBuilder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{
        Certificate, Identity, ServerTlsConfig,
        server::{Server as TonicServer, TcpIncoming},
    },
};
use tonic_health::{
    ServingStatus,
    server::{HealthReporter, HealthService},
};

use ledger::{
    anchor::Anchor,
    log::{Log, OpenError},
    note::NoteSigner,
    sequencer::{BatchReport, CommitHook, Sequencer, SequencerOptions},
    store::{PostgresOptions, PostgresStore, SledOptions, SledStore, Store},
};
use policy::engine::PolicyEngine;
use proto::pb::{
    access_service_server::AccessServiceServer, audit_service_server::AuditServiceServer,
    consent_service_server::ConsentServiceServer, directory_service_server::DirectoryServiceServer,
    erasure_service_server::ErasureServiceServer, history_service_server::HistoryServiceServer,
    policy_service_server::PolicyServiceServer,
    transparency_service_server::TransparencyServiceServer,
};

use self::edge::{EdgeLayer, IdleTimeout};
use crate::subject_map::SubjectMapKey;
use crate::{
    auth::AuthLayer,
    config::{Config, Limits, TlsConfig},
    disclosure::Disclosure,
    error::{Error, StartError},
    keys::{self, Keys},
    metrics::{Metrics, MetricsLayer},
    oidc::Oidc,
    service::{
        Core,
        access::Access,
        audit::Audit,
        budget::{AnswerBudget, BudgetLayer},
        consent::Consents,
        directory::Registry,
        erasure::Erasure,
        history::History,
        policies::Policies,
        transparency::Transparency,
    },
    state_machine::{Command, DomainStateMachine},
    witness::{Witnessed, Witnessing},
};

/// Largest gRPC request message: a frame announcing more is `RESOURCE_EXHAUSTED` at the edge
/// (before it is read); services also set it as tonic's own limit, a second line.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024;
/// Largest request metadata (as HTTP/2 counts a header list: names, values and 32 bytes per
/// entry): more is `RESOURCE_EXHAUSTED` at the edge, before the token is read.
pub const MAX_METADATA_LEN: usize = 16 * 1024;
/// Hard cap on an HTTP/2 header list, well above [`MAX_METADATA_LEN`]: past it HTTP/2 itself
/// refuses the request (the client sees a protocol error, not a gRPC status).
pub const MAX_HEADER_LIST_LEN: u32 = 64 * 1024;
/// Most concurrent calls on one connection; a client's further calls wait for a free stream.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;
/// HTTP/2 keepalive ping interval.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The folder under the data dir that holds the ledger's sled store.
pub const LEDGER_DIR: &str = "ledger";
/// The file in the data dir, beside [`LEDGER_DIR`], that holds the newest checkpoint the log
/// has acknowledged (`ledger::anchor`).
pub const ANCHOR_FILE: &str = "ledger.anchor";
/// The folder under the data dir that holds the key vault the patients' bodies are sealed under
/// (`ledger::vault`): not part of the store's backups, so that destroying a key erases every copy.
pub const VAULT_DIR: &str = "vault";

/// A server being assembled: configuration, keys, metrics, and the services to host.
pub struct Server {
    config: Config,
    keys: Keys,
    core: Core,
    metrics: Arc<Metrics>,
    health: HealthReporter,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    http: Router,
    admin: Option<TcpListener>,
    authzen: Option<TcpListener>,
    fhir: Option<TcpListener>,
    disclosure: Arc<Disclosure>,
    witnessing: Option<Witnessing>,
    /// The OpenID Connect provider whose tokens are accepted too, when configured.
    oidc: Option<Arc<Oidc>>,
    /// Ends the services' streams when the server begins to stop.
    stopping: watch::Sender<bool>,
    /// The PostgreSQL store under the log, when it is on PostgreSQL (for its lease).
    postgres: Option<Arc<PostgresStore>>,
}

impl Server {
    /// Validates `config`, loads the data dir's keys (creating them only for a data dir that
    /// holds no log yet), opens the log held to its checkpoint anchor, and prepares health,
    /// reflection and metrics. The `akashi.v1` services are registered here.
    ///
    /// # Errors
    ///
    /// [`StartError::Config`] for an invalid configuration, [`StartError::Keys`] for unusable or missing
    /// key material, [`StartError::LedgerStore`] and [`StartError::LedgerOpen`] for a store that cannot be
    /// opened or that differs from the newest checkpoint the log acknowledged.
    pub fn open(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let witness_client = crate::witness::client(&config)?;
        let options = PostgresOptions {
            endpoint: config.advertised_endpoints(),
            ..PostgresOptions::default()
        };
        let (store, postgres) =
            open_store_with(&config.data_dir, config.store.as_deref(), &options)?;
        let keys = if holds_log(&config.data_dir, store.as_ref())? {
            Keys::load(&config.data_dir, &config.origin)?
        } else {
            Keys::load_or_generate(&config.data_dir, &config.origin)?
        };
        let metrics = Arc::new(Metrics::new());
        if let Some(postgres) = &postgres {
            metrics.watch_store_lease(postgres.clone());
        }
        let log = open_log(
            &config.data_dir,
            store,
            postgres.as_ref(),
            keys.checkpoint_signer.clone(),
        )?;
        // Erasures a stop interrupted are finished before anything is served.
        crate::erasure::resume(&log).map_err(|err| StartError::Vault(err.to_string()))?;
        metrics.set_tree_size(log.size().get());
        let hook_metrics = metrics.clone();
        // The witness task learns of commits here; the writer thread only stores a number.
        let (commits, commits_seen) = watch::channel(log.size().get());
        let streams_commits = commits_seen.clone();
        let (stopping, streams_stopping) = watch::channel(false);
        let options = SequencerOptions {
            max_batch: config.batch_max_entries,
            max_wait: config.batch_max_wait,
            on_commit: Some(CommitHook(Arc::new(move |report: &BatchReport| {
                hook_metrics.record_batch(
                    report.entries,
                    report.elapsed,
                    report.sync,
                    report.write,
                );
                hook_metrics.set_tree_size(report.tree_size);
                commits.send_replace(report.tree_size);
            }))),
            ..SequencerOptions::default()
        };
        let log = Arc::new(log);
        let (witnessing, witnessed) =
            match Witnessing::new(&config, witness_client, log.clone(), commits_seen) {
                Some((task, reader)) => (Some(task), reader),
                None => (None, Witnessed::none()),
            };
        metrics.set_health(
            log.clone(),
            witnessed.clone(),
            witnessing.as_ref().map(Witnessing::stats),
        );
        let oidc = match &config.oidc {
            Some(settings) => Some(Oidc::new(settings.clone()).map_err(StartError::Oidc)?),
            None => None,
        };
        let map_key = keys.subject_map_key.clone().map(SubjectMapKey::new);
        let machine = DomainStateMachine::new(log.clone())?.with_subject_map(map_key.as_ref())?;
        let map_key = map_key.filter(|_| machine.keeps_subject_map());
        if let Some(key) = &map_key {
            metrics.watch_subject_map(key.clone());
        }
        let decisions = machine.decisions();
        metrics.watch_decisions(decisions.clone());
        let sequencer =
            Sequencer::start(log, machine, options).map_err(|source| StartError::Io {
                context: "starting the sequencer thread",
                source,
            })?;
        let mut core = Core::new(sequencer, decisions.clone(), keys.subject_key.clone())
            .with_witnessed(witnessed)
            .with_streams(streams_commits, streams_stopping);
        if let Some(key) = map_key {
            core = core.with_subject_map(key);
        }
        let disclosure = Arc::new(Disclosure::new(
            core.log().clone(),
            core.witnessed().clone(),
            config.disclosure_threshold,
        ));
        let policy_approval = config.policy_approval;
        let erasure_retention_days = config.erasure_retention_days;
        // INVARIANT: `HealthReporter::new` starts with the overall service ("") SERVING.
        let mut server = Self {
            config,
            keys,
            core: core.clone(),
            metrics,
            health: HealthReporter::new(),
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            http: Router::new(),
            admin: None,
            authzen: None,
            fhir: None,
            disclosure: disclosure.clone(),
            witnessing,
            oidc,
            stopping,
            postgres,
        };
        server
            .add_service(
                DirectoryServiceServer::new(Registry(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                ConsentServiceServer::new(Consents(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                AccessServiceServer::new(Access(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                PolicyServiceServer::new(Policies::new(core.clone(), policy_approval))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                HistoryServiceServer::new(History(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                TransparencyServiceServer::new(Transparency(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                AuditServiceServer::new(Audit(core.clone()))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            )
            .add_service(
                ErasureServiceServer::new(Erasure::new(core.clone(), erasure_retention_days))
                    .max_decoding_message_size(MAX_MESSAGE_LEN),
            );
        server.merge_http(crate::public::router(core, disclosure));
        Ok(server)
    }

    /// The services' shared core (sequencer, log, pseudonym key).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The configuration being served.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key material of the data dir.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The metrics registry (the ledger reports batches into it).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The gRPC health reporter (what `grpc.health.v1.Health` answers).
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// The PostgreSQL store under the log, when the log is on PostgreSQL.
    pub fn postgres_store(&self) -> Option<&Arc<PostgresStore>> {
        self.postgres.as_ref()
    }

    /// Hosts a gRPC service, reported SERVING by health and listed by reflection. It needs a
    /// bearer token unless its name is in [`crate::auth::PUBLIC_SERVICES`].
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.service_names.push(S::NAME);
        self
    }

    /// Adds public HTTP routes.
    pub fn merge_http(&mut self, router: Router) -> &mut Self {
        self.http = std::mem::take(&mut self.http).merge(router);
        self
    }

    /// Serves the admin routes on `listener` as well: `/metrics` (Prometheus), `/healthz` (the
    /// process serves) and `/readyz` (the write path is open: `503` while the log is poisoned).
    /// They are for operators and are not on the public port.
    pub fn serve_admin(&mut self, listener: TcpListener) -> &mut Self {
        self.admin = Some(listener);
        self
    }

    /// Serves the OpenID AuthZEN 1.0 API (`crate::authzen`) on `listener` as well.
    pub fn serve_authzen(&mut self, listener: TcpListener) -> &mut Self {
        self.authzen = Some(listener);
        self
    }

    /// Serves the FHIR R4 `Consent` endpoint (`crate::fhir`) on `listener` as well.
    pub fn serve_fhir(&mut self, listener: TcpListener) -> &mut Self {
        self.fhir = Some(listener);
        self
    }

    /// Serves gRPC on `grpc` and HTTP on `http` until `shutdown` completes or either server
    /// fails; then reports NOT_SERVING, stops accepting, and waits for in-flight calls.
    ///
    /// # Errors
    ///
    /// [`StartError::TlsFile`] or [`StartError::Keys`] for unusable TLS files, [`StartError::Transport`] for a
    /// gRPC transport failure, [`StartError::Reflection`] for a broken descriptor set, and
    /// [`Error::Internal`] for a built-in descriptor set that does not decode. (A failed accept
    /// on the HTTP port is logged and retried, not an error.)
    pub async fn run(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Self {
            config,
            keys,
            core,
            metrics,
            health,
            mut routes,
            service_names,
            http: extra_http,
            admin,
            authzen,
            fhir,
            disclosure,
            witnessing,
            oidc,
            stopping,
            postgres: _,
        } = self;
        let verifier = match &oidc {
            Some(oidc) => keys.token_issuer.verifier().with_oidc(oidc.clone()),
            None => keys.token_issuer.verifier(),
        };

        ensure_policy_set(&core).await?;
        let mut served: Vec<&'static str> = vec![tonic_health::pb::health_server::SERVICE_NAME];
        served.extend(&service_names);
        for name in &served {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        routes.add_service(tonic_health::pb::health_server::HealthServer::new(
            HealthService::from_health_reporter(health.clone()),
        ));
        routes.add_service(reflection_v1(&served)?);
        routes.add_service(reflection_v1alpha(&served)?);
        let mut labelled = served.clone();
        labelled.extend([
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]);
        metrics.set_methods(&served_methods(&labelled)?);

        let limits = config.limits.clone();
        let builder = grpc_builder(config.tls.as_ref())?;
        // One answer budget for gRPC and the FHIR endpoint, which calls the consent service.
        let budget = Arc::new(AnswerBudget::new(
            limits.answer_budget_per_caller,
            limits.answer_budget_total,
        ));
        // Outermost first: count every call, refuse oversize metadata and messages before
        // anything reads them, authenticate, then hold each large answer's budget until its
        // body is sent or dropped.
        let grpc_server = builder
            .layer(MetricsLayer::new(metrics.clone()))
            .layer(EdgeLayer::new(MAX_METADATA_LEN, MAX_MESSAGE_LEN))
            .layer(AuthLayer::new(verifier.clone()))
            .layer(BudgetLayer::new(budget.clone()))
            .add_routes(routes.routes());
        let idle_timeout = limits.idle_timeout;
        let incoming = TcpIncoming::from(grpc)
            .with_nodelay(Some(true))
            .map_ok(move |stream| IdleTimeout::new(stream, idle_timeout));

        let http_router = extra_http;
        let admin_router = Router::new()
            .route("/metrics", get(render_metrics))
            .with_state(metrics)
            .merge(
                Router::new()
                    .route("/healthz", get(healthz))
                    .route("/readyz", get(readyz))
                    .with_state(core.clone()),
            );

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut stop_on_signal = stop_rx.clone();
        let coordinator = async {
            tokio::select! {
                () = shutdown => tracing::info!("shutdown requested"),
                _ = stop_on_signal.changed() => {}
            }
            for name in std::iter::once("").chain(served.iter().copied()) {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            // Streams end first, so that the gRPC server's graceful stop does not wait on them.
            let _ = stopping.send(true);
            let _ = stop_tx.send(true);
        };
        let grpc_task = async {
            let result = grpc_server
                .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()))
                .await;
            let _ = stop_tx.send(true);
            result
        };
        let http_task = async {
            serve_http(http, http_router, &limits, stopped(stop_rx.clone())).await;
            let _ = stop_tx.send(true);
        };
        let admin_task = async {
            if let Some(admin) = admin {
                serve_http(admin, admin_router, &limits, stopped(stop_rx.clone())).await;
            }
        };
        let authzen_router = crate::authzen::router(core.clone(), verifier.clone());
        let authzen_task = async {
            if let Some(authzen) = authzen {
                serve_http(authzen, authzen_router, &limits, stopped(stop_rx.clone())).await;
            }
        };
        let fhir_router = crate::fhir::router(core.clone(), verifier, budget);
        let fhir_task = async {
            if let Some(fhir) = fhir {
                serve_http(fhir, fhir_router, &limits, stopped(stop_rx.clone())).await;
            }
        };
        let refresher = refresh_disclosure(disclosure, stop_rx.clone());
        // Witnesses are asked off every request's path, until the servers stop.
        let witness_task = async {
            if let Some(witnessing) = witnessing {
                witnessing.run(stopped(stop_rx.clone())).await;
            }
        };
        // The provider's keys are fetched at once, then now and then, until the servers stop.
        let oidc_task = async {
            if let Some(oidc) = oidc {
                oidc.run(stopped(stop_rx.clone())).await;
            }
        };
        let ((), grpc_result, (), (), (), (), (), (), ()) = tokio::join!(
            coordinator,
            grpc_task,
            http_task,
            admin_task,
            authzen_task,
            fhir_task,
            refresher,
            witness_task,
            oidc_task
        );
        // Every in-flight call has been answered; finish what the sequencer still holds and
        // leave the store synced.
        core.sequencer().shutdown().await;
        grpc_result?;
        tracing::info!("server stopped");
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("services", &self.service_names)
            .finish_non_exhaustive()
    }
}

/// Opens the store the log lives in: the sled store in the data dir's [`LEDGER_DIR`], or the
/// PostgreSQL database `store` names (taking its lease: one server writes a log at a time).
///
/// # Errors
///
/// [`StartError::LedgerStore`] when the store cannot be opened (sled's folder held by another
/// process, the database unreachable, its lease held, its schema newer than this build's).
pub fn open_store(data_dir: &Path, store: Option<&str>) -> Result<Arc<dyn Store>, StartError> {
    Ok(open_store_watched(data_dir, store)?.0)
}

/// An opened store, with the PostgreSQL store's handle apart (for its lease's metrics).
pub type OpenedStore = (Arc<dyn Store>, Option<Arc<PostgresStore>>);

/// [`open_store`], keeping the PostgreSQL store's handle.
///
/// # Errors
///
/// As [`open_store`].
pub fn open_store_watched(data_dir: &Path, store: Option<&str>) -> Result<OpenedStore, StartError> {
    open_store_with(data_dir, store, &PostgresOptions::default())
}

/// [`open_store_watched`] with the PostgreSQL store's `options`.
fn open_store_with(
    data_dir: &Path,
    store: Option<&str>,
    options: &PostgresOptions,
) -> Result<OpenedStore, StartError> {
    Ok(match store {
        Some(url) => {
            let postgres = Arc::new(PostgresStore::open(url, options)?);
            (postgres.clone(), Some(postgres))
        }
        None => (
            Arc::new(SledStore::open(
                &data_dir.join(LEDGER_DIR),
                &SledOptions::default(),
            )?),
            None,
        ),
    })
}

/// Whether a log exists: a checkpoint anchor in `data_dir`, or anything in `store`. Keys are
/// created only when neither holds one.
///
/// # Errors
///
/// [`StartError::Io`] when the data dir cannot be examined, [`StartError::LedgerStore`] when
/// the store cannot be read.
pub fn holds_log(data_dir: &Path, store: &dyn Store) -> Result<bool, StartError> {
    let io = |source| StartError::Io {
        context: "examining the data dir for a log",
        source,
    };
    if data_dir.join(ANCHOR_FILE).try_exists().map_err(io)? {
        return Ok(true);
    }
    // The log's keys are all printable: everything sorts below 0xff.
    Ok(!store.scan(b"", b"\xff", 1)?.is_empty())
}

/// Opens the log in `store`, held to the data dir's [`ANCHOR_FILE`], signing with `signer`, with
/// its key vault: the data dir's for a sled store, the database's for a PostgreSQL store
/// (`postgres`, the same store as `store`). A data dir's vault found beside a PostgreSQL store is
/// moved into the database first (see [`open_database_vault`]).
///
/// # Errors
///
/// [`StartError::LedgerOpen`] when the log refuses the store (see
/// `ledger::log::Log::open_anchored`), [`StartError::Vault`] for a missing or unusable vault.
pub fn open_log(
    data_dir: &Path,
    store: Arc<dyn Store>,
    postgres: Option<&Arc<PostgresStore>>,
    signer: NoteSigner,
) -> Result<Log, StartError> {
    let anchor =
        Anchor::open(&data_dir.join(ANCHOR_FILE), &signer.verifier()).map_err(OpenError::from)?;
    let log = Log::open_anchored(store, signer, anchor)?;
    let vault_error = |err: crate::error::Error| StartError::Vault(err.to_string());
    let vault = match postgres {
        Some(postgres) => open_database_vault(data_dir, postgres, &log)?,
        None => {
            let vault_dir = data_dir.join(VAULT_DIR);
            if !vault_file_exists(data_dir)?
                && crate::erasure::keys_allocated(&log).map_err(vault_error)?
            {
                // Without the vault every sealed body would read as erased: refuse, never
                // pretend.
                return Err(StartError::Vault(format!(
                    "{} is missing, but the store holds bodies sealed under its keys; restore the \
                     vault (it is kept apart from the store's backups) or move the data dir aside",
                    vault_dir.join(ledger::vault::FILE_NAME).display()
                )));
            }
            ledger::vault::KeyVault::open(&vault_dir)
                .map_err(|err| StartError::Vault(err.to_string()))?
        }
    };
    log.set_vault(Arc::new(vault));
    crate::erasure::restore_floor(&log).map_err(vault_error)?;
    Ok(log)
}

/// Whether the data dir holds a key vault file.
fn vault_file_exists(data_dir: &Path) -> Result<bool, StartError> {
    data_dir
        .join(VAULT_DIR)
        .join(ledger::vault::FILE_NAME)
        .try_exists()
        .map_err(|source| StartError::Io {
            context: "examining the key vault",
            source,
        })
}

/// The key vault of a log on PostgreSQL: the database's (`ledger::store::postgres::vault`), so
/// that every server of the log reaches the same keys.
///
/// A vault file in the data dir (a log that ran on PostgreSQL before the vault moved there, or
/// one copied from sled with `akashi store copy`) is moved in: the slots the database lacks are
/// copied (all of them the first time; the rest after a move cut short), every slot is read back
/// and compared, and only when the database holds every key the log has handed out is the file
/// destroyed (overwritten with zeros, synced, removed), so that a later shred reaches every copy
/// of a key. A file that disagrees with the database's keys (another log's vault), or that holds
/// keys while the log has handed out none, is refused and left alone, naming both.
///
/// # Errors
///
/// [`StartError::Vault`].
pub fn open_database_vault(
    data_dir: &Path,
    postgres: &Arc<PostgresStore>,
    log: &Log,
) -> Result<ledger::vault::KeyVault, StartError> {
    let failed = |err: ledger::vault::VaultError| StartError::Vault(err.to_string());
    let slots = ledger::store::postgres::vault::PostgresSlots::new(postgres.clone());
    let vault = ledger::vault::KeyVault::with_slots(Box::new(slots)).map_err(failed)?;
    let vault_dir = data_dir.join(VAULT_DIR);
    // A destruction cut short left its file renamed: finish it (its keys are in the database).
    ledger::vault::KeyVault::finish_destroying(&vault_dir).map_err(failed)?;
    if !vault_file_exists(data_dir)? {
        return Ok(vault);
    }
    let file_path = vault_dir.join(ledger::vault::FILE_NAME);
    let file = ledger::vault::KeyVault::open(&vault_dir).map_err(failed)?;
    if file.slots() > 0 {
        let handed_out =
            crate::erasure::handed_out(log).map_err(|err| StartError::Vault(err.to_string()))?;
        if handed_out == 0 {
            return Err(StartError::Vault(format!(
                "the data dir's key vault {} holds keys, but the log in the PostgreSQL database \
                 has handed out none: it cannot be told from another log's vault; move it aside \
                 if no body of this log was ever sealed under it",
                file_path.display()
            )));
        }
        // Only the keys the log handed out matter: slots above are unused on both sides.
        if !file.agrees_with(&vault, handed_out).map_err(failed)? {
            return Err(StartError::Vault(format!(
                "the data dir's key vault {} differs from the key vault in the PostgreSQL \
                 database, which holds other keys: a log on PostgreSQL keeps its keys in the \
                 database only; move the file aside once you know which vault belongs to this log",
                file_path.display()
            )));
        }
        let moved = if vault.slots() < handed_out {
            file.copy_rest_into(&vault).map_err(failed)?
        } else {
            0
        };
        // A zero in the file is a shred (a destruction renames the file first): it reaches the
        // database's copy of the key too.
        let shredded = vault.adopt_shreds_from(&file, handed_out).map_err(failed)?;
        // Read back: every key the log handed out is in the database before the file goes.
        let whole =
            vault.slots() >= handed_out && file.agrees_with(&vault, handed_out).map_err(failed)?;
        if !whole {
            return Err(StartError::Vault(format!(
                "moving the data dir's key vault {} into the PostgreSQL database did not leave \
                 the database with every key the log handed out ({} of {handed_out}); the file \
                 is kept",
                file_path.display(),
                vault.slots()
            )));
        }
        tracing::info!(
            slots = moved,
            shredded,
            "moved the data dir's key vault into the PostgreSQL database"
        );
    }
    drop(file);
    ledger::vault::KeyVault::destroy_file(&vault_dir).map_err(failed)?;
    Ok(vault)
}

/// Keeps the disclosure statistics up to date in the background until `stop`, so that a page
/// load never folds a long backlog of entries itself.
async fn refresh_disclosure(disclosure: Arc<Disclosure>, stop: watch::Receiver<bool>) {
    let mut stop = std::pin::pin!(stopped(stop));
    loop {
        let job = disclosure.clone();
        match tokio::task::spawn_blocking(move || job.refresh()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(cause = %err, "disclosure statistics not refreshed"),
            Err(err) => tracing::warn!(cause = %err, "disclosure refresh task failed"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(crate::disclosure::BACKGROUND_INTERVAL) => {}
        }
    }
}

/// Activates the default policy set on a log that has none (its first start), so that every
/// decision is made under a policy set that is itself in the log.
async fn ensure_policy_set(core: &Core) -> Result<(), StartError> {
    let active = policy::state::active_policy_set(&crate::state_machine::LogKv(core.log()))
        .map_err(StartError::State)?;
    if active.is_some() {
        return Ok(());
    }
    let engine = PolicyEngine::default_set().map_err(StartError::DefaultPolicySet)?;
    let (receipt, _) = core.submit(Command::Activate(Arc::new(engine))).await?;
    tracing::info!(
        index = receipt.leaf_index.get(),
        "activated the default policy set"
    );
    Ok(())
}

/// Liveness: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: writes and decisions can be logged (not while the log is poisoned by a store
/// failure; reads go on meanwhile, see `crate::supervisor`).
async fn readyz(State(core): State<Core>) -> axum::response::Response {
    if core.log().is_poisoned() {
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store failed, writes and decisions are refused until it recovers\n",
        )
            .into_response();
    }
    "ready\n".into_response()
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Serves `router` over HTTP/1 on `listener` until `stop` resolves, then waits for open
/// connections to finish. Each connection has `limits.header_read_timeout` to send a request's
/// headers and is closed after `limits.idle_timeout` without a byte from the client.
pub(crate) async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    stop: impl Future<Output = ()>,
) {
    let mut builder = HttpBuilder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, typically: give connections time to close.
                tracing::warn!(cause = %err, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(cause = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Pause after a failed `accept` on the HTTP port.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The gRPC port's server settings (keepalive, header and stream limits, TLS when configured),
/// for the server and for a follower on the same port.
///
/// # Errors
///
/// [`StartError::TlsFile`] and [`StartError::Transport`] for unusable TLS settings.
pub(crate) fn grpc_builder(tls: Option<&TlsConfig>) -> Result<TonicServer, StartError> {
    let builder = TonicServer::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_LEN))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS));
    Ok(match tls {
        Some(tls) => builder.tls_config(tls_config(tls)?)?,
        None => builder,
    })
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn reflection_v1(
    served: &[&'static str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    StartError,
> {
    let mut builder = reflection_builder(served);
    builder = builder.with_service_name("grpc.reflection.v1.ServerReflection");
    Ok(builder.build_v1()?)
}

fn reflection_v1alpha(
    served: &[&'static str],
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    StartError,
> {
    let mut builder = reflection_builder(served);
    builder = builder.with_service_name("grpc.reflection.v1alpha.ServerReflection");
    Ok(builder.build_v1alpha()?)
}

/// The methods (`package.Service/Method`) of `services`, from the descriptor sets of akashi.v1,
/// health and reflection.
fn served_methods(services: &[&str]) -> Result<Vec<String>, StartError> {
    use prost::Message as _;
    let mut methods = Vec::new();
    for set in [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set)
            .map_err(|_| Error::Internal("a built-in descriptor set does not decode"))?;
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if !services.contains(&name.as_str()) {
                    continue;
                }
                methods.extend(
                    service
                        .method
                        .iter()
                        .map(|method| format!("{name}/{}", method.name())),
                );
            }
        }
    }
    Ok(methods)
}

/// Reflection over the akashi.v1 and health descriptors, listing exactly the served services.
fn reflection_builder(served: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    served.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |builder, name| builder.with_service_name(*name),
    )
}

/// The rustls configuration of `tls`: mTLS (client certificate required) when `client_ca` is
/// set.
fn tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig, StartError> {
    let read = |path: &Path| {
        crate::tls_client::read_pem(path).map_err(|source| StartError::TlsFile {
            path: path.to_owned(),
            source,
        })
    };
    let key = keys::read_secret(&tls.key)?.ok_or(keys::KeyError::Missing {
        path: tls.key.clone(),
    })?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, key));
    if let Some(ca) = &tls.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(config)
}

pub(crate) mod edge;

#[cfg(test)]
mod tests;

//! Keeps the server serving through a store failure.
//!
//! A failed sync poisons the log (the process can no longer tell what reached the disk), and a
//! poisoned log refuses every write until it is opened again. [`serve`] runs [`Server`] and
//! watches for that: while the log is poisoned, gRPC health reports the write path
//! (`DirectoryService`, `ConsentService`, `AccessService`, `PolicyService` and the overall
//! status) `NOT_SERVING`, and once a probe file in the data dir can be written and synced
//! again, the server is drained, every handle on the store is dropped, and the server is opened
//! anew, which re-runs the ledger's recovery, on the same listeners. A server on PostgreSQL
//! whose lease another server took (`ledger::store::postgres`) does the same at once: it stops
//! serving what may be stale, and its reopening waits for the lease like a standby. Reads keep
//! being served while the log is poisoned. Clients of the old server see their calls finish (writes
//! `UNAVAILABLE`) and their connections close; new connections wait in the listen backlog
//! while the store is reopened.
//!
//! This module does not decide what is durable: recovery does, exactly as after a restart.

use std::{
    io::Write as _,
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::FutureExt as _;
use tokio::net::TcpListener;
use tonic_health::{ServingStatus, server::HealthReporter};

use ledger::log::Log;

use crate::{config::Config, error::StartError, server::Server};

/// How often the log is checked for poison.
const POISON_POLL: Duration = Duration::from_millis(200);
/// First wait between two probes of the data dir (doubled up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two probes or two attempts to reopen the store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bytes the probe writes and syncs: enough to need free blocks, little enough to be harmless.
const PROBE_LEN: usize = 64 * 1024;
/// Name of the probe file in the data dir (removed after each probe).
const PROBE_FILE: &str = ".write-probe";

/// The services that write to the log: reported `NOT_SERVING` while the log is poisoned.
const WRITE_SERVICES: [&str; 5] = [
    "",
    proto::pb::directory_service_server::SERVICE_NAME,
    proto::pb::consent_service_server::SERVICE_NAME,
    proto::pb::access_service_server::SERVICE_NAME,
    proto::pb::policy_service_server::SERVICE_NAME,
];

/// The listeners of the APIs that are off unless configured.
#[derive(Debug, Default)]
pub struct OptionalApis {
    /// The OpenID AuthZEN 1.0 API (`crate::authzen`).
    pub authzen: Option<StdListener>,
    /// The FHIR R4 `Consent` endpoint (`crate::fhir`).
    pub fhir: Option<StdListener>,
}

/// Serves `config` on `grpc`, `http`, `admin` and the `optional` APIs until `shutdown` completes, reopening the server after
/// a store failure once the data dir accepts writes again. `on_open` is called with each
/// server opened (the first, and every one after a recovery) before it serves.
///
/// # Errors
///
/// As for [`Server::open`] on the first start (a store that cannot be opened then is the
/// operator's to fix), and as for [`Server::run`]. After a store failure, opening is retried
/// until it succeeds or `shutdown` completes.
pub async fn serve(
    config: Config,
    grpc: StdListener,
    http: StdListener,
    admin: StdListener,
    optional: OptionalApis,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut on_open: impl FnMut(&Server) + Send,
) -> Result<(), StartError> {
    let shutdown = shutdown.boxed().shared();
    let mut config = config;
    // What the lease records for followers: the ports really bound (an address may ask for 0).
    let bound = |listener: &StdListener| {
        listener.local_addr().map_err(|source| StartError::Io {
            context: "reading a listener's address",
            source,
        })
    };
    config.grpc_addr = bound(&grpc)?;
    config.http_addr = bound(&http)?;
    config.admin_addr = bound(&admin)?;
    if let Some(authzen) = &optional.authzen {
        config.authzen_addr = Some(bound(authzen)?);
    }
    if let Some(fhir) = &optional.fhir {
        config.fhir_addr = Some(bound(fhir)?);
    }
    let listeners = Bound {
        grpc: &grpc,
        http: &http,
        admin: &admin,
        optional: &optional,
    };
    let mut server = if config.standby {
        // A standby: the store's lease is held by the server it stands by for; wait for it,
        // forwarding every call to that server meanwhile.
        tracing::info!("standing by: waiting for the PostgreSQL store's lease");
        match wait_for_the_store(&config, &listeners, shutdown.clone(), Retry::WhileHeld).await? {
            Some(server) => server,
            None => return Ok(()),
        }
    } else {
        Server::open(config.clone())?
    };
    loop {
        on_open(&server);
        let restart = Arc::new(AtomicBool::new(false));
        let stop = {
            let shutdown = shutdown.clone();
            let log = server.core().log().clone();
            let postgres = server.postgres_store().cloned();
            let health = server.health().clone();
            let data_dir = config.data_dir.clone();
            let restart = restart.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = recovered(log, postgres, health, data_dir) => {
                        restart.store(true, Ordering::SeqCst);
                    }
                }
            }
        };
        server.serve_admin(listener(&admin)?);
        if let Some(authzen) = &optional.authzen {
            server.serve_authzen(listener(authzen)?);
        }
        if let Some(fhir) = &optional.fhir {
            server.serve_fhir(listener(fhir)?);
        }
        server.run(listener(&grpc)?, listener(&http)?, stop).await?;
        if !restart.load(Ordering::SeqCst) {
            return Ok(());
        }
        tracing::warn!("reopening the store after a storage failure");
        server =
            match wait_for_the_store(&config, &listeners, shutdown.clone(), Retry::Always).await? {
                Some(server) => server,
                None => return Ok(()),
            };
        tracing::info!(
            tree_size = server.core().log().size().get(),
            "the store was reopened and recovered"
        );
    }
}

/// The server's listeners, kept bound across every server and follower that serves on them.
struct Bound<'a> {
    grpc: &'a StdListener,
    http: &'a StdListener,
    admin: &'a StdListener,
    optional: &'a OptionalApis,
}

/// Opens the server as [`open_until_it_opens`] does. On PostgreSQL (without TLS, see
/// `crate::follower`), this server follows the lease holder meanwhile: every call reaching it is
/// forwarded there, until the store opens here (or `shutdown`).
async fn wait_for_the_store(
    config: &Config,
    listeners: &Bound<'_>,
    shutdown: impl Future<Output = ()> + Clone + Send,
    retry: Retry,
) -> Result<Option<Server>, StartError> {
    // Set once this server has seen the log working under another server (see `Retry`).
    let joined = Arc::new(AtomicBool::new(false));
    if config.store.is_none() || config.tls.is_some() {
        return open_until_it_opens(config, shutdown, retry, &joined).await;
    }
    let optional = |given: &Option<StdListener>| given.as_ref().map(listener).transpose();
    let following = crate::follower::Listeners {
        grpc: listener(listeners.grpc)?,
        http: listener(listeners.http)?,
        admin: listener(listeners.admin)?,
        authzen: optional(&listeners.optional.authzen)?,
        fhir: optional(&listeners.optional.fhir)?,
    };
    let (opened, opened_seen) = tokio::sync::oneshot::channel::<()>();
    let follower_config = config.clone();
    let follower_joined = joined.clone();
    // The follower runs on its own task: once the store opens here it stops accepting at once,
    // and calls it is still forwarding end on their own without holding up this server.
    tokio::spawn(async move {
        let stop = async {
            let _ = opened_seen.await;
        };
        let followed =
            crate::follower::follow(&follower_config, following, &follower_joined, stop).await;
        if let Err(err) = followed {
            tracing::error!(cause = %err, "this server could not follow the lease holder");
        }
    });
    let result = open_until_it_opens(config, shutdown, retry, &joined).await;
    let _ = opened.send(());
    result
}

/// Which failures to open are waited out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Every failure: reopening after a store failure, until the store comes back.
    Always,
    /// Only the store (its lease, or the key vault's lock) being held by another server: a
    /// standby's start. Anything else before that (a store behind its anchor, bad keys, a
    /// database refusing the login) is the operator's to fix, and stops the standby as it
    /// stops a start. Once it has seen the log working under another server (the store held,
    /// or, following, a live lease holder), it has joined the log, and the store failing
    /// (unreachable, gone) is waited out as after a store failure; its own setup being wrong
    /// still stops it.
    WhileHeld,
}

/// Whether `err` is the store failing (unreachable, gone, an engine or I/O error): what a
/// standby that has joined a log rides out, as against its own setup being wrong (keys, the
/// anchor, the vault, the configuration), which stops it.
fn the_store_failed(err: &StartError) -> bool {
    matches!(err, StartError::LedgerStore(_))
}

/// Whether `err` says that another server holds the store or the key vault.
fn held_elsewhere(err: &StartError) -> bool {
    match err {
        StartError::LedgerStore(ledger::store::StoreError::LeaseHeld { .. }) => true,
        StartError::Vault(message) => message.contains("already open elsewhere"),
        _ => false,
    }
}

/// Opens the server, retrying as `retry` says with a growing pause (none while the store is
/// held: its lease wait paces the attempts), until it opens (`Some`) or `shutdown` completes
/// (`None`). `joined` says whether the log was seen working under another server.
async fn open_until_it_opens(
    config: &Config,
    shutdown: impl Future<Output = ()> + Clone,
    retry: Retry,
    joined: &AtomicBool,
) -> Result<Option<Server>, StartError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        // Opening may wait for a store's lease for seconds: on a blocking thread, so that no
        // worker of the runtime waits with it, and a shutdown is heard meanwhile.
        let attempt = config.clone();
        let opening = tokio::task::spawn_blocking(move || Server::open(attempt));
        let opened = tokio::select! {
            () = shutdown.clone() => return Ok(None),
            opened = opening => opened,
        };
        let pause = match opened {
            Ok(Ok(server)) => return Ok(Some(server)),
            Ok(Err(err)) if held_elsewhere(&err) => {
                tracing::info!(cause = %err, "the store is held by another server: waiting");
                joined.store(true, Ordering::SeqCst);
                FIRST_BACKOFF
            }
            // A standby that has seen the log working under another server has joined it: from
            // then on it rides out the store failing (a database restarting or failing over),
            // as a running server does, rather than leaving the log one server short.
            Ok(Err(err))
                if retry == Retry::WhileHeld
                    && !(joined.load(Ordering::SeqCst) && the_store_failed(&err)) =>
            {
                return Err(err);
            }
            Ok(Err(err)) => {
                tracing::error!(cause = %err, "the store cannot be opened yet");
                backoff
            }
            Err(err) => {
                tracing::error!(cause = %err, "opening the store did not finish");
                backoff
            }
        };
        tokio::select! {
            () = shutdown.clone() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves once the log has been poisoned (or, on PostgreSQL, its lease was taken over by
/// another server) and the data dir then accepts a synced write; meanwhile reports the write
/// path `NOT_SERVING`. Never resolves for a healthy log.
async fn recovered(
    log: Arc<Log>,
    postgres: Option<Arc<ledger::store::PostgresStore>>,
    health: HealthReporter,
    data_dir: PathBuf,
) {
    let replaced = || {
        postgres.as_ref().is_some_and(|store| {
            let lease = store.lease();
            lease.fenced || lease.lapsed
        })
    };
    while !log.is_poisoned() && !replaced() {
        tokio::time::sleep(POISON_POLL).await;
    }
    if replaced() {
        // Another server writes the log now, or may (the lease lapsed unrenewed): this one's
        // memory may fall behind it, so it stops serving at once (the data dir's probe is about
        // local storage, not about this) and waits to take the lease again, as a start would.
        tracing::warn!(
            "the PostgreSQL store's lease was taken over or lapsed: this server stops serving \
             and waits for the lease"
        );
        for name in WRITE_SERVICES {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        drop(log);
        drop(postgres);
        return;
    }
    tracing::error!(
        "the log is poisoned by a storage failure: writes are refused until it is reopened"
    );
    // The watcher must not keep the store open across the reopen.
    drop(log);
    drop(postgres);
    for name in WRITE_SERVICES {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        let dir = data_dir.clone();
        let probe = tokio::task::spawn_blocking(move || probe_writable(&dir)).await;
        match probe {
            Ok(Ok(())) => return,
            Ok(Err(err)) => tracing::warn!(cause = %err, "the data dir does not accept writes yet"),
            Err(err) => tracing::warn!(cause = %err, "the write probe did not finish"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Writes, syncs and removes a probe file in `dir`.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let result = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_LEN])?;
        file.sync_all()
    })();
    // Remove it whatever happened: a half-written probe must not hold the space it found.
    let removed = std::fs::remove_file(&path);
    result?;
    removed
}

/// A tokio listener on a duplicate of `listener`'s socket, so that the socket stays bound
/// (and connections queue) while one server stops and the next starts.
fn listener(listener: &StdListener) -> Result<TcpListener, StartError> {
    let io = |source| StartError::Io {
        context: "duplicating a listening socket",
        source,
    };
    let copy = listener.try_clone().map_err(io)?;
    copy.set_nonblocking(true).map_err(io)?;
    TcpListener::from_std(copy).map_err(io)
}

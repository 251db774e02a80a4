//! `akashi-audit witness-keygen` and `akashi-audit witness`: a c2sp.org/tlog-witness witness
//! of one log, over HTTP/1.1 (axum), with its state in a directory.
//!
//! The state directory holds `checkpoint` (the latest cosigned checkpoint note, verbatim, verified
//! again with the log key on every start), `lock` (held while a witness runs, so that two
//! processes never share one state), and `evidence/` (one folder per refused checkpoint that
//! contradicts the cosigned one: `request`, the `add-checkpoint` body as presented, `cosigned`,
//! the checkpoint cosigned before, and `problem`, one line saying why).
//!
//! Every request is handled under one lock: check, write the new state (temporary file, fsync,
//! rename, fsync of the directory), and only then answer with the cosignature. The rules
//! themselves are in [`crate::witness`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use clap::Args;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder as HttpBuilder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use ledger::{
    cosignature::{WitnessSigner, WitnessVerifier},
    hash::Hash,
    note::{KeyName, NoteVerifier},
    witness::{ADD_CHECKPOINT_PATH, MAX_REQUEST_SIZE, TLOG_SIZE_CONTENT_TYPE, size_body},
};

use crate::quorum::WitnessPolicy;
use crate::witness::{AddError, Cosigner, Evidence, Refusal};

/// The state file (latest cosigned checkpoint) in the state directory.
pub const STATE_FILE: &str = "checkpoint";
/// The folder of fork evidence in the state directory.
pub const EVIDENCE_DIR: &str = "evidence";
/// The most evidence folders kept; past it a refused fork is only logged (the log must have
/// signed every one, but one misbehaving log must not fill the disk).
pub const MAX_EVIDENCE: usize = 1024;
/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a client has to send a request's body.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The lock file in the state directory.
const LOCK_FILE: &str = "lock";

/// `witness-keygen`.
#[derive(Debug, Args)]
pub struct WitnessKeygenArgs {
    /// The witness's name (a key name: no spaces or `+`), e.g. `witness.example/w1`.
    #[arg(long)]
    pub name: String,
    /// Where to write the new signer key (created with mode 0600; never overwritten).
    #[arg(long)]
    pub key: PathBuf,
}

/// `witness`.
#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// The address to listen on, e.g. `127.0.0.1:7380`.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The witness signer key file (from `witness-keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The log's verifier key (note `vkey` text), or `@FILE`. Its name is the log's origin.
    #[arg(long)]
    pub log_vkey: String,
    /// The state directory (created when missing).
    #[arg(long)]
    pub state: PathBuf,
}

/// The witness policy flags of the commands that trust a checkpoint.
#[derive(Debug, Clone, Default, Args)]
pub struct WitnessPolicyArgs {
    /// A trusted witness's verifier key (note `vkey`, type 0x04), or `@FILE` (repeatable).
    #[arg(long = "witness", value_name = "VKEY")]
    pub witnesses: Vec<String>,
    /// How many of the `--witness` keys must have cosigned the checkpoint [default: all given].
    #[arg(long, value_name = "K")]
    pub witness_quorum: Option<usize>,
}

impl WitnessPolicyArgs {
    /// The policy these flags ask for (none without `--witness`).
    ///
    /// # Errors
    ///
    /// When a key is unreadable or not a witness key, or the quorum is more than the keys
    /// given.
    pub fn policy(&self) -> anyhow::Result<WitnessPolicy> {
        let witnesses = self
            .witnesses
            .iter()
            .map(|arg| {
                let text = super::read_secret(arg)?;
                WitnessVerifier::from_vkey(&text)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("while reading a witness key (`--witness`)")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let quorum = self.witness_quorum.unwrap_or(witnesses.len());
        anyhow::ensure!(
            quorum <= witnesses.len(),
            "`--witness-quorum {quorum}` is more than the {} witnesses given",
            witnesses.len()
        );
        Ok(WitnessPolicy { witnesses, quorum })
    }
}

/// A witness ready to serve: its key, the log's key, and its state directory.
#[derive(Debug)]
pub struct WitnessServer {
    shared: Arc<Shared>,
    vkey: String,
}

#[derive(Debug)]
struct Shared {
    cosigner: Mutex<Cosigner>,
    state: PathBuf,
    // Held for the server's lifetime: the state directory's lock.
    _lock: std::fs::File,
}

/// Writes a new witness key to `key` (mode 0600, refusing to overwrite) and returns its
/// verifier key (note `vkey` text, type 0x04).
///
/// # Errors
///
/// When the name is not a valid key name, or the file exists or cannot be written.
pub fn witness_keygen(name: &str, key: &Path) -> anyhow::Result<String> {
    let name = KeyName::new(name)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("while checking `--name`")?;
    let signer = WitnessSigner::generate(name, &mut rand::rngs::OsRng);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key)?;
        file.write_all(format!("{}\n", signer.to_skey()).as_bytes())?;
        file.sync_all()
    };
    write().with_context(|| format!("while writing the new key to `{}`", key.display()))?;
    Ok(signer.verifier().to_vkey())
}

impl WitnessServer {
    /// Loads the key, takes the state directory's lock and loads the latest cosigned
    /// checkpoint (verified with `log`).
    ///
    /// # Errors
    ///
    /// When the key file is unreadable or not a witness key, the state directory cannot be
    /// created or is locked by another witness, or its checkpoint is not signed by `log`.
    pub fn open(key: &Path, log: NoteVerifier, state: &Path) -> anyhow::Result<Self> {
        let text = super::read_capped(key, 4096)?;
        let text = String::from_utf8(text)
            .ok()
            .with_context(|| format!("`{}` is not a witness key", key.display()))?;
        let signer = WitnessSigner::from_skey(text.trim())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("while reading the witness key `{}`", key.display()))?;
        std::fs::create_dir_all(state.join(EVIDENCE_DIR))
            .with_context(|| format!("while creating `{}`", state.display()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state.join(LOCK_FILE))
            .with_context(|| format!("while opening the lock in `{}`", state.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "another witness is using the state directory `{}`",
                state.display()
            )
        })?;
        let vkey = signer.verifier().to_vkey();
        let cosigner = match std::fs::read(state.join(STATE_FILE)) {
            Ok(bytes) => {
                anyhow::ensure!(
                    bytes.len() <= ledger::note::MAX_NOTE_SIZE,
                    "the witness state is too large to be a checkpoint"
                );
                let text = String::from_utf8(bytes).context("the witness state is not text")?;
                Cosigner::with_state(signer, log, &text)
                    .context("while loading the latest cosigned checkpoint")?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Cosigner::new(signer, log)
            }
            Err(error) => return Err(error).context("while reading the witness state"),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                cosigner: Mutex::new(cosigner),
                state: state.to_owned(),
                _lock: lock,
            }),
            vkey,
        })
    }

    /// The witness's verifier key (note `vkey` text, type 0x04).
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The HTTP routes: `POST /add-checkpoint` (the submission prefix is the server's root).
    pub fn router(&self) -> Router {
        Router::new()
            .route(ADD_CHECKPOINT_PATH, post(add_checkpoint))
            .with_state(self.shared.clone())
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets open requests
    /// finish. A client has [`HEADER_READ_TIMEOUT`] to send its request's headers and
    /// [`BODY_READ_TIMEOUT`] for its body.
    ///
    /// # Errors
    ///
    /// Never, in practice: a failed accept is logged and retried.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = self.router();
        let mut builder = HttpBuilder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, typically: give connections time to close.
                    tracing::warn!(cause = %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = TowerToHyperService::new(router.clone());
            let connection = graceful.watch(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(cause = %error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

async fn add_checkpoint(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    // Bounded before anything reads it: a longer body is refused unread, a slow one cut off.
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_REQUEST_SIZE),
    );
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
    };
    let handled = tokio::task::spawn_blocking(move || shared.handle(&bytes)).await;
    handled.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
}

impl Shared {
    /// Checks, stores and cosigns under the one lock.
    fn handle(&self, body: &[u8]) -> Response {
        let Ok(mut cosigner) = self.cosigner.lock() else {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let result = cosigner.add_checkpoint(body, timestamp, |accepted| {
            write_durably(&self.state, STATE_FILE, accepted.state_text().as_bytes())
        });
        match result {
            Ok(line) => {
                tracing::info!(size = cosigner.latest_size().get(), "cosigned");
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("{}\n", line.to_line()),
                )
                    .into_response()
            }
            Err(AddError::Refused(refusal)) => self.refuse(&refusal),
            Err(error @ (AddError::Store(_) | AddError::Cosign(_))) => {
                tracing::error!(cause = %chain(&error), "cannot cosign");
                plain(StatusCode::SERVICE_UNAVAILABLE, "cannot cosign now\n")
            }
        }
    }

    fn refuse(&self, refusal: &Refusal) -> Response {
        let status =
            StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(evidence) = refusal.evidence() {
            tracing::warn!(problem = %refusal, "the log presented a checkpoint inconsistent with the one cosigned");
            if let Err(error) = self.keep(evidence, refusal) {
                tracing::error!(cause = %error, "cannot keep the evidence");
            }
        } else {
            tracing::debug!(problem = %chain(refusal), "refused");
        }
        if let Refusal::OldSizeMismatch { latest } = refusal {
            return (
                status,
                [(header::CONTENT_TYPE, TLOG_SIZE_CONTENT_TYPE)],
                size_body(*latest),
            )
                .into_response();
        }
        plain(status, &format!("{}\n", chain(refusal)))
    }

    /// Writes one evidence folder, named after the time and the hash of what it holds (the same
    /// request twice is kept once).
    fn keep(&self, evidence: &Evidence, refusal: &Refusal) -> anyhow::Result<()> {
        let dir = self.state.join(EVIDENCE_DIR);
        let kept = std::fs::read_dir(&dir)?.count();
        let request = evidence.request_body();
        let id = Hash::sha256(format!("{}\n{request}", evidence.cosigned).as_bytes()).to_hex();
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("{seconds}-{}", id.get(..16).unwrap_or(&id));
        if std::fs::read_dir(&dir)?.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(id.get(..16).unwrap_or(&id))
        }) {
            return Ok(());
        }
        anyhow::ensure!(
            kept < MAX_EVIDENCE,
            "{MAX_EVIDENCE} evidence folders kept already"
        );
        let tmp = dir.join(format!(".{name}"));
        std::fs::create_dir_all(&tmp)?;
        for (file, text) in [
            ("request", request.as_str()),
            ("cosigned", evidence.cosigned.as_str()),
            ("problem", &format!("{}\n", chain(refusal))),
        ] {
            let mut f = std::fs::File::create(tmp.join(file))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, dir.join(&name))?;
        sync_dir(&dir)?;
        tracing::warn!(folder = %dir.join(&name).display(), "kept the evidence");
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new file, never a
/// mix, and the new one survives a power loss once this returns: a temporary file, fsync,
/// rename, fsync of the directory.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// An error and its causes on one line: `a: b: c`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

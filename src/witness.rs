//! Witness cosigning, the log's side of c2sp.org/tlog-witness: a background task asks every
//! configured witness to cosign the log's newest checkpoint, and keeps the newest checkpoint
//! that carries a quorum of valid cosignatures ([`Witnessed`]), which `GET /checkpoint` and
//! `GetCheckpoint` serve.
//!
//! **Writes never wait on witnesses.** The writer thread only bumps a watch channel after each
//! commit (a non-blocking store); everything else happens on this task. Each round takes the
//! log's newest checkpoint and sends it to every witness that has not cosigned it yet, all at
//! once, each request bounded by [`REQUEST_TIMEOUT`]: at most one request per witness is in
//! flight, and rounds start at most every [`ROUND_INTERVAL`]. A round asks every witness for
//! the same checkpoint, so that cosignatures from different witnesses meet on one note even
//! while the log keeps growing. A witness that fails is retried with a growing delay (up to
//! [`MAX_RETRY_DELAY`]); one that is down, slow or refusing only keeps its cosignature away.
//! Witnesses are asked over HTTP/1.1, plainly or over TLS as each URL's scheme says; TLS trusts
//! only the CA certificates of [`Config::witness_ca`] (by default the system's bundle).
//!
//! Each witness is sent the consistency proof from the size it last cosigned, learned from its
//! answers: the log starts from 0 (unknown), and a `409 Conflict` with `text/x.tlog.size` tells
//! it the size to prove from (the request is then sent again at once). Every cosignature
//! returned is verified against that witness's key before it counts.
//!
//! The newest witnessed checkpoint is also written (durably) to [`WITNESSED_FILE`] in the data
//! dir and read back on start, so `/checkpoint` keeps serving after a restart without waiting
//! for a round. It is only a cache: it is dropped unless it verifies with the log key, meets
//! the quorum of the configured witnesses and matches the log's own tree.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use ledger::{
    checkpoint::SignedCheckpoint,
    cosignature::{WitnessVerifier, WitnessedCheckpoint, append_signatures},
    hash::TreeSize,
    log::{Log, ReadError},
    note::{MAX_NOTE_SIZE, NoteSignature},
    witness::{
        ADD_CHECKPOINT_PATH, AddCheckpoint, MAX_RESPONSE_SIZE, TLOG_SIZE_CONTENT_TYPE,
        WitnessProtocolError, parse_cosignatures, parse_size_body,
    },
};
use tokio::{sync::watch, time::Instant};

use crate::{
    config::{Config, WitnessSpec},
    error::StartError,
    tls_client::{self, SYSTEM_CA_BUNDLE},
};

/// The client witnesses are asked through: HTTP/1.1, plainly or over TLS as each URL says.
pub type WitnessClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The file in the data dir that holds the newest witnessed checkpoint.
pub const WITNESSED_FILE: &str = "witnessed.checkpoint";
/// Rounds start at most this often.
pub const ROUND_INTERVAL: Duration = Duration::from_millis(250);
/// The longest one request to a witness may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait before a failing witness is asked again.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// What readers see: the quorum in force and the newest checkpoint that met it.
#[derive(Clone, Debug)]
pub struct Witnessed {
    quorum: usize,
    keys: Arc<[String]>,
    newest: watch::Receiver<Option<Arc<WitnessedCheckpoint>>>,
}

impl Witnessed {
    /// No witnesses: nothing is ever witnessed, and nothing waits for it.
    pub fn none() -> Self {
        Self {
            quorum: 0,
            keys: Arc::new([]),
            newest: watch::channel(None).1,
        }
    }

    /// The configured witnesses' verifier keys (note `vkey` text), in configuration order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Cosignatures a checkpoint needs before `/checkpoint` serves it (0: none needed).
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The newest checkpoint with at least `max(quorum, 1)` valid cosignatures, if any.
    pub fn newest(&self) -> Option<Arc<WitnessedCheckpoint>> {
        self.newest.borrow().clone()
    }
}

impl Default for Witnessed {
    fn default() -> Self {
        Self::none()
    }
}

/// The background task that collects cosignatures; see the module docs.
pub struct Witnessing {
    log: Arc<Log>,
    witnesses: Vec<Remote>,
    quorum: usize,
    file: PathBuf,
    newest: watch::Sender<Option<Arc<WitnessedCheckpoint>>>,
    commits: watch::Receiver<u64>,
    client: WitnessClient,
    /// The checkpoint being cosigned, and each witness's cosignature of it so far.
    target: Option<Arc<SignedCheckpoint>>,
    collected: Vec<Option<NoteSignature>>,
    stats: Arc<WitnessStats>,
}

/// What each witness has done, for `/metrics`: the tree size it last cosigned and how many
/// submissions to it failed.
#[derive(Debug, Default)]
pub struct WitnessStats {
    witnesses: Vec<WitnessStat>,
}

#[derive(Debug)]
struct WitnessStat {
    name: String,
    cosigned: AtomicU64,
    failures: AtomicU64,
}

impl WitnessStats {
    /// Each witness's name (its key name), the size it last cosigned (0 for none yet) and its
    /// failed submissions, in configuration order.
    pub fn each(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.witnesses.iter().map(|w| {
            (
                w.name.as_str(),
                w.cosigned.load(Ordering::Relaxed),
                w.failures.load(Ordering::Relaxed),
            )
        })
    }
}

/// One witness as the task knows it.
struct Remote {
    spec: WitnessSpec,
    /// The size it last cosigned, as far as the log knows.
    known: Option<TreeSize>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Why one submission to a witness gave no cosignature (logged, then retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The witness has cosigned a larger tree than the log has: no proof can be made.
    #[error("witness has cosigned size {witness}, beyond the log's {log}")]
    Ahead {
        /// The witness's size.
        witness: TreeSize,
        /// The log's size.
        log: TreeSize,
    },
    /// The answer is not what the protocol says.
    #[error("unreadable answer")]
    Answer(#[source] WitnessProtocolError),
    /// The answer body could not be read.
    #[error("answer body could not be read")]
    Body,
    /// A `409 Conflict` without a size: the witness saw another checkpoint at this size.
    #[error("witness refuses the checkpoint as conflicting with one it cosigned")]
    Conflict,
    /// The witness could not be reached or the exchange failed.
    #[error("request failed")]
    Http(#[source] hyper_util::client::legacy::Error),
    /// None of the answer's lines is a valid cosignature by this witness.
    #[error("answer holds no valid cosignature by this witness")]
    NoCosignature,
    /// The consistency proof could not be read from the log.
    #[error("consistency proof")]
    Proof(#[source] ReadError),
    /// Any other status.
    #[error("witness answered {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// No answer in [`REQUEST_TIMEOUT`].
    #[error("no answer within the timeout")]
    Timeout,
    /// The witness URL does not make a request URI.
    #[error("bad witness URL")]
    Url,
}

impl Witnessing {
    /// The task for `config`'s witnesses over `log`, asking through `client` ([`client`]), and
    /// the reader the services use; `None` when no witness is configured. `commits` is bumped
    /// after every commit. The newest witnessed checkpoint stored in `data_dir` is loaded if it
    /// still holds.
    pub fn new(
        config: &Config,
        client: WitnessClient,
        log: Arc<Log>,
        commits: watch::Receiver<u64>,
    ) -> Option<(Self, Witnessed)> {
        if config.witnesses.is_empty() {
            return None;
        }
        let quorum = config.quorum();
        let file = config.data_dir.join(WITNESSED_FILE);
        let verifiers: Vec<WitnessVerifier> = config
            .witnesses
            .iter()
            .map(|w| w.verifier.clone())
            .collect();
        let stored = load(&file, &log, &verifiers, quorum);
        // What each witness had cosigned, as far as the stored checkpoint tells.
        let cosigned_before = |name: &str| {
            stored.as_ref().map_or(0, |w| {
                let signed = w
                    .cosignatures()
                    .iter()
                    .any(|c| c.witness().as_str() == name);
                if signed {
                    w.signed().checkpoint().size.get()
                } else {
                    0
                }
            })
        };
        let stats = Arc::new(WitnessStats {
            witnesses: config
                .witnesses
                .iter()
                .map(|spec| {
                    let name = spec.verifier.name().to_string();
                    WitnessStat {
                        cosigned: AtomicU64::new(cosigned_before(&name)),
                        failures: AtomicU64::new(0),
                        name,
                    }
                })
                .collect(),
        });
        let (newest, reader) = watch::channel(stored);
        let witnesses = config
            .witnesses
            .iter()
            .map(|spec| Remote {
                spec: spec.clone(),
                known: None,
                failures: 0,
                retry_at: None,
            })
            .collect::<Vec<_>>();
        let collected = vec![None; witnesses.len()];
        Some((
            Self {
                log,
                witnesses,
                quorum,
                file,
                newest,
                commits,
                client,
                target: None,
                collected,
                stats,
            },
            Witnessed {
                quorum,
                keys: verifiers.iter().map(WitnessVerifier::to_vkey).collect(),
                newest: reader,
            },
        ))
    }

    /// What each witness has done, for `/metrics`.
    pub fn stats(&self) -> Arc<WitnessStats> {
        self.stats.clone()
    }

    /// Runs rounds until `stop` completes.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut last_round: Option<Instant> = None;
        loop {
            let checkpoint = self.log.checkpoint();
            if self.target.as_deref() != Some(&*checkpoint) {
                self.target = Some(checkpoint.clone());
                self.collected.iter_mut().for_each(|c| *c = None);
            }
            let now = Instant::now();
            let due: Vec<usize> = (0..self.witnesses.len())
                .filter(|&i| self.collected.get(i).is_some_and(Option::is_none))
                .filter(|&i| {
                    self.witnesses
                        .get(i)
                        .is_some_and(|w| w.retry_at.is_none_or(|at| at <= now))
                })
                .collect();
            if due.is_empty() {
                let next_retry = self
                    .witnesses
                    .iter()
                    .zip(&self.collected)
                    .filter(|(_, c)| c.is_none())
                    .filter_map(|(w, _)| w.retry_at)
                    .min();
                tokio::select! {
                    () = &mut stop => return,
                    changed = self.commits.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = sleep_until(next_retry) => {}
                }
                continue;
            }
            if let Some(last) = last_round {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep_until(last + ROUND_INTERVAL) => {}
                }
            }
            last_round = Some(Instant::now());
            tokio::select! {
                () = &mut stop => return,
                () = self.round(checkpoint, &due) => {}
            }
        }
    }

    /// Sends `checkpoint` to the witnesses `due`, at once, and takes in their answers.
    async fn round(&mut self, checkpoint: Arc<SignedCheckpoint>, due: &[usize]) {
        let requests = due.iter().filter_map(|&i| {
            let w = self.witnesses.get(i)?;
            let (client, log, checkpoint) = (&self.client, &self.log, checkpoint.clone());
            Some(async move {
                let result = submit(client, log, &w.spec, w.known, &checkpoint).await;
                (i, result)
            })
        });
        let answers = join_all(requests).await;
        for (i, result) in answers {
            let (Some(w), Some(slot)) = (self.witnesses.get_mut(i), self.collected.get_mut(i))
            else {
                continue;
            };
            match result {
                Ok((sig, size)) => {
                    tracing::debug!(witness = %w.spec.verifier.name(), size = size.get(), "cosigned");
                    w.known = Some(size);
                    w.failures = 0;
                    w.retry_at = None;
                    *slot = Some(sig);
                    if let Some(stat) = self.stats.witnesses.get(i) {
                        stat.cosigned.store(size.get(), Ordering::Relaxed);
                    }
                }
                Err((error, known)) => {
                    if let Some(known) = known {
                        w.known = Some(known);
                    }
                    w.failures = w.failures.saturating_add(1);
                    if let Some(stat) = self.stats.witnesses.get(i) {
                        stat.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    let delay = ROUND_INTERVAL
                        .saturating_mul(1 << w.failures.min(8))
                        .min(MAX_RETRY_DELAY);
                    w.retry_at = Some(Instant::now() + delay);
                    tracing::warn!(
                        witness = %w.spec.verifier.name(),
                        url = %w.spec.url,
                        cause = %error_chain(&error),
                        retry_in_ms = delay.as_millis() as u64,
                        "witness did not cosign"
                    );
                }
            }
        }
        self.publish(&checkpoint).await;
    }

    /// Publishes `checkpoint` with the cosignatures collected for it once they meet the quorum
    /// (at least one) and it is newer than the one published.
    async fn publish(&mut self, checkpoint: &SignedCheckpoint) {
        let sigs: Vec<NoteSignature> = self.collected.iter().flatten().cloned().collect();
        if sigs.len() < self.quorum.max(1) {
            return;
        }
        let newer = self
            .newest
            .borrow()
            .as_ref()
            .is_none_or(|n| n.signed().checkpoint().size < checkpoint.checkpoint().size);
        if !newer {
            return;
        }
        let note = append_signatures(checkpoint.note(), &sigs);
        let verifiers: Vec<WitnessVerifier> = self
            .witnesses
            .iter()
            .map(|w| w.spec.verifier.clone())
            .collect();
        let witnessed = match WitnessedCheckpoint::verify(&note, self.log.verifier(), &verifiers)
            .and_then(|w| w.require_quorum(self.quorum.max(1)).map(|()| w))
        {
            Ok(witnessed) => Arc::new(witnessed),
            Err(error) => {
                tracing::error!(cause = %error_chain(&error), "collected cosignatures do not verify");
                return;
            }
        };
        let (file, text) = (self.file.clone(), witnessed.note().to_owned());
        let stored = tokio::task::spawn_blocking(move || write_durably(&file, text.as_bytes()))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(error) = stored {
            // Still served: the file is a cache for restarts, not what makes it true.
            tracing::warn!(cause = %error, "cannot store the newest witnessed checkpoint");
        }
        tracing::info!(
            size = witnessed.signed().checkpoint().size.get(),
            cosignatures = witnessed.cosignatures().len(),
            "witnessed checkpoint"
        );
        self.newest.send_replace(Some(witnessed));
    }
}

/// The client for `config`'s witnesses, made before anything else is opened so that an unusable
/// CA file stops a start before it changes anything. TLS trusts only the configured CA file (or
/// the system's bundle), which is read only when some witness URL is `https://`; with none, a
/// connection to an `https://` URL could not be made anyway, and none is asked for.
///
/// # Errors
///
/// [`StartError::TlsFile`] when a witness URL is `https://` and the CA file
/// ([`Config::witness_ca`], else the system's bundle) cannot be read or holds no CA.
pub fn client(config: &Config) -> Result<WitnessClient, StartError> {
    // `WitnessSpec` keeps the scheme in lower case.
    let https = config
        .witnesses
        .iter()
        .any(|w| w.url.starts_with("https://"));
    let roots = if https {
        let path = config
            .witness_ca
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        tls_client::roots_from(&path).map_err(|source| StartError::TlsFile { path, source })?
    } else {
        tokio_rustls::rustls::RootCertStore::empty()
    };
    let tls = tls_client::client_config(roots).map_err(|e| StartError::TlsFile {
        path: config.witness_ca.clone().unwrap_or_default(),
        source: std::io::Error::other(e),
    })?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

/// One witness's exchange for `checkpoint`: the request from the size it is known to have
/// cosigned, and once more from the size a `409` names. Returns its verified cosignature and
/// the size it now holds, or the error and any size learned.
async fn submit(
    client: &WitnessClient,
    log: &Arc<Log>,
    spec: &WitnessSpec,
    known: Option<TreeSize>,
    checkpoint: &SignedCheckpoint,
) -> Result<(NoteSignature, TreeSize), (SubmitError, Option<TreeSize>)> {
    let size = checkpoint.checkpoint().size;
    let mut old = known.unwrap_or(TreeSize(0));
    for attempt in 0..2 {
        let answer = match exchange(client, log, spec, old, checkpoint).await {
            Ok(answer) => answer,
            Err(error) => {
                return Err((error, (old != known.unwrap_or(TreeSize(0))).then_some(old)));
            }
        };
        match answer {
            Answer::Cosigned(lines) => {
                let sig = lines
                    .into_iter()
                    .find(|sig| spec.verifier.verify(checkpoint, sig).is_ok())
                    .ok_or((SubmitError::NoCosignature, Some(size)))?;
                return Ok((sig, size));
            }
            Answer::Size(latest) if attempt == 0 && latest != old => {
                if latest > size {
                    return Err((
                        SubmitError::Ahead {
                            witness: latest,
                            log: size,
                        },
                        Some(latest),
                    ));
                }
                old = latest;
            }
            Answer::Size(latest) => {
                return Err((SubmitError::Status { status: 409 }, Some(latest)));
            }
            Answer::Conflict => return Err((SubmitError::Conflict, None)),
        }
    }
    Err((SubmitError::Status { status: 409 }, Some(old)))
}

/// What a witness answered.
enum Answer {
    Cosigned(Vec<NoteSignature>),
    Size(TreeSize),
    Conflict,
}

/// One `POST <url>/add-checkpoint`, bounded by [`REQUEST_TIMEOUT`] and [`MAX_RESPONSE_SIZE`].
async fn exchange(
    client: &WitnessClient,
    log: &Arc<Log>,
    spec: &WitnessSpec,
    old: TreeSize,
    checkpoint: &SignedCheckpoint,
) -> Result<Answer, SubmitError> {
    let size = checkpoint.checkpoint().size;
    let proof = if old.get() == 0 || old >= size {
        Vec::new()
    } else {
        let log = log.clone();
        tokio::task::spawn_blocking(move || log.consistency_proof(old, size))
            .await
            .map_err(|_| SubmitError::Status { status: 500 })?
            .map_err(SubmitError::Proof)?
            .path
    };
    let body = AddCheckpoint {
        old_size: old,
        proof,
        note: checkpoint.note().to_owned(),
    }
    .to_body();
    let request = http::Request::post(format!("{}{ADD_CHECKPOINT_PATH}", spec.url))
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| SubmitError::Url)?;
    let exchange = async {
        let response = client.request(request).await.map_err(SubmitError::Http)?;
        let status = response.status().as_u16();
        let is_size = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == TLOG_SIZE_CONTENT_TYPE);
        let body = Limited::new(response.into_body(), MAX_RESPONSE_SIZE)
            .collect()
            .await
            .map_err(|_| SubmitError::Body)?
            .to_bytes();
        match status {
            200 => parse_cosignatures(&body)
                .map(Answer::Cosigned)
                .map_err(SubmitError::Answer),
            409 if is_size => parse_size_body(&body)
                .map(Answer::Size)
                .map_err(SubmitError::Answer),
            409 => Ok(Answer::Conflict),
            status => Err(SubmitError::Status { status }),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| SubmitError::Timeout)?
}

/// The stored newest witnessed checkpoint, if it still verifies, meets the quorum and matches
/// the log's tree.
fn load(
    file: &Path,
    log: &Log,
    verifiers: &[WitnessVerifier],
    quorum: usize,
) -> Option<Arc<WitnessedCheckpoint>> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(cause = %error, "cannot read the stored witnessed checkpoint");
            return None;
        }
    };
    let text = String::from_utf8(bytes)
        .ok()
        .filter(|t| t.len() <= MAX_NOTE_SIZE)?;
    let witnessed = match WitnessedCheckpoint::verify(&text, log.verifier(), verifiers)
        .and_then(|w| w.require_quorum(quorum.max(1)).map(|()| w))
    {
        Ok(witnessed) => witnessed,
        Err(error) => {
            tracing::warn!(cause = %error_chain(&error), "dropping the stored witnessed checkpoint");
            return None;
        }
    };
    let cp = witnessed.signed().checkpoint();
    let ours = (cp.size <= log.size())
        .then(|| log.root(cp.size).ok())
        .flatten();
    if ours != Some(cp.root) {
        tracing::warn!(
            size = cp.size.get(),
            "dropping the stored witnessed checkpoint: not of this log's tree"
        );
        return None;
    }
    Some(Arc::new(witnessed))
}

/// Replaces `path` durably: a temporary file, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

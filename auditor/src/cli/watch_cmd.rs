//! `akashi-audit watch`: a witness that follows the log over gRPC or HTTP tiles, keeps the last
//! trusted checkpoint in a state file, and demands a consistency proof to every new checkpoint.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ledger::{
    checkpoint::SignedCheckpoint, hash::TreeSize, note::NoteVerifier, proof::ConsistencyProof,
};

use super::{http, net, tls::ClientTls};
use crate::exit::AuditExitCode;
use crate::quorum::WitnessPolicy;
use crate::trust::{Advance, TrustError, Witness};

/// Where to read the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// The server's gRPC address (`TransparencyService`).
    Grpc(String),
    /// A C2SP tlog-tiles URL prefix.
    Http(String),
}

/// What to watch, and where to keep trust.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The log key.
    pub verifier: NoteVerifier,
    /// Where to read the log.
    pub source: LogSource,
    /// How to connect to an `https://` source.
    pub tls: ClientTls,
    /// The trusted-checkpoint file; without one, every run starts from nothing.
    pub state: Option<PathBuf>,
    /// The cosignatures a checkpoint must carry to be trusted. When it asks for any, the
    /// watcher follows the log's witnessed checkpoint (`/checkpoint` over HTTP,
    /// `witnessed_checkpoint` over gRPC) rather than its newest.
    pub witnesses: WitnessPolicy,
}

/// What one check found.
#[derive(Debug)]
pub enum WatchStep {
    /// The latest checkpoint is consistent with the trusted one, and is now trusted.
    Accepted {
        /// What changed.
        advance: Advance,
        /// The checkpoint now trusted.
        checkpoint: SignedCheckpoint,
    },
    /// The log contradicts itself (or signed badly): evidence, not an outage.
    Inconsistent(TrustError),
}

impl WatchStep {
    /// 0 for an accepted checkpoint, 2 for an inconsistency.
    pub fn exit_code(&self) -> AuditExitCode {
        match self {
            Self::Accepted { .. } => AuditExitCode::Valid,
            Self::Inconsistent(error) => error.exit_code(),
        }
    }
}

/// Checks the latest checkpoint once: loads the trusted state, fetches and verifies the
/// checkpoint, fetches (or, over HTTP, computes from tiles) the consistency proof from the trusted
/// size, and saves the new state when it was accepted.
///
/// # Errors
///
/// When the state file cannot be read or written or does not verify, or the log cannot be
/// reached. An inconsistency is not an error: it is [`WatchStep::Inconsistent`].
pub async fn watch_once(config: &WatchConfig) -> anyhow::Result<WatchStep> {
    let mut witness = load(config)?;
    let witnessed = config.witnesses.is_required();
    let source = Opened::open(config).await?;
    let note = match &source {
        Opened::Grpc(channel) if witnessed => net::witnessed_checkpoint(channel.clone()).await?,
        Opened::Grpc(channel) => net::checkpoint(channel.clone()).await?,
        Opened::Http(log) => {
            let log = log.clone();
            blocking(move || log.checkpoint().context("while fetching the checkpoint")).await?
        }
    };
    let checkpoint = match witness.verify_note(&note) {
        Ok(checkpoint) => checkpoint,
        Err(error) => return Ok(WatchStep::Inconsistent(error)),
    };
    if witnessed {
        // Not evidence against the log (it may not have reached a quorum yet): no step.
        config
            .witnesses
            .check(&config.verifier, &note)
            .context("the checkpoint is not witnessed as required")?;
    }
    let proof = match witness.proof_needed(checkpoint.checkpoint()) {
        None => None,
        Some((old, new)) => Some(source.proof(old, new).await?),
    };
    match witness.advance(checkpoint.clone(), proof.as_ref()) {
        Ok(advance) => {
            if !matches!(advance, Advance::Unchanged { .. }) {
                save(config, &witness)?;
            }
            Ok(WatchStep::Accepted {
                advance,
                checkpoint,
            })
        }
        Err(error) if error.is_inconsistency() => Ok(WatchStep::Inconsistent(error)),
        Err(error) => Err(error.into()),
    }
}

/// Checks every `interval` until the log is inconsistent, calling `on_step` after each check
/// (failed checks included: a watcher keeps going through outages). Returns the inconsistency.
///
/// # Errors
///
/// Never, in practice: errors of single checks go to `on_step`.
pub async fn watch(
    config: &WatchConfig,
    interval: Duration,
    mut on_step: impl FnMut(&anyhow::Result<WatchStep>),
) -> anyhow::Result<WatchStep> {
    loop {
        let result = watch_once(config).await;
        on_step(&result);
        if let Ok(step @ WatchStep::Inconsistent(_)) = result {
            return Ok(step);
        }
        tokio::time::sleep(interval).await;
    }
}

/// The log as one check reads it, connected once (one TLS handshake, one read of the CA file)
/// for both the checkpoint and the proof.
enum Opened {
    Grpc(tonic::transport::Channel),
    Http(http::TileLog),
}

impl Opened {
    async fn open(config: &WatchConfig) -> anyhow::Result<Self> {
        Ok(match &config.source {
            LogSource::Grpc(addr) => Self::Grpc(net::connect(addr, &config.tls).await?),
            LogSource::Http(url) => {
                Self::Http(http::TileLog::with_ca(url, config.tls.ca.as_deref())?)
            }
        })
    }

    async fn proof(&self, old: TreeSize, new: TreeSize) -> anyhow::Result<ConsistencyProof> {
        match self {
            Self::Grpc(channel) => net::consistency_proof(channel.clone(), old, new).await,
            Self::Http(log) => {
                let log = log.clone();
                blocking(move || {
                    http::consistency_proof(&log, old, new).with_context(|| {
                        format!(
                            "while computing the consistency proof from size {old} to {new} \
                             from tiles"
                        )
                    })
                })
                .await
            }
        }
    }
}

fn load(config: &WatchConfig) -> anyhow::Result<Witness> {
    let Some(path) = &config.state else {
        return Ok(Witness::new(config.verifier.clone()));
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Witness::new(config.verifier.clone()));
        }
        Err(error) => {
            return Err(error).with_context(|| format!("while reading `{}`", path.display()));
        }
    };
    anyhow::ensure!(
        text.len() <= ledger::note::MAX_NOTE_SIZE,
        "`{}` is too large to be a checkpoint",
        path.display()
    );
    let text = String::from_utf8(text)
        .with_context(|| format!("`{}` is not a checkpoint", path.display()))?;
    Witness::with_state(config.verifier.clone(), &text).with_context(|| {
        format!(
            "while loading the trusted checkpoint from `{}`",
            path.display()
        )
    })
}

/// Writes the state file atomically.
fn save(config: &WatchConfig, witness: &Witness) -> anyhow::Result<()> {
    let (Some(path), Some(text)) = (&config.state, witness.state_text()) else {
        return Ok(());
    };
    super::saved::write_atomically(path, text.as_bytes(), "the trusted checkpoint")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a blocking http task failed")?
}

//! The command line of the `akashi` binary (clap derive): `akashi [serve] [FLAGS]`,
//! `akashi token`, `akashi fsck` and `akashi store copy`. It turns flags into [`Overrides`] for `config.rs` and does no I/O itself.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    auth::{DEFAULT_TOKEN_TTL, Role},
    config::{DEFAULT_DATA_DIR, DurationText, Overrides, PolicyApproval, WitnessSpec},
};

/// akashi: consent ledger and data-access governance for personal health records.
#[derive(Debug, Parser)]
#[command(name = "akashi", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without one, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing the serve flags would buy nothing"
)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a bearer token signed by a data dir's token-issuer key.
    Token(TokenArgs),
    /// Check a stopped server's data dir: every entry, tile and checkpoint (exit 0 intact,
    /// 2 damaged, 1 when the check cannot run).
    Fsck(FsckArgs),
    /// Operate on a stopped server's store.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// `akashi store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a log from one store to another and verify the copy (exit 0 copied and verified,
    /// 2 the copy does not verify, 1 when it cannot run).
    Copy(StoreCopyArgs),
}

/// Flags of `akashi store copy`.
#[derive(Debug, Clone, Args)]
pub struct StoreCopyArgs {
    /// The source: a data dir (its sled store) or a `postgres://` URL.
    #[arg(long, value_name = "DIR|URL")]
    pub from: String,
    /// The destination, empty: a data dir (its sled store) or a `postgres://` URL.
    #[arg(long, value_name = "DIR|URL")]
    pub to: String,
    /// The data dir holding the log's checkpoint key, which verifies the copy [default: the
    /// data dir among --from and --to, the source's first].
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
}

impl StoreCopyArgs {
    /// The data dir whose checkpoint key verifies the copy.
    pub fn keys_dir(&self) -> Option<PathBuf> {
        self.keys.clone().or_else(|| {
            [&self.from, &self.to]
                .into_iter()
                .find(|spec| !ledger::store::postgres::is_postgres_url(spec))
                .map(PathBuf::from)
        })
    }
}

/// Flags of `akashi serve`. Each overrides the config file and the `AKASHI_*` environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE", env = "AKASHI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (keys and ledger) [default: ./akashi-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the log in this PostgreSQL database (`postgres://…`) instead of the sled store in
    /// the data dir [default: sled in the data dir].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// With `--store`: wait for the server holding the store to stop or die, then take it over
    /// (a hot standby on the same data dir) [default: refuse to start while it is held].
    #[arg(long)]
    pub standby: bool,
    /// The host name or address the other servers of the log reach this one at, for followers
    /// that forward calls to it [default: the listen IP, or the host name].
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Public HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Admin HTTP listen address: metrics, liveness, readiness [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Serve the OpenID AuthZEN 1.0 API on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    pub authzen_addr: Option<SocketAddr>,
    /// Serve the FHIR R4 `Consent` endpoint on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    pub fhir_addr: Option<SocketAddr>,
    /// Checkpoint origin line, also the signing key's name [default: akashi.dev/log].
    #[arg(long, value_name = "NAME")]
    pub origin: Option<String>,
    /// Most entries per group-commit batch [default: 1024].
    #[arg(long, value_name = "N")]
    pub batch_max_entries: Option<usize>,
    /// Longest wait to fill a batch, e.g. `2ms`, `500us` [default: 0ms, take what is queued].
    #[arg(long, value_name = "DURATION")]
    pub batch_max_wait: Option<DurationText>,
    /// PEM certificate chain for TLS on the gRPC port.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC port (mode 0600).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates must chain to (turns on mTLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Counts below this are hidden on the public disclosure page [default: 10].
    #[arg(long, value_name = "N")]
    pub disclosure_threshold: Option<u64>,
    /// Days an entry is kept before it may be erased without a regulator's force [default: 1095].
    #[arg(long, value_name = "DAYS")]
    pub erasure_retention_days: Option<u32>,
    /// A witness to ask for cosignatures: its vkey, `@`, its submission prefix (repeatable).
    #[arg(long = "witness", value_name = "VKEY@URL")]
    pub witnesses: Vec<WitnessSpec>,
    /// Cosignatures a checkpoint needs before `/checkpoint` serves it [default: all witnesses].
    #[arg(long, value_name = "K")]
    pub witness_quorum: Option<usize>,
    /// PEM CA certificates trusted for `https://` witnesses [default: the system's bundle].
    #[arg(long, value_name = "FILE")]
    pub witness_ca: Option<PathBuf>,
    /// Two-person rule for policy changes: `none` or `regulator` (the platform proposes, a
    /// regulator approves) [default: none].
    #[arg(long, value_name = "WHO")]
    pub policy_approval: Option<PolicyApproval>,
    /// Accept JWTs from this OpenID Connect issuer (its `iss`) [default: off].
    #[arg(long, value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud`) OpenID Connect tokens must name: akashi's client id.
    #[arg(long, value_name = "ID")]
    pub oidc_audience: Option<String>,
    /// Where the issuer publishes its JSON Web Key Set (https://; http:// only on loopback).
    #[arg(long, value_name = "URL", conflicts_with = "oidc_jwks_file")]
    pub oidc_jwks_url: Option<String>,
    /// A file holding the issuer's JSON Web Key Set (read again every 5 minutes and when a
    /// token names an unknown key id).
    #[arg(long, value_name = "FILE")]
    pub oidc_jwks_file: Option<PathBuf>,
    /// The claim naming the caller's role [default: akashi_role].
    #[arg(long, value_name = "CLAIM")]
    pub oidc_role_claim: Option<String>,
    /// The claim naming a patient's id [default: akashi_patient].
    #[arg(long, value_name = "CLAIM")]
    pub oidc_patient_claim: Option<String>,
}

/// Flags of `akashi token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Data directory whose token-issuer key signs the token (as for `serve`, also from
    /// `AKASHI_DATA_DIR`).
    #[arg(long, value_name = "DIR", env = "AKASHI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// `platform`, `patient`, `regulator` or `auditor`.
    #[arg(long)]
    pub role: Role,
    /// The patient id the token is bound to (role `patient` only, and required for it).
    #[arg(long, value_name = "ID")]
    pub patient: Option<String>,
    /// Lifetime in seconds [default: 3600].
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
}

/// Flags of `akashi fsck`.
#[derive(Debug, Clone, Args)]
pub struct FsckArgs {
    /// Data directory to check (as for `serve`, also from `AKASHI_DATA_DIR`).
    #[arg(long, value_name = "DIR", env = "AKASHI_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The log's PostgreSQL database, when it is not the sled store in the data dir (as for
    /// `serve`, also from `AKASHI_STORE`). The server must be stopped: fsck takes its lease.
    #[arg(long, value_name = "URL", env = "AKASHI_STORE", hide_env_values = true)]
    pub store: Option<String>,
}

impl Cli {
    /// The `serve` flags, whether given after `serve` or with no subcommand.
    pub fn serve_args(&self) -> Option<&ServeArgs> {
        match &self.command {
            None => Some(&self.serve),
            Some(Command::Serve(args)) => Some(args),
            Some(Command::Token(_) | Command::Fsck(_) | Command::Store(_)) => None,
        }
    }
}

impl ServeArgs {
    /// The settings these flags give.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            admin_addr: self.admin_addr,
            authzen_addr: self.authzen_addr,
            fhir_addr: self.fhir_addr,
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            standby: self.standby.then_some(true),
            advertise_host: self.advertise_host.clone(),
            origin: self.origin.clone(),
            batch_max_entries: self.batch_max_entries,
            batch_max_wait: self.batch_max_wait.map(|d| d.0),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            disclosure_threshold: self.disclosure_threshold,
            erasure_retention_days: self.erasure_retention_days,
            witnesses: (!self.witnesses.is_empty()).then(|| self.witnesses.clone()),
            witness_quorum: self.witness_quorum,
            witness_ca: self.witness_ca.clone(),
            policy_approval: self.policy_approval,
            oidc_issuer: self.oidc_issuer.clone(),
            oidc_audience: self.oidc_audience.clone(),
            oidc_jwks_url: self.oidc_jwks_url.clone(),
            oidc_jwks_file: self.oidc_jwks_file.clone(),
            oidc_role_claim: self.oidc_role_claim.clone(),
            oidc_patient_claim: self.oidc_patient_claim.clone(),
        }
    }
}

impl TokenArgs {
    /// The requested lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl.map_or(DEFAULT_TOKEN_TTL, Duration::from_secs)
    }
}

#[cfg(test)]
mod tests;

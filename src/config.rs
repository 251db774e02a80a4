//! Server configuration: one serde struct with documented defaults, filled in layers — built-in
//! defaults, then a TOML file (`--config FILE`), then `AKASHI_*` environment variables, then
//! command-line flags (each layer overrides the one before).
//!
//! This module only describes and merges settings. It does not read key material (see
//! `keys.rs`), open sockets or parse the command line itself (see `cli.rs`, which hands it an
//! [`Overrides`]).

use std::{
    fmt, fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ledger::cosignature::WitnessVerifier;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default gRPC listen address (loopback only: exposing the server is an explicit choice).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default public HTTP listen address (tiles, verifier key, the disclosure page).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default admin listen address (metrics, liveness and readiness; for operators only).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9090";
/// Default data directory (key material and the ledger).
pub const DEFAULT_DATA_DIR: &str = "./akashi-data";
/// Default checkpoint origin line, also the note key name of the checkpoint signing key.
pub const DEFAULT_ORIGIN: &str = "akashi.dev/log";
/// Default upper bound of entries the sequencer commits in one batch.
pub const DEFAULT_BATCH_MAX_ENTRIES: usize = 1024;
/// Default longest time the sequencer waits to fill a batch: none. The writer stages the next
/// batch while the previous one syncs, so commands that arrive during a sync form the next batch
/// by themselves; waiting on top of that only adds latency (BENCHMARKS.md, "Batch wait").
pub const DEFAULT_BATCH_MAX_WAIT: Duration = Duration::ZERO;
/// Largest accepted `batch_max_entries`.
pub const MAX_BATCH_MAX_ENTRIES: usize = 65_536;
/// Longest accepted `batch_max_wait`.
pub const MAX_BATCH_MAX_WAIT: Duration = Duration::from_secs(1);
/// Largest config file read.
pub const MAX_CONFIG_FILE_LEN: u64 = 64 * 1024;
/// Default legal retention period of entries, in days (three years: APPI 29条 and 30条).
pub const DEFAULT_ERASURE_RETENTION_DAYS: u32 = 1095;
/// Longest retention period accepted, in days (a hundred years).
pub const MAX_ERASURE_RETENTION_DAYS: u32 = 36_500;
/// Longest accepted [`Config::store`] URL, in bytes.
pub const MAX_STORE_URL: usize = 4096;
/// Longest `advertise_host` accepted (a DNS name's longest text form).
pub const MAX_HOST_LEN: usize = 253;
/// Longest accepted origin (c2sp.org/tlog-checkpoint sets no limit; notes need a sane one).
pub const MAX_ORIGIN_LEN: usize = 256;
/// Prefix of the environment variables that override the config file.
pub const ENV_PREFIX: &str = "AKASHI_";

/// Everything the server needs to start. `Config::default()` is the embedded default of
/// `cargo run` with no arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address. Default [`DEFAULT_GRPC_ADDR`].
    pub grpc_addr: SocketAddr,
    /// Public HTTP listen address. Default [`DEFAULT_HTTP_ADDR`].
    pub http_addr: SocketAddr,
    /// Admin HTTP listen address: `/metrics`, `/healthz`, `/readyz`, kept off the public port.
    /// Default [`DEFAULT_ADMIN_ADDR`].
    pub admin_addr: SocketAddr,
    /// The OpenID AuthZEN 1.0 API's listen address (`crate::authzen`); off unless set.
    pub authzen_addr: Option<SocketAddr>,
    /// The FHIR R4 `Consent` endpoint's listen address (`crate::fhir`); off unless set.
    pub fhir_addr: Option<SocketAddr>,
    /// Data directory: keys, the key vault, the checkpoint anchor and (unless `store` names a
    /// database) the ledger. Default [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// Where the log is kept: absent (the default) for the sled store in the data dir, or a
    /// PostgreSQL URL (`postgres://…` or `postgresql://…`, see `ledger::store::postgres`).
    /// Never logged: it may carry a password.
    pub store: Option<String>,
    /// Start as a standby: when another server holds the PostgreSQL store's lease, wait for it
    /// (without end) instead of refusing to start, then take the store over. Needs `store`.
    pub standby: bool,
    /// The host name or address the other servers of a log on PostgreSQL reach this one at
    /// (its listeners' ports are added): recorded with the store's lease, so that a follower
    /// forwards calls to the server holding it (`crate::follower`). Default: the listen
    /// address's IP, or the machine's host name when it listens on every address.
    pub advertise_host: Option<String>,
    /// Checkpoint origin (c2sp.org/tlog-checkpoint), also the signing key's note key name.
    /// Default [`DEFAULT_ORIGIN`].
    pub origin: String,
    /// Most entries committed in one group-commit batch. Default [`DEFAULT_BATCH_MAX_ENTRIES`].
    pub batch_max_entries: usize,
    /// Longest wait to fill a batch, written like `2ms`, `500us` or `1s`.
    /// Default [`DEFAULT_BATCH_MAX_WAIT`].
    #[serde(with = "duration_text")]
    pub batch_max_wait: Duration,
    /// TLS for the gRPC port; absent (the default) means plaintext.
    pub tls: Option<TlsConfig>,
    /// Connection timeouts and answer budgets (TOML table `[limits]`).
    pub limits: Limits,
    /// Counts below this are hidden on the public disclosure page and in its JSON and CSV
    /// (`policy::disclosure`), from 1 (hide nothing) to 1,000,000.
    /// Default [`policy::disclosure::DEFAULT_THRESHOLD`] (10, as the statistics rule).
    pub disclosure_threshold: u64,
    /// The legal retention period of entries, in days from an entry's day: an erasure of younger
    /// entries is refused unless a regulator forces it (APPI 29条 keeps provision records three
    /// years). From 0 to 36,500. Default [`DEFAULT_ERASURE_RETENTION_DAYS`] (1,095).
    pub erasure_retention_days: u32,
    /// Witnesses asked to cosign every new checkpoint (c2sp.org/tlog-witness), each written
    /// `VKEY@URL`: the witness's verifier key (note `vkey`, type 0x04) and its submission prefix
    /// (`http://` or `https://`). Default none.
    pub witnesses: Vec<WitnessSpec>,
    /// PEM file of the CA certificates trusted for `https://` witnesses. Default: the system's
    /// bundle ([`crate::tls_client::SYSTEM_CA_BUNDLE`]). Read at start when a witness URL is
    /// `https://`.
    pub witness_ca: Option<PathBuf>,
    /// How many of `witnesses` must cosign a checkpoint before `GET /checkpoint` serves it.
    /// Default: all of them. 0 collects cosignatures without holding `/checkpoint` to them.
    pub witness_quorum: Option<usize>,
    /// Who must agree before a policy set takes effect: `none` (the platform's activation does;
    /// the embedded default) or `regulator` (the platform proposes, a regulator approves after
    /// seeing an analysis: the production profile).
    pub policy_approval: PolicyApproval,
    /// Tokens from an OpenID Connect provider, besides akashi's own (TOML table `[oidc]`); off
    /// unless set.
    pub oidc: Option<OidcConfig>,
}

/// Default claim naming the caller's akashi role in an OpenID Connect token.
pub const DEFAULT_OIDC_ROLE_CLAIM: &str = "akashi_role";
/// Default claim naming the patient id of a patient's OpenID Connect token.
pub const DEFAULT_OIDC_PATIENT_CLAIM: &str = "akashi_patient";

/// An OpenID Connect provider whose JWTs authenticate callers (see `crate::oidc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer identifier: a token's `iss` must equal it.
    pub issuer: String,
    /// akashi's client id at the provider: a token's `aud` must name it.
    pub audience: String,
    /// Where the provider publishes its JSON Web Key Set (`https://`; `http://` only to a
    /// loopback address). One of this
    /// and `jwks_file`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A file holding the JSON Web Key Set (read again like the URL). One of this and
    /// `jwks_url`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the caller's role (`platform`, `patient`, `regulator`, `auditor`).
    /// Default [`DEFAULT_OIDC_ROLE_CLAIM`].
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The claim holding a patient's id (role `patient` only). Default
    /// [`DEFAULT_OIDC_PATIENT_CLAIM`].
    #[serde(default = "default_patient_claim")]
    pub patient_claim: String,
    /// The roles this provider's tokens may grant; a token naming another is refused. Default:
    /// all four. The production profile leaves `regulator` and `auditor` out, so that the
    /// platform's own identity provider cannot make a regulator (who then comes with a client
    /// certificate from another CA).
    #[serde(default = "default_oidc_roles")]
    pub roles: Vec<crate::auth::Role>,
}

/// Every role: what an OpenID Connect provider may grant unless `roles` says less.
pub fn default_oidc_roles() -> Vec<crate::auth::Role> {
    use crate::auth::Role;
    vec![
        Role::Platform,
        Role::Patient,
        Role::Regulator,
        Role::Auditor,
    ]
}

/// Whether `url` is `http://` to a loopback host (`127.0.0.0/8`, `[::1]` or `localhost`), where
/// a key set may travel unencrypted.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_role_claim() -> String {
    DEFAULT_OIDC_ROLE_CLAIM.to_owned()
}

fn default_patient_claim() -> String {
    DEFAULT_OIDC_PATIENT_CLAIM.to_owned()
}

/// The two-person rule for policy changes (`policy_approval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyApproval {
    /// The platform's `ActivatePolicySet` activates the set.
    #[default]
    None,
    /// The platform's `ActivatePolicySet` proposes the set; a regulator's `ApprovePolicySet`
    /// activates it.
    Regulator,
}

impl FromStr for PolicyApproval {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "regulator" => Ok(Self::Regulator),
            _ => Err("expected `none` or `regulator`"),
        }
    }
}

impl fmt::Display for PolicyApproval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Regulator => "regulator",
        })
    }
}

/// One witness of the log: its verifier key and submission prefix, written `VKEY@URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessSpec {
    /// The witness's verifier key.
    pub verifier: WitnessVerifier,
    /// The submission prefix (`http://` or `https://host[:port][/path]`, no final `/`):
    /// requests go to `<url>/add-checkpoint`.
    pub url: String,
}

/// Default time a connection (either port) may go without the client sending a byte.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time an HTTP/1 client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bytes of large answers one caller may have in flight.
pub const DEFAULT_ANSWER_BUDGET_PER_CALLER: usize = 32 * 1024 * 1024;
/// Default bytes of large answers all callers together may have in flight.
pub const DEFAULT_ANSWER_BUDGET_TOTAL: usize = 128 * 1024 * 1024;

/// Connection timeouts and the memory budget of large answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A connection on either port on which the client sends nothing for this long is closed
    /// (the gRPC port pings idle clients every 30 s, and their answers count).
    /// Default [`DEFAULT_IDLE_TIMEOUT`].
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Time an HTTP/1 client on the public port has to send a request's headers.
    /// Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// Bytes of large answers (history, audit entries, leaves, checkpoints) one caller may have
    /// built or not yet sent; past it a call is `RESOURCE_EXHAUSTED`.
    /// Default [`DEFAULT_ANSWER_BUDGET_PER_CALLER`].
    pub answer_budget_per_caller: usize,
    /// The same for all callers together. Default [`DEFAULT_ANSWER_BUDGET_TOTAL`].
    pub answer_budget_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            answer_budget_per_caller: DEFAULT_ANSWER_BUDGET_PER_CALLER,
            answer_budget_total: DEFAULT_ANSWER_BUDGET_TOTAL,
        }
    }
}

/// TLS for the gRPC port. With `client_ca` set this is mTLS: every client must present a
/// certificate signed by that CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to; absent = no client
    /// certificates asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Settings given by one layer above the file (environment or flags): `None` keeps the value
/// from below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Overrides [`Config::grpc_addr`].
    pub grpc_addr: Option<SocketAddr>,
    /// Overrides [`Config::http_addr`].
    pub http_addr: Option<SocketAddr>,
    /// Overrides [`Config::admin_addr`].
    pub admin_addr: Option<SocketAddr>,
    /// Overrides [`Config::authzen_addr`] (turns the AuthZEN API on).
    pub authzen_addr: Option<SocketAddr>,
    /// Overrides [`Config::fhir_addr`] (turns the FHIR endpoint on).
    pub fhir_addr: Option<SocketAddr>,
    /// Overrides [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// Overrides [`Config::store`].
    pub store: Option<String>,
    /// Overrides [`Config::standby`] (the flag only turns it on; `AKASHI_STANDBY` sets either).
    pub standby: Option<bool>,
    /// Overrides [`Config::advertise_host`].
    pub advertise_host: Option<String>,
    /// Overrides [`Config::origin`].
    pub origin: Option<String>,
    /// Overrides [`Config::batch_max_entries`].
    pub batch_max_entries: Option<usize>,
    /// Overrides [`Config::batch_max_wait`].
    pub batch_max_wait: Option<Duration>,
    /// Overrides [`TlsConfig::cert`]; with `tls_key`, turns TLS on.
    pub tls_cert: Option<PathBuf>,
    /// Overrides [`TlsConfig::key`]; with `tls_cert`, turns TLS on.
    pub tls_key: Option<PathBuf>,
    /// Overrides [`TlsConfig::client_ca`] (turns on mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Overrides [`Config::disclosure_threshold`].
    pub disclosure_threshold: Option<u64>,
    /// Overrides [`Config::erasure_retention_days`].
    pub erasure_retention_days: Option<u32>,
    /// Overrides [`Config::witnesses`] (the whole list).
    pub witnesses: Option<Vec<WitnessSpec>>,
    /// Overrides [`Config::witness_quorum`].
    pub witness_quorum: Option<usize>,
    /// Overrides [`Config::witness_ca`].
    pub witness_ca: Option<PathBuf>,
    /// Overrides [`Config::policy_approval`].
    pub policy_approval: Option<PolicyApproval>,
    /// Overrides [`OidcConfig::issuer`] (turns OpenID Connect on).
    pub oidc_issuer: Option<String>,
    /// Overrides [`OidcConfig::audience`].
    pub oidc_audience: Option<String>,
    /// Overrides [`OidcConfig::jwks_url`].
    pub oidc_jwks_url: Option<String>,
    /// Overrides [`OidcConfig::jwks_file`].
    pub oidc_jwks_file: Option<PathBuf>,
    /// Overrides [`OidcConfig::role_claim`].
    pub oidc_role_claim: Option<String>,
    /// Overrides [`OidcConfig::patient_claim`].
    pub oidc_patient_claim: Option<String>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is larger than [`MAX_CONFIG_FILE_LEN`].
    #[error("config file `{path}` is larger than {max} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// The config file is not valid TOML for [`Config`].
    #[error("invalid config file `{path}`: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error (names the key and position).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An `AKASHI_*` variable has a value that does not parse.
    #[error("invalid value `{value}` in environment variable `{name}`: {reason}")]
    Env {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of its range.
    #[error("`{field}` {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A duration written as `<integer><unit>` with unit `us`, `ms` or `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Duration);

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            authzen_addr: None,
            fhir_addr: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            store: None,
            standby: false,
            advertise_host: None,
            origin: DEFAULT_ORIGIN.to_owned(),
            batch_max_entries: DEFAULT_BATCH_MAX_ENTRIES,
            batch_max_wait: DEFAULT_BATCH_MAX_WAIT,
            tls: None,
            limits: Limits::default(),
            disclosure_threshold: policy::disclosure::DEFAULT_THRESHOLD,
            erasure_retention_days: DEFAULT_ERASURE_RETENTION_DAYS,
            witnesses: Vec::new(),
            witness_quorum: None,
            witness_ca: None,
            policy_approval: PolicyApproval::None,
            oidc: None,
        }
    }
}

impl Config {
    /// Builds the configuration from its layers: defaults < `file` < `env` < `flags`.
    ///
    /// `env` is the process environment (`std::env::vars()`); only `AKASHI_*` names are read,
    /// and `AKASHI_CONFIG` (the file path, handled by the caller) and `AKASHI_LOG` are skipped.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the file cannot be read or parsed, an `AKASHI_*` variable
    /// does not parse, or the merged result fails [`Config::validate`].
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(&Overrides::from_env(env)?);
        config.apply(flags);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML config file; keys it leaves out keep their defaults.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`], [`ConfigError::FileTooLarge`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let len = fs::metadata(path).map_err(read_error)?.len();
        if len > MAX_CONFIG_FILE_LEN {
            return Err(ConfigError::FileTooLarge {
                path: path.to_owned(),
                max: MAX_CONFIG_FILE_LEN,
            });
        }
        let text = fs::read_to_string(path).map_err(read_error)?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text; keys it leaves out keep their defaults.
    ///
    /// # Errors
    ///
    /// The TOML error, which names the offending key.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Replaces every setting that `overrides` gives.
    pub fn apply(&mut self, overrides: &Overrides) {
        let o = overrides.clone();
        if let Some(v) = o.grpc_addr {
            self.grpc_addr = v;
        }
        if let Some(v) = o.http_addr {
            self.http_addr = v;
        }
        if let Some(v) = o.admin_addr {
            self.admin_addr = v;
        }
        if let Some(v) = o.authzen_addr {
            self.authzen_addr = Some(v);
        }
        if let Some(v) = o.fhir_addr {
            self.fhir_addr = Some(v);
        }
        if let Some(v) = o.policy_approval {
            self.policy_approval = v;
        }
        if let Some(v) = o.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = o.store {
            self.store = Some(v);
        }
        if let Some(v) = o.standby {
            self.standby = v;
        }
        if let Some(v) = o.advertise_host {
            self.advertise_host = Some(v);
        }
        if let Some(v) = o.origin {
            self.origin = v;
        }
        if let Some(v) = o.batch_max_entries {
            self.batch_max_entries = v;
        }
        if let Some(v) = o.batch_max_wait {
            self.batch_max_wait = v;
        }
        if let Some(v) = o.disclosure_threshold {
            self.disclosure_threshold = v;
        }
        if let Some(v) = o.erasure_retention_days {
            self.erasure_retention_days = v;
        }
        if let Some(v) = o.witnesses {
            self.witnesses = v;
        }
        if let Some(v) = o.witness_quorum {
            self.witness_quorum = Some(v);
        }
        if let Some(v) = o.witness_ca {
            self.witness_ca = Some(v);
        }
        self.apply_oidc(overrides);
        if o.tls_cert.is_none() && o.tls_key.is_none() && o.tls_client_ca.is_none() {
            return;
        }
        let mut tls = self.tls.take().unwrap_or(TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_ca: None,
        });
        if let Some(v) = o.tls_cert {
            tls.cert = v;
        }
        if let Some(v) = o.tls_key {
            tls.key = v;
        }
        if let Some(v) = o.tls_client_ca {
            tls.client_ca = Some(v);
        }
        self.tls = Some(tls);
    }

    /// The OpenID Connect settings of `o`, over those of the file.
    fn apply_oidc(&mut self, o: &Overrides) {
        let given = o.oidc_issuer.is_some()
            || o.oidc_audience.is_some()
            || o.oidc_jwks_url.is_some()
            || o.oidc_jwks_file.is_some()
            || o.oidc_role_claim.is_some()
            || o.oidc_patient_claim.is_some();
        if !given {
            return;
        }
        let mut oidc = self.oidc.take().unwrap_or_else(|| OidcConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: None,
            jwks_file: None,
            role_claim: default_role_claim(),
            patient_claim: default_patient_claim(),
            roles: default_oidc_roles(),
        });
        if let Some(v) = &o.oidc_issuer {
            oidc.issuer.clone_from(v);
        }
        if let Some(v) = &o.oidc_audience {
            oidc.audience.clone_from(v);
        }
        // A key source given here replaces the file's; both given here is refused by
        // `validate`, whatever their order.
        if o.oidc_jwks_url.is_some() || o.oidc_jwks_file.is_some() {
            oidc.jwks_url.clone_from(&o.oidc_jwks_url);
            oidc.jwks_file.clone_from(&o.oidc_jwks_file);
        }
        if let Some(v) = &o.oidc_role_claim {
            oidc.role_claim.clone_from(v);
        }
        if let Some(v) = &o.oidc_patient_claim {
            oidc.patient_claim.clone_from(v);
        }
        self.oidc = Some(oidc);
    }

    /// The witness quorum in force: [`Config::witness_quorum`], or all the witnesses.
    pub fn quorum(&self) -> usize {
        self.witness_quorum.unwrap_or(self.witnesses.len())
    }

    /// What this server records with the PostgreSQL store's lease so that followers can forward
    /// to it: `grpc=http://HOST:PORT http=http://HOST:PORT` and, when on, `authzen=…` and
    /// `fhir=…`, with the listen addresses' ports and [`Config::advertise_host`] (else the
    /// listen IP, or the machine's host name for an address that listens on every interface).
    pub fn advertised_endpoints(&self) -> String {
        let host = |addr: SocketAddr| match &self.advertise_host {
            // An IPv6 address given bare goes in brackets, as a URL needs it.
            Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
            Some(host) => host.clone(),
            None if addr.ip().is_unspecified() => machine_host_name(),
            None => match addr.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                std::net::IpAddr::V4(ip) => ip.to_string(),
            },
        };
        let at =
            |name: &str, addr: SocketAddr| format!("{name}=http://{}:{}", host(addr), addr.port());
        let mut out = vec![at("grpc", self.grpc_addr), at("http", self.http_addr)];
        if let Some(addr) = self.authzen_addr {
            out.push(at("authzen", addr));
        }
        if let Some(addr) = self.fhir_addr {
            out.push(at("fhir", addr));
        }
        out.join(" ")
    }

    /// Checks ranges and that TLS, when on, names both a certificate and a key. (The origin's
    /// syntax is checked where the signing key is made, by the note key-name rules.)
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason| Err(ConfigError::Invalid { field, reason });
        if self.origin.is_empty() {
            return invalid("origin", "must not be empty");
        }
        if self.origin.len() > MAX_ORIGIN_LEN {
            return invalid("origin", "is longer than 256 bytes");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.standby && self.store.is_none() {
            return invalid(
                "standby",
                "needs `store`: a standby waits for a PostgreSQL store's lease",
            );
        }
        if let Some(host) = &self.advertise_host
            && (host.is_empty()
                || host.len() > MAX_HOST_LEN
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        {
            return invalid(
                "advertise_host",
                "must be a host name or an IP address (letters, digits, `.`, `-`, `:`, `[`, `]`; \
                 at most 253 bytes)",
            );
        }
        if let Some(store) = &self.store {
            if store.len() > MAX_STORE_URL {
                return invalid("store", "is longer than 4096 bytes");
            }
            if !ledger::store::postgres::is_postgres_url(store) {
                return invalid(
                    "store",
                    "must be a postgres:// or postgresql:// URL (leave it unset for the sled \
                     store in the data dir)",
                );
            }
        }
        if self.batch_max_entries == 0 || self.batch_max_entries > MAX_BATCH_MAX_ENTRIES {
            return invalid("batch_max_entries", "must be between 1 and 65536");
        }
        if self.batch_max_wait > MAX_BATCH_MAX_WAIT {
            return invalid("batch_max_wait", "must be at most 1s");
        }
        if !(1..=policy::disclosure::MAX_THRESHOLD).contains(&self.disclosure_threshold) {
            return invalid("disclosure_threshold", "must be between 1 and 1000000");
        }
        if self.erasure_retention_days > MAX_ERASURE_RETENTION_DAYS {
            return invalid("erasure_retention_days", "must be at most 36500");
        }
        if self.limits.idle_timeout.is_zero() {
            return invalid("limits.idle_timeout", "must be more than 0");
        }
        if self.limits.header_read_timeout.is_zero() {
            return invalid("limits.header_read_timeout", "must be more than 0");
        }
        if self.limits.answer_budget_per_caller == 0
            || self.limits.answer_budget_per_caller > self.limits.answer_budget_total
        {
            return invalid(
                "limits.answer_budget_per_caller",
                "must be more than 0 and at most `answer_budget_total`",
            );
        }
        if self.witness_quorum.unwrap_or(0) > self.witnesses.len() {
            return invalid("witness_quorum", "must be at most the number of witnesses");
        }
        for (i, a) in self.witnesses.iter().enumerate() {
            let twice = self.witnesses.iter().skip(i + 1).any(|b| {
                a.verifier.name() == b.verifier.name() && a.verifier.key_id() == b.verifier.key_id()
            });
            if twice {
                return invalid("witnesses", "names one witness key twice");
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert.as_os_str().is_empty() {
                return invalid("tls.cert", "must be set when TLS is on");
            }
            if tls.key.as_os_str().is_empty() {
                return invalid("tls.key", "must be set when TLS is on");
            }
        }
        if let Some(oidc) = &self.oidc {
            if oidc.issuer.is_empty() {
                return invalid("oidc.issuer", "must be set when OpenID Connect is on");
            }
            if oidc.audience.is_empty() {
                return invalid("oidc.audience", "must be set when OpenID Connect is on");
            }
            match (&oidc.jwks_url, &oidc.jwks_file) {
                (Some(_), Some(_)) => {
                    return invalid("oidc.jwks_url", "and `oidc.jwks_file`: give only one");
                }
                (None, None) => {
                    return invalid("oidc.jwks_url", "or `oidc.jwks_file` must be set");
                }
                (Some(url), None) if !(url.starts_with("https://") || is_loopback_http(url)) => {
                    return invalid(
                        "oidc.jwks_url",
                        "must be an https:// URL (http:// only on a loopback address)",
                    );
                }
                _ => {}
            }
            if oidc.role_claim.is_empty() || oidc.patient_claim.is_empty() {
                return invalid(
                    "oidc.role_claim",
                    "and `oidc.patient_claim` must not be empty",
                );
            }
        }
        Ok(())
    }
}

impl Overrides {
    /// Reads the `AKASHI_*` variables of `env`: `AKASHI_GRPC_ADDR`, `AKASHI_HTTP_ADDR`,
    /// `AKASHI_ADMIN_ADDR`, `AKASHI_AUTHZEN_ADDR`, `AKASHI_FHIR_ADDR`,
    /// `AKASHI_DATA_DIR`, `AKASHI_ORIGIN`, `AKASHI_BATCH_MAX_ENTRIES`, `AKASHI_BATCH_MAX_WAIT`,
    /// `AKASHI_TLS_CERT`, `AKASHI_TLS_KEY`, `AKASHI_TLS_CLIENT_CA`,
    /// `AKASHI_DISCLOSURE_THRESHOLD`, `AKASHI_WITNESSES` (comma-separated `VKEY@URL`),
    /// `AKASHI_WITNESS_QUORUM`, `AKASHI_WITNESS_CA`, `AKASHI_POLICY_APPROVAL`, `AKASHI_OIDC_ISSUER`,
    /// `AKASHI_OIDC_AUDIENCE`, `AKASHI_OIDC_JWKS_URL`, `AKASHI_OIDC_JWKS_FILE`,
    /// `AKASHI_OIDC_ROLE_CLAIM`, `AKASHI_OIDC_PATIENT_CLAIM`. `AKASHI_CONFIG` and
    /// `AKASHI_LOG` belong to the command line and logging, and other `AKASHI_*` names are
    /// skipped (see [`unknown_env`] to warn about them); an empty value counts as unset.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Env`] for a value that does not parse.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            match key {
                "CONFIG" | "LOG" | "LOG_FORMAT" => {}
                "GRPC_ADDR" => out.grpc_addr = Some(parse_env(&name, &value)?),
                "HTTP_ADDR" => out.http_addr = Some(parse_env(&name, &value)?),
                "ADMIN_ADDR" => out.admin_addr = Some(parse_env(&name, &value)?),
                "AUTHZEN_ADDR" => out.authzen_addr = Some(parse_env(&name, &value)?),
                "FHIR_ADDR" => out.fhir_addr = Some(parse_env(&name, &value)?),
                "POLICY_APPROVAL" => out.policy_approval = Some(parse_env(&name, &value)?),
                "OIDC_ISSUER" => out.oidc_issuer = Some(value),
                "OIDC_AUDIENCE" => out.oidc_audience = Some(value),
                "OIDC_JWKS_URL" => out.oidc_jwks_url = Some(value),
                "OIDC_JWKS_FILE" => out.oidc_jwks_file = Some(PathBuf::from(value)),
                "OIDC_ROLE_CLAIM" => out.oidc_role_claim = Some(value),
                "OIDC_PATIENT_CLAIM" => out.oidc_patient_claim = Some(value),
                "DATA_DIR" => out.data_dir = Some(PathBuf::from(value)),
                "STORE" => out.store = Some(value),
                "STANDBY" => out.standby = Some(parse_env(&name, &value)?),
                "ADVERTISE_HOST" => out.advertise_host = Some(value),
                "ORIGIN" => out.origin = Some(value),
                "BATCH_MAX_ENTRIES" => out.batch_max_entries = Some(parse_env(&name, &value)?),
                "BATCH_MAX_WAIT" => {
                    out.batch_max_wait = Some(parse_env::<DurationText>(&name, &value)?.0);
                }
                "TLS_CERT" => out.tls_cert = Some(PathBuf::from(value)),
                "TLS_KEY" => out.tls_key = Some(PathBuf::from(value)),
                "TLS_CLIENT_CA" => out.tls_client_ca = Some(PathBuf::from(value)),
                "DISCLOSURE_THRESHOLD" => {
                    out.disclosure_threshold = Some(parse_env(&name, &value)?);
                }
                "ERASURE_RETENTION_DAYS" => {
                    out.erasure_retention_days = Some(parse_env(&name, &value)?);
                }
                "WITNESSES" => {
                    let list = value
                        .split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(|item| parse_env(&name, item))
                        .collect::<Result<_, _>>()?;
                    out.witnesses = Some(list);
                }
                "WITNESS_QUORUM" => out.witness_quorum = Some(parse_env(&name, &value)?),
                "WITNESS_CA" => out.witness_ca = Some(PathBuf::from(value)),
                _ => {}
            }
        }
        Ok(out)
    }
}

impl FromStr for DurationText {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected an integer followed by `us`, `ms` or `s`";
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or(EXPECTED)?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| EXPECTED)?;
        let duration = match unit {
            "us" => Duration::from_micros(number),
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            _ => return Err(EXPECTED),
        };
        Ok(Self(duration))
    }
}

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        if micros.is_multiple_of(1_000_000) {
            write!(f, "{}s", micros / 1_000_000)
        } else if micros.is_multiple_of(1_000) {
            write!(f, "{}ms", micros / 1_000)
        } else {
            write!(f, "{micros}us")
        }
    }
}

impl FromStr for WitnessSpec {
    type Err = WitnessSpecError;

    /// Parses `VKEY@URL`. The key's name may hold `@`, its key data (base64) cannot: the
    /// split is at the first `@` after the key id.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(WitnessSpecError::Format);
        };
        let (data, url) = rest.split_once('@').ok_or(WitnessSpecError::Format)?;
        let verifier = WitnessVerifier::from_vkey(&format!("{name}+{id}+{data}"))
            .map_err(WitnessSpecError::Key)?;
        let uri: http::Uri = url.parse().map_err(|_| WitnessSpecError::Url)?;
        let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
        let scheme_ok = matches!(scheme.as_deref(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none() || uri.query().is_some() {
            return Err(WitnessSpecError::Url);
        }
        // The scheme in lower case, so that `HTTPS://` is TLS like `https://`.
        let (_, rest) = url.split_once("://").ok_or(WitnessSpecError::Url)?;
        let scheme = scheme.unwrap_or_default();
        Ok(Self {
            verifier,
            url: format!("{scheme}://{}", rest.trim_end_matches('/')),
        })
    }
}

/// Why a `VKEY@URL` witness setting was refused. The message carries its cause, since
/// command-line and environment errors print one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessSpecError {
    /// Not `VKEY@URL`.
    #[error("expected `VKEY@URL` (a witness vkey, `@`, an http:// or https:// URL)")]
    Format,
    /// The key is not a witness verifier key.
    #[error("witness key: {0}")]
    Key(#[source] ledger::note::NoteError),
    /// The URL is not `http://` or `https://host[:port][/path]`.
    #[error("witness URL must be `http://` or `https://host[:port][/path]`")]
    Url,
}

impl fmt::Display for WitnessSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.verifier.to_vkey(), self.url)
    }
}

impl Serialize for WitnessSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WitnessSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The `AKASHI_*` names in `env` that no setting reads (probably typos), for a warning.
pub fn unknown_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    env.into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            name.strip_prefix(ENV_PREFIX)
                .is_some_and(|key| !KNOWN_ENV.contains(&key))
        })
        .collect()
}

/// The `AKASHI_*` suffixes something reads.
const KNOWN_ENV: &[&str] = &[
    "ADMIN_ADDR",
    "AUTHZEN_ADDR",
    "BATCH_MAX_ENTRIES",
    "BATCH_MAX_WAIT",
    "CONFIG",
    "DATA_DIR",
    "DISCLOSURE_THRESHOLD",
    "FHIR_ADDR",
    "GRPC_ADDR",
    "HTTP_ADDR",
    "LOG",
    "LOG_FORMAT",
    "OIDC_AUDIENCE",
    "OIDC_ISSUER",
    "OIDC_JWKS_FILE",
    "OIDC_JWKS_URL",
    "OIDC_PATIENT_CLAIM",
    "OIDC_ROLE_CLAIM",
    "ORIGIN",
    "POLICY_APPROVAL",
    "TLS_CERT",
    "TLS_CLIENT_CA",
    "TLS_KEY",
    "WITNESSES",
    "WITNESS_CA",
    "WITNESS_QUORUM",
];

/// Parses one environment value, naming the variable on failure.
fn parse_env<T>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.parse().map_err(|err: T::Err| ConfigError::Env {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: err.to_string(),
    })
}

/// Serde for [`Duration`] fields written as [`DurationText`].
mod duration_text {
    use super::{Deserialize, Deserializer, Duration, DurationText, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&DurationText(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<DurationText>()
            .map(|d| d.0)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;

/// The machine's host name, or `localhost` when it cannot be read.
fn machine_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

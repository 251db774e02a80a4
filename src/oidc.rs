//! Tokens from the operator's OpenID Connect provider: the hospital's or PHR platform's own
//! identity provider signs JWTs, and akashi accepts them beside the tokens its own issuer key
//! signs (`akashi token`, kept for development).
//!
//! The provider's public keys come from its JSON Web Key Set (RFC 7517), fetched from
//! `jwks_url` or read from `jwks_file`, at start and then every [`REFRESH_INTERVAL`], and at
//! once (at most [`PROMPTED_LOADS`] times a minute, callers who waited for a load sharing it)
//! when a token names a key id the set does not hold —
//! so a provider's rotated key is accepted without a restart, and a key removed from the set
//! stops verifying tokens at the next refresh (cached verifications of its tokens are dropped
//! with it). Accepted algorithms: `EdDSA` (Ed25519), `ES256` (P-256) and `RS256` (RSA of 2048
//! to 8192 bits); `none` and the HMAC family never. A token is verified as RFC 7519 and OpenID
//! Connect Core §3.1.3.7 say for an access token: the header's `kid` (when the set has more
//! than one key) and `alg` pick one key of a matching type; the signature is checked before any
//! claim is read; `iss` must equal the issuer, `aud` (a string or a list) must name the
//! audience, `exp` must be in the future and `nbf`/`iat` not beyond the clock skew; the role
//! comes from `role_claim` — and must be one of `roles`, the roles this provider may grant — and a
//! patient's id from `patient_claim`, with the same rules as akashi's own tokens (a patient needs
//! one, nobody else may carry one). A token without a `kid` is taken only when the set holds a
//! single key of its algorithm.
//!
//! This module does not decide which token is whose: [`crate::auth::TokenVerifier`] sends a
//! token here when its header names a `kid` or an algorithm other than akashi's own.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::auth::{AuthError, Caller, Method, Role, check_subject};
use crate::config::OidcConfig;

/// Largest JSON Web Key Set read, in bytes.
pub const MAX_JWKS_LEN: usize = 256 * 1024;
/// Most keys taken from a set (the rest are ignored, with a warning).
pub const MAX_JWKS_KEYS: usize = 64;
/// How often the key set is fetched again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Most loads of the key set that unknown key ids may prompt within [`PROMPTED_WINDOW`] (a
/// flood of made-up key ids costs the provider this many requests a minute, no more).
pub const PROMPTED_LOADS: usize = 4;
/// The window [`PROMPTED_LOADS`] counts in.
pub const PROMPTED_WINDOW: Duration = Duration::from_secs(60);
/// Longest time a fetch of the key set may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The system's CA bundle, trusted for `https://` key set URLs.
pub const CA_BUNDLE: &str = crate::tls_client::SYSTEM_CA_BUNDLE;
/// Most characters of an unknown key id repeated in an error.
const MAX_KID_SHOWN: usize = 64;
/// Clock skew tolerated on `nbf` and `iat`.
const CLOCK_SKEW_SECS: u64 = 60;

/// Why the key set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The file could not be read.
    #[error("cannot read the key set file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The URL could not be fetched.
    #[error("cannot fetch the key set from `{url}`: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The set is larger than [`MAX_JWKS_LEN`].
    #[error("the key set is larger than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// The set is not a JSON Web Key Set.
    #[error("the key set is not a JSON Web Key Set: {reason}")]
    Malformed {
        /// Why.
        reason: String,
    },
}

/// A signature algorithm akashi accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    EdDsa,
    Es256,
    Rs256,
}

impl Alg {
    fn parse(alg: &str) -> Option<Self> {
        match alg {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }
}

/// A public key of the set.
#[derive(Debug, Clone)]
enum PublicKey {
    Ed25519(VerifyingKey),
    /// An uncompressed SEC1 point (`0x04 ‖ x ‖ y`).
    P256(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl PublicKey {
    fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDsa,
            Self::P256(_) => Alg::Es256,
            Self::Rsa { .. } => Alg::Rs256,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{
            ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
            UnparsedPublicKey,
        };
        match self {
            Self::Ed25519(key) => <[u8; 64]>::try_from(signature).is_ok_and(|bytes| {
                key.verify_strict(message, &Signature::from_bytes(&bytes))
                    .is_ok()
            }),
            Self::P256(point) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Self::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

/// One key of the set, as used.
#[derive(Debug, Clone)]
struct Key {
    kid: Option<String>,
    key: PublicKey,
}

/// A JSON Web Key as published (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// Parses a JSON Web Key Set, keeping the signing keys of the accepted types. Keys of other
/// types or uses are skipped; a set with none usable is still a set (tokens then fail).
///
/// # Errors
///
/// [`JwksError`] when the text is not a key set or is too large.
fn parse_set(bytes: &[u8]) -> Result<Vec<Key>, JwksError> {
    if bytes.len() > MAX_JWKS_LEN {
        return Err(JwksError::TooLarge { max: MAX_JWKS_LEN });
    }
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwksError::Malformed {
        reason: e.to_string(),
    })?;
    let mut keys = Vec::new();
    for value in set.keys {
        if keys.len() == MAX_JWKS_KEYS {
            tracing::warn!(
                max = MAX_JWKS_KEYS,
                "the key set holds more keys; the rest are ignored"
            );
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        match key(&jwk) {
            Some(key) => keys.push(key),
            None => tracing::debug!(kid = ?jwk.kid, kty = %jwk.kty, "key set entry skipped"),
        }
    }
    Ok(keys)
}

/// The key a JWK describes, when it is a signing key of an accepted type (and its `alg`, when
/// given, is the one that type is used with here).
fn key(jwk: &Jwk) -> Option<Key> {
    if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let b64 = |part: &Option<String>| part.as_deref().and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => {
            let x: [u8; 32] = b64(&jwk.x)?.try_into().ok()?;
            PublicKey::Ed25519(VerifyingKey::from_bytes(&x).ok()?)
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            PublicKey::P256(point)
        }
        ("RSA", _) => PublicKey::Rsa {
            n: b64(&jwk.n)?,
            e: b64(&jwk.e)?,
        },
        _ => return None,
    };
    if let Some(alg) = &jwk.alg
        && Alg::parse(alg) != Some(key.alg())
    {
        return None;
    }
    Some(Key {
        kid: jwk.kid.clone(),
        key,
    })
}

/// The keys in use, and a number that changes whenever they do.
#[derive(Debug, Default)]
struct KeySet {
    generation: u64,
    keys: Vec<Key>,
}

/// A token's header, as far as it matters here.
#[derive(Deserialize)]
pub(crate) struct Header {
    pub(crate) alg: String,
    #[serde(default)]
    pub(crate) kid: Option<String>,
    #[serde(default)]
    pub(crate) typ: Option<String>,
    #[serde(default)]
    pub(crate) crit: Option<serde_json::Value>,
}

/// What an OpenID Connect token proved.
#[derive(Debug, Clone)]
pub(crate) struct Proven {
    pub(crate) caller: Caller,
    pub(crate) exp: u64,
    /// The key set's generation the signature was checked with.
    pub(crate) generation: u64,
}

/// The provider: its settings, its current keys, and when they were last fetched.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    keys: RwLock<Arc<KeySet>>,
    /// When the recent loads prompted by unknown key ids started; one load at a time.
    prompted: tokio::sync::Mutex<std::collections::VecDeque<Instant>>,
    /// Loads finished (any), so that callers who waited for one do not start another.
    loads: std::sync::atomic::AtomicU64,
}

impl Oidc {
    /// The provider of `config`. A key set file is read now (one that cannot be read or parsed
    /// is a start error); a key set URL is fetched when [`Oidc::run`] starts, and until then
    /// (or while it cannot be fetched) the provider's tokens are refused.
    ///
    /// # Errors
    ///
    /// [`JwksError`] for a key set file that cannot be read or parsed.
    pub fn new(config: OidcConfig) -> Result<Arc<Self>, JwksError> {
        let oidc = Arc::new(Self {
            config,
            keys: RwLock::new(Arc::new(KeySet::default())),
            prompted: tokio::sync::Mutex::new(std::collections::VecDeque::new()),
            loads: std::sync::atomic::AtomicU64::new(0),
        });
        if let Some(path) = &oidc.config.jwks_file {
            let read_error = |source| JwksError::Read {
                path: path.clone(),
                source,
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(
                    std::fs::File::open(path).map_err(read_error)?,
                    MAX_JWKS_LEN as u64 + 1,
                ),
                &mut bytes,
            )
            .map_err(read_error)?;
            oidc.install(parse_set(&bytes)?);
        }
        Ok(oidc)
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The key set's current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.current().generation
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map_or_else(|e| e.into_inner().clone(), |k| k.clone())
    }

    /// Takes `keys` as the set in use when they differ from it.
    fn install(&self, keys: Vec<Key>) {
        let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let same =
            current.keys.len() == keys.len()
                && current.keys.iter().zip(&keys).all(|(a, b)| {
                    a.kid == b.kid && format!("{:?}", a.key) == format!("{:?}", b.key)
                });
        if !same {
            tracing::info!(keys = keys.len(), "OpenID Connect key set loaded");
            *current = Arc::new(KeySet {
                generation: current.generation + 1,
                keys,
            });
        }
    }

    /// Reads or fetches the key set.
    async fn load(&self) -> Result<Vec<Key>, JwksError> {
        let bytes = match (&self.config.jwks_file, &self.config.jwks_url) {
            (Some(path), _) => read_file(path).await?,
            (None, Some(url)) => fetch(url).await?,
            (None, None) => Vec::new(),
        };
        parse_set(&bytes)
    }

    /// Loads the key set again because a token named a key it does not hold, unless
    /// [`PROMPTED_LOADS`] such loads started within the last [`PROMPTED_WINDOW`]. Returns
    /// whether a load ran.
    pub async fn refresh_prompted(&self) -> bool {
        let seen = self.loads.load(std::sync::atomic::Ordering::Acquire);
        let mut prompted = self.prompted.lock().await;
        if self.loads.load(std::sync::atomic::Ordering::Acquire) != seen {
            // A load finished while this caller waited: its keys are the newest there are.
            return false;
        }
        while prompted
            .front()
            .is_some_and(|at| at.elapsed() >= PROMPTED_WINDOW)
        {
            prompted.pop_front();
        }
        if prompted.len() >= PROMPTED_LOADS {
            return false;
        }
        prompted.push_back(Instant::now());
        self.reload().await;
        true
    }

    /// Loads the key set again now.
    async fn reload(&self) {
        let loaded = self.load().await;
        self.loads.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match loaded {
            Ok(keys) => self.install(keys),
            Err(err) => {
                tracing::warn!(cause = %err, "the OpenID Connect key set was not refreshed")
            }
        }
    }

    /// Loads the key set now, then every [`REFRESH_INTERVAL`], until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        tokio::select! {
            () = &mut stop => return,
            () = self.reload() => {}
        }
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(REFRESH_INTERVAL) => self.reload().await,
            }
        }
    }

    /// Verifies a token whose header is `header` (already decoded): signature with a key of
    /// the set, then issuer, audience, time and role claims.
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying what is wrong; [`AuthError::UnknownKey`] when no key of the set has
    /// the token's key id (a refresh may find it).
    pub(crate) fn verify(
        &self,
        token: &str,
        header: &Header,
        now: u64,
    ) -> Result<Proven, AuthError> {
        let alg = Alg::parse(&header.alg).ok_or_else(|| AuthError::Algorithm {
            alg: header.alg.clone(),
        })?;
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(AuthError::Malformed { part: "token" })?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed { part: "signature" })?;
        let keys = self.current();
        let candidates: Vec<&Key> = keys
            .keys
            .iter()
            .filter(|k| k.key.alg() == alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey {
                kid: header
                    .kid
                    .as_deref()
                    .unwrap_or_default()
                    .chars()
                    .take(MAX_KID_SHOWN)
                    .collect(),
            });
        }
        if header.kid.is_none() && candidates.len() > 1 {
            // Which key signed it must not be a matter of trying them all.
            return Err(AuthError::Malformed {
                part: "header kid (the provider has several keys of this algorithm)",
            });
        }
        if !candidates
            .iter()
            .any(|k| k.key.verify(signing_input.as_bytes(), &signature))
        {
            return Err(AuthError::Signature);
        }
        // Claims are read only once the signature holds.
        let claims_part = signing_input
            .split_once('.')
            .map(|(_, claims)| claims)
            .ok_or(AuthError::Malformed { part: "token" })?;
        let claims: serde_json::Map<String, serde_json::Value> = URL_SAFE_NO_PAD
            .decode(claims_part)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(AuthError::Malformed { part: "claims" })?;
        let caller = self.claims(&claims, now)?;
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        Ok(Proven {
            caller,
            exp,
            generation: keys.generation,
        })
    }

    /// The caller the verified `claims` name, after the issuer, audience and time checks.
    fn claims(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        now: u64,
    ) -> Result<Caller, AuthError> {
        let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
        let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
        if text("iss") != Some(self.config.issuer.as_str()) {
            return Err(AuthError::Claim {
                claim: "iss",
                problem: "is not the configured issuer",
            });
        }
        let audience = self.config.audience.as_str();
        let names_audience = match claims.get("aud") {
            Some(serde_json::Value::String(aud)) => aud == audience,
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().any(|aud| aud.as_str() == Some(audience))
            }
            _ => false,
        };
        if !names_audience {
            return Err(AuthError::Claim {
                claim: "aud",
                problem: "does not name this service's audience",
            });
        }
        let exp = number("exp").ok_or(AuthError::Claim {
            claim: "exp",
            problem: "is missing or not a number",
        })?;
        if now >= exp {
            return Err(AuthError::Expired);
        }
        // `nbf` and `iat` are optional, but when present they must be NumericDates this reads.
        for claim in ["nbf", "iat"] {
            if claims.contains_key(claim) && number(claim).is_none() {
                return Err(AuthError::Claim {
                    claim: if claim == "nbf" { "nbf" } else { "iat" },
                    problem: "is not a whole number of seconds",
                });
            }
        }
        let not_before = number("nbf").unwrap_or(0).max(number("iat").unwrap_or(0));
        if not_before > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(AuthError::NotYetValid);
        }
        if exp.saturating_sub(now) > crate::auth::MAX_TOKEN_TTL.as_secs() {
            return Err(AuthError::Claim {
                claim: "exp",
                problem: "is further away than the longest token lifetime",
            });
        }
        let role: Role = text(&self.config.role_claim)
            .ok_or(AuthError::Claim {
                claim: "role",
                problem: "is missing (the configured role claim)",
            })?
            .parse()
            .map_err(|_| AuthError::Claim {
                claim: "role",
                problem: "is not platform, patient, regulator or auditor",
            })?;
        if !self.config.roles.contains(&role) {
            return Err(AuthError::Claim {
                claim: "role",
                problem: "names a role this provider may not grant",
            });
        }
        let patient = text(&self.config.patient_claim).map(str::to_owned);
        check_subject(role, patient.as_deref())?;
        Ok(Caller {
            role,
            patient_id: patient,
            method: Method::default(),
        })
    }
}

/// Reads a key set file, bounded.
async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, JwksError> {
    use tokio::io::AsyncReadExt as _;
    let read_error = |source| JwksError::Read {
        path: path.to_owned(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(read_error)?;
    Ok(bytes)
}

/// `GET url`, over TLS for `https://` (trusting the system's CA bundle), bounded in time and
/// size; the answer must be `200`.
async fn fetch(url: &str) -> Result<Vec<u8>, JwksError> {
    let failed = |reason: String| JwksError::Fetch {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| failed("not a URL".into()))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(failed("not an http:// or https:// URL".into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| failed("no host".into()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let request = http::Request::get(path)
        .header(
            http::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let response = if tls {
            let connector = tls_connector().map_err(&failed)?;
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| failed(e.to_string()))?;
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| failed(e.to_string()))?;
            send(TokioIo::new(stream), request).await
        } else {
            send(TokioIo::new(stream), request).await
        }
        .map_err(&failed)?;
        if response.status() != http::StatusCode::OK {
            return Err(failed(format!("status {}", response.status())));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_LEN)
            .collect()
            .await
            .map_err(|_| JwksError::TooLarge { max: MAX_JWKS_LEN })?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {FETCH_TIMEOUT:?}")))?
}

/// One HTTP/1.1 request over `io`.
async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// A TLS client trusting the system's CA bundle ([`CA_BUNDLE`]).
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let roots = crate::tls_client::roots_from(Path::new(CA_BUNDLE))
        .map_err(|e| format!("{CA_BUNDLE}: {e}"))?;
    let config = crate::tls_client::client_config(roots).map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(config))
}

#[cfg(test)]
mod tests;

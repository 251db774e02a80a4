//! Who is calling: bearer tokens (compact JWT signed with EdDSA/Ed25519 by the data dir's
//! token-issuer key), the [`Caller`] they prove, and the tower layer that puts a [`Caller`] into
//! every authenticated request's extensions.
//!
//! Tokens carry `role`, `sub` (the patient id, only for role `patient`), `iat`, `exp` and `jti`.
//! Services need a token except [`PUBLIC_SERVICES`] (transparency, health, reflection). The
//! layer is fail-closed: a service added later needs a token unless it is added to that list.
//!
//! With mTLS on, a platform service, regulator or auditor may instead be identified by its client
//! certificate (docs/design.md §7): the certificate names its role in a URI subject alternative name
//! `urn:akashi:role:<role>` ([`CERT_ROLE_PREFIX`]). A bearer token, when sent, decides (so a
//! gateway with a platform certificate can forward a patient's token); a certificate never makes
//! anyone a patient, since a patient is bound to one patient id that only a token names.
//!
//! This module does not decide what a role may do in a method beyond the checks [`require`] and
//! [`require_subject`] offer; it keeps no revocation list (tokens are short-lived instead), and it
//! does not read key files (see `keys.rs`).

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use futures::future::{BoxFuture, Either, Ready, ready};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use tonic::{Status, body::Body};

use crate::oidc::{Header, Oidc};

/// Longest accepted token, in bytes (a real one is about 250).
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest accepted token when an OpenID Connect provider is configured: providers' access
/// tokens (RSA signatures, many claims) often take a few kilobytes.
pub const MAX_PROVIDER_TOKEN_LEN: usize = 8192;
/// Longest accepted patient id in a token's `sub`, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest token lifetime [`crate::keys::mint_token`] issues and verification accepts.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 60 * 60);
/// Default lifetime of `akashi token`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// Clock skew tolerated on `iat` (a token issued slightly in the future is accepted).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Most verified tokens remembered, so that a token's signature is checked once, not per call.
pub const MAX_CACHED_TOKENS: usize = 4096;
/// gRPC services callable without a token.
pub const PUBLIC_SERVICES: &[&str] = &[
    "akashi.v1.TransparencyService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The role a token grants. Which methods each role may call is in docs/api.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the whole log to verify it (bodies included).
    Auditor,
    /// A data subject, bound to one patient id: their own consent state and history only.
    Patient,
    /// A platform service: writes, decisions and consent state.
    Platform,
    /// A regulator: any patient's history, policy validation.
    Regulator,
}

/// An authenticated caller, put into the request extensions by [`AuthLayer`].
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// The role, from the token or (without one) the mTLS client certificate.
    pub role: Role,
    /// The patient the token is bound to: `Some` exactly when `role` is [`Role::Patient`].
    pub patient_id: Option<String>,
    /// The method this call is for, set by [`AuthLayer`] from the request path, so a refusal can
    /// name it.
    pub method: Method,
}

/// A gRPC method as messages name it: `Service/Method` without the package (e.g.
/// `ConsentService/GetConsentState`), or "this method" when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Method(Option<Arc<str>>);

impl Method {
    /// The method of request path `path` (`/akashi.v1.ConsentService/GetConsentState`).
    pub fn from_path(path: &str) -> Self {
        let path = path.trim_start_matches('/');
        let short = path.strip_prefix("akashi.v1.").unwrap_or(path);
        Self((!short.is_empty()).then(|| short.into()))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(method) => write!(f, "`{method}`"),
            None => f.write_str("this method"),
        }
    }
}

/// Why a call is refused before its handler runs: no valid token, a role the method does not
/// take, or a patient asking about another patient. `crate::error` turns it into a status
/// (`UNAUTHENTICATED` or `PERMISSION_DENIED`); this module decides only that it is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No or bad token (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    /// The caller's role may not call this method at all (`PERMISSION_DENIED`).
    #[error("the {role} role may not call {method}")]
    MethodDenied {
        /// The caller's role.
        role: Role,
        /// The method called.
        method: Method,
    },
    /// The caller's role may call this method only about the patient its token names, and
    /// asked about another (`PERMISSION_DENIED`). Neither id is repeated.
    #[error("the {role} role may call {method} only about the patient its token names")]
    SubjectDenied {
        /// The caller's role.
        role: Role,
        /// The method called.
        method: Method,
    },
    /// The caller's role may call the method, but not with an option only another role may use
    /// (`PERMISSION_DENIED`), e.g. an erasure's `force`.
    #[error("{0}")]
    OptionDenied(&'static str),
}

/// Why a token was refused (every case is `UNAUTHENTICATED`), or could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing `authorization: Bearer <token>` metadata")]
    Missing,
    /// More than one `authorization` entry: none is used, since which one a proxy or the
    /// server would read is ambiguous.
    #[error("more than one `authorization` metadata entry; send exactly one")]
    Duplicate,
    /// The token's header has `crit` (RFC 7515 §4.1.11): it names extensions that must be
    /// understood, and none are.
    #[error("token header has `crit`; no critical extensions are accepted")]
    Critical,
    /// `authorization` is not `Bearer <token>`.
    #[error("`authorization` metadata must be `Bearer <token>`")]
    NotBearer,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {max} bytes")]
    TooLong {
        /// The cap.
        max: usize,
    },
    /// The token is not three base64url parts with JSON header and claims.
    #[error("token is malformed: {part}")]
    Malformed {
        /// Which part is wrong.
        part: &'static str,
    },
    /// The header's `alg` is not `EdDSA` (nor, with OpenID Connect on, `ES256` or `RS256`).
    #[error(
        "token algorithm `{alg}` is not accepted (`EdDSA`; with OpenID Connect also `ES256`, `RS256`)"
    )]
    Algorithm {
        /// The algorithm named.
        alg: String,
    },
    /// The signature does not verify with the issuer key.
    #[error("token signature is invalid")]
    Signature,
    /// `exp` is not in the future.
    #[error("token expired")]
    Expired,
    /// `iat` or `nbf` is in the future (beyond [`CLOCK_SKEW`]).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The lifetime is zero or longer than [`MAX_TOKEN_TTL`].
    #[error("token lifetime must be between 1 second and {max_days} days")]
    Lifetime {
        /// The cap, in days.
        max_days: u64,
    },
    /// Role `patient` without a `sub` (or an empty one).
    #[error("role `patient` needs a patient id")]
    MissingPatient,
    /// A role other than `patient` with a `sub`.
    #[error("role `{role}` takes no patient id")]
    UnexpectedPatient {
        /// The role.
        role: Role,
    },
    /// `sub` is longer than [`MAX_SUBJECT_LEN`].
    #[error("patient id is longer than {max} bytes")]
    PatientTooLong {
        /// The cap.
        max: usize,
    },
    /// No key of the OpenID Connect provider's key set has the token's key id (or fits its
    /// algorithm); the set is fetched again (at most four such loads a minute).
    #[error("no key `{kid}` of the OpenID Connect provider fits this token")]
    UnknownKey {
        /// The header's `kid` (empty when it has none).
        kid: String,
    },
    /// A claim of an OpenID Connect token is wrong.
    #[error("token claim `{claim}` {problem}")]
    Claim {
        /// The claim (`role` stands for the configured role claim).
        claim: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The client certificate names a role it cannot carry (unknown, `patient`, or several).
    #[error("client certificate role: {problem}")]
    CertificateRole {
        /// What is wrong.
        problem: String,
    },
}

/// Role name not one of `platform`, `patient`, `regulator`, `auditor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected `platform`, `patient`, `regulator` or `auditor`)")]
pub struct UnknownRole(pub String);

/// Issues tokens with the token-issuer key.
pub struct TokenIssuer {
    key: SigningKey,
}

/// Verifies tokens against the token-issuer public key — and, when configured, the OpenID
/// Connect provider's keys (`crate::oidc`) — remembering recent good ones.
#[derive(Clone)]
pub struct TokenVerifier {
    key: VerifyingKey,
    cache: Arc<Mutex<HashMap<Box<str>, Verified>>>,
    oidc: Option<Arc<Oidc>>,
}

/// Tower layer that authenticates every call outside [`PUBLIC_SERVICES`] and inserts its
/// [`Caller`] into the request extensions; refused calls get `UNAUTHENTICATED` without reaching
/// the service.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: TokenVerifier,
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
}

/// The caller that [`AuthLayer`] put into `request`.
///
/// # Errors
///
/// `UNAUTHENTICATED` if there is none (the service was reached without the layer: fail closed).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::from(Refusal::Unauthenticated(AuthError::Missing)))
}

/// Checks that `caller` has one of `allowed` roles.
///
/// # Errors
///
/// `PERMISSION_DENIED` naming the caller's role.
pub fn require(caller: &Caller, allowed: &[Role]) -> Result<(), Refusal> {
    if allowed.contains(&caller.role) {
        return Ok(());
    }
    Err(Refusal::MethodDenied {
        role: caller.role,
        method: caller.method.clone(),
    })
}

/// Checks that `caller` is the patient `patient_id` themself, or has one of `others` roles (for
/// "platform, the patient" and "the patient (own only), regulator" methods).
///
/// # Errors
///
/// `PERMISSION_DENIED`: a role that may not call the method at all is told so; for a patient
/// asking about someone else the message does not repeat either id.
pub fn require_subject(caller: &Caller, patient_id: &str, others: &[Role]) -> Result<(), Refusal> {
    if others.contains(&caller.role) {
        return Ok(());
    }
    let method = caller.method.clone();
    if caller.role != Role::Patient {
        return Err(Refusal::MethodDenied {
            role: caller.role,
            method,
        });
    }
    if caller.patient_id.as_deref() == Some(patient_id) {
        return Ok(());
    }
    Err(Refusal::SubjectDenied {
        role: caller.role,
        method,
    })
}

impl Role {
    /// The role's name as written in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auditor => "auditor",
            Self::Patient => "patient",
            Self::Platform => "platform",
            Self::Regulator => "regulator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of the URI subject alternative name that gives a client certificate its role.
pub const CERT_ROLE_PREFIX: &str = "urn:akashi:role:";

/// The caller a verified mTLS client certificate names, if the connection has one that names a
/// role. rustls has already checked the chain against the configured client CA.
fn certificate_caller<B>(request: &http::Request<B>) -> Option<Result<Caller, AuthError>> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    let leaf = certs.first()?;
    certificate_role(leaf.as_ref()).transpose().map(|role| {
        role.map(|role| Caller {
            role,
            patient_id: None,
            method: Method::default(),
        })
    })
}

/// The role named by DER certificate `der` ([`CERT_ROLE_PREFIX`]), `None` when it names none.
///
/// # Errors
///
/// [`AuthError::CertificateRole`] for an unparsable certificate, an unknown role, `patient`, or
/// more than one role.
pub fn certificate_role(der: &[u8]) -> Result<Option<Role>, AuthError> {
    let problem = |problem: String| AuthError::CertificateRole { problem };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| problem("the certificate does not parse".to_owned()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|_| problem("the subject alternative names do not parse".to_owned()))?;
    let mut found = None;
    for name in names.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let x509_parser::extensions::GeneralName::URI(uri) = name else {
            continue;
        };
        let Some(role) = uri.strip_prefix(CERT_ROLE_PREFIX) else {
            continue;
        };
        let role = Role::from_str(role).map_err(|e| problem(e.to_string()))?;
        if role == Role::Patient {
            return Err(problem(
                "`patient` is never taken from a certificate; patients use a token".to_owned(),
            ));
        }
        if found.replace(role).is_some_and(|other| other != role) {
            return Err(problem(
                "the certificate names more than one role".to_owned(),
            ));
        }
    }
    Ok(found)
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auditor" => Ok(Self::Auditor),
            "patient" => Ok(Self::Patient),
            "platform" => Ok(Self::Platform),
            "regulator" => Ok(Self::Regulator),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

impl fmt::Debug for Caller {
    /// Never prints the patient id (ids stay out of logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("role", &self.role)
            .field(
                "patient_id",
                &self.patient_id.as_ref().map(|_| "<redacted>"),
            )
            .field("method", &self.method)
            .finish()
    }
}

impl TokenIssuer {
    /// An issuer signing with `key`.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// The public key that verifies this issuer's tokens.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// A verifier for this issuer's tokens.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(self.verifying_key())
    }

    /// Issues a token for `role` valid from `now` for `ttl`.
    ///
    /// # Errors
    ///
    /// [`AuthError::MissingPatient`] / [`AuthError::UnexpectedPatient`] when `patient` does not
    /// match the role, [`AuthError::PatientTooLong`], [`AuthError::Lifetime`] for a zero or too
    /// long `ttl`.
    pub fn issue(
        &self,
        role: Role,
        patient: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        check_subject(role, patient)?;
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(lifetime_error());
        }
        let iat = unix_seconds(now);
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = Claims {
            role,
            sub: patient.map(str::to_owned),
            iat,
            nbf: None,
            exp: iat.saturating_add(ttl.as_secs().max(1)),
            jti: hex::encode(jti),
        };
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&claims).map_err(|_| AuthError::Malformed { part: "claims" })?,
        );
        let signing_input = format!("{header}.{claims}");
        let signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }

    /// Signs `header` and `claims` as given, with no check of either: for testing what the
    /// verifier refuses (akashi issues tokens only through [`TokenIssuer::issue`]).
    pub fn sign_raw(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field(
                "verifying_key",
                &hex::encode(self.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens signed by `key`'s secret half.
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key,
            cache: Arc::new(Mutex::new(HashMap::new())),
            oidc: None,
        }
    }

    /// The longest token accepted.
    fn max_len(&self) -> usize {
        if self.oidc.is_some() {
            MAX_PROVIDER_TOKEN_LEN
        } else {
            MAX_TOKEN_LEN
        }
    }

    /// The same verifier, also accepting the tokens of the OpenID Connect provider `oidc`.
    #[must_use]
    pub fn with_oidc(mut self, oidc: Arc<Oidc>) -> Self {
        self.oidc = Some(oidc);
        self
    }

    /// [`TokenVerifier::authenticate`], and once more after fetching the OpenID Connect key set
    /// again when the token names a key the set does not hold (a provider's rotated key).
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying what is wrong.
    pub async fn authenticate_refreshing(
        &self,
        authorization: Option<&http::HeaderValue>,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        match self.authenticate(authorization, now) {
            Err(AuthError::UnknownKey { kid }) => match &self.oidc {
                Some(oidc) => {
                    // Whether this call loaded the set or another load was recent, the set in
                    // use now decides.
                    oidc.refresh_prompted().await;
                    self.authenticate(authorization, SystemTime::now())
                }
                None => Err(AuthError::UnknownKey { kid }),
            },
            other => other,
        }
    }

    /// Authenticates the `authorization` header value of a call (`Bearer <token>`).
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying what is wrong.
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        if value.len() > self.max_len() + "Bearer ".len() {
            return Err(AuthError::TooLong {
                max: self.max_len(),
            });
        }
        let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim(), now)
    }

    /// Verifies a compact token: size, header, signature, claims, lifetime and role binding.
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying what is wrong.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Caller, AuthError> {
        if token.len() > self.max_len() {
            return Err(AuthError::TooLong {
                max: self.max_len(),
            });
        }
        let now_secs = unix_seconds(now);
        if let Some(hit) = self.cached(token) {
            if now_secs >= hit.exp {
                return Err(AuthError::Expired);
            }
            // An OpenID Connect token holds only while the key set that verified it does.
            let current = match (&self.oidc, hit.generation) {
                (Some(oidc), Some(generation)) => oidc.generation() == generation,
                _ => true,
            };
            if current {
                return Ok(hit.caller);
            }
        }
        let verified = self.verify_uncached(token, now_secs)?;
        let caller = verified.caller.clone();
        self.remember(token, verified);
        Ok(caller)
    }

    /// Full verification, without the cache.
    fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed {
                part: "expected three `.`-separated parts",
            });
        };
        let header: Header = decode_json(header, "header")?;
        if header.crit.is_some() {
            return Err(AuthError::Critical);
        }
        if let Some(oidc) = &self.oidc {
            // akashi's own tokens are EdDSA with no key id; anything else is the provider's.
            if header.kid.is_some() || header.alg != "EdDSA" {
                if header.typ.as_deref().is_some_and(|typ| {
                    !typ.eq_ignore_ascii_case("JWT")
                        && typ != "at+jwt"
                        && typ != "application/at+jwt"
                }) {
                    return Err(AuthError::Malformed { part: "header typ" });
                }
                let proven = oidc.verify(token, &header, now)?;
                return Ok(Verified {
                    caller: proven.caller,
                    exp: proven.exp,
                    generation: Some(proven.generation),
                });
            }
        }
        if header.alg != "EdDSA" {
            return Err(AuthError::Algorithm { alg: header.alg });
        }
        // akashi's own tokens say `JWT`; a provider's Ed25519 token without a key id, tried
        // below when akashi's key does not verify it, may say `at+jwt` (RFC 9068).
        let provider_typ = |typ: &str| self.oidc.is_some() && typ == "at+jwt";
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| typ != "JWT" && !provider_typ(typ))
        {
            return Err(AuthError::Malformed { part: "header typ" });
        }
        let signature_bytes: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(AuthError::Malformed { part: "signature" })?;
        let signing_input_len = header_len(token, claims);
        let signing_input = token
            .get(..signing_input_len)
            .ok_or(AuthError::Malformed { part: "token" })?;
        if self
            .key
            .verify_strict(
                signing_input.as_bytes(),
                &Signature::from_bytes(&signature_bytes),
            )
            .is_err()
        {
            // A provider with an Ed25519 key may sign without a key id.
            return match &self.oidc {
                Some(oidc) => match oidc.verify(token, &header, now) {
                    Ok(proven) => Ok(Verified {
                        caller: proven.caller,
                        exp: proven.exp,
                        generation: Some(proven.generation),
                    }),
                    Err(AuthError::UnknownKey { .. }) => Err(AuthError::Signature),
                    Err(other) => Err(other),
                },
                None => Err(AuthError::Signature),
            };
        }
        // Claims are parsed only once the signature holds: only our issuer's JSON is parsed.
        let claims: Claims = decode_json(claims, "claims")?;
        check_subject(claims.role, claims.sub.as_deref())?;
        if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_TOKEN_TTL.as_secs() {
            return Err(lifetime_error());
        }
        let not_before = claims.iat.max(claims.nbf.unwrap_or(0));
        if not_before > now.saturating_add(CLOCK_SKEW.as_secs()) {
            return Err(AuthError::NotYetValid);
        }
        if now >= claims.exp {
            return Err(AuthError::Expired);
        }
        Ok(Verified {
            caller: Caller {
                role: claims.role,
                patient_id: claims.sub,
                method: Method::default(),
            },
            exp: claims.exp,
            generation: None,
        })
    }

    fn cached(&self, token: &str) -> Option<Verified> {
        let cache = self.cache.lock().ok()?;
        cache.get(token).cloned()
    }

    fn remember(&self, token: &str, verified: Verified) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= MAX_CACHED_TOKENS {
            // Simple bound: start over rather than track recency. Only good tokens get here,
            // so this costs at most one signature check per token per refill.
            cache.clear();
        }
        cache.insert(token.into(), verified);
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("key", &hex::encode(self.key.as_bytes()))
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer authenticating with `verifier`.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Either<
            Ready<Result<http::Response<Body>, S::Error>>,
            BoxFuture<'static, Result<http::Response<Body>, S::Error>>,
        >,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if is_public(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let mut values = request
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter();
        let authenticated = match (values.next(), values.next()) {
            (Some(_), Some(_)) => Err(AuthError::Duplicate),
            (Some(authorization), None) => self
                .verifier
                .authenticate(Some(authorization), SystemTime::now()),
            (None, _) => certificate_caller(&request).unwrap_or(Err(AuthError::Missing)),
        };
        match authenticated {
            Ok(mut caller) => {
                caller.method = Method::from_path(request.uri().path());
                request.extensions_mut().insert(caller);
                Either::Left(self.inner.call(request))
            }
            Err(AuthError::UnknownKey { .. }) if self.verifier.oidc.is_some() => {
                // The provider may have rotated its keys: fetch them again (at most four such
                // loads a minute) and verify once more before answering.
                let verifier = self.verifier.clone();
                // The clone is the one that was polled ready (tower's usual swap).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(Either::Right(Box::pin(async move {
                    let authenticated = verifier
                        .authenticate_refreshing(
                            request.headers().get(http::header::AUTHORIZATION),
                            SystemTime::now(),
                        )
                        .await;
                    match authenticated {
                        Ok(mut caller) => {
                            caller.method = Method::from_path(request.uri().path());
                            request.extensions_mut().insert(caller);
                            inner.call(request).await
                        }
                        Err(err) => Ok(refused(&request, err)),
                    }
                })))
            }
            Err(err) => Either::Right(Either::Left(ready(Ok(refused(&request, err))))),
        }
    }
}

/// The compact JWT header of every token.
const HEADER_JSON: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

#[derive(Serialize, Deserialize)]
struct Claims {
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    iat: u64,
    /// Not before (RFC 7519 §4.1.5); never issued by akashi, honoured when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    exp: u64,
    jti: String,
}

#[derive(Clone)]
struct Verified {
    caller: Caller,
    exp: u64,
    /// For an OpenID Connect token, the provider's key-set generation that verified it.
    generation: Option<u64>,
}

/// The `UNAUTHENTICATED` answer to `request`.
fn refused(request: &http::Request<Body>, err: AuthError) -> http::Response<Body> {
    tracing::debug!(cause = %err, path = request.uri().path(), "unauthenticated call");
    Status::from(Refusal::Unauthenticated(err)).into_http()
}

/// Whether `path` (`/package.Service/Method`) belongs to a [`PUBLIC_SERVICES`] service.
fn is_public(path: &str) -> bool {
    let service = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .map(|(service, _)| service);
    service.is_some_and(|service| PUBLIC_SERVICES.contains(&service))
}

/// Length of `header.claims` within `token`, given the claims part borrowed from it.
fn header_len(token: &str, claims: &str) -> usize {
    let claims_start = token.find('.').map_or(0, |dot| dot + 1);
    claims_start + claims.len()
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    name: &'static str,
) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed { part: name })?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed { part: name })
}

/// A patient's token names exactly one patient id (of at most [`MAX_SUBJECT_LEN`] bytes); no
/// other role's names any.
pub(crate) fn check_subject(role: Role, patient: Option<&str>) -> Result<(), AuthError> {
    match (role, patient) {
        (Role::Patient, None) => Err(AuthError::MissingPatient),
        (Role::Patient, Some("")) => Err(AuthError::MissingPatient),
        (Role::Patient, Some(id)) if id.len() > MAX_SUBJECT_LEN => Err(AuthError::PatientTooLong {
            max: MAX_SUBJECT_LEN,
        }),
        (Role::Patient, Some(_)) => Ok(()),
        (role, Some(_)) => Err(AuthError::UnexpectedPatient { role }),
        (_, None) => Ok(()),
    }
}

fn lifetime_error() -> AuthError {
    AuthError::Lifetime {
        max_days: MAX_TOKEN_TTL.as_secs() / 86_400,
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests;

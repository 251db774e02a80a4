//! Tokens from an OpenID Connect provider through the real server: a provider stand-in serves
//! its JSON Web Key Set on loopback and signs JWTs with Ed25519, P-256 and RSA keys; the server
//! accepts them (gRPC and AuthZEN), maps the role and patient claims, follows a key rotation
//! without a restart, and refuses expired tokens, other issuers and audiences, removed keys,
//! `none` and HMAC.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use akashi::{auth::Role, config::OidcConfig};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey};
use proto::pb;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::{
    api::Api,
    harness::{TestServer, expect_status},
};

const ISSUER: &str = "https://idp.hospital.example";
const AUDIENCE: &str = "akashi";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signing key of the provider.
enum Key {
    Ed(SigningKey),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Key {
    fn ed(seed: u8) -> Self {
        Self::Ed(SigningKey::from_bytes(&[seed; 32]))
    }

    fn ec() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn rsa() -> Self {
        let pem = include_str!("fixtures/oidc-test-rsa.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        Self::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Ed(_) => "EdDSA",
            Self::Ec(_) => "ES256",
            Self::Rsa(_) => "RS256",
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            Self::Ed(key) => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "alg": "EdDSA", "x": b64(key.verifying_key().as_bytes())}),
            Self::Ec(key) => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Self::Rsa(key) => {
                let public: RsaPublicKeyComponents<Vec<u8>> = key.public().into();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64(&public.n), "e": b64(&public.e)})
            }
        }
    }

    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match self {
            Self::Ed(key) => key.sign(input.as_bytes()).to_bytes().to_vec(),
            Self::Ec(key) => key
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Self::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut signature,
                )
                .unwrap();
                signature
            }
        };
        format!("{input}.{}", b64(&signature))
    }
}

fn claims(role: &str, patient: Option<&str>) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": [AUDIENCE, "other-client"], "sub": "user-1",
        "iat": now(), "exp": now() + 600, "akashi_role": role});
    if let Some(patient) = patient {
        claims["akashi_patient"] = json!(patient);
    }
    claims
}

/// The provider stand-in: its key set at `/jwks`, replaceable.
async fn serve_jwks(set: Arc<RwLock<Value>>) -> String {
    let router = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let set = set.clone();
            async move { set.read().unwrap().to_string() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/jwks")
}

async fn org(
    api: &Api,
    id: &str,
) -> Result<tonic::Response<pb::UpsertOrganizationResponse>, tonic::Status> {
    api.directory()
        .upsert_organization(api.req(pb::UpsertOrganizationRequest {
            request_id: String::new(),
            id: id.into(),
            name: "University".into(),
            recipient_class: "university".into(),
        }))
        .await
}

fn api(server: &Api, token: String) -> Api {
    Api {
        channel: server.channel.clone(),
        token,
    }
}

#[tokio::test]
async fn provider_tokens_are_accepted_mapped_and_follow_a_key_rotation() {
    let (ed, ec, rsa) = (Key::ed(7), Key::ec(), Key::rsa());
    let set = Arc::new(RwLock::new(
        json!({"keys": [ed.jwk("ed-1"), ec.jwk("ec-1"), rsa.jwk("rsa-1"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac-1"}]}),
    ));
    let url = serve_jwks(set.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |config| {
        config.oidc = Some(OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: Some(url),
            jwks_file: None,
            role_claim: "akashi_role".into(),
            patient_claim: "akashi_patient".into(),
            // Regulators come with client certificates, not from this provider.
            roles: vec![Role::Platform, Role::Patient],
        });
    })
    .await;
    let own = Api::new(&server, Role::Platform, None).await;

    // Each algorithm, with its key id, as the platform role.
    for (key, kid, org_id) in [
        (&ed, "ed-1", "u-ed"),
        (&ec, "ec-1", "u-ec"),
        (&rsa, "rsa-1", "u-rsa"),
    ] {
        let token = key.sign(Some(kid), &claims("platform", None));
        org(&api(&own, token), org_id)
            .await
            .unwrap_or_else(|e| panic!("{kid}: {e:?}"));
    }
    // akashi's own tokens still work.
    org(&own, "u-own").await.unwrap();

    // The patient claim binds a patient token to its patient id.
    let patient = api(
        &own,
        ec.sign(Some("ec-1"), &claims("patient", Some("alice"))),
    );
    patient
        .consent()
        .get_consent_state(patient.req(pb::GetConsentStateRequest {
            patient_id: "alice".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    expect_status(
        "a provider's patient asks about another",
        patient
            .consent()
            .get_consent_state(patient.req(pb::GetConsentStateRequest {
                patient_id: "bob".into(),
                ..Default::default()
            }))
            .await,
        Code::PermissionDenied,
        "only about the patient its token names",
    );
    expect_status(
        "a patient with no patient claim",
        org(
            &api(&own, ed.sign(Some("ed-1"), &claims("patient", None))),
            "x",
        )
        .await,
        Code::Unauthenticated,
        "needs a patient id",
    );

    // Refused: expired, another issuer, another audience, no role, an unknown role.
    let mut expired = claims("platform", None);
    expired["iat"] = json!(now() - 1200);
    expired["exp"] = json!(now() - 600);
    let mut foreign = claims("platform", None);
    foreign["iss"] = json!("https://idp.elsewhere.example");
    let mut other_audience = claims("platform", None);
    other_audience["aud"] = json!("someone-else");
    let mut no_role = claims("platform", None);
    no_role.as_object_mut().unwrap().remove("akashi_role");
    for (case, token, needle) in [
        ("expired", ed.sign(Some("ed-1"), &expired), "expired"),
        ("another issuer", ed.sign(Some("ed-1"), &foreign), "`iss`"),
        (
            "another audience",
            rsa.sign(Some("rsa-1"), &other_audience),
            "`aud`",
        ),
        ("no role", ec.sign(Some("ec-1"), &no_role), "`role`"),
        (
            "an unknown role",
            ec.sign(Some("ec-1"), &claims("superuser", None)),
            "`role`",
        ),
        (
            "a role the provider may not grant",
            ec.sign(Some("ec-1"), &claims("regulator", None)),
            "may not grant",
        ),
    ] {
        expect_status(
            case,
            org(&api(&own, token), "x").await,
            Code::Unauthenticated,
            needle,
        );
    }
    // A signature by another key under a known key id, `none`, and HMAC are refused.
    let forged = Key::ed(8).sign(Some("ed-1"), &claims("platform", None));
    expect_status(
        "a forged signature",
        org(&api(&own, forged), "x").await,
        Code::Unauthenticated,
        "signature",
    );
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"ed-1"}"#),
        b64(claims("platform", None).to_string().as_bytes())
    );
    expect_status(
        "alg none",
        org(&api(&own, unsigned), "x").await,
        Code::Unauthenticated,
        "`none` is not accepted",
    );
    let hmac = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS256","kid":"hmac-1"}"#),
        b64(claims("platform", None).to_string().as_bytes()),
        b64(&[0u8; 32])
    );
    expect_status(
        "HMAC",
        org(&api(&own, hmac), "x").await,
        Code::Unauthenticated,
        "`HS256` is not accepted",
    );

    // The provider rotates: the Ed25519 key is replaced by a new one. A token signed with the
    // new key is accepted at once (its unknown key id makes the server fetch the set again);
    // the old key's tokens, even one verified and cached before, are refused from then on.
    let cached = ed.sign(Some("ed-1"), &claims("platform", None));
    org(&api(&own, cached.clone()), "u-cached").await.unwrap();
    let rotated = Key::ed(9);
    *set.write().unwrap() = json!({"keys": [rotated.jwk("ed-2"), ec.jwk("ec-1")]});
    let token = rotated.sign(Some("ed-2"), &claims("platform", None));
    org(&api(&own, token.clone()), "u-rotated").await.unwrap();
    expect_status(
        "a removed key",
        org(&api(&own, cached), "x").await,
        Code::Unauthenticated,
        "no key `ed-1`",
    );

    // The AuthZEN API takes the provider's tokens too.
    let (status, body) = crate::authzen::call(
        server.authzen_addr,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        &json!({"subject": {"type": "organization", "id": "u-rotated"},
            "action": {"name": "secondary_use"},
            "resource": {"type": "patient", "id": "alice", "properties": {"data_category": "lab_result"}},
            "context": {"purpose": "research", "level": "PSEUDONYMIZED"}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], json!(false), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_key_set_file_is_read_at_start_and_again_when_a_key_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let first = Key::ed(3);
    std::fs::write(&jwks, json!({"keys": [first.jwk("k1")]}).to_string()).unwrap();
    let path = jwks.clone();
    let server = TestServer::start_with(dir, move |config| {
        config.oidc = Some(OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: None,
            jwks_file: Some(path),
            role_claim: "groups_role".into(),
            patient_claim: "akashi_patient".into(),
            roles: akashi::config::default_oidc_roles(),
        });
    })
    .await;
    let own = Api::new(&server, Role::Platform, None).await;
    // The configured role claim is the one read.
    let mut renamed = claims("platform", None);
    renamed["groups_role"] = json!("platform");
    org(&api(&own, first.sign(Some("k1"), &renamed)), "u-1")
        .await
        .unwrap();
    expect_status(
        "the default claim name is not read when another is configured",
        org(
            &api(&own, first.sign(Some("k1"), &claims("platform", None))),
            "x",
        )
        .await,
        Code::Unauthenticated,
        "`role`",
    );
    let second = Key::ed(4);
    std::fs::write(&jwks, json!({"keys": [second.jwk("k2")]}).to_string()).unwrap();
    org(&api(&own, second.sign(Some("k2"), &renamed)), "u-2")
        .await
        .unwrap();
    server.stop().await;
}

#[test]
fn a_key_set_file_that_cannot_be_read_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = akashi::config::Config {
        data_dir: dir.path().join("data"),
        oidc: Some(OidcConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: None,
            jwks_file: Some(dir.path().join("missing.json")),
            role_claim: "akashi_role".into(),
            patient_claim: "akashi_patient".into(),
            roles: akashi::config::default_oidc_roles(),
        }),
        ..akashi::config::Config::default()
    };
    let err = akashi::server::Server::open(config).err().unwrap();
    assert!(err.to_string().contains("missing.json"), "{err}");
}

use std::{
    convert::Infallible,
    time::{Duration, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use tonic::{Code, Status, body::Body};
use tower::{Layer as _, ServiceExt as _};

use super::{
    AuthError, AuthLayer, Caller, MAX_TOKEN_LEN, Method, Role, TokenIssuer, TokenVerifier,
    certificate_role, require, require_subject,
};

const HOUR: Duration = Duration::from_secs(3600);

fn issuer(seed: u8) -> TokenIssuer {
    TokenIssuer::new(SigningKey::from_bytes(&[seed; 32]))
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn every_role_round_trips() {
    let issuer = issuer(1);
    let verifier = issuer.verifier();
    for role in [Role::Auditor, Role::Platform, Role::Regulator] {
        let token = issuer.issue(role, None, HOUR, now()).unwrap();
        assert_eq!(
            verifier.verify(&token, now()).unwrap(),
            Caller {
                role,
                patient_id: None,
                method: Method::default(),
            }
        );
    }
    let token = issuer
        .issue(Role::Patient, Some("p-1"), HOUR, now())
        .unwrap();
    assert_eq!(
        verifier.verify(&token, now()).unwrap(),
        Caller {
            role: Role::Patient,
            patient_id: Some("p-1".into()),
            method: Method::default(),
        }
    );
}

#[test]
fn token_is_a_compact_eddsa_jwt() {
    let token = issuer(1)
        .issue(Role::Patient, Some("p-1"), HOUR, now())
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "EdDSA", "typ": "JWT"}));
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["role"], "patient");
    assert_eq!(claims["sub"], "p-1");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
}

#[test]
fn issuing_checks_role_binding_and_lifetime() {
    let issuer = issuer(1);
    assert_eq!(
        issuer.issue(Role::Patient, None, HOUR, now()).unwrap_err(),
        AuthError::MissingPatient
    );
    assert_eq!(
        issuer
            .issue(Role::Patient, Some(""), HOUR, now())
            .unwrap_err(),
        AuthError::MissingPatient
    );
    assert_eq!(
        issuer
            .issue(Role::Platform, Some("p-1"), HOUR, now())
            .unwrap_err(),
        AuthError::UnexpectedPatient {
            role: Role::Platform
        }
    );
    assert!(matches!(
        issuer.issue(Role::Patient, Some(&"x".repeat(300)), HOUR, now()),
        Err(AuthError::PatientTooLong { .. })
    ));
    assert!(matches!(
        issuer.issue(Role::Platform, None, Duration::ZERO, now()),
        Err(AuthError::Lifetime { .. })
    ));
    assert!(matches!(
        issuer.issue(Role::Platform, None, HOUR * 24 * 400, now()),
        Err(AuthError::Lifetime { .. })
    ));
}

#[test]
fn expired_and_future_tokens_are_refused() {
    let issuer = issuer(1);
    let verifier = issuer.verifier();
    let old = issuer
        .issue(Role::Platform, None, HOUR, now() - HOUR * 2)
        .unwrap();
    assert_eq!(verifier.verify(&old, now()), Err(AuthError::Expired));
    let future = issuer
        .issue(Role::Platform, None, HOUR, now() + HOUR)
        .unwrap();
    assert_eq!(verifier.verify(&future, now()), Err(AuthError::NotYetValid));
}

#[test]
fn a_cached_token_still_expires() {
    let issuer = issuer(1);
    let verifier = issuer.verifier();
    let token = issuer.issue(Role::Platform, None, HOUR, now()).unwrap();
    verifier.verify(&token, now()).unwrap();
    verifier.verify(&token, now()).unwrap();
    assert_eq!(
        verifier.verify(&token, now() + HOUR * 2),
        Err(AuthError::Expired)
    );
}

#[test]
fn signatures_bind_the_issuer_and_the_claims() {
    let issuer = issuer(1);
    let token = issuer
        .issue(Role::Patient, Some("p-1"), HOUR, now())
        .unwrap();
    // Another issuer's key.
    assert_eq!(
        self::issuer(2).verifier().verify(&token, now()),
        Err(AuthError::Signature)
    );
    // Claims swapped for a more powerful role, signature kept.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"role": "regulator", "iat": 1, "exp": u64::MAX, "jti": "x"}).to_string(),
    );
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    assert_eq!(
        issuer.verifier().verify(&forged, now()),
        Err(AuthError::Signature)
    );
    // A flipped signature bit.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert_eq!(
        issuer.verifier().verify(&flipped, now()),
        Err(AuthError::Signature)
    );
}

#[test]
fn other_algorithms_and_garbage_are_refused() {
    let issuer = issuer(1);
    let verifier = issuer.verifier();
    let token = issuer.issue(Role::Platform, None, HOUR, now()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(
        verifier.verify(&format!("{none_header}.{}.", parts[1]), now()),
        Err(AuthError::Algorithm { alg: "none".into() })
    );
    let hs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
    assert!(matches!(
        verifier.verify(&format!("{hs_header}.{}.{}", parts[1], parts[2]), now()),
        Err(AuthError::Algorithm { .. })
    ));
    for garbage in [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        &format!("{}.{}", parts[0], parts[1]),
        &format!("{}.{}.{}.", parts[0], parts[1], parts[2]),
        &format!("{}.{}.AAAA", parts[0], parts[1]),
    ] {
        assert!(
            matches!(
                verifier.verify(garbage, now()),
                Err(AuthError::Malformed { .. })
            ),
            "{garbage:?}"
        );
    }
    assert_eq!(
        verifier.verify(&"a".repeat(MAX_TOKEN_LEN + 1), now()),
        Err(AuthError::TooLong { max: MAX_TOKEN_LEN })
    );
}

#[test]
fn authorization_header_must_be_bearer() {
    let issuer = issuer(1);
    let verifier = issuer.verifier();
    let token = issuer.issue(Role::Platform, None, HOUR, now()).unwrap();
    let header = |text: &str| http::HeaderValue::from_str(text).unwrap();
    assert_eq!(verifier.authenticate(None, now()), Err(AuthError::Missing));
    assert_eq!(
        verifier.authenticate(Some(&header(&format!("Basic {token}"))), now()),
        Err(AuthError::NotBearer)
    );
    assert_eq!(
        verifier.authenticate(Some(&header(&token)), now()),
        Err(AuthError::NotBearer)
    );
    for scheme in ["Bearer", "bearer"] {
        let caller = verifier
            .authenticate(Some(&header(&format!("{scheme} {token}"))), now())
            .unwrap();
        assert_eq!(caller.role, Role::Platform);
    }
}

#[test]
fn require_checks_roles_and_subjects() {
    let platform = Caller {
        role: Role::Platform,
        patient_id: None,
        method: Method::default(),
    };
    let patient = Caller {
        role: Role::Patient,
        patient_id: Some("p-1".into()),
        method: Method::from_path("/akashi.v1.ConsentService/GrantConsent"),
    };
    assert!(require(&platform, &[Role::Platform]).is_ok());
    let denied = Status::from(require(&patient, &[Role::Platform, Role::Regulator]).unwrap_err());
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "the patient role may not call `ConsentService/GrantConsent`"
    );

    assert!(require_subject(&patient, "p-1", &[Role::Platform]).is_ok());
    assert!(require_subject(&platform, "p-1", &[Role::Platform]).is_ok());
    let other = Status::from(require_subject(&patient, "p-2", &[Role::Platform]).unwrap_err());
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(!other.message().contains("p-1") && !other.message().contains("p-2"));
    assert!(
        other
            .message()
            .contains("only about the patient its token names")
    );
    // A role that may not call the method at all is told so, not "for this subject".
    let whole = Status::from(require_subject(&platform, "p-1", &[Role::Regulator]).unwrap_err());
    assert_eq!(whole.code(), Code::PermissionDenied);
    assert_eq!(
        whole.message(),
        "the platform role may not call this method"
    );
}

#[test]
fn caller_debug_hides_the_patient_id() {
    let caller = Caller {
        role: Role::Patient,
        patient_id: Some("secret-patient".into()),
        method: Method::default(),
    };
    let debug = format!("{caller:?}");
    assert!(!debug.contains("secret-patient"), "{debug}");
    assert!(debug.contains("Patient"), "{debug}");
}

#[test]
fn roles_parse_from_their_names() {
    for role in [
        Role::Auditor,
        Role::Patient,
        Role::Platform,
        Role::Regulator,
    ] {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
    }
    assert!("admin".parse::<Role>().is_err());
    assert!("Platform".parse::<Role>().is_err());
}

/// Runs one request through the layer over an inner service that answers with the caller's
/// role in a header (or "none").
async fn through_layer(
    verifier: &TokenVerifier,
    path: &str,
    authorization: Option<&str>,
) -> http::Response<Body> {
    let inner = tower::service_fn(|request: http::Request<Body>| async move {
        let role = request
            .extensions()
            .get::<Caller>()
            .map_or("none", |caller| caller.role.as_str());
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("x-role", role)
                .header("grpc-status", "0")
                .body(Body::empty())
                .unwrap(),
        )
    });
    let service = AuthLayer::new(verifier.clone()).layer(inner);
    let mut request = http::Request::builder().uri(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    service
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn grpc_status(response: &http::Response<Body>) -> &str {
    response.headers()["grpc-status"].to_str().unwrap()
}

#[tokio::test]
async fn layer_lets_public_services_through_without_a_token() {
    let verifier = issuer(1).verifier();
    for path in [
        "/akashi.v1.TransparencyService/GetCheckpoint",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        let response = through_layer(&verifier, path, None).await;
        assert_eq!(response.headers()["x-role"], "none", "{path}");
    }
}

#[tokio::test]
async fn layer_refuses_missing_wrong_expired_and_garbage_tokens() {
    let issuer = issuer(1);
    let verifier = issuer.verifier();
    let path = "/akashi.v1.AccessService/Authorize";
    let expired = issuer
        .issue(Role::Platform, None, HOUR, now() - HOUR * 2)
        .unwrap();
    let foreign = self::issuer(9)
        .issue(Role::Platform, None, HOUR, now())
        .unwrap();
    let cases: [(Option<String>, &str); 5] = [
        (None, "missing `authorization"),
        (Some("Bearer garbage".into()), "malformed"),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some(format!("Bearer {foreign}")), "signature"),
        (Some("Basic dXNlcjpwdw==".into()), "Bearer"),
    ];
    for (authorization, message) in cases {
        let response = through_layer(&verifier, path, authorization.as_deref()).await;
        assert_eq!(grpc_status(&response), "16", "{authorization:?}");
        assert!(response.headers().get("x-role").is_none());
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().contains(message),
            "{authorization:?}: {}",
            status.message()
        );
    }
    // A service path that merely starts like a public one is not public.
    let response = through_layer(&verifier, "/akashi.v1.TransparencyServiceX/Get", None).await;
    assert_eq!(grpc_status(&response), "16");
}

#[tokio::test]
async fn layer_puts_the_caller_into_extensions() {
    let issuer = issuer(1);
    let token = issuer.issue(Role::Regulator, None, HOUR, now()).unwrap();
    let response = through_layer(
        &issuer.verifier(),
        "/akashi.v1.HistoryService/GetSubjectHistory",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(response.headers()["x-role"], "regulator");
}

#[test]
fn caller_is_fail_closed_without_the_layer() {
    let request = tonic::Request::new(());
    assert_eq!(
        super::caller(&request).unwrap_err().code(),
        Code::Unauthenticated
    );
}

fn certificate_with_uris(uris: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["svc".to_owned()]).unwrap();
    for uri in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
    }
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn a_certificate_names_at_most_one_role_and_never_patient() {
    let role = |uris: &[&str]| certificate_role(&certificate_with_uris(uris));
    assert_eq!(role(&[]).unwrap(), None);
    assert_eq!(role(&["https://example.org/x"]).unwrap(), None);
    assert_eq!(
        role(&["urn:akashi:role:platform"]).unwrap(),
        Some(Role::Platform)
    );
    assert_eq!(
        role(&["spiffe://phr/gw", "urn:akashi:role:auditor"]).unwrap(),
        Some(Role::Auditor)
    );
    // The same role twice is one role; two different roles are refused.
    assert_eq!(
        role(&["urn:akashi:role:regulator", "urn:akashi:role:regulator"]).unwrap(),
        Some(Role::Regulator)
    );
    let err = role(&["urn:akashi:role:regulator", "urn:akashi:role:platform"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "client certificate role: the certificate names more than one role"
    );
    let err = role(&["urn:akashi:role:patient"]).unwrap_err();
    assert!(err.to_string().contains("patients use a token"), "{err}");
    let err = role(&["urn:akashi:role:admin"]).unwrap_err();
    assert!(err.to_string().contains("unknown role `admin`"), "{err}");
    assert!(certificate_role(b"not a certificate").is_err());
}

#[test]
fn a_header_with_crit_and_a_future_nbf_are_refused() {
    let issuer = issuer(7);
    let verifier = issuer.verifier();
    let at = super::unix_seconds(now());
    let claims = |nbf: Option<u64>| {
        let mut claims = serde_json::json!({
            "role": "platform", "iat": at, "exp": at + 600, "jti": "01"
        });
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        claims
    };
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT"});
    let crit = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "crit": []});
    verifier
        .verify(&issuer.sign_raw(&header, &claims(Some(at))), now())
        .unwrap();
    assert_eq!(
        verifier.verify(&issuer.sign_raw(&crit, &claims(None)), now()),
        Err(AuthError::Critical)
    );
    // Within the clock skew a future nbf is tolerated, beyond it refused.
    verifier
        .verify(&issuer.sign_raw(&header, &claims(Some(at + 30))), now())
        .unwrap();
    assert_eq!(
        verifier.verify(&issuer.sign_raw(&header, &claims(Some(at + 120))), now()),
        Err(AuthError::NotYetValid)
    );
}

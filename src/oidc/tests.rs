use super::*;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ed_jwk(kid: &str, seed: u8) -> serde_json::Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": b64(key.verifying_key().as_bytes())})
}

fn provider(keys: &serde_json::Value) -> Oidc {
    let oidc = Oidc {
        config: OidcConfig {
            issuer: "https://idp.example".into(),
            audience: "akashi".into(),
            jwks_url: Some("http://127.0.0.1:1/jwks".into()),
            jwks_file: None,
            role_claim: "akashi_role".into(),
            patient_claim: "akashi_patient".into(),
            roles: crate::config::default_oidc_roles(),
        },
        keys: RwLock::new(Arc::new(KeySet::default())),
        prompted: tokio::sync::Mutex::new(std::collections::VecDeque::new()),
        loads: std::sync::atomic::AtomicU64::new(0),
    };
    oidc.install(parse_set(keys.to_string().as_bytes()).unwrap());
    oidc
}

fn token(seed: u8, kid: Option<&str>, claims: &serde_json::Value) -> (String, Header) {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let mut header = serde_json::json!({"alg": "EdDSA"});
    if let Some(kid) = kid {
        header["kid"] = serde_json::json!(kid);
    }
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key.sign(input.as_bytes());
    let parsed: Header = serde_json::from_value(header).unwrap();
    (format!("{input}.{}", b64(&signature.to_bytes())), parsed)
}

const NOW: u64 = 1_800_000_000;

fn claims() -> serde_json::Value {
    serde_json::json!({"iss": "https://idp.example", "aud": "akashi", "iat": NOW - 10,
        "exp": NOW + 300, "akashi_role": "regulator"})
}

#[test]
fn a_key_set_keeps_the_signing_keys_of_accepted_types_only() {
    let p256_x = b64(&[1; 32]);
    let set = serde_json::json!({"keys": [
        ed_jwk("ed", 1),
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": p256_x, "y": p256_x},
        {"kty": "RSA", "kid": "rsa", "n": b64(&[0xc1; 256]), "e": b64(&[1, 0, 1])},
        // Skipped: a symmetric key, an encryption key, a curve not accepted, an `alg` that is
        // not the one this key type is used with, a point of the wrong size, not a JWK at all.
        {"kty": "oct", "k": b64(b"secret"), "kid": "hmac"},
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": b64(&[0xc1; 256]), "e": b64(&[1, 0, 1])},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": p256_x, "y": p256_x},
        {"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "kid": "liar",
            "x": b64(&[2; 32])},
        {"kty": "EC", "crv": "P-256", "kid": "short", "x": b64(&[1; 31]), "y": p256_x},
        "not a key"
    ]});
    let keys = parse_set(set.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    assert_eq!(kids, ["ed", "ec", "rsa"]);
    assert!(matches!(
        parse_set(b"{\"keys\": 3}"),
        Err(JwksError::Malformed { .. })
    ));
    assert!(matches!(
        parse_set(&vec![b' '; MAX_JWKS_LEN + 1]),
        Err(JwksError::TooLarge { .. })
    ));
}

#[test]
fn claims_are_checked_after_the_signature() {
    let oidc = provider(&serde_json::json!({"keys": [ed_jwk("k1", 1)]}));
    let (good, header) = token(1, Some("k1"), &claims());
    let proven = oidc.verify(&good, &header, NOW).unwrap();
    assert_eq!(proven.caller.role, Role::Regulator);
    assert_eq!(proven.exp, NOW + 300);
    // No key id: the one Ed25519 key is tried.
    let (no_kid, header) = token(1, None, &claims());
    assert!(oidc.verify(&no_kid, &header, NOW).is_ok());
    // Another key id, another key, time limits, audience lists.
    let (other_kid, header) = token(1, Some("k9"), &claims());
    assert!(matches!(
        oidc.verify(&other_kid, &header, NOW),
        Err(AuthError::UnknownKey { .. })
    ));
    let (forged, header) = token(2, Some("k1"), &claims());
    assert_eq!(
        oidc.verify(&forged, &header, NOW).unwrap_err(),
        AuthError::Signature
    );
    let mut future = claims();
    future["nbf"] = serde_json::json!(NOW + 3600);
    let (early, header) = token(1, Some("k1"), &future);
    assert_eq!(
        oidc.verify(&early, &header, NOW).unwrap_err(),
        AuthError::NotYetValid
    );
    let mut forever = claims();
    forever["exp"] = serde_json::json!(NOW + 400 * 86_400);
    let (long, header) = token(1, Some("k1"), &forever);
    assert!(matches!(
        oidc.verify(&long, &header, NOW),
        Err(AuthError::Claim { claim: "exp", .. })
    ));
    let mut listed = claims();
    listed["aud"] = serde_json::json!(["x", "akashi"]);
    let (aud, header) = token(1, Some("k1"), &listed);
    assert!(oidc.verify(&aud, &header, NOW).is_ok());
    let mut patient = claims();
    patient["akashi_role"] = serde_json::json!("platform");
    patient["akashi_patient"] = serde_json::json!("alice");
    let (platform_with_patient, header) = token(1, Some("k1"), &patient);
    assert!(matches!(
        oidc.verify(&platform_with_patient, &header, NOW),
        Err(AuthError::UnexpectedPatient { .. })
    ));
}

#[test]
fn a_changed_key_set_gets_a_new_generation_and_the_same_one_does_not() {
    let oidc = provider(&serde_json::json!({"keys": [ed_jwk("k1", 1)]}));
    let first = oidc.generation();
    oidc.install(
        parse_set(
            serde_json::json!({"keys": [ed_jwk("k1", 1)]})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(oidc.generation(), first);
    oidc.install(
        parse_set(
            serde_json::json!({"keys": [ed_jwk("k2", 2)]})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(oidc.generation(), first + 1);
}

#[test]
fn a_token_without_a_key_id_needs_a_single_key_and_numeric_times() {
    let oidc = provider(&serde_json::json!({"keys": [ed_jwk("k1", 1), ed_jwk("k2", 2)]}));
    let (no_kid, header) = token(1, None, &claims());
    assert!(matches!(
        oidc.verify(&no_kid, &header, NOW),
        Err(AuthError::Malformed { .. })
    ));
    let mut float = claims();
    float["nbf"] = serde_json::json!(1.9e9);
    let (odd, header) = token(1, Some("k1"), &float);
    assert!(matches!(
        oidc.verify(&odd, &header, NOW),
        Err(AuthError::Claim { claim: "nbf", .. })
    ));
    let mut regulator_only = provider(&serde_json::json!({"keys": [ed_jwk("k1", 1)]}));
    regulator_only.config.roles = vec![Role::Patient];
    let (good, header) = token(1, Some("k1"), &claims());
    assert!(matches!(
        regulator_only.verify(&good, &header, NOW),
        Err(AuthError::Claim { claim: "role", .. })
    ));
}

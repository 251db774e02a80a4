use std::{io::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

use super::{Config, ConfigError, DurationText, Overrides, PolicyApproval, TlsConfig, unknown_env};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = Config::default();
    assert_eq!(config.grpc_addr, addr(super::DEFAULT_GRPC_ADDR));
    assert_eq!(config.http_addr, addr(super::DEFAULT_HTTP_ADDR));
    assert_eq!(config.admin_addr, addr(super::DEFAULT_ADMIN_ADDR));
    assert_eq!(config.data_dir, PathBuf::from("./akashi-data"));
    assert_eq!(config.origin, "akashi.dev/log");
    assert_eq!(config.batch_max_entries, 1024);
    assert_eq!(config.batch_max_wait, Duration::ZERO);
    assert_eq!(config.tls, None);
    config.validate().unwrap();
    assert_eq!(Config::from_toml("").unwrap(), config);
}

#[test]
fn toml_sets_only_the_keys_it_names() {
    let config = Config::from_toml(
        r#"
        grpc_addr = "127.0.0.1:6000"
        batch_max_wait = "500us"
        [tls]
        cert = "server.pem"
        key = "server.key"
        "#,
    )
    .unwrap();
    assert_eq!(config.grpc_addr, addr("127.0.0.1:6000"));
    assert_eq!(config.http_addr, Config::default().http_addr);
    assert_eq!(config.batch_max_wait, Duration::from_micros(500));
    assert_eq!(
        config.tls,
        Some(TlsConfig {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_ca: None,
        })
    );
}

#[test]
fn toml_rejects_unknown_keys_and_bad_values() {
    let err = Config::from_toml("grpc_adr = \"127.0.0.1:1\"").unwrap_err();
    assert!(err.to_string().contains("grpc_adr"), "{err}");
    assert!(Config::from_toml("batch_max_wait = \"2 minutes\"").is_err());
    assert!(Config::from_toml("grpc_addr = \"not an address\"").is_err());
}

#[test]
fn layers_override_in_order_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("akashi.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(
        file,
        "grpc_addr = \"127.0.0.1:1001\"\nhttp_addr = \"127.0.0.1:2001\"\norigin = \"file.example/log\"\nbatch_max_entries = 10"
    )
    .unwrap();
    drop(file);

    // File alone.
    let config = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
    assert_eq!(config.grpc_addr, addr("127.0.0.1:1001"));
    assert_eq!(config.origin, "file.example/log");

    // Env beats file; keys env does not name stay from the file.
    let environment = env(&[
        ("AKASHI_GRPC_ADDR", "127.0.0.1:1002"),
        ("AKASHI_ORIGIN", "env.example/log"),
        ("PATH", "/bin"),
    ]);
    let config = Config::load(Some(&path), environment.clone(), &Overrides::default()).unwrap();
    assert_eq!(config.grpc_addr, addr("127.0.0.1:1002"));
    assert_eq!(config.http_addr, addr("127.0.0.1:2001"));
    assert_eq!(config.origin, "env.example/log");
    assert_eq!(config.batch_max_entries, 10);

    // Flags beat env.
    let flags = Overrides {
        grpc_addr: Some(addr("127.0.0.1:1003")),
        batch_max_wait: Some(Duration::from_millis(7)),
        ..Overrides::default()
    };
    let config = Config::load(Some(&path), environment, &flags).unwrap();
    assert_eq!(config.grpc_addr, addr("127.0.0.1:1003"));
    assert_eq!(config.origin, "env.example/log");
    assert_eq!(config.batch_max_wait, Duration::from_millis(7));
    assert_eq!(config.http_addr, addr("127.0.0.1:2001"));
}

#[test]
fn env_reads_every_setting() {
    let overrides = Overrides::from_env(env(&[
        ("AKASHI_GRPC_ADDR", "127.0.0.1:1"),
        ("AKASHI_HTTP_ADDR", "127.0.0.1:2"),
        ("AKASHI_ADMIN_ADDR", "127.0.0.1:3"),
        ("AKASHI_AUTHZEN_ADDR", "127.0.0.1:4"),
        ("AKASHI_FHIR_ADDR", "127.0.0.1:5"),
        ("AKASHI_DATA_DIR", "/var/lib/akashi"),
        ("AKASHI_ORIGIN", "o.example/log"),
        ("AKASHI_BATCH_MAX_ENTRIES", "5"),
        ("AKASHI_BATCH_MAX_WAIT", "1s"),
        ("AKASHI_TLS_CERT", "c.pem"),
        ("AKASHI_TLS_KEY", "k.pem"),
        ("AKASHI_TLS_CLIENT_CA", "ca.pem"),
        ("AKASHI_DISCLOSURE_THRESHOLD", "20"),
        ("AKASHI_POLICY_APPROVAL", "regulator"),
        ("AKASHI_CONFIG", "ignored.toml"),
        ("AKASHI_LOG", "debug"),
        ("AKASHI_HTTP_ADDR_TYPO", "x"),
    ]))
    .unwrap();
    assert_eq!(
        overrides,
        Overrides {
            grpc_addr: Some(addr("127.0.0.1:1")),
            http_addr: Some(addr("127.0.0.1:2")),
            admin_addr: Some(addr("127.0.0.1:3")),
            authzen_addr: Some(addr("127.0.0.1:4")),
            fhir_addr: Some(addr("127.0.0.1:5")),
            data_dir: Some("/var/lib/akashi".into()),
            origin: Some("o.example/log".into()),
            batch_max_entries: Some(5),
            batch_max_wait: Some(Duration::from_secs(1)),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_client_ca: Some("ca.pem".into()),
            disclosure_threshold: Some(20),
            witnesses: None,
            witness_quorum: None,
            policy_approval: Some(PolicyApproval::Regulator),
            ..Overrides::default()
        }
    );
    let mut config = Config::default();
    config.apply(&overrides);
    assert_eq!(config.policy_approval, PolicyApproval::Regulator);
    assert_eq!(
        config.tls,
        Some(TlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: Some("ca.pem".into()),
        })
    );
}

#[test]
fn env_errors_name_the_variable() {
    let err = Overrides::from_env(env(&[("AKASHI_GRPC_ADDR", "nowhere")])).unwrap_err();
    assert!(matches!(&err, ConfigError::Env { name, .. } if name == "AKASHI_GRPC_ADDR"));
    assert!(err.to_string().contains("`AKASHI_GRPC_ADDR`"), "{err}");
    // An empty value counts as unset.
    assert_eq!(
        Overrides::from_env(env(&[("AKASHI_GRPC_ADDR", "")])).unwrap(),
        Overrides::default()
    );
}

#[test]
fn unknown_env_lists_only_unread_akashi_names() {
    let names = unknown_env(env(&[
        ("AKASHI_GRPC_ADRR", "x"),
        ("AKASHI_TOKEN", "x"),
        ("AKASHI_ORIGIN", "x"),
        ("HOME", "x"),
    ]));
    assert_eq!(names, ["AKASHI_GRPC_ADRR", "AKASHI_TOKEN"]);
}

#[test]
fn validate_refuses_out_of_range_settings() {
    let check = |edit: &dyn Fn(&mut Config), field: &str| {
        let mut config = Config::default();
        edit(&mut config);
        let err = config.validate().unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field: f, .. } if *f == field),
            "{err}"
        );
    };
    check(&|c| c.batch_max_entries = 0, "batch_max_entries");
    check(&|c| c.batch_max_entries = 1 << 20, "batch_max_entries");
    check(
        &|c| c.batch_max_wait = Duration::from_secs(5),
        "batch_max_wait",
    );
    check(&|c| c.origin = String::new(), "origin");
    check(&|c| c.origin = "x".repeat(300), "origin");
    check(&|c| c.data_dir = PathBuf::new(), "data_dir");
    check(&|c| c.store = Some("/var/lib/akashi".into()), "store");
    check(
        &|c| c.store = Some(format!("postgres://h/{}", "d".repeat(5000))),
        "store",
    );
    check(&|c| c.standby = true, "standby");
    check(
        &|c| c.advertise_host = Some(String::new()),
        "advertise_host",
    );
    check(
        &|c| c.advertise_host = Some("evil.example/path".into()),
        "advertise_host",
    );
    check(
        &|c| c.advertise_host = Some("h".repeat(254)),
        "advertise_host",
    );
    check(
        &|c| {
            c.apply(&Overrides {
                tls_client_ca: Some("ca.pem".into()),
                ..Overrides::default()
            });
        },
        "tls.cert",
    );
}

#[test]
fn load_refuses_a_missing_file_naming_it() {
    let err = Config::load(
        Some("does-not-exist.toml".as_ref()),
        env(&[]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`does-not-exist.toml`"), "{err}");
}

#[test]
fn duration_text_parses_and_prints() {
    for (text, duration) in [
        ("2ms", Duration::from_millis(2)),
        ("500us", Duration::from_micros(500)),
        ("1s", Duration::from_secs(1)),
        ("0ms", Duration::ZERO),
    ] {
        let parsed: DurationText = text.parse().unwrap();
        assert_eq!(parsed.0, duration);
        assert_eq!(parsed.to_string(), if text == "0ms" { "0s" } else { text });
    }
    for bad in [
        "",
        "ms",
        "2",
        "2 ms",
        "-1ms",
        "1.5ms",
        "2min",
        "99999999999999999999s",
    ] {
        assert!(bad.parse::<DurationText>().is_err(), "{bad}");
    }
}

#[test]
fn the_disclosure_threshold_is_ten_by_default_and_bounded() {
    assert_eq!(Config::default().disclosure_threshold, 10);
    let config = Config::from_toml("disclosure_threshold = 5").unwrap();
    assert_eq!(config.disclosure_threshold, 5);
    for bad in [0, 1_000_001] {
        let config = Config {
            disclosure_threshold: bad,
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("`disclosure_threshold`"), "{err}");
    }
}

fn witness_vkey(name: &str, seed: u8) -> String {
    ledger::cosignature::WitnessSigner::from_seed(
        ledger::note::KeyName::new(name).unwrap(),
        &[seed; 32],
    )
    .verifier()
    .to_vkey()
}

#[test]
fn witnesses_come_from_toml_env_and_flags() {
    use super::{WitnessSpec, WitnessSpecError};
    // A key name may hold `@`: the split is after the key id.
    let (w1, w2) = (witness_vkey("w@example/1", 1), witness_vkey("w2", 2));
    let spec: WitnessSpec = format!("{w1}@http://127.0.0.1:7380/").parse().unwrap();
    assert_eq!(spec.verifier.name().as_str(), "w@example/1");
    assert_eq!(spec.url, "http://127.0.0.1:7380");
    assert_eq!(spec.to_string(), format!("{w1}@http://127.0.0.1:7380"));
    for (bad, want) in [
        (w1.clone(), WitnessSpecError::Format),
        (format!("{w1}@ftp://w.example"), WitnessSpecError::Url),
        (format!("{w1}@w.example:80"), WitnessSpecError::Url),
        (format!("{w1}@http://w.example/?q"), WitnessSpecError::Url),
        (
            "nokey@http://w.example".to_owned(),
            WitnessSpecError::Format,
        ),
    ] {
        assert_eq!(bad.parse::<WitnessSpec>(), Err(want), "{bad}");
    }
    // A log key (type 0x01) is not a witness key.
    let log_vkey =
        ledger::note::NoteSigner::from_seed(ledger::note::KeyName::new("log").unwrap(), &[1; 32])
            .verifier()
            .to_vkey();
    let err = format!("{log_vkey}@http://w.example")
        .parse::<WitnessSpec>()
        .unwrap_err();
    assert_eq!(
        err,
        WitnessSpecError::Key(ledger::note::NoteError::InvalidVerifierKey {
            problem: ledger::note::KeyProblem::UnknownAlgorithm { alg: 0x01 }
        })
    );
    assert!(err.to_string().contains("0x01"), "{err}");

    let spec: WitnessSpec = format!("{w1}@https://w.example/cosign/").parse().unwrap();
    assert_eq!(spec.url, "https://w.example/cosign");
    // The scheme is kept in lower case: `HTTPS://` is TLS too.
    let spec: WitnessSpec = format!("{w1}@HTTPS://w.example/Cosign").parse().unwrap();
    assert_eq!(spec.url, "https://w.example/Cosign");

    let config = Config::from_toml(&format!(
        "witnesses = [\"{w1}@http://a.example\", \"{w2}@https://b.example/w\"]\nwitness_quorum = 1\nwitness_ca = \"/etc/witness-ca.pem\"\n"
    ))
    .unwrap();
    assert_eq!(config.witnesses.len(), 2);
    assert_eq!(config.witnesses[1].url, "https://b.example/w");
    assert_eq!(
        config.witness_ca.as_deref(),
        Some(std::path::Path::new("/etc/witness-ca.pem"))
    );
    assert_eq!(config.quorum(), 1);
    config.validate().unwrap();

    let overrides = Overrides::from_env(env(&[
        (
            "AKASHI_WITNESSES",
            &format!("{w1}@http://a.example, {w2}@http://b.example"),
        ),
        ("AKASHI_WITNESS_QUORUM", "2"),
        ("AKASHI_WITNESS_CA", "/etc/witness-ca.pem"),
    ]))
    .unwrap();
    assert_eq!(overrides.witnesses.as_ref().map(Vec::len), Some(2));
    assert_eq!(overrides.witness_quorum, Some(2));
    assert_eq!(
        overrides.witness_ca.as_deref(),
        Some(std::path::Path::new("/etc/witness-ca.pem"))
    );
    let mut applied = Config::default();
    applied.apply(&overrides);
    assert_eq!(applied.witness_ca, overrides.witness_ca);
    assert!(
        unknown_env(env(&[
            ("AKASHI_WITNESSES", "x"),
            ("AKASHI_WITNESS_QUORUM", "1"),
            ("AKASHI_WITNESS_CA", "x")
        ]))
        .is_empty()
    );
    let err = Overrides::from_env(env(&[("AKASHI_WITNESSES", "junk")])).unwrap_err();
    assert!(err.to_string().contains("AKASHI_WITNESSES"), "{err}");

    // Without a quorum, every witness must cosign; more than there are is refused.
    let mut config = Config::default();
    config.apply(&overrides);
    assert_eq!(config.quorum(), 2);
    config.witness_quorum = None;
    assert_eq!(config.quorum(), 2);
    config.witness_quorum = Some(3);
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid {
            field: "witness_quorum",
            ..
        })
    ));
    config.witness_quorum = Some(1);
    config.witnesses[1] = config.witnesses[0].clone();
    assert!(matches!(
        config.validate(),
        Err(ConfigError::Invalid {
            field: "witnesses",
            ..
        })
    ));
}

#[test]
fn policy_approval_is_none_by_default_and_reads_from_toml_and_env() {
    assert_eq!(Config::default().policy_approval, PolicyApproval::None);
    let config = Config::from_toml("policy_approval = \"regulator\"\n").unwrap();
    assert_eq!(config.policy_approval, PolicyApproval::Regulator);
    let err = Config::from_toml("policy_approval = \"everyone\"\n").unwrap_err();
    assert!(err.to_string().contains("policy_approval"), "{err}");
    let err = Overrides::from_env(env(&[("AKASHI_POLICY_APPROVAL", "maybe")])).unwrap_err();
    assert!(err.to_string().contains("AKASHI_POLICY_APPROVAL"), "{err}");
}

#[test]
fn oidc_is_off_by_default_and_needs_an_issuer_an_audience_and_one_key_source() {
    assert_eq!(Config::default().oidc, None);
    let config = Config::from_toml(
        "[oidc]\nissuer = \"https://idp.example\"\naudience = \"akashi\"\njwks_url = \"https://idp.example/jwks\"\n",
    )
    .unwrap();
    config.validate().unwrap();
    let oidc = config.oidc.clone().unwrap();
    assert_eq!(
        (oidc.role_claim.as_str(), oidc.patient_claim.as_str()),
        ("akashi_role", "akashi_patient")
    );
    // The environment turns it on, and a key file given there replaces the file's URL.
    let overrides = Overrides::from_env(env(&[
        ("AKASHI_OIDC_JWKS_FILE", "/etc/akashi/jwks.json"),
        ("AKASHI_OIDC_ROLE_CLAIM", "roles"),
    ]))
    .unwrap();
    let mut merged = config.clone();
    merged.apply(&overrides);
    let oidc = merged.oidc.clone().unwrap();
    assert_eq!(oidc.jwks_url, None);
    assert_eq!(oidc.jwks_file, Some(PathBuf::from("/etc/akashi/jwks.json")));
    assert_eq!(oidc.role_claim, "roles");
    merged.validate().unwrap();
    let mut no_audience = Config::default();
    no_audience.apply(&Overrides {
        oidc_issuer: Some("https://idp.example".into()),
        oidc_jwks_url: Some("https://idp.example/jwks".into()),
        ..Overrides::default()
    });
    let err = no_audience.validate().unwrap_err();
    assert!(err.to_string().contains("oidc.audience"), "{err}");
    let mut no_keys = config;
    if let Some(oidc) = &mut no_keys.oidc {
        oidc.jwks_url = None;
    }
    let err = no_keys.validate().unwrap_err();
    assert!(err.to_string().contains("oidc.jwks_url"), "{err}");
    let err = Config::from_toml("[oidc]\nissuer = \"x\"\naudience = \"y\"\nsecret = \"z\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
}

/// The production profile the README shows is a configuration this build accepts.
#[test]
fn the_documented_production_profile_loads_and_validates() {
    let config = Config::from_toml(include_str!("../../docs/production.toml")).unwrap();
    config.validate().unwrap();
    assert_eq!(config.policy_approval, PolicyApproval::Regulator);
    assert_eq!(config.quorum(), 2);
    assert!(
        config
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some())
    );
    assert!(
        config
            .oidc
            .as_ref()
            .is_some_and(|oidc| oidc.jwks_url.is_some())
    );
    assert!(config.admin_addr.ip().is_loopback());
}

#[test]
fn an_oidc_key_set_url_is_https_or_loopback_and_only_one_source_is_given() {
    let with = |url: &str| {
        let mut config = Config::default();
        config.apply(&Overrides {
            oidc_issuer: Some("https://idp.example".into()),
            oidc_audience: Some("akashi".into()),
            oidc_jwks_url: Some(url.into()),
            ..Overrides::default()
        });
        config.validate()
    };
    for good in [
        "https://idp.example/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://[::1]:80/jwks",
        "http://localhost/jwks",
    ] {
        with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "http://idp.example/jwks",
        "http://10.0.0.1/jwks",
        "ftp://x/jwks",
    ] {
        let err = with(bad).unwrap_err();
        assert!(err.to_string().contains("oidc.jwks_url"), "{bad}: {err}");
    }
    let overrides = Overrides::from_env(env(&[
        ("AKASHI_OIDC_ISSUER", "https://idp.example"),
        ("AKASHI_OIDC_AUDIENCE", "akashi"),
        ("AKASHI_OIDC_JWKS_URL", "https://idp.example/jwks"),
        ("AKASHI_OIDC_JWKS_FILE", "/etc/akashi/jwks.json"),
    ]))
    .unwrap();
    let mut both = Config::default();
    both.apply(&overrides);
    let err = both.validate().unwrap_err();
    assert!(err.to_string().contains("give only one"), "{err}");
}

#[test]
fn the_store_and_standby_come_from_toml_env_and_flags() {
    let overrides = Overrides::from_env(env(&[
        ("AKASHI_STORE", "postgres://db.example/akashi"),
        ("AKASHI_STANDBY", "true"),
    ]))
    .unwrap();
    assert_eq!(
        overrides.store.as_deref(),
        Some("postgres://db.example/akashi")
    );
    assert_eq!(overrides.standby, Some(true));
    let mut config = Config::default();
    config.apply(&overrides);
    config.validate().unwrap();
    assert!(config.standby);
    let from_toml: Config =
        toml::from_str("store = \"postgresql:///akashi?host=/run/postgresql\"\nstandby = true\n")
            .unwrap();
    from_toml.validate().unwrap();
    assert_eq!(Config::default().store, None);
    assert!(!Config::default().standby);
}

#[test]
fn the_advertised_endpoints_name_the_host_and_the_bound_ports() {
    let overrides =
        Overrides::from_env(env(&[("AKASHI_ADVERTISE_HOST", "akashi-1.internal")])).unwrap();
    let mut config = Config {
        grpc_addr: "0.0.0.0:50051".parse().unwrap(),
        http_addr: "0.0.0.0:8080".parse().unwrap(),
        authzen_addr: Some("0.0.0.0:8081".parse().unwrap()),
        ..Config::default()
    };
    config.apply(&overrides);
    config.validate().unwrap();
    assert_eq!(
        config.advertised_endpoints(),
        "grpc=http://akashi-1.internal:50051 http=http://akashi-1.internal:8080 \
         authzen=http://akashi-1.internal:8081"
    );
    // Without it: the listen IP (IPv6 in brackets), or the host name for every address.
    let local = Config::default();
    assert_eq!(
        local.advertised_endpoints(),
        "grpc=http://127.0.0.1:50051 http=http://127.0.0.1:8080"
    );
    let v6 = Config {
        grpc_addr: "[::1]:50051".parse().unwrap(),
        ..Config::default()
    };
    assert!(
        v6.advertised_endpoints()
            .starts_with("grpc=http://[::1]:50051 ")
    );
    let everywhere = Config {
        grpc_addr: "0.0.0.0:50051".parse().unwrap(),
        ..Config::default()
    };
    assert!(!everywhere.advertised_endpoints().contains("0.0.0.0"));
    let bare_v6 = Config {
        advertise_host: Some("fd00::7".into()),
        ..Config::default()
    };
    assert!(
        bare_v6
            .advertised_endpoints()
            .starts_with("grpc=http://[fd00::7]:50051 ")
    );
    let from_toml: Config = toml::from_str("advertise_host = \"10.0.0.7\"\n").unwrap();
    assert_eq!(from_toml.advertise_host.as_deref(), Some("10.0.0.7"));
}

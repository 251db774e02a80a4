use std::path::PathBuf;

use super::{reflection_v1, reflection_v1alpha, tls_config};
use crate::{config::TlsConfig, error::StartError};

#[test]
fn reflection_builds_over_both_descriptor_sets() {
    let served = ["grpc.health.v1.Health", "akashi.v1.TransparencyService"];
    assert!(reflection_v1(&served).is_ok());
    assert!(reflection_v1alpha(&served).is_ok());
}

#[test]
fn missing_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "not really a key").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tls = TlsConfig {
        cert: PathBuf::from("missing-cert.pem"),
        key,
        client_ca: None,
    };
    let err = tls_config(&tls).unwrap_err();
    assert!(
        matches!(&err, StartError::TlsFile { path, .. } if path == &tls.cert),
        "{err}"
    );
    assert!(err.to_string().contains("`missing-cert.pem`"), "{err}");
}

#[test]
fn a_tls_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "not really a key").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let tls = TlsConfig {
        cert: dir.path().join("server.pem"),
        key,
        client_ca: None,
    };
    assert!(matches!(tls_config(&tls), Err(StartError::Keys(_))));
}

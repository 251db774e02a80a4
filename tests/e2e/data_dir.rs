//! Key material in the data dir: refused when exposed, reused across restarts.

use std::{fs, os::unix::fs::PermissionsExt as _};

use akashi::{auth::Role, config::Config, error::StartError, keys::KeyError, server::Server};
use proto::pb::{AuthorizeRequest, access_service_client::AccessServiceClient};
use tonic::Code;

use crate::harness::{TestServer, mint, with_token};

#[tokio::test]
async fn restart_reuses_the_keys() {
    let server = TestServer::start().await;
    let vkey = server.vkey.clone();
    let token = server.token(Role::Platform, None);
    let dir = server.stop().await;

    let server = TestServer::start_in(dir).await;
    assert_eq!(server.vkey, vkey);
    // A token minted before the restart still authenticates.
    let result = AccessServiceClient::new(server.channel().await)
        .authorize(with_token(AuthorizeRequest::default(), &token))
        .await;
    if let Err(status) = result {
        assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_existing_data_dir_open_to_others_is_closed_before_the_ledger_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // As a container volume or `install -d` leaves it.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start_in(dir).await;
    let data = server.data_dir();
    let dir = server.stop().await;
    let mode = fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the ledger's private bodies sit below the data dir"
    );
    drop(dir);
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    for file in [
        "checkpoint.skey",
        "token-issuer.key",
        "subject-pseudonym.key",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        drop(Server::open(config.clone()).unwrap());
        let path = dir.path().join(file);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Server::open(config).unwrap_err();
        assert!(
            matches!(&err, StartError::Keys(KeyError::Exposed { path: p, mode: 0o644 }) if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn token_minting_needs_an_initialised_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let err = akashi::keys::mint_token(
        dir.path(),
        Role::Platform,
        None,
        std::time::Duration::from_secs(60),
    )
    .unwrap_err();
    assert!(err.to_string().contains("token-issuer.key"), "{err}");
    // And once the server has run there, it works.
    drop(
        Server::open(Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        })
        .unwrap(),
    );
    assert!(!mint(dir.path(), Role::Platform, None).is_empty());
}

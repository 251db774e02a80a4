use std::time::Duration;

use clap::{CommandFactory as _, Parser as _};

use super::{Cli, Command};
use crate::auth::Role;

#[test]
fn command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn no_subcommand_means_serve_with_flags() {
    let cli = Cli::try_parse_from([
        "akashi",
        "--grpc-addr",
        "127.0.0.1:7000",
        "--batch-max-wait",
        "500us",
    ])
    .unwrap();
    let overrides = cli.serve_args().unwrap().overrides();
    assert_eq!(overrides.grpc_addr, Some("127.0.0.1:7000".parse().unwrap()));
    assert_eq!(overrides.batch_max_wait, Some(Duration::from_micros(500)));
    assert_eq!(overrides.http_addr, None);

    let cli = Cli::try_parse_from([
        "akashi",
        "serve",
        "--data-dir",
        "d",
        "--origin",
        "o.example/log",
    ])
    .unwrap();
    let overrides = cli.serve_args().unwrap().overrides();
    assert_eq!(overrides.data_dir, Some("d".into()));
    assert_eq!(overrides.origin.as_deref(), Some("o.example/log"));
}

#[test]
fn tls_flags_come_in_pairs() {
    assert!(Cli::try_parse_from(["akashi", "--tls-cert", "c.pem"]).is_err());
    assert!(Cli::try_parse_from(["akashi", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
}

#[test]
fn token_takes_role_patient_and_ttl() {
    let cli = Cli::try_parse_from([
        "akashi",
        "token",
        "--data-dir",
        "d",
        "--role",
        "patient",
        "--patient",
        "p-1",
        "--ttl",
        "60",
    ])
    .unwrap();
    let Some(Command::Token(args)) = cli.command else {
        panic!("expected the token command");
    };
    assert_eq!(args.role, Role::Patient);
    assert_eq!(args.patient.as_deref(), Some("p-1"));
    assert_eq!(args.ttl(), Duration::from_secs(60));
    assert!(cli.serve.config.is_none());

    let cli = Cli::try_parse_from(["akashi", "token", "--role", "platform"]).unwrap();
    let Some(Command::Token(args)) = cli.command else {
        panic!("expected the token command");
    };
    assert_eq!(args.data_dir, std::path::PathBuf::from("./akashi-data"));
    assert_eq!(args.ttl(), Duration::from_secs(3600));

    let err = Cli::try_parse_from(["akashi", "token", "--role", "admin"]).unwrap_err();
    assert!(err.to_string().contains("unknown role `admin`"), "{err}");
    assert!(Cli::try_parse_from(["akashi", "token"]).is_err());
}

#[test]
fn fsck_takes_the_data_dir_and_no_serve_flags() {
    let cli = Cli::try_parse_from(["akashi", "fsck", "--data-dir", "/srv/akashi"]).unwrap();
    assert!(cli.serve_args().is_none());
    let Some(Command::Fsck(args)) = cli.command else {
        panic!("expected fsck");
    };
    assert_eq!(args.data_dir, std::path::Path::new("/srv/akashi"));
    let err = Cli::try_parse_from(["akashi", "fsck", "--grpc-addr", "127.0.0.1:1"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
}

//! The built `akashi` binary: `akashi token` and `akashi serve` as a user runs them.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::SystemTime,
};

use akashi::{auth::Role, config::Config, keys::load_token_issuer, server::Server};

const AKASHI: &str = env!("CARGO_BIN_EXE_akashi");

fn initialised_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(
        Server::open(Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        })
        .unwrap(),
    );
    dir
}

fn token_command(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(AKASHI)
        .arg("token")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn token_prints_a_token_that_verifies() {
    let dir = initialised_data_dir();
    let verifier = load_token_issuer(dir.path()).unwrap().verifier();

    let output = token_command(dir.path(), &["--role", "platform"]);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let caller = verifier.verify(token.trim(), SystemTime::now()).unwrap();
    assert_eq!(caller.role, Role::Platform);

    let output = token_command(
        dir.path(),
        &["--role", "patient", "--patient", "p-7", "--ttl", "120"],
    );
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let caller = verifier.verify(token.trim(), SystemTime::now()).unwrap();
    assert_eq!(caller.patient_id.as_deref(), Some("p-7"));
}

#[test]
fn token_finds_the_data_dir_in_the_environment_like_serve() {
    let dir = initialised_data_dir();
    let verifier = load_token_issuer(dir.path()).unwrap().verifier();
    // From elsewhere, with the data dir only in AKASHI_DATA_DIR (as a service would set it).
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(AKASHI)
        .args(["token", "--role", "regulator"])
        .env("AKASHI_DATA_DIR", dir.path())
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let caller = verifier.verify(token.trim(), SystemTime::now()).unwrap();
    assert_eq!(caller.role, Role::Regulator);
}

#[test]
fn token_refuses_wrong_role_patient_combinations() {
    let dir = initialised_data_dir();
    for (args, message) in [
        (
            &["--role", "patient"][..],
            "role `patient` needs a patient id",
        ),
        (
            &["--role", "platform", "--patient", "p-1"][..],
            "role `platform` takes no patient id",
        ),
        (&["--role", "root"][..], "unknown role `root`"),
        (&["--role", "platform", "--ttl", "0"][..], "lifetime"),
    ] {
        let output = token_command(dir.path(), args);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn token_refuses_a_data_dir_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let output = token_command(dir.path(), &["--role", "platform"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("token-issuer.key"), "{stderr}");
}

#[test]
fn serve_prints_the_vkey_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(AKASHI)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("AKASHI_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut vkey = None;
    // The banner is a handful of lines; stop reading once the vkey is seen.
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("vkey") {
            vkey = Some(rest.trim().to_owned());
            break;
        }
    }
    let vkey = vkey.expect("no vkey line");
    assert!(vkey.starts_with("akashi.dev/log+"), "{vkey}");
    let stored = std::fs::read_to_string(data.join("checkpoint.vkey")).unwrap();
    assert_eq!(stored.trim(), vkey);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// `AKASHI_LOG_FORMAT=json`: one JSON object per line on stderr, no colour codes when stderr is
/// not a terminal; any other format is refused.
#[test]
fn serve_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(AKASHI)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("AKASHI_LOG", "info")
        .env("AKASHI_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // The first start logs the default policy set's activation.
    let mut activation = None;
    for line in lines.by_ref().take(50) {
        let line = line.unwrap();
        assert!(!line.contains('\u{1b}'), "colour code in {line:?}");
        let object: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line: {e}: {line}"));
        if object["fields"]["message"] == "activated the default policy set" {
            activation = Some(object);
            break;
        }
    }
    let activation = activation.expect("no activation line");
    assert_eq!(activation["level"], "INFO");
    assert_eq!(activation["fields"]["index"], 0);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());

    let refused = Command::new(AKASHI)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .env("AKASHI_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(
        stderr.contains("`AKASHI_LOG_FORMAT` must be `text` or `json`"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_an_exposed_key_file_naming_it() {
    let dir = initialised_data_dir();
    let path = dir.path().join("checkpoint.skey");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let output = Command::new(AKASHI)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("0644"), "{stderr}");
}

//! A damaged or keyless data dir never serves a log that differs from the last one it
//! acknowledged: a store that lost entries (damaged, truncated, deleted) and a data dir missing a
//! key file are refused at start, naming what differs; `akashi fsck` reports the same.

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::{FileExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use akashi::{
    auth::Role,
    config::Config,
    error::StartError,
    keys::KeyError,
    server::Server,
    server::{ANCHOR_FILE, LEDGER_DIR},
};
use ledger::{anchor::Anchor, log::OpenError, note::NoteVerifier};
use tempfile::TempDir;

use crate::{
    api::{Api, ask},
    harness::TestServer,
};

const AKASHI: &str = env!("CARGO_BIN_EXE_akashi");

/// Entries written through gRPC before the store is damaged.
const WRITES: usize = 120;

/// A data dir whose log holds the policy activation plus `WRITES` directory entries, written
/// through the real server, which is then stopped. Returns the dir, the data dir and the tree
/// size acknowledged.
async fn written_data_dir() -> (TempDir, PathBuf, u64) {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    for i in 0..WRITES {
        api.org(&format!("org-{i}"), "university").await;
    }
    let size = api.size().await;
    let data = server.data_dir();
    (server.stop().await, data, size)
}

fn config(data: &Path) -> Config {
    Config {
        data_dir: data.to_owned(),
        ..Config::default()
    }
}

fn open_error(data: &Path) -> StartError {
    match Server::open(config(data)) {
        Ok(_) => panic!("a damaged data dir must be refused"),
        Err(err) => err,
    }
}

fn sled_log_file(data: &Path) -> PathBuf {
    data.join(LEDGER_DIR).join("db")
}

/// How much of sled's log file holds data: sled may extend the file to a whole segment of
/// zeros, and damage there would hit nothing.
fn written_len(db: &Path) -> u64 {
    let bytes = fs::read(db).unwrap();
    bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1
}

fn anchored_size(data: &Path, verifier: &NoteVerifier) -> u64 {
    Anchor::open(&data.join(ANCHOR_FILE), verifier)
        .unwrap()
        .checkpoint()
        .unwrap()
        .checkpoint()
        .size
        .get()
}

fn verifier(data: &Path) -> NoteVerifier {
    akashi::keys::load_checkpoint_signer(data)
        .unwrap()
        .verifier()
}

#[tokio::test]
async fn a_truncated_store_is_refused_naming_both_sizes() {
    let (_dir, data, size) = written_data_dir().await;
    assert_eq!(anchored_size(&data, &verifier(&data)), size);
    truncate_to_half(&sled_log_file(&data));
    let err = open_error(&data);
    let StartError::LedgerOpen(OpenError::StoreBehindAnchor {
        store_size,
        anchored_size,
    }) = err
    else {
        panic!("expected the store behind its anchor, got {err}");
    };
    assert_eq!(anchored_size, size);
    assert!(store_size < size, "{store_size}");
    assert_eq!(
        err.to_string(),
        format!(
            "the ledger cannot be opened: the store holds {store_size} entries, but this log \
             has signed and acknowledged a checkpoint of size {size}: entries from \
             {store_size} on are missing"
        )
    );
}

#[tokio::test]
async fn a_store_with_a_flipped_byte_is_refused() {
    let (_dir, data, size) = written_data_dir().await;
    let db = sled_log_file(&data);
    let len = written_len(&db);
    let file = OpenOptions::new().read(true).write(true).open(&db).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, len / 2).unwrap();
    byte[0] ^= 0xff;
    file.write_all_at(&byte, len / 2).unwrap();
    drop(file);
    let err = open_error(&data);
    assert!(
        matches!(
            err,
            StartError::LedgerOpen(OpenError::StoreBehindAnchor { store_size, anchored_size })
                if store_size < size && anchored_size == size
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_deleted_store_is_refused_not_started_afresh() {
    let (_dir, data, size) = written_data_dir().await;
    fs::remove_file(sled_log_file(&data)).unwrap();
    let err = open_error(&data);
    assert!(
        matches!(
            err,
            StartError::LedgerOpen(OpenError::StoreEmpty { anchored_size }) if anchored_size == size
        ),
        "{err}"
    );
    // The whole ledger folder too.
    fs::remove_dir_all(data.join(LEDGER_DIR)).unwrap();
    let err = open_error(&data);
    assert!(
        matches!(
            err,
            StartError::LedgerOpen(OpenError::StoreEmpty { anchored_size }) if anchored_size == size
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_key_file_is_refused_naming_it_and_never_regenerated() {
    let (dir, data, _) = written_data_dir().await;
    for file in [
        "subject-pseudonym.key",
        "token-issuer.key",
        "checkpoint.skey",
    ] {
        let path = data.join(file);
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let err = open_error(&data);
        assert!(
            matches!(&err, StartError::Keys(KeyError::MissingForLog { path: p }) if *p == path),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "key file `{}` is missing but the data dir holds a log: the log cannot be \
                 served without it (a new key would change every pseudonym, token or \
                 checkpoint signature); restore the file",
                path.display()
            )
        );
        assert!(!path.exists(), "`{file}` was regenerated");
        fs::write(&path, saved).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    // With every key back, the same data dir serves again.
    let server = TestServer::start_in(dir).await;
    server.stop().await;
}

#[tokio::test]
async fn a_patient_opt_out_still_denies_after_restart_because_the_key_is_kept() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.consent()
        .record_opt_out(api.req(proto::pb::RecordOptOutRequest {
            patient_id: "p1".into(),
            purposes: vec!["research".into()],
            ..Default::default()
        }))
        .await
        .unwrap();
    let question = || {
        ask(
            "Organization",
            "uni",
            "secondary_use",
            "p1",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        )
    };
    assert!(!crate::api::allowed(&api.authorize(question()).await));
    let data = server.data_dir();
    let dir = server.stop().await;
    fs::remove_file(data.join("subject-pseudonym.key")).unwrap();
    // Before, a new pseudonym key was made here and the opt-out no longer applied.
    assert!(matches!(
        open_error(&data),
        StartError::Keys(KeyError::MissingForLog { .. })
    ));
    drop(dir);
}

#[tokio::test]
async fn a_fresh_data_dir_gets_a_private_ledger_and_an_anchor() {
    let server = TestServer::start().await;
    let data = server.data_dir();
    let _dir = server.stop().await;
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.join(LEDGER_DIR)), 0o700);
    assert_eq!(mode(&data.join(ANCHOR_FILE)), 0o600);
    for entry in fs::read_dir(data.join(LEDGER_DIR)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
    // The first start's policy activation is anchored.
    assert_eq!(anchored_size(&data, &verifier(&data)), 1);
}

#[tokio::test]
async fn an_older_data_dir_without_an_anchor_adopts_its_store_then_is_held_to_it() {
    let (dir, data, size) = written_data_dir().await;
    fs::remove_file(data.join(ANCHOR_FILE)).unwrap();
    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    assert_eq!(api.size().await, size);
    let dir = server.stop().await;
    assert_eq!(anchored_size(&data, &verifier(&data)), size);
    // From now on a lost store is refused.
    fs::remove_dir_all(data.join(LEDGER_DIR)).unwrap();
    let err = open_error(&data);
    assert!(
        matches!(err, StartError::LedgerOpen(OpenError::StoreEmpty { .. })),
        "{err}"
    );
    drop(dir);
}

fn fsck(data: &Path) -> std::process::Output {
    Command::new(AKASHI)
        .arg("fsck")
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn truncate_to_half(db: &Path) {
    let len = written_len(db);
    OpenOptions::new()
        .write(true)
        .open(db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

#[tokio::test]
async fn fsck_passes_an_intact_data_dir_and_names_the_first_bad_entry_of_a_damaged_one() {
    let (_dir, data, size) = written_data_dir().await;
    let output = fsck(&data);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("ok: {size} entries and ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "(size {size}) and the anchored checkpoint (size {size})"
        )),
        "{stdout}"
    );
    // Once sled has a snapshot (from the open above), it reports a truncated log as corrupt.
    truncate_to_half(&sled_log_file(&data));
    let output = fsck(&data);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        "akashi fsck: the ledger store cannot be opened: the storage engine found its files \
         corrupt\n"
    );

    // Without one, it recovers a shorter log, which the anchor refuses.
    let (_dir, data, size) = written_data_dir().await;
    truncate_to_half(&sled_log_file(&data));
    let output = fsck(&data);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let store_size: u64 = stderr
        .strip_suffix('\n')
        .and_then(|s| s.rsplit_once("first bad entry: "))
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(store_size < size, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "akashi fsck: the ledger cannot be opened: the store holds {store_size} entries, but \
             this log has signed and acknowledged a checkpoint of size {size}: entries from \
             {store_size} on are missing\nfirst bad entry: {store_size}\n"
        )
    );

    // A folder that holds no data dir cannot be checked at all.
    let empty = tempfile::tempdir().unwrap();
    let output = fsck(empty.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}

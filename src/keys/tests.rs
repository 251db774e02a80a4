use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::{Duration, SystemTime},
};

use super::{
    CHECKPOINT_KEY_FILE, CHECKPOINT_VKEY_FILE, KeyError, Keys, SUBJECT_KEY_FILE,
    SUBJECT_MAP_KEY_FILE, SubjectKey, TOKEN_ISSUER_KEY_FILE, load_token_issuer,
};
use crate::auth::Role;

const ORIGIN: &str = "akashi.test/log";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn first_start_creates_private_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = Keys::load_or_generate(&data, ORIGIN).unwrap();
    assert_eq!(mode(&data), 0o700);
    for file in [
        CHECKPOINT_KEY_FILE,
        TOKEN_ISSUER_KEY_FILE,
        SUBJECT_KEY_FILE,
        SUBJECT_MAP_KEY_FILE,
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let vkey = fs::read_to_string(data.join(CHECKPOINT_VKEY_FILE)).unwrap();
    assert_eq!(vkey.trim(), keys.verifier_key());
    assert!(keys.verifier_key().starts_with("akashi.test/log+"));
    let skey = fs::read_to_string(data.join(CHECKPOINT_KEY_FILE)).unwrap();
    assert!(skey.starts_with("PRIVATE+KEY+akashi.test/log+"));
    // Nothing is left behind by the atomic writes.
    let mut names: Vec<String> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            CHECKPOINT_KEY_FILE,
            CHECKPOINT_VKEY_FILE,
            SUBJECT_MAP_KEY_FILE,
            SUBJECT_KEY_FILE,
            TOKEN_ISSUER_KEY_FILE
        ]
    );
}

#[test]
fn restart_reuses_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    let second = Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    assert_eq!(first.verifier_key(), second.verifier_key());
    assert_eq!(
        first.token_issuer.verifying_key(),
        second.token_issuer.verifying_key()
    );
    assert_eq!(
        first.subject_key.pseudonym("p-1"),
        second.subject_key.pseudonym("p-1")
    );
    // The issuer loaded by `akashi token` is the same key.
    let token = load_token_issuer(dir.path())
        .unwrap()
        .issue(
            Role::Platform,
            None,
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
    first
        .token_issuer
        .verifier()
        .verify(&token, SystemTime::now())
        .unwrap();
}

#[test]
fn different_data_dirs_get_different_keys() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let a = Keys::load_or_generate(a.path(), ORIGIN).unwrap();
    let b = Keys::load_or_generate(b.path(), ORIGIN).unwrap();
    assert_ne!(a.verifier_key(), b.verifier_key());
    assert_ne!(a.subject_key.pseudonym("p"), b.subject_key.pseudonym("p"));
}

#[test]
fn key_files_readable_by_others_are_refused() {
    for file in [
        CHECKPOINT_KEY_FILE,
        TOKEN_ISSUER_KEY_FILE,
        SUBJECT_KEY_FILE,
        SUBJECT_MAP_KEY_FILE,
    ] {
        for bad_mode in [0o644, 0o640, 0o604, 0o660] {
            let dir = tempfile::tempdir().unwrap();
            Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
            let path = dir.path().join(file);
            fs::set_permissions(&path, fs::Permissions::from_mode(bad_mode)).unwrap();
            let err = Keys::load_or_generate(dir.path(), ORIGIN).unwrap_err();
            assert!(
                matches!(&err, KeyError::Exposed { path: p, mode } if *p == path && *mode == bad_mode),
                "{err}"
            );
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains(&format!("{bad_mode:04o}")), "{message}");
        }
    }
    // The token command refuses too.
    let dir = tempfile::tempdir().unwrap();
    Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    let path = dir.path().join(TOKEN_ISSUER_KEY_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load_token_issuer(dir.path()),
        Err(KeyError::Exposed { .. })
    ));
}

#[test]
fn token_issuer_is_not_created_by_the_token_command() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_token_issuer(dir.path()).unwrap_err();
    assert!(matches!(err, KeyError::Missing { .. }), "{err}");
    assert!(!dir.path().join(TOKEN_ISSUER_KEY_FILE).exists());
}

#[test]
fn malformed_key_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    let path = dir.path().join(SUBJECT_KEY_FILE);
    fs::write(&path, "not hex\n").unwrap();
    let err = Keys::load_or_generate(dir.path(), ORIGIN).unwrap_err();
    assert!(
        matches!(&err, KeyError::Malformed { path: p, .. } if *p == path),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    let path = dir.path().join(CHECKPOINT_KEY_FILE);
    fs::write(&path, "PRIVATE+KEY+broken\n").unwrap();
    let err = Keys::load_or_generate(dir.path(), ORIGIN).unwrap_err();
    assert!(
        matches!(&err, KeyError::CheckpointKey { path: p, .. } if *p == path),
        "{err}"
    );
    assert!(!err.to_string().contains("PRIVATE+KEY"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(TOKEN_ISSUER_KEY_FILE)).unwrap();
    fs::set_permissions(
        dir.path().join(TOKEN_ISSUER_KEY_FILE),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    assert!(Keys::load_or_generate(dir.path(), ORIGIN).is_err());
}

#[test]
fn origin_must_be_a_key_name_and_match_the_stored_key() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Keys::load_or_generate(dir.path(), "bad origin with spaces"),
        Err(KeyError::Origin { .. })
    ));
    Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    let err = Keys::load_or_generate(dir.path(), "other.example/log").unwrap_err();
    assert!(matches!(err, KeyError::OriginMismatch { .. }), "{err}");
    assert!(err.to_string().contains("`other.example/log`"), "{err}");
}

#[test]
fn pseudonym_is_hmac_sha256_of_the_patient_id() {
    let key = SubjectKey::from_bytes([0x0b; 32]);
    // Python: hmac.new(bytes([0x0b] * 32), b"patient-1", hashlib.sha256).hexdigest()
    assert_eq!(
        key.pseudonym("patient-1").to_hex(),
        "9702baeb19bd5c4acda4141b0bcf12b986aaea43271d4af50371e97354f16f15"
    );
    assert_ne!(key.pseudonym("patient-1"), key.pseudonym("patient-2"));
    assert!(!format!("{key:?}").contains("0b0b"));
}

#[test]
fn loading_the_keys_of_a_log_creates_none_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    Keys::load_or_generate(dir.path(), ORIGIN).unwrap();
    Keys::load(dir.path(), ORIGIN).unwrap();
    for file in [CHECKPOINT_KEY_FILE, TOKEN_ISSUER_KEY_FILE, SUBJECT_KEY_FILE] {
        let path = dir.path().join(file);
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let err = Keys::load(dir.path(), ORIGIN).unwrap_err();
        assert!(
            matches!(&err, KeyError::MissingForLog { path: p } if *p == path),
            "{err}"
        );
        assert!(!path.exists(), "{file} was created");
        fs::write(&path, saved).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(
        Keys::load(dir.path(), ORIGIN)
            .unwrap()
            .subject_map_key
            .is_some()
    );
    // A log older than the subject map has no VRF key: loading says so and creates none (the
    // store decides whether the log needs one).
    let path = dir.path().join(SUBJECT_MAP_KEY_FILE);
    fs::remove_file(&path).unwrap();
    assert!(
        Keys::load(dir.path(), ORIGIN)
            .unwrap()
            .subject_map_key
            .is_none()
    );
    assert!(!path.exists());
}

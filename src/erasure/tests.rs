use std::sync::Arc;

use ledger::{conformance::test_signer, store::MemoryStore, vault::KeyVault};

use super::*;

fn log_with_vault() -> (Log, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(Arc::new(MemoryStore::new()), test_signer()).unwrap();
    assert!(log.set_vault(Arc::new(KeyVault::open(dir.path()).unwrap())));
    (log, dir)
}

#[test]
fn only_consent_state_records_are_sealed_or_opened() {
    let (log, _dir) = log_with_vault();
    let vault = log.vault().unwrap().clone();
    let id = vault.allocate().unwrap();
    let pseudonym = "ab".repeat(32);
    let record = format!("subj/{pseudonym}/s").into_bytes();
    let key_of = |name: &[u8]| {
        Ok((name == seal_key_name_of(pseudonym.as_bytes()).as_slice())
            .then(|| id.to_bytes().to_vec()))
    };
    // A consent-state record is sealed, and opens again under its own name only.
    let sealed = seal_state(&log, key_of, &record, b"{\"c\":[]}")
        .unwrap()
        .unwrap();
    assert_eq!(sealed[0], SEALED_STATE);
    assert_eq!(
        open_state(&log, &record, sealed.clone()).unwrap(),
        b"{\"c\":[]}"
    );
    let other = format!("subj/{}/s", "cd".repeat(32)).into_bytes();
    assert!(open_state(&log, &other, sealed.clone()).is_err());
    // Any other value is stored and read as it is, whatever its first byte: a policy-set hash
    // starting with the sealed marker is not taken for a sealed record.
    let hash = [SEALED_STATE; 32];
    assert!(
        seal_state(&log, key_of, b"pol/hash", &hash)
            .unwrap()
            .is_none()
    );
    assert_eq!(open_state(&log, b"pol/hash", hash.to_vec()).unwrap(), hash);
    let page = format!("subj/{pseudonym}/e/\x00").into_bytes();
    assert_eq!(
        open_state(&log, &page, vec![SEALED_STATE; 8]).unwrap(),
        [SEALED_STATE; 8]
    );
    // Once the key is destroyed the record reads as refusing every purpose.
    assert!(vault.shred(id).unwrap());
    let refused = open_state(&log, &record, sealed).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&refused).unwrap();
    assert_eq!(
        state["o"].as_array().map(Vec::len),
        Some(Purpose::ALL.len()),
        "{state}"
    );
}

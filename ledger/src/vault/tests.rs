use std::{collections::HashSet, os::unix::fs::PermissionsExt as _};

use rand::rngs::OsRng;

use super::*;

fn vault_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn key_bytes(vault: &KeyVault, id: KeyId) -> [u8; 32] {
    vault.key(id).unwrap().expect("key present").0
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn vault_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyVault>();
    assert_send_sync::<BodyKey>();
}

#[test]
fn key_id_encoding() {
    let id = KeyId::new(0x0102_0304_0506_0708, [9, 10, 11, 12, 13, 14, 15, 16]);
    assert_eq!(id.slot(), 0x0102_0304_0506_0708);
    assert_eq!(id.tag(), [9, 10, 11, 12, 13, 14, 15, 16]);
    let bytes = id.to_bytes();
    assert_eq!(bytes[..8], 0x0102_0304_0506_0708u64.to_be_bytes());
    assert_eq!(KeyId::from_bytes(bytes), id);
    assert_eq!(KeyId::from_slice(&bytes), Some(id));
    assert_eq!(KeyId::from_slice(&bytes[..15]), None);
    assert_eq!(KeyId::from_slice(&[0; 17]), None);
}

#[test]
fn create_modes_and_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let vault = KeyVault::open(&dir).unwrap();
    assert_eq!(vault.path().unwrap(), vault_path(&dir));
    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    let file_mode = fs::metadata(vault.path().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(file_mode, 0o600);
    assert_eq!(fs::read(vault.path().unwrap()).unwrap(), MAGIC);
    assert!(!vault_path(&dir).with_extension("tmp").exists());
    assert_eq!(vault.next_slot(), 0);
    let debug = format!("{vault:?}");
    assert!(
        debug.contains("body-keys") && debug.contains("next_slot"),
        "{debug}"
    );
}

#[test]
fn body_key_debug_is_redacted() {
    let key = BodyKey([0xab; 32]);
    let debug = format!("{key:?}");
    assert!(!debug.contains("ab") && !debug.contains("171"), "{debug}");
}

#[test]
fn allocate_key_seal_open_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let id = vault.allocate().unwrap();
    assert_eq!(id.slot(), 0);
    assert_ne!(id.tag(), [0; 8]);
    assert_eq!(vault.next_slot(), 1);
    let key = vault.key(id).unwrap().unwrap();
    let body = b"private body about a patient";
    let sealed = seal_body(&key, id, 7, body, &mut OsRng);
    assert_eq!(sealed.len(), KeyId::LEN + 12 + body.len() + 16);
    assert_eq!(sealed_key_id(&sealed), Some(id));
    assert!(!contains(&sealed, body));
    assert_eq!(open_body(&key, 7, &sealed).unwrap(), body);
    // A key read again opens it too; an empty body seals and opens.
    let again = vault.key(id).unwrap().unwrap();
    assert_eq!(open_body(&again, 7, &sealed).unwrap(), body);
    let empty = seal_body(&key, id, 0, b"", &mut OsRng);
    assert_eq!(empty.len(), SEALED_MIN_LEN);
    assert_eq!(open_body(&key, 0, &empty).unwrap(), b"");
    // Two seals of one body differ (random nonces).
    assert_ne!(seal_body(&key, id, 7, body, &mut OsRng), sealed);
}

#[test]
fn keys_are_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    for slot in 0..64 {
        let id = vault.allocate().unwrap();
        assert_eq!(id.slot(), slot);
        assert!(ids.insert(id));
        assert!(keys.insert(key_bytes(&vault, id)));
    }
}

#[test]
fn survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, key, next) = {
        let vault = KeyVault::open(tmp.path()).unwrap();
        vault.allocate().unwrap();
        let id = vault.allocate().unwrap();
        (id, key_bytes(&vault, id), vault.next_slot())
    };
    assert_eq!(next, 2);
    let vault = KeyVault::open(tmp.path()).unwrap();
    assert_eq!(vault.next_slot(), 0);
    vault.set_floor(next);
    assert_eq!(vault.next_slot(), next);
    assert_eq!(key_bytes(&vault, id), key);
    let fresh = vault.allocate().unwrap();
    assert_eq!(fresh.slot(), next);
    assert_ne!(fresh, id);
    assert_ne!(key_bytes(&vault, fresh), key);
}

#[test]
fn open_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let err = KeyVault::open(tmp.path()).unwrap_err();
    assert!(matches!(err, VaultError::Locked { .. }), "{err:?}");
    drop(vault);
    KeyVault::open(tmp.path()).unwrap();
}

#[test]
fn shred_destroys_the_key_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let (id, key) = {
        let vault = KeyVault::open(tmp.path()).unwrap();
        let id = vault.allocate().unwrap();
        let key = key_bytes(&vault, id);
        assert!(contains(&fs::read(vault.path().unwrap()).unwrap(), &key));
        assert!(vault.shred(id).unwrap());
        assert!(vault.key(id).unwrap().is_none());
        // Idempotent.
        assert!(!vault.shred(id).unwrap());
        assert!(vault.key(id).unwrap().is_none());
        (id, key)
    };
    let raw = fs::read(vault_path(tmp.path())).unwrap();
    assert!(!contains(&raw, &key));
    assert!(!contains(&raw, &id.tag()));
    let offset = usize::try_from(slot_offset(id.slot()).unwrap()).unwrap();
    assert_eq!(raw[offset..offset + SLOT_LEN], [0; SLOT_LEN]);
    let vault = KeyVault::open(tmp.path()).unwrap();
    vault.set_floor(1);
    assert!(vault.key(id).unwrap().is_none());
    assert!(!vault.shred(id).unwrap());
}

#[test]
fn shred_leaves_other_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let ids: Vec<KeyId> = (0..3).map(|_| vault.allocate().unwrap()).collect();
    let keys: Vec<[u8; 32]> = ids.iter().map(|&id| key_bytes(&vault, id)).collect();
    let sealed = seal_body(
        &vault.key(ids[2]).unwrap().unwrap(),
        ids[2],
        1,
        b"b",
        &mut OsRng,
    );
    assert!(vault.shred(ids[1]).unwrap());
    assert!(vault.key(ids[1]).unwrap().is_none());
    assert_eq!(key_bytes(&vault, ids[0]), keys[0]);
    assert_eq!(key_bytes(&vault, ids[2]), keys[2]);
    let key = vault.key(ids[2]).unwrap().unwrap();
    assert_eq!(open_body(&key, 1, &sealed).unwrap(), b"b");
    let raw = fs::read(vault.path().unwrap()).unwrap();
    assert!(contains(&raw, &keys[0]) && contains(&raw, &keys[2]));
    assert!(!contains(&raw, &keys[1]));
}

#[test]
fn wrong_tag_finds_nothing_and_shreds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let id = vault.allocate().unwrap();
    let mut tag = id.tag();
    tag[0] ^= 1;
    let stale = KeyId::new(id.slot(), tag);
    assert!(vault.key(stale).unwrap().is_none());
    assert!(!vault.shred(stale).unwrap());
    // A zero tag never matches, not even a shredded slot.
    let zero = KeyId::new(id.slot(), [0; 8]);
    assert!(vault.key(zero).unwrap().is_none());
    assert!(vault.key(id).unwrap().is_some());
}

#[test]
fn shred_completes_a_half_shredded_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let id = vault.allocate().unwrap();
    let key = key_bytes(&vault, id);
    // A crash tore the shred: the tag is zero, the key bytes remain.
    let offset = slot_offset(id.slot()).unwrap();
    OpenOptions::new()
        .write(true)
        .open(vault.path().unwrap())
        .unwrap()
        .write_all_at(&[0; 8], offset)
        .unwrap();
    assert!(vault.key(id).unwrap().is_none());
    assert!(!vault.shred(id).unwrap());
    assert!(!contains(&fs::read(vault.path().unwrap()).unwrap(), &key));
}

#[test]
fn open_body_refuses_other_index_flipped_byte_and_wrong_key() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let id = vault.allocate().unwrap();
    let other = vault.allocate().unwrap();
    let key = vault.key(id).unwrap().unwrap();
    let sealed = seal_body(&key, id, 42, b"a private body", &mut OsRng);
    assert!(matches!(
        open_body(&key, 43, &sealed),
        Err(VaultError::Sealed)
    ));
    for i in 0..sealed.len() {
        let mut flipped = sealed.clone();
        flipped[i] ^= 0x80;
        assert!(
            matches!(open_body(&key, 42, &flipped), Err(VaultError::Sealed)),
            "byte {i}"
        );
    }
    let wrong = vault.key(other).unwrap().unwrap();
    assert!(matches!(
        open_body(&wrong, 42, &sealed),
        Err(VaultError::Sealed)
    ));
    // Malformed: too short, truncated, or naming another key.
    for len in [0, 15, 16, 28, SEALED_MIN_LEN - 1, sealed.len() - 1] {
        assert!(matches!(
            open_body(&key, 42, &sealed[..len]),
            Err(VaultError::Sealed)
        ));
    }
    let mut renamed = sealed.clone();
    renamed[..16].copy_from_slice(&other.to_bytes());
    assert!(matches!(
        open_body(&key, 42, &renamed),
        Err(VaultError::Sealed)
    ));
    assert_eq!(open_body(&key, 42, &sealed).unwrap(), b"a private body");
    assert_eq!(
        VaultError::Sealed.to_string(),
        "a sealed body failed to open"
    );
}

#[test]
fn sealed_key_id_needs_sixteen_bytes() {
    assert_eq!(sealed_key_id(&[1; 15]), None);
    assert_eq!(sealed_key_id(&[1; 16]), Some(KeyId::from_bytes([1; 16])));
}

#[test]
fn torn_tail_is_cut_off_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let vault = KeyVault::open(tmp.path()).unwrap();
        vault.allocate().unwrap()
    };
    let path = vault_path(tmp.path());
    let whole = fs::metadata(&path).unwrap().len();
    assert_eq!(whole, HEADER_LEN + BLOCK_SLOTS * SLOT_LEN_U64);
    let file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all_at(&[7; 17], whole).unwrap();
    drop(file);
    assert_eq!(fs::metadata(&path).unwrap().len(), whole + 17);
    let vault = KeyVault::open(tmp.path()).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), whole);
    assert!(vault.key(id).unwrap().is_some());
    vault.set_floor(BLOCK_SLOTS);
    let next = vault.allocate().unwrap();
    assert_eq!(next.slot(), BLOCK_SLOTS);
    assert!(vault.key(next).unwrap().is_some());
}

#[test]
fn wrong_header_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = vault_path(tmp.path());
    for contents in [
        &b""[..],
        b"akashi-keyvault",
        b"akashi-keyvault2",
        b"not a key vault at all",
    ] {
        fs::write(&path, contents).unwrap();
        let err = KeyVault::open(tmp.path()).unwrap_err();
        assert!(matches!(err, VaultError::Malformed { .. }), "{err:?}");
        // Left as it was.
        assert_eq!(fs::read(&path).unwrap(), contents);
    }
}

#[test]
fn allocate_across_a_block_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = vault_path(tmp.path());
    let vault = KeyVault::open(tmp.path()).unwrap();
    let mut ids = Vec::new();
    for slot in 0..BLOCK_SLOTS + 5 {
        let id = vault.allocate().unwrap();
        assert_eq!(id.slot(), slot);
        ids.push(id);
    }
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        HEADER_LEN + 2 * BLOCK_SLOTS * SLOT_LEN_U64
    );
    let keys: HashSet<[u8; 32]> = ids.iter().map(|&id| key_bytes(&vault, id)).collect();
    assert_eq!(keys.len(), ids.len());
    drop(vault);
    let vault = KeyVault::open(tmp.path()).unwrap();
    vault.set_floor(BLOCK_SLOTS + 5);
    for id in [ids[0], ids[1023], ids[1024], ids[1028]] {
        assert!(vault.key(id).unwrap().is_some());
    }
    assert_eq!(vault.allocate().unwrap().slot(), BLOCK_SLOTS + 5);
}

#[test]
fn set_floor_skips_slots() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    vault.set_floor(10);
    assert_eq!(vault.next_slot(), 10);
    assert_eq!(vault.allocate().unwrap().slot(), 10);
    // Never lowers the cursor.
    vault.set_floor(3);
    assert_eq!(vault.next_slot(), 11);
    assert_eq!(vault.allocate().unwrap().slot(), 11);
    // Far beyond the file: the gap is left as a hole of zeros, never handed out.
    let far = 5 * BLOCK_SLOTS + 3;
    vault.set_floor(far);
    let id = vault.allocate().unwrap();
    assert_eq!(id.slot(), far);
    assert!(vault.key(id).unwrap().is_some());
    assert_eq!(
        fs::metadata(vault.path().unwrap()).unwrap().len(),
        HEADER_LEN + (far + BLOCK_SLOTS) * SLOT_LEN_U64
    );
    let gap = KeyId::new(2 * BLOCK_SLOTS, [1; 8]);
    assert!(vault.key(gap).unwrap().is_none());
}

#[test]
fn allocate_skips_shredded_slots() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let ids: Vec<KeyId> = (0..3).map(|_| vault.allocate().unwrap()).collect();
    for &id in &ids {
        assert!(vault.shred(id).unwrap());
    }
    drop(vault);
    // A caller that forgot its floor is never handed a shredded (all-zero) key.
    let vault = KeyVault::open(tmp.path()).unwrap();
    let id = vault.allocate().unwrap();
    assert_eq!(id.slot(), 3);
    assert_ne!(key_bytes(&vault, id), [0; 32]);
}

#[test]
fn never_allocated_slot_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    let beyond = KeyId::new(10 * BLOCK_SLOTS, [1; 8]);
    assert!(vault.key(beyond).unwrap().is_none());
    assert!(!vault.shred(beyond).unwrap());
    let last = KeyId::new(u64::MAX, [1; 8]);
    assert!(vault.key(last).unwrap().is_none());
    assert!(!vault.shred(last).unwrap());
    vault.allocate().unwrap();
    assert!(vault.key(beyond).unwrap().is_none());
    assert_eq!(
        fs::metadata(vault.path().unwrap()).unwrap().len(),
        HEADER_LEN + BLOCK_SLOTS * SLOT_LEN_U64
    );
}

#[test]
fn floor_beyond_the_largest_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(tmp.path()).unwrap();
    vault.set_floor(u64::MAX);
    let err = vault.allocate().unwrap_err();
    assert!(matches!(err, VaultError::Exhausted { .. }), "{err:?}");
    assert_eq!(vault.next_slot(), u64::MAX);
}

#[test]
fn concurrent_reads_and_allocations() {
    let tmp = tempfile::tempdir().unwrap();
    let vault = std::sync::Arc::new(KeyVault::open(tmp.path()).unwrap());
    let first = vault.allocate().unwrap();
    let key = key_bytes(&vault, first);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let vault = std::sync::Arc::clone(&vault);
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for _ in 0..300 {
                    assert_eq!(key_bytes(&vault, first), key);
                    ids.push(vault.allocate().unwrap());
                }
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for thread in threads {
        for id in thread.join().unwrap() {
            assert!(all.insert(id.slot()));
        }
    }
    assert_eq!(all.len(), 1200);
    assert_eq!(vault.next_slot(), 1201);
}

#[test]
fn records_open_only_under_their_context_and_never_as_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let vault = KeyVault::open(dir.path()).unwrap();
    let id = vault.allocate().unwrap();
    let key = vault.key(id).unwrap().unwrap();
    let sealed = seal_record(&key, id, b"subj/aa/s", b"{\"c\":[]}", &mut OsRng);
    assert_eq!(sealed_key_id(&sealed), Some(id));
    assert_eq!(
        open_record(&key, b"subj/aa/s", &sealed).unwrap(),
        b"{\"c\":[]}"
    );
    // Moved to another record, or read as a body, it does not open.
    assert!(open_record(&key, b"subj/bb/s", &sealed).is_err());
    assert!(open_body(&key, 0, &sealed).is_err());
    let body = seal_body(&key, id, 0, b"body", &mut OsRng);
    assert!(open_record(&key, b"", &body).is_err());
    let mut flipped = sealed.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 1;
    }
    assert!(open_record(&key, b"subj/aa/s", &flipped).is_err());
}

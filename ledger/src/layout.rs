//! The key layout of the log's single ordered keyspace.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `e` | first leaf index (u64 BE) | a chunk of consecutive leaves (see `chunk.rs`) |
//! | `b` | first leaf index (u64 BE) | the chunk of their private bodies |
//! | `t` | tile level (u8), tile index (u64 BE) | a full tile: 510 hashes (see `tree.rs`) |
//! | `c` | tree size (u64 BE) | the signed checkpoint note for that size |
//! | `m` | `commit` | the commit record of the last batch (see `log.rs`) |
//! | `u` | first leaf index (u64 BE) | end (u64 BE) of a run of entries found durable but never acknowledged |
//! | `s` | caller-defined | derived state written by the state machine |
//!
//! Big-endian integers keep numeric order equal to key order, which the chunk lookup
//! (`last_at_or_before`) and every range scan rely on.

/// Prefix of entry chunks.
pub(crate) const ENTRIES: u8 = b'e';
/// Prefix of body chunks.
pub(crate) const BODIES: u8 = b'b';
/// Prefix of full tiles.
pub(crate) const TILES: u8 = b't';
/// Prefix of signed checkpoints.
pub(crate) const CHECKPOINTS: u8 = b'c';
/// Prefix of derived state.
pub(crate) const STATE: u8 = b's';
/// Prefix of runs of entries that recovery found durable but never acknowledged.
pub(crate) const UNACKNOWLEDGED: u8 = b'u';
/// The commit record's key.
pub(crate) const COMMIT: &[u8] = b"mcommit";

/// `prefix || index` as a 9-byte key.
pub(crate) fn indexed(prefix: u8, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The key of full tile `(level, index)`.
pub(crate) fn tile(level: u8, index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = TILES;
    key[1] = level;
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The key of state entry `key`.
pub(crate) fn state(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(STATE);
    out.extend_from_slice(key);
    out
}

/// The smallest store key after every state key.
pub(crate) fn state_end() -> Vec<u8> {
    vec![STATE + 1]
}

/// Reads the u64 after a one-byte prefix.
pub(crate) fn index_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

//! The storage trait under the log: an ordered byte-key store with one durability barrier.
//!
//! Everything the log keeps (entry chunks, body chunks, hash tiles, signed checkpoints, the
//! commit record and derived state) lives in one ordered keyspace behind [`Store`]. The trait is
//! deliberately small (point reads, ordered scans, puts, deletes and [`Store::sync`]) so that
//! other engines can sit behind it later; atomicity of a batch does not come from the engine but
//! from write ordering plus the commit record (see `log.rs`). Three implementations exist: the
//! durable sled store (feature `sled`), the PostgreSQL store (feature `postgres`) and
//! [`MemoryStore`], which can also simulate a crash.
//!
//! This module knows nothing about what the keys mean.

use std::{ops::Deref, sync::Arc};

mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sled")]
mod sled_store;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sled")]
pub use sled_store::{LOCK_WAIT, SledOptions, SledStore};

/// A value read from a store, shared with the store's cache rather than copied.
#[derive(Clone)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Arc<[u8]>),
    #[cfg(feature = "sled")]
    Sled(sled::IVec),
}

impl Bytes {
    /// Wraps shared bytes.
    pub fn from_shared(bytes: Arc<[u8]>) -> Self {
        Self(Repr::Shared(bytes))
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(bytes) => bytes,
            #[cfg(feature = "sled")]
            Repr::Sled(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// A key and its value, as returned by scans.
pub type KeyValue = (Vec<u8>, Bytes);

/// An ordered byte-key store with an explicit durability barrier.
///
/// Writes become visible to readers at once; they become durable only when [`Store::sync`]
/// returns. Implementations must keep durable writes in order: after a crash, the store holds
/// every write that a completed `sync` covered, and of the writes after it at most a prefix in
/// the order they were made.
pub trait Store: Send + Sync + 'static {
    /// Reads the value at `key`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the engine fails.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;

    /// The entry with the greatest key that is `<= key` and starts with `prefix`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the engine fails.
    fn last_at_or_before(&self, prefix: &[u8], key: &[u8]) -> Result<Option<KeyValue>, StoreError>;

    /// Up to `limit` entries with keys in `[start, end)`, in key order.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the engine fails.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;

    /// Writes `value` at `key`, replacing what was there.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the engine fails.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key` (no error when it is absent).
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the engine fails.
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;

    /// Makes every earlier write durable: it survives a killed process and a power loss.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the engine cannot promise durability; the caller must then
    /// treat the writes since the last successful sync as lost.
    fn sync(&self) -> Result<(), StoreError>;
}

/// A storage engine failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine reported an error.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A file operation failed.
    #[error("storage i/o error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The engine found its files corrupt (a damaged or truncated store).
    #[error("the storage engine found its files corrupt")]
    Corrupt,
    /// Another process took the store over (the PostgreSQL store's lease moved to a newer
    /// epoch): this one may never commit again, whatever it holds in memory.
    #[error(
        "another akashi server took this store over (our lease epoch {epoch} is no longer \
         current): this server no longer commits"
    )]
    Fenced {
        /// The epoch this process held.
        epoch: i64,
    },
    /// Another process holds the store (the PostgreSQL store's lease) and did not let it go
    /// within the wait.
    #[error(
        "another akashi server ({holder}) holds this database's lease for {seconds:.1} s more: \
         one server writes a log at a time"
    )]
    LeaseHeld {
        /// Who holds it, as that process named itself.
        holder: String,
        /// How long its lease runs still, by the database's clock.
        seconds: f64,
    },
    /// A write was refused because failure injection is armed (tests only).
    #[error("injected storage failure")]
    Injected,
}

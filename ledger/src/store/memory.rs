//! An in-memory [`Store`] for tests, with crash simulation and failure injection.
//!
//! Writes go to a volatile map at once and are copied to a durable map by [`Store::sync`].
//! [`MemoryStore::crash`] models a power loss: it keeps what the last sync covered plus a chosen
//! prefix of the writes made since, which is exactly the promise the [`Store`] trait makes. It
//! is not meant for production data: nothing leaves the process.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{Bytes, KeyValue, Store, StoreError};

/// An in-memory store. Cloning shares the same data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Number of successful writes (puts and deletes) after which writes start failing.
    fail_after: Arc<AtomicU64>,
}

/// A write not yet covered by a sync: a key and its new value (`None` for a delete).
type UnsyncedWrite = (Vec<u8>, Option<Arc<[u8]>>);

#[derive(Default)]
struct Inner {
    volatile: BTreeMap<Vec<u8>, Arc<[u8]>>,
    durable: BTreeMap<Vec<u8>, Arc<[u8]>>,
    /// Writes since the last sync, in order (`None` value = delete).
    unsynced: Vec<UnsyncedWrite>,
    syncs: u64,
    writes: u64,
    fail_sync: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let store = Self::default();
        store.fail_after.store(u64::MAX, Ordering::SeqCst);
        store
    }

    /// Simulates a power loss: the store keeps every synced write plus the first `keep` writes
    /// made since the last sync (all of them when `keep` exceeds their number).
    pub fn crash(&self, keep: usize) {
        let mut inner = self.lock();
        let unsynced = std::mem::take(&mut inner.unsynced);
        let mut state = inner.durable.clone();
        for (key, value) in unsynced.into_iter().take(keep) {
            match value {
                Some(value) => state.insert(key, value),
                None => state.remove(&key),
            };
        }
        inner.durable = state.clone();
        inner.volatile = state;
    }

    /// How many writes were made since the last sync.
    pub fn unsynced_writes(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// How many times [`Store::sync`] succeeded.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Makes every write after the next `writes` successful ones fail (`u64::MAX` disarms).
    pub fn fail_writes_after(&self, writes: u64) {
        let done = self.lock().writes;
        self.fail_after
            .store(done.saturating_add(writes), Ordering::SeqCst);
    }

    /// Makes every sync fail (or succeed again).
    pub fn fail_syncs(&self, fail: bool) {
        self.lock().fail_sync = fail;
    }

    /// Overwrites a value without going through the log, as an attacker with disk access would.
    pub fn tamper(&self, key: &[u8], value: &[u8]) {
        let mut inner = self.lock();
        let value: Arc<[u8]> = Arc::from(value);
        inner.volatile.insert(key.to_vec(), value.clone());
        inner.durable.insert(key.to_vec(), value);
    }

    /// Every key and value, in order (for tests that inspect the layout).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.lock()
            .volatile
            .iter()
            .map(|(k, v)| (k.clone(), v.to_vec()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a test thread panicked while holding it; the maps are
        // still consistent because every mutation is a single insert or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.writes >= self.fail_after.load(Ordering::SeqCst) {
            return Err(StoreError::Injected);
        }
        inner.writes += 1;
        let value: Option<Arc<[u8]>> = value.map(Arc::from);
        match &value {
            Some(v) => inner.volatile.insert(key.to_vec(), v.clone()),
            None => inner.volatile.remove(key),
        };
        inner.unsynced.push((key.to_vec(), value));
        Ok(())
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .lock()
            .volatile
            .get(key)
            .cloned()
            .map(Bytes::from_shared))
    }

    fn last_at_or_before(&self, prefix: &[u8], key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        if prefix > key {
            return Ok(None);
        }
        let inner = self.lock();
        let found = inner
            .volatile
            .range::<[u8], _>((Bound::Included(prefix), Bound::Included(key)))
            .next_back()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), Bytes::from_shared(v.clone())));
        Ok(found)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let inner = self.lock();
        Ok(inner
            .volatile
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), Bytes::from_shared(v.clone())))
            .collect())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(key, Some(value))
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.write(key, None)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.fail_sync {
            return Err(StoreError::Injected);
        }
        let unsynced = std::mem::take(&mut inner.unsynced);
        for (key, value) in unsynced {
            match value {
                Some(value) => inner.durable.insert(key, value),
                None => inner.durable.remove(&key),
            };
        }
        inner.syncs += 1;
        Ok(())
    }
}

//! The durable [`Store`] on sled 0.34.
//!
//! sled's own `flush` writes its log with `sync_file_range`, which survives a killed process
//! but not a power loss (sled issue #1452), and it never syncs the files it puts large values in
//! (`blobs/`). [`SledStore::sync`] therefore follows every flush with an `fdatasync` of the log
//! file and an `fsync` of every blob file (and the blob folder) created since the last sync, so
//! that a returned `sync` really means the data is on stable storage.
//!
//! All data lives in sled's default tree: the log layout in `log.rs` relies on one ordered
//! keyspace, not on sled's multi-tree transactions.

use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
    sync::Mutex,
};

use super::{Bytes, KeyValue, Repr, Store, StoreError};

/// How long [`SledStore::open`] waits for another handle to release the folder's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Tuning for the sled store.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Upper bound of sled's page cache, in bytes. Memory use is flat in log size because of it.
    pub cache_capacity: u64,
    /// sled's log segment size. sled writes any page image larger than a quarter of a segment
    /// to a file of its own under `blobs/` (which then needs its own fsync); 8 MiB segments keep
    /// our pages (16 KiB tiles, chunks of at most 256 KiB) inline in the log.
    pub segment_size: usize,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 256 << 20,
            segment_size: 8 << 20,
        }
    }
}

/// The sled store. Cloning is not offered: open it once and share it behind an `Arc`.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    log_file: File,
    synced_blobs: Mutex<HashSet<std::ffi::OsString>>,
}

impl SledStore {
    /// Opens (or creates) the store in folder `path`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when sled cannot open the folder (for example, when another process
    /// holds it) or its files cannot be synced.
    pub fn open(path: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity)
            .segment_size(options.segment_size)
            .mode(sled::Mode::HighThroughput)
            // We flush and sync ourselves at the end of every batch.
            .flush_every_ms(None);
        // sled releases its folder lock only when its I/O threads let go of the last handle,
        // a moment after the store is dropped: a process reopening the folder right after
        // closing it (a restart) waits for that, briefly, instead of failing.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports lock contention as an `Other` I/O error whose message is the only
                // sign of it.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(engine(e)),
            }
        };
        let log_file = File::open(path.join("db")).map_err(|source| StoreError::Io {
            context: "opening the sled log file to sync it",
            source,
        })?;
        let store = Self {
            db,
            path: path.to_path_buf(),
            log_file,
            synced_blobs: Mutex::new(HashSet::new()),
        };
        // Make the creation of sled's files themselves durable.
        sync_dir(path)?;
        store.sync_new_blobs()?;
        Ok(store)
    }

    /// Syncs blob files that appeared since the last call, then their folder.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let dir = self.path.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    context: "listing sled blobs",
                    source,
                });
            }
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                context: "listing sled blobs",
                source,
            })?;
            let name = entry.file_name();
            if synced.contains(&name) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(file) => file.sync_all().map_err(|source| StoreError::Io {
                    context: "syncing a sled blob",
                    source,
                })?,
                // sled removes blobs it no longer needs; a vanished one needs no sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        context: "opening a sled blob to sync it",
                        source,
                    });
                }
            }
            synced.insert(name);
            any = true;
        }
        if any {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.db.get(key).map_err(engine)?.map(sled_bytes))
    }

    fn last_at_or_before(&self, prefix: &[u8], key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.db.range(prefix..=key).next_back() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(engine)?;
                if !k.starts_with(prefix) {
                    return Ok(None);
                }
                Ok(Some((k.to_vec(), sled_bytes(v))))
            }
        }
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self.db.range(start..end).take(limit) {
            let (k, v) = item.map_err(engine)?;
            out.push((k.to_vec(), sled_bytes(v)));
        }
        Ok(out)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.insert(key, value).map_err(engine)?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.db.remove(key).map_err(engine)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(engine)?;
        self.log_file.sync_data().map_err(|source| StoreError::Io {
            context: "fdatasync of the sled log",
            source,
        })?;
        self.sync_new_blobs()
    }
}

fn sled_bytes(value: sled::IVec) -> Bytes {
    Bytes(Repr::Sled(value))
}

fn engine(err: sled::Error) -> StoreError {
    StoreError::Engine(err.to_string())
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| StoreError::Io {
            context: "syncing a folder",
            source,
        })
}

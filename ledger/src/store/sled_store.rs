//! The durable [`Store`] on sled 0.34.
//!
//! sled's own `flush` writes its log with `sync_file_range`, which survives a killed process
//! but not a power loss (sled issue #1452), and it never syncs the files it puts large values in
//! (`blobs/`). [`SledStore::sync`] therefore follows every flush with an `fdatasync` of the log
//! file and an `fsync` of every blob file (and the blob folder) created since the last sync, so
//! that a returned `sync` really means the data is on stable storage.
//!
//! Listing `blobs/` on every sync cost a third of the sync thread's time under load, on the path
//! of every acknowledgement, although blobs are rare. A sync therefore first looks at the
//! folder's modification time, which every file created in it changes: when it equals the time
//! seen at the last listing, nothing was created since and the listing is skipped. Because file
//! system timestamps are coarse (a clock tick), equality is trusted only for a folder that had
//! been unchanged for a second (`QUIET`) when it was listed; a folder changed more recently is
//! listed again at every sync until it has been quiet that long.
//!
//! A blob file is created and written by whichever thread makes sled write that page — our
//! writer, staging the next batch, while the syncer syncs the previous one — so a listing can
//! find a blob that is still being written. Such a blob is synced but not marked as synced (and
//! the folder is listed again at the next sync) until it is whole: sled 0.34 writes a blob as
//! `crc32 (LE) || kind || data`, the checksum covering the rest, and a file whose checksum does
//! not match is not finished. Were the format ever different, every blob would just be synced
//! at every sync: slower, never less durable.
//!
//! The store's folder is created 0700 and every file and folder sled made in it is set to
//! 0600/0700 at open (sled creates them with the process umask, and the crate forbids the
//! `unsafe` a umask change would need): private bodies live here. Files sled creates later are
//! covered by the folder's mode until the next open.
//!
//! All data lives in sled's default tree: the log layout in `log.rs` relies on one ordered
//! keyspace, not on sled's multi-tree transactions.

use std::{
    collections::HashSet,
    fs::{self, File},
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use super::{Bytes, KeyValue, Repr, Store, StoreError};

/// How long [`SledStore::open`] waits for another handle to release the folder's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `blobs/` must have been unchanged before its modification time is trusted to show
/// a new file (far above any file system's timestamp granularity).
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

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
    blobs: Mutex<BlobsSeen>,
}

/// What the last listing of `blobs/` found.
#[derive(Default)]
struct BlobsSeen {
    /// Blob files synced so far.
    synced: HashSet<std::ffi::OsString>,
    /// The folder's modification time at the last listing, kept only if the folder had been
    /// quiet for `QUIET` by then: while the folder still shows it, no file was created since.
    quiet_mtime: Option<SystemTime>,
    /// Listings done, for tests.
    listings: u64,
    /// `blobs/`, once it exists (sled never removes it).
    folder: Option<File>,
}

impl SledStore {
    /// Opens (or creates) the store in folder `path`.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when sled cannot open the folder (for example, when another process
    /// holds it) or its files cannot be synced.
    pub fn open(path: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        make_private_dir(path)?;
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
            blobs: Mutex::new(BlobsSeen::default()),
        };
        make_private_files(path)?;
        // Make the creation of sled's files themselves durable.
        sync_dir(path)?;
        store.sync_new_blobs()?;
        Ok(store)
    }

    /// Syncs blob files that appeared since the last call, then their folder.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let dir = self.path.join("blobs");
        let mut seen = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        // Kept open: a sync reads the time through the handle, without a path lookup.
        let folder = match seen.folder.take() {
            Some(folder) => folder,
            None => match unless_absent(File::open(&dir), "opening the sled blob folder")? {
                Some(folder) => folder,
                None => return Ok(()),
            },
        };
        let mtime = folder.metadata().and_then(|meta| meta.modified());
        seen.folder = Some(folder);
        let mtime = mtime.map_err(|source| StoreError::Io {
            context: "reading the sled blob folder's modification time",
            source,
        })?;
        if seen.quiet_mtime == Some(mtime) {
            return Ok(());
        }
        // The modification time was read before listing: a file created during the listing
        // either is listed or changes the time again.
        let quiet = SystemTime::now()
            .duration_since(mtime)
            .is_ok_and(|age| age >= QUIET);
        seen.quiet_mtime = None;
        seen.listings += 1;
        let Some(entries) = unless_absent(std::fs::read_dir(&dir), "listing sled blobs")? else {
            return Ok(());
        };
        let synced = &mut seen.synced;
        let mut any = false;
        let mut unfinished = false;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                context: "listing sled blobs",
                source,
            })?;
            let name = entry.file_name();
            if synced.contains(&name) {
                continue;
            }
            // sled removes blobs it no longer needs; a vanished one needs no sync.
            let Some(mut file) =
                unless_absent(File::open(entry.path()), "opening a sled blob to sync it")?
            else {
                continue;
            };
            let whole = unless_absent(blob_is_whole(&mut file), "reading a sled blob")?;
            file.sync_all().map_err(|source| StoreError::Io {
                context: "syncing a sled blob",
                source,
            })?;
            any = true;
            if whole == Some(true) {
                synced.insert(name);
            } else {
                // Still being written: sync it again, whole, at a later sync.
                unfinished = true;
            }
        }
        if any {
            sync_dir(&dir)?;
        }
        if quiet && !unfinished {
            seen.quiet_mtime = Some(mtime);
        }
        Ok(())
    }

    /// How many times `blobs/` was listed, and how many blob files were synced.
    #[cfg(test)]
    fn blob_listings(&self) -> (u64, usize) {
        let seen = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        (seen.listings, seen.synced.len())
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.db.get(key).map_err(engine)?.map(sled_bytes))
    }

    fn last_at_or_before(&self, prefix: &[u8], key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        if prefix > key {
            return Ok(None);
        }
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
    match err {
        sled::Error::Corruption { .. } => StoreError::Corrupt,
        other => StoreError::Engine(other.to_string()),
    }
}

/// Creates `path` (and its parents) 0700, and closes an existing one to other users.
fn make_private_dir(path: &Path) -> Result<(), StoreError> {
    let failed = |source| StoreError::Io {
        context: "creating or securing the store folder",
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(failed)?;
    restrict(path, 0o700).map_err(failed)
}

/// Sets every file below `path` to 0600 and every folder to 0700.
fn make_private_files(path: &Path) -> Result<(), StoreError> {
    let failed = |source| StoreError::Io {
        context: "restricting the store's files to their owner",
        source,
    };
    for entry in fs::read_dir(path).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let kind = entry.file_type().map_err(failed)?;
        if kind.is_dir() {
            restrict(&entry.path(), 0o700).map_err(failed)?;
            make_private_files(&entry.path())?;
        } else if kind.is_file() {
            restrict(&entry.path(), 0o600).map_err(failed)?;
        }
    }
    Ok(())
}

/// Sets `path`'s permission bits to `mode` unless they already are.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = fs::symlink_metadata(path)?.permissions().mode() & 0o777;
    if current != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Whether a sled blob file is completely written: its leading CRC-32 (little-endian) matches
/// the bytes after it.
fn blob_is_whole(file: &mut File) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some((crc, rest)) = bytes.split_first_chunk::<4>() else {
        return Ok(false);
    };
    Ok(!rest.is_empty() && crc32fast::hash(rest) == u32::from_le_bytes(*crc))
}

/// `Ok(None)` for a file or folder that does not exist, the I/O error with `context` otherwise.
fn unless_absent<T>(
    result: std::io::Result<T>,
    context: &'static str,
) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { context, source }),
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| StoreError::Io {
            context: "syncing a folder",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets the modification time of `blobs/`, so that the test does not depend on how long
    /// its steps take.
    fn set_blob_folder_time(path: &Path, time: SystemTime) {
        File::open(path.join("blobs"))
            .and_then(|dir| dir.set_modified(time))
            .expect("set the blob folder's modification time");
    }

    /// A store with small segments, so that a 200 KiB value goes to a blob file of its own,
    /// holding one such value, synced.
    fn store_with_one_blob() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SledOptions {
            segment_size: 256 << 10,
            ..SledOptions::default()
        };
        let store = SledStore::open(dir.path(), &options).expect("open");
        store.put(b"big-1", &vec![1u8; 200 << 10]).expect("put");
        store.sync().expect("sync");
        (dir, store)
    }

    #[test]
    fn a_blob_still_being_written_is_synced_again_until_it_is_whole() {
        // A real blob first, so that the folder exists and one whole blob is known.
        let (dir, store) = store_with_one_blob();
        assert_eq!(store.blob_listings().1, 1);

        // A blob as sled leaves it halfway through writing: the checksum is there, the data
        // not yet.
        let data = vec![9u8; 4096];
        let mut whole = crc32fast::hash(&data).to_le_bytes().to_vec();
        whole.extend_from_slice(&data);
        let path = dir.path().join("blobs").join("999999");
        std::fs::write(&path, &whole[..100]).expect("write a partial blob");
        // Even with an old folder time (which would let the next sync skip the listing).
        set_blob_folder_time(dir.path(), SystemTime::now() - QUIET * 60);
        store.sync().expect("sync");
        let (listings, synced) = store.blob_listings();
        assert_eq!(synced, 1, "a partial blob does not count as synced");
        store.sync().expect("sync");
        assert_eq!(
            store.blob_listings().0,
            listings + 1,
            "the folder is listed again while a blob is unfinished"
        );

        // Once whole (sled finished writing it), the next sync syncs it for good.
        std::fs::write(&path, &whole).expect("finish the blob");
        store.sync().expect("sync");
        assert_eq!(store.blob_listings().1, 2, "the finished blob is synced");
        // And then the quiet folder is skipped again.
        set_blob_folder_time(dir.path(), SystemTime::now() - QUIET * 60);
        store.sync().expect("sync");
        let (quiet, _) = store.blob_listings();
        store.sync().expect("sync");
        assert_eq!(store.blob_listings().0, quiet, "listing skipped");
    }

    #[test]
    fn a_quiet_blob_folder_is_not_listed_again_and_a_new_blob_is_still_synced() {
        let (dir, store) = store_with_one_blob();
        let (_, synced) = store.blob_listings();
        assert_eq!(synced, 1, "the first blob is synced");

        // A folder changed recently is listed at every sync.
        set_blob_folder_time(dir.path(), SystemTime::now() + QUIET * 60);
        store.sync().expect("sync");
        let (before, _) = store.blob_listings();
        store.sync().expect("sync");
        let (after, _) = store.blob_listings();
        assert_eq!(
            after,
            before + 1,
            "a recently changed folder is listed again"
        );

        // Once quiet, a sync that finds it unchanged skips the listing...
        set_blob_folder_time(dir.path(), SystemTime::now() - QUIET * 60);
        store.sync().expect("sync");
        let (quiet_listing, _) = store.blob_listings();
        store.put(b"small", b"x").expect("put");
        store.sync().expect("sync");
        store.sync().expect("sync");
        assert_eq!(store.blob_listings().0, quiet_listing, "listing skipped");

        // ...and a new blob file changes the folder's time, so it is found and synced.
        store.put(b"big-2", &vec![2u8; 200 << 10]).expect("put");
        store.sync().expect("sync");
        let (listings, synced) = store.blob_listings();
        assert!(listings > quiet_listing, "the new blob was noticed");
        assert_eq!(synced, 2, "both blobs are synced");
    }
}

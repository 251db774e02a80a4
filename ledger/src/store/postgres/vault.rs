//! The key vault (`crate::vault`) kept in the PostgreSQL database under the log, so that every
//! server of a log on PostgreSQL reaches the same keys: a server that takes the store over from
//! another (on another machine) can open the bodies the other sealed.
//!
//! **Layout.** `akashi_vault (slot bigint PRIMARY KEY, tag bytea, key bytea)`, a row per slot,
//! apart from `akashi_kv`: `akashi store copy` copies the log's records, not this table.
//!
//! **Writes.** A block of new keys is one statement that inserts only while the store's lease
//! still shows this server's epoch (read `FOR SHARE`, as a commit does): a server that lost the
//! store adds no keys. Rows a replaced server inserted are kept (`ON CONFLICT DO NOTHING`): they
//! were never handed out in a committed batch, so reusing them is harmless, as for a file vault
//! after a crash. `synchronous_commit = on` (forced on every connection) makes a block durable
//! before a key of it is handed out.
//!
//! **Shredding** overwrites the row with zeros, then runs `VACUUM` on the table so that the old
//! row version, which still holds the key, is pruned. `VACUUM` keeps a dead row version that an
//! older snapshot can still see (a long transaction, a running `pg_dump`, a standby with
//! `hot_standby_feedback`, a replication slot) until a later vacuum, and pruning does not wipe
//! the freed bytes of the page until they are reused. What the database cannot take back at all: the key stays in the write-ahead log until its segments are recycled, in
//! WAL archives and in every base backup or dump taken before the shred, until those expire.
//! Operators keep such backups on terms no longer than the erasure deadline, or exclude the
//! table from logical dumps (`pg_dump --exclude-table=akashi_vault`) and back it up apart.
//!
//! **Reads.** Keys this server read are kept in memory (bounded), because a decision opens and
//! seals several records under its patient's key and a round trip each would cost more than
//! the decision. Sound while this server holds the lease: shreds are carried out by the lease
//! holder (an erasure is finished by the server that logged it, or by the next one to open the
//! log), a shred drops the key from memory before its row is overwritten, and a read that raced
//! a shred is not kept. Once the lease may have been lost (fenced, or no renewal reached the
//! database for its lifetime) memory is dropped and every read goes to the database. Shreds
//! themselves are not fenced: a server finishing an erasure that was logged may always destroy
//! the key, and doing it twice is harmless.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use zeroize::Zeroizing;

use super::{PostgresStore, pg_error, pool_error};
use crate::{
    store::StoreError,
    vault::{SLOT_LEN, SlotStore, VaultError},
};

/// Most keys kept in memory (about 48 bytes each); the whole set is dropped when it is full.
const CACHED_KEYS: usize = 1 << 16;

/// The slots of a key vault in the database of a [`PostgresStore`], for
/// [`crate::vault::KeyVault::with_slots`].
pub struct PostgresSlots {
    store: Arc<PostgresStore>,
    cache: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    slots: HashMap<u64, Zeroizing<[u8; SLOT_LEN]>>,
    /// Bumped by every shred: a slot read from the database while a shred ran is not kept.
    shreds: u64,
}

impl std::fmt::Debug for PostgresSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSlots")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl PostgresSlots {
    /// The vault of `store`'s database.
    pub fn new(store: Arc<PostgresStore>) -> Self {
        Self {
            store,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, KeyCache> {
        // Every mutation is a whole insert, remove or clear.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, context: &'static str) -> impl Fn(StoreError) -> VaultError + '_ {
        move |err| match err {
            StoreError::Fenced { epoch } => VaultError::Fenced { epoch },
            other => VaultError::Database {
                location: self.location(),
                context,
                message: other.to_string(),
            },
        }
    }
}

/// A slot number as the table's `bigint`.
fn sql_slot(slot: u64) -> Result<i64, VaultError> {
    i64::try_from(slot).map_err(|_| VaultError::Exhausted { slot })
}

impl SlotStore for PostgresSlots {
    fn location(&self) -> String {
        "the PostgreSQL table `akashi_vault`".to_owned()
    }

    fn count(&self) -> Result<u64, VaultError> {
        let pool = self.store.pool.clone();
        let count = self
            .store
            .run(async move {
                let client = pool.get().await.map_err(pool_error)?;
                let row = client
                    .query_one("SELECT coalesce(max(slot) + 1, 0) FROM akashi_vault", &[])
                    .await
                    .map_err(pg_error)?;
                row.try_get::<_, i64>(0).map_err(pg_error)
            })
            .map_err(self.failed("counting its slots"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn read(&self, slot: u64) -> Result<Zeroizing<[u8; SLOT_LEN]>, VaultError> {
        // Memory is trusted only while this server surely holds the lease: once it may have
        // been replaced (a pause, a partition), another server may have shredded a key since.
        let lease = self.store.lease();
        let trusted = !lease.fenced && !lease.lapsed;
        let shreds = {
            let mut cache = self.cache();
            if !trusted {
                cache.slots.clear();
            } else if let Some(bytes) = cache.slots.get(&slot) {
                return Ok(bytes.clone());
            }
            cache.shreds
        };
        let pool = self.store.pool.clone();
        let at = sql_slot(slot)?;
        let row = self
            .store
            .run(async move {
                let client = pool.get().await.map_err(pool_error)?;
                let statement = client
                    .prepare_cached("SELECT tag || key FROM akashi_vault WHERE slot = $1")
                    .await
                    .map_err(pg_error)?;
                let row = client
                    .query_opt(&statement, &[&at])
                    .await
                    .map_err(pg_error)?;
                row.map(|row| row.try_get::<_, Vec<u8>>(0).map(Zeroizing::new))
                    .transpose()
                    .map_err(pg_error)
            })
            .map_err(self.failed("reading a key"))?;
        let mut bytes = Zeroizing::new([0u8; SLOT_LEN]);
        match row {
            // A slot never written (below a block appended further on) reads as zeros.
            None => {}
            Some(stored) if stored.len() == SLOT_LEN => bytes.copy_from_slice(&stored),
            Some(_) => {
                return Err(VaultError::Database {
                    location: self.location(),
                    context: "reading a key",
                    message: format!("slot {slot} is not {SLOT_LEN} bytes long"),
                });
            }
        }
        let mut cache = self.cache();
        if trusted && cache.shreds == shreds {
            if cache.slots.len() >= CACHED_KEYS {
                cache.slots.clear();
            }
            cache.slots.insert(slot, bytes.clone());
        }
        Ok(bytes)
    }

    fn read_range(&self, first: u64, count: u64) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let (low, high) = (sql_slot(first)?, sql_slot(first.saturating_add(count))?);
        let len = usize::try_from(count)
            .ok()
            .and_then(|count| count.checked_mul(SLOT_LEN))
            .ok_or(VaultError::Exhausted { slot: first })?;
        let pool = self.store.pool.clone();
        let rows = self
            .store
            .run(async move {
                let client = pool.get().await.map_err(pool_error)?;
                let rows = client
                    .query(
                        "SELECT slot, tag || key FROM akashi_vault
                         WHERE slot >= $1 AND slot < $2 ORDER BY slot",
                        &[&low, &high],
                    )
                    .await
                    .map_err(pg_error)?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get::<_, i64>(0)?,
                            Zeroizing::new(row.try_get::<_, Vec<u8>>(1)?),
                        ))
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(pg_error)
            })
            .map_err(self.failed("reading keys"))?;
        // Slots never written read as zeros, as for a single read.
        let mut out = Zeroizing::new(vec![0u8; len]);
        for (slot, bytes) in rows {
            let at = usize::try_from(slot - low)
                .ok()
                .and_then(|i| i.checked_mul(SLOT_LEN));
            let place = at.and_then(|at| out.get_mut(at..at + SLOT_LEN));
            match place {
                Some(place) if bytes.len() == SLOT_LEN => place.copy_from_slice(&bytes),
                _ => {
                    return Err(VaultError::Database {
                        location: self.location(),
                        context: "reading keys",
                        message: format!("slot {slot} is not {SLOT_LEN} bytes long"),
                    });
                }
            }
        }
        Ok(out)
    }

    fn append(&self, _stored: u64, first: u64, block: &[u8]) -> Result<(), VaultError> {
        let mut slots = Vec::new();
        let mut tags = Vec::new();
        let mut keys = Vec::new();
        for (i, bytes) in block.chunks_exact(SLOT_LEN).enumerate() {
            let offset = u64::try_from(i).map_err(|_| VaultError::Exhausted { slot: first })?;
            let slot = first
                .checked_add(offset)
                .ok_or(VaultError::Exhausted { slot: first })?;
            slots.push(sql_slot(slot)?);
            let (tag, key) = bytes.split_at(8);
            tags.push(Zeroizing::new(tag.to_vec()));
            keys.push(Zeroizing::new(key.to_vec()));
        }
        let pool = self.store.pool.clone();
        let epoch = self.store.lease.epoch;
        let lease = self.store.lease.clone();
        self.store
            .run(async move {
                let tags: Vec<&[u8]> = tags.iter().map(|t| t.as_slice()).collect();
                let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                let client = pool.get().await.map_err(pool_error)?;
                let row = client
                    .query_one(
                        "WITH lease AS (
                             SELECT epoch FROM akashi_lease WHERE id = 1 AND epoch = $1 FOR SHARE
                         ), inserted AS (
                             INSERT INTO akashi_vault (slot, tag, key)
                             SELECT s, t, k FROM unnest($2::bigint[], $3::bytea[], $4::bytea[])
                                 AS b(s, t, k)
                             WHERE EXISTS (SELECT 1 FROM lease)
                             ON CONFLICT (slot) DO NOTHING
                             RETURNING 1
                         )
                         SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM inserted)",
                        &[&epoch, &slots, &tags, &keys],
                    )
                    .await
                    .map_err(pg_error)?;
                let held: i64 = row.try_get(0).map_err(pg_error)?;
                if held != 1 {
                    lease
                        .fenced
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return Err(StoreError::Fenced { epoch });
                }
                Ok(())
            })
            .map_err(self.failed("adding a block of keys"))
    }

    fn zero(&self, slot: u64) -> Result<(), VaultError> {
        {
            let mut cache = self.cache();
            cache.shreds += 1;
            cache.slots.remove(&slot);
        }
        let pool = self.store.pool.clone();
        let at = sql_slot(slot)?;
        let zeroed = self.store.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE akashi_vault SET tag = $2, key = $3 WHERE slot = $1",
                    &[&at, &[0u8; 8].as_slice(), &[0u8; 32].as_slice()],
                )
                .await
                .map_err(pg_error)?;
            // The overwritten row version still holds the key until VACUUM removes it.
            if let Err(err) = client.batch_execute("VACUUM akashi_vault").await {
                tracing::warn!(
                    cause = %pg_error(err),
                    "VACUUM after a shred failed: the old key stays in a dead row version \
                     until the table is vacuumed"
                );
            }
            Ok(())
        });
        {
            let mut cache = self.cache();
            cache.shreds += 1;
            cache.slots.remove(&slot);
        }
        zeroed.map_err(self.failed("overwriting a key"))
    }
}

//! The [`Store`] on PostgreSQL: the log's ordered keyspace as one table, for operators who keep
//! their data on a database engine they already run, back up and replicate.
//!
//! **Layout.** One table, `akashi_kv (k bytea PRIMARY KEY, v bytea)`: PostgreSQL compares
//! `bytea` byte by byte, which is exactly the order the log's layout relies on. The schema is
//! created and migrated by the store itself (`akashi_schema_migrations` records the versions
//! applied; a database migrated by a newer akashi is refused rather than misread).
//!
//! **Writes and durability.** [`Store::put`] and [`Store::delete`] only record the write in an
//! in-memory overlay, which every read consults before the database, so writes are visible at
//! once as the trait requires. [`Store::sync`] commits everything recorded since the last sync in
//! one statement, so one transaction and one round trip (a multi-row upsert and a delete, guarded
//! by the lease below), with `synchronous_commit = on` forced on
//! every connection, so a returned sync means the database has the writes on stable storage (and
//! on its synchronous standbys, when the operator configured any). A transaction is all or
//! nothing, which is the prefix the trait promises after a crash. While one sync commits, new
//! writes gather for the next: the writer stages batch N+1 while batch N commits, as on sled.
//! A failed commit leaves the store unable to commit again: its statement may still be running
//! on the server (a timeout does not stop it) and could land after a retry, undoing the retry's
//! writes. The log is poisoned by a failed sync anyway and reopened (`akashi::supervisor`); the
//! new store's lease takes a new epoch, which waits for such a statement and fences any later
//! one.
//!
//! **One writer, fenced.** Two processes writing one log would fork it. Opening the store takes
//! the database's lease (`akashi_lease`: one row with an epoch, a holder and an expiry on the
//! database's clock): only when it is free or expired, bumping the epoch. A background task
//! renews it. Every sync's statement reads the lease row with its epoch (`FOR SHARE`, so a
//! takeover waits for the commit or the commit sees the takeover) and writes nothing under any
//! other: a writer that was paused, cut off or replaced can never commit again, whatever it
//! believes.
//!
//! **Reads.** Besides the overlay, point reads are answered from a bounded cache of values this
//! process read or committed (and of keys it found absent): sound because, while it holds the
//! lease, only its own commits change the table, and they update the cache as they land. Hot
//! statements are prepared once per connection.
//! Dropping the store releases the lease, so a restart does not wait for it to expire.
//!
//! **Threads.** The trait is synchronous and is called from plain threads and from inside tokio
//! tasks alike; the client is asynchronous. The store therefore owns a small runtime of its own
//! and each call waits on a plain channel for its task there (never `block_on`, which would panic
//! inside a caller's runtime); on a worker of a caller's multi-threaded runtime it waits inside
//! `block_in_place`, so the caller's other tasks are not held up by the database. Connections
//! come from a `deadpool-postgres` pool.
//!
//! **TLS.** `sslrootcert=FILE` in the URL's query (the CA, PEM, that signed the database's
//! certificate) makes every connection TLS (rustls), with the certificate verified against that
//! CA and the URL's host name: `sslmode` is then `require` (`prefer`, the client default, would
//! fall back to plaintext) and `disable` is refused. `sslmode=require` without `sslrootcert` is
//! refused rather than connecting to a server it cannot verify. Without either, connections are
//! plaintext: for a Unix socket or a private network.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    ops::Bound,
    str::FromStr as _,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{Bytes, KeyValue, Store, StoreError};

#[cfg(feature = "test-util")]
pub mod testing;
pub mod vault;

/// Most calls at once that wait in `block_in_place` (the others block their thread plainly).
const MAX_HANDED_OFF: usize = 8;

/// The schema versions this build knows, in order: each is applied once, in a transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE akashi_kv (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE akashi_lease (
         id integer PRIMARY KEY CHECK (id = 1),
         epoch bigint NOT NULL,
         holder text NOT NULL,
         expires_at timestamptz NOT NULL
     );
     INSERT INTO akashi_lease (id, epoch, holder, expires_at) VALUES (1, 0, '', '-infinity');",
    ),
    (
        2,
        "CREATE TABLE akashi_vault (
             slot bigint PRIMARY KEY CHECK (slot >= 0),
             tag bytea NOT NULL,
             key bytea NOT NULL
         );
         ALTER TABLE akashi_lease ADD COLUMN endpoint text NOT NULL DEFAULT '';",
    ),
];

/// Serialises schema migrations between processes (`pg_advisory_xact_lock`); the bytes spell
/// "akashi" so that no other application's lock is likely to share it.
const MIGRATION_LOCK: i64 = 0x616b_6173_6869;

/// Whether `spec` names a PostgreSQL database (`postgres://…` or `postgresql://…`).
pub fn is_postgres_url(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// Tuning for the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections open at once.
    pub pool_size: usize,
    /// How long a lease lasts without renewal: after a crash, another process can take the
    /// store over after at most this long. Renewed every quarter of it.
    pub lease_ttl: Duration,
    /// How long [`PostgresStore::open`] waits for a held lease to be released or to expire.
    pub lease_wait: Duration,
    /// Longest wait for one database operation (a connection, a query, a commit); an operation
    /// that takes longer fails, and a sync that fails is never an acknowledgement.
    pub operation_timeout: Duration,
    /// Who holds the lease, as shown to another process that finds it held.
    pub holder: String,
    /// Where the holder serves, recorded with the lease for other servers of the log (followers
    /// forward calls there); opaque to the store.
    pub endpoint: String,
    /// Bytes of values kept to answer point reads without a round trip (0: none).
    pub cache_bytes: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 4,
            lease_ttl: Duration::from_secs(6),
            lease_wait: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            holder: default_holder(),
            endpoint: String::new(),
            cache_bytes: 64 << 20,
        }
    }
}

/// `hostname:pid`, or just the pid where the host name cannot be read.
fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        format!("pid {}", std::process::id())
    } else {
        format!("{host}:{}", std::process::id())
    }
}

/// The lease as the database shows it to anyone: [`PostgresStore::holder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The epoch of the newest lease taken.
    pub epoch: i64,
    /// Who took it ([`PostgresOptions::holder`]).
    pub holder: String,
    /// Where it serves ([`PostgresOptions::endpoint`]).
    pub endpoint: String,
    /// Whether it is held now: taken, not released, not expired.
    pub live: bool,
    /// How long it lasts unless renewed (zero when not live).
    pub expires_in: Duration,
}

/// The lease this store holds, for metrics and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The epoch taken at open: every commit checks that the database still shows it.
    pub epoch: i64,
    /// Whether the lease was lost (another process took the store over): no commit can succeed.
    pub fenced: bool,
    /// Whether the lease may have lapsed: no renewal sent within its lifetime reached the
    /// database (an outage, a pause), so another server may have taken the store over without
    /// this one knowing yet. Its commits would be fenced; what it holds in memory may be stale.
    pub lapsed: bool,
    /// Time since the lease was last renewed (or taken).
    pub since_renewal: Duration,
}

/// A write not yet committed: the new value, or `None` for a delete.
type Layer = BTreeMap<Vec<u8>, Option<Arc<[u8]>>>;

/// Writes the database does not have yet: those gathering for the next sync, and those the sync
/// in progress is committing. Reads look at `pending`, then `committing`, then the database.
#[derive(Default)]
struct Overlay {
    pending: Layer,
    committing: Arc<Layer>,
}

impl Overlay {
    /// The overlay's view of `key`: `Some(None)` for a delete, `None` when it has no write.
    fn get(&self, key: &[u8]) -> Option<Option<Arc<[u8]>>> {
        self.pending
            .get(key)
            .or_else(|| self.committing.get(key))
            .cloned()
    }

    /// Every write to keys in `range`, the newer layer over the older.
    fn range(&self, range: (Bound<&[u8]>, Bound<&[u8]>)) -> Layer {
        let mut out: Layer = self
            .committing
            .range::<[u8], _>(range)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in self.pending.range::<[u8], _>(range) {
            out.insert(k.clone(), v.clone());
        }
        out
    }
}

/// Values read from or committed to the database, so that a read of a key this process read or
/// wrote recently costs no round trip. Sound because this process is the database's only writer
/// while it holds the lease: the table changes only through its own commits, which update the
/// cache as they land. Bounded by bytes in two generations: entries are inserted into `young`;
/// when it is full it becomes `old` (the previous `old` is dropped); a hit in `old` moves back
/// to `young`. Absent keys are cached too (`None`): asking for what does not exist is common.
struct ReadCache {
    young: HashMap<Vec<u8>, Option<Arc<[u8]>>>,
    old: HashMap<Vec<u8>, Option<Arc<[u8]>>>,
    young_bytes: usize,
    /// Bytes one generation may hold.
    budget: usize,
    /// Bumped by every commit: a value read from the database while a commit landed may be
    /// older than the commit's, and is not cached.
    generation: u64,
}

impl ReadCache {
    fn new(budget: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            young_bytes: 0,
            budget: budget / 2,
            generation: 0,
        }
    }

    fn get(&mut self, key: &[u8]) -> Option<Option<Arc<[u8]>>> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(key.to_vec(), value.clone());
        Some(value)
    }

    fn insert(&mut self, key: Vec<u8>, value: Option<Arc<[u8]>>) {
        if self.budget == 0 {
            return;
        }
        let size = key.len() + value.as_ref().map_or(0, |v| v.len()) + 64;
        if self.young_bytes + size > self.budget {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += size;
        self.old.remove(&key);
        self.young.insert(key, value);
    }
}

/// What the lease renewal task and the commits share.
struct Lease {
    epoch: i64,
    fenced: AtomicBool,
    /// When (`now_ms`, a monotonic clock) the last successful renewal was sent.
    renewed_ms: AtomicI64,
    /// The lease's lifetime, in milliseconds.
    ttl_ms: i64,
    /// Set when the store is dropped: the renewal task stops.
    closed: AtomicBool,
}

/// The PostgreSQL store. Open it once per process and share it behind an `Arc`.
pub struct PostgresStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    overlay: Mutex<Overlay>,
    /// Held for the whole of a sync, so that commits happen one at a time and in order.
    syncing: Mutex<()>,
    lease: Arc<Lease>,
    timeout: Duration,
    commits: AtomicU64,
    cache: Mutex<ReadCache>,
    /// Point reads and range reads that went to the database.
    round_trips: AtomicU64,
    /// Set by a commit that failed without being fenced: its statement may still be running on
    /// the server and land later, after a retry, undoing what the retry wrote. So this store
    /// never commits again; opening the store anew bumps the lease's epoch, which waits for such
    /// a statement and fences any later one.
    broken: AtomicBool,
    renewal: Option<tokio::task::JoinHandle<()>>,
    /// Calls now waiting in `block_in_place`.
    handed_off: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("epoch", &self.lease.epoch)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database `url` (`postgres://…`; `sslrootcert` is read only from a URL's
    /// query, not from `key=value` connection settings),
    /// creates or migrates the schema, and takes the lease (waiting up to
    /// [`PostgresOptions::lease_wait`] for another holder to release it or let it expire).
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] when the URL does not parse, the database cannot be reached or
    /// migrated, its schema is newer than this build's, or the lease stays held by another
    /// process.
    pub fn open(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        Self::connect(url, options, true)
    }

    /// Connects, migrates, and takes the lease when `lease`.
    fn connect(url: &str, options: &PostgresOptions, lease: bool) -> Result<Self, StoreError> {
        let (url, root_cert) = split_root_cert(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::Engine(format!("the PostgreSQL URL does not parse: {e}")))?;
        let tls = tls_for(&mut config, root_cert.as_deref())?;
        // Durability is the store's promise, not the database default's: force it.
        // Notices (`CREATE TABLE IF NOT EXISTS` on every open) are not worth a log line.
        let options_text = match config.get_options() {
            Some(given) => {
                format!("{given} -c synchronous_commit=on -c client_min_messages=warning")
            }
            None => "-c synchronous_commit=on -c client_min_messages=warning".to_owned(),
        };
        config.options(&options_text);
        if config.get_application_name().is_none() {
            config.application_name("akashi");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.operation_timeout);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("akashi-pg")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                context: "starting the PostgreSQL client's runtime",
                source,
            })?;
        let handle = runtime.handle().clone();
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let built = {
            // The pool's timers belong to the store's runtime.
            let _entered = handle.enter();
            Pool::builder(manager)
                .max_size(options.pool_size.max(1))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(options.operation_timeout))
                .create_timeout(Some(options.operation_timeout))
                .recycle_timeout(Some(options.operation_timeout))
                .build()
        };
        let pool = match built {
            Ok(pool) => pool,
            Err(e) => {
                // Dropping a runtime inside the caller's runtime would panic.
                runtime.shutdown_background();
                return Err(StoreError::Engine(format!("PostgreSQL pool: {e}")));
            }
        };
        let mut store = Self {
            runtime: Some(runtime),
            handle,
            pool,
            overlay: Mutex::new(Overlay::default()),
            syncing: Mutex::new(()),
            // Not held yet: nothing to release if opening fails.
            lease: Arc::new(Lease {
                epoch: 0,
                fenced: AtomicBool::new(true),
                renewed_ms: AtomicI64::new(now_ms()),
                ttl_ms: 0,
                closed: AtomicBool::new(false),
            }),
            timeout: options.operation_timeout,
            commits: AtomicU64::new(0),
            cache: Mutex::new(ReadCache::new(options.cache_bytes)),
            round_trips: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            renewal: None,
            handed_off: std::sync::atomic::AtomicUsize::new(0),
        };
        let pool = store.pool.clone();
        store.run(async move { migrate(&pool).await })?;
        if !lease {
            return Ok(store);
        }
        let (epoch, asked) = store.acquire(options)?;
        store.lease = Arc::new(Lease {
            epoch,
            fenced: AtomicBool::new(false),
            renewed_ms: AtomicI64::new(asked),
            ttl_ms: i64::try_from(options.lease_ttl.as_millis()).unwrap_or(i64::MAX),
            closed: AtomicBool::new(false),
        });
        store.renewal = Some(store.handle.spawn(renew(
            store.pool.clone(),
            store.lease.clone(),
            options.lease_ttl,
        )));
        tracing::info!(epoch, "took the PostgreSQL store's lease");
        Ok(store)
    }

    /// Connects to the database `url` as [`PostgresStore::open`] does (and creates or migrates
    /// the schema) **without** taking the lease: a store that only looks at who holds it
    /// ([`PostgresStore::holder`]), for a server that follows another. It never commits: every
    /// [`Store::sync`] of it is [`StoreError::Fenced`]. Its reads bypass the read cache's
    /// soundness (another process writes the table): use it for [`PostgresStore::holder`] only.
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::open`], except that a held lease is no error.
    pub fn observe(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        Self::connect(url, options, false)
    }

    /// Who holds the lease now, as the database says.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] when the database cannot be read.
    pub fn holder(&self) -> Result<LeaseHolder, StoreError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one(
                    "SELECT epoch, holder, endpoint, expires_at > now(),
                         CASE WHEN expires_at > now()
                              THEN extract(epoch FROM expires_at - now())::float8
                              ELSE 0 END
                     FROM akashi_lease WHERE id = 1",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            Ok(LeaseHolder {
                epoch: row.try_get(0).map_err(pg_error)?,
                holder: row.try_get(1).map_err(pg_error)?,
                endpoint: row.try_get(2).map_err(pg_error)?,
                live: row.try_get(3).map_err(pg_error)?,
                expires_in: Duration::try_from_secs_f64(
                    row.try_get::<_, f64>(4).map_err(pg_error)?,
                )
                .unwrap_or(Duration::ZERO),
            })
        })
    }

    /// The lease this store holds.
    pub fn lease(&self) -> LeaseStatus {
        let renewed = self.lease.renewed_ms.load(Ordering::Relaxed);
        LeaseStatus {
            epoch: self.lease.epoch,
            fenced: self.lease.fenced.load(Ordering::Relaxed),
            lapsed: now_ms().saturating_sub(renewed) > self.lease.ttl_ms,
            since_renewal: Duration::from_millis(
                u64::try_from(now_ms().saturating_sub(renewed)).unwrap_or(0),
            ),
        }
    }

    /// How many transactions [`Store::sync`] committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many reads went to the database (the others were answered from memory).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn cache(&self) -> MutexGuard<'_, ReadCache> {
        // Every mutation is a whole insert or swap.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lease: free, expired or released. Returns the new epoch and when (`now_ms`, a
    /// monotonic clock) the request that took it was sent: the lease runs from no earlier than that.
    fn acquire(&self, options: &PostgresOptions) -> Result<(i64, i64), StoreError> {
        let deadline = Instant::now() + options.lease_wait;
        let ttl_ms = options.lease_ttl.as_secs_f64() * 1000.0;
        loop {
            let pool = self.pool.clone();
            let holder = options.holder.clone();
            let endpoint = options.endpoint.clone();
            let sent = now_ms();
            let taken = self.run(async move {
                let client = pool.get().await.map_err(pool_error)?;
                let row = client
                    .query_opt(
                        "UPDATE akashi_lease SET epoch = epoch + 1, holder = $1, endpoint = $3,
                             expires_at = now() + $2 * interval '1 millisecond'
                         WHERE id = 1 AND expires_at < now() RETURNING epoch",
                        &[&holder, &ttl_ms, &endpoint],
                    )
                    .await
                    .map_err(pg_error)?;
                match row {
                    Some(row) => Ok(Ok(row.try_get::<_, i64>(0).map_err(pg_error)?)),
                    None => {
                        let held = client
                            .query_one(
                                "SELECT holder, extract(epoch FROM expires_at - now())::float8
                                 FROM akashi_lease WHERE id = 1",
                                &[],
                            )
                            .await
                            .map_err(pg_error)?;
                        let holder: String = held.try_get(0).map_err(pg_error)?;
                        let left: f64 = held.try_get(1).map_err(pg_error)?;
                        Ok(Err((holder, left)))
                    }
                }
            })?;
            match taken {
                Ok(epoch) => return Ok((epoch, sent)),
                Err((holder, left)) if Instant::now() >= deadline => {
                    return Err(StoreError::LeaseHeld {
                        holder,
                        seconds: left,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs `work` on the store's runtime and waits for it, from any thread (inside a caller's
    /// tokio runtime too), within the operation timeout.
    fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        self.handle.spawn(async move {
            let result = match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Engine(format!(
                    "PostgreSQL did not answer within {timeout:?}"
                ))),
            };
            // The caller may have given up waiting; nothing to do then.
            let _ = tx.send(result);
        });
        let wait = move || {
            rx.recv().map_err(|_| {
                StoreError::Engine("the PostgreSQL client's runtime stopped".to_owned())
            })
        };
        // On a worker of the caller's multi-threaded runtime (a gRPC handler reading), tell the
        // runtime this thread is about to block, so that its other tasks move to another thread
        // rather than wait for the database too.
        // At most `MAX_HANDED_OFF` at once: each hands its worker's core to another thread,
        // and a hung database must not grow the runtime's threads without bound.
        let on_worker = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        if on_worker && self.handed_off.fetch_add(1, Ordering::AcqRel) < MAX_HANDED_OFF {
            let result = tokio::task::block_in_place(wait);
            self.handed_off.fetch_sub(1, Ordering::AcqRel);
            result?
        } else {
            if on_worker {
                self.handed_off.fetch_sub(1, Ordering::AcqRel);
            }
            wait()?
        }
    }

    /// The rows a range `query` (bounds `$1`, `$2`, limit `$3`, prepared once per connection)
    /// returns from the database.
    fn rows(
        &self,
        query: &'static str,
        low: &[u8],
        high: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let pool = self.pool.clone();
        let (low, high) = (low.to_vec(), high.to_vec());
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let statement = client.prepare_cached(query).await.map_err(pg_error)?;
            let rows = client
                .query(&statement, &[&low, &high, &sql_limit(limit)])
                .await
                .map_err(pg_error)?;
            key_values(rows)
        })
    }

    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        // Every mutation of the overlay is a whole insert, swap or merge: a panic elsewhere
        // cannot leave it half-changed.
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, key: &[u8], value: Option<&[u8]>) {
        self.overlay()
            .pending
            .insert(key.to_vec(), value.map(Arc::from));
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.lease.closed.store(true, Ordering::SeqCst);
        if let Some(renewal) = self.renewal.take() {
            // So that no renewal extends the lease after it is released below.
            renewal.abort();
        }
        if !self.lease.fenced.load(Ordering::SeqCst) {
            // Release the lease so that the next process need not wait for it to expire. A
            // failure only means it expires on its own.
            let pool = self.pool.clone();
            let epoch = self.lease.epoch;
            let released = self.run(async move {
                let client = pool.get().await.map_err(pool_error)?;
                client
                    .execute(
                        "UPDATE akashi_lease SET expires_at = '-infinity'
                         WHERE id = 1 AND epoch = $1",
                        &[&epoch],
                    )
                    .await
                    .map_err(pg_error)?;
                Ok(())
            });
            if let Err(err) = released {
                tracing::warn!(cause = %err, "PostgreSQL store's lease not released");
            }
        }
        self.pool.close();
        if let Some(runtime) = self.runtime.take() {
            // Allowed inside another runtime, unlike dropping it.
            runtime.shutdown_background();
        }
    }
}

impl Store for PostgresStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        if let Some(value) = self.overlay().get(key) {
            return Ok(value.map(Bytes::from_shared));
        }
        let generation = {
            let mut cache = self.cache();
            if let Some(value) = cache.get(key) {
                return Ok(value.map(Bytes::from_shared));
            }
            cache.generation
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let pool = self.pool.clone();
        let owned = key.to_vec();
        let value = self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let statement = client
                .prepare_cached("SELECT v FROM akashi_kv WHERE k = $1")
                .await
                .map_err(pg_error)?;
            let row = client
                .query_opt(&statement, &[&owned])
                .await
                .map_err(pg_error)?;
            row.map(|row| row.try_get::<_, Vec<u8>>(0).map(Arc::<[u8]>::from))
                .transpose()
                .map_err(pg_error)
        })?;
        let mut cache = self.cache();
        if cache.generation == generation {
            cache.insert(key.to_vec(), value.clone());
        }
        Ok(value.map(Bytes::from_shared))
    }

    fn last_at_or_before(&self, prefix: &[u8], key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        if prefix > key {
            return Ok(None);
        }
        let writes = self
            .overlay()
            .range((Bound::Included(prefix), Bound::Included(key)));
        let deletes = writes.values().filter(|v| v.is_none()).count();
        let limit = deletes.saturating_add(1);
        let rows = self.rows(
            "SELECT k, v FROM akashi_kv WHERE k >= $1 AND k <= $2 ORDER BY k DESC LIMIT $3",
            prefix,
            key,
            limit,
        )?;
        // Writes below the lowest row fetched are not comparable with rows not fetched; with
        // `deletes + 1` rows, at least one survives the deletes, so the greatest key is among
        // the rows or the writes above the lowest of them.
        let floor = (rows.len() == limit)
            .then(|| rows.last().map(|(k, _)| k.clone()))
            .flatten();
        let merged = merge(rows, writes, floor.as_deref(), None);
        Ok(merged
            .into_iter()
            .next_back()
            .filter(|(k, _)| k.starts_with(prefix)))
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let writes = self
            .overlay()
            .range((Bound::Included(start), Bound::Excluded(end)));
        let deletes = writes.values().filter(|v| v.is_none()).count();
        let fetch = limit.saturating_add(deletes);
        let rows = self.rows(
            "SELECT k, v FROM akashi_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
            start,
            end,
            fetch,
        )?;
        // With `limit + deletes` rows fetched, at least `limit` survive below the last of them;
        // writes above it would overtake rows not fetched.
        let ceiling = (rows.len() == fetch)
            .then(|| rows.last().map(|(k, _)| k.clone()))
            .flatten();
        let mut merged = merge(rows, writes, None, ceiling.as_deref());
        merged.truncate(limit);
        Ok(merged)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.write(key, None);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        if self.lease.fenced.load(Ordering::SeqCst) {
            return Err(fenced(self.lease.epoch));
        }
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Engine(
                "an earlier commit to PostgreSQL failed and may still land: this store commits \
                 nothing more until it is opened again"
                    .to_owned(),
            ));
        }
        let layer = {
            let mut overlay = self.overlay();
            if overlay.pending.is_empty() {
                return Ok(());
            }
            let layer = Arc::new(std::mem::take(&mut overlay.pending));
            overlay.committing = layer.clone();
            layer
        };
        let pool = self.pool.clone();
        let lease = self.lease.clone();
        let commit = layer.clone();
        let result = self.run(async move { commit_layer(&pool, &lease, &commit).await });
        let mut overlay = self.overlay();
        {
            // Under the overlay's lock, so no read sees the layer in neither place. A read that
            // went to the database during the commit does not cache what it found.
            let mut cache = self.cache();
            cache.generation += 1;
            if result.is_ok() {
                for (key, value) in layer.iter() {
                    cache.insert(key.clone(), value.clone());
                }
            }
        }
        overlay.committing = Arc::new(Layer::new());
        match result {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                if !matches!(err, StoreError::Fenced { .. }) {
                    self.broken.store(true, Ordering::SeqCst);
                }
                // Not committed (or not known to be): keep the writes, under any newer ones, so
                // that reads still see them until the store is opened again.
                let layer = Arc::try_unwrap(layer).unwrap_or_else(|shared| (*shared).clone());
                for (key, value) in layer {
                    overlay.pending.entry(key).or_insert(value);
                }
                Err(err)
            }
        }
    }
}

/// Commits one layer of writes and checks the lease's epoch in one statement, so in one
/// transaction and one round trip: the lease row is read `FOR SHARE` with the epoch this store
/// took (a takeover that committed first leaves no such row, one that comes later waits for this
/// commit), and the upsert and the delete only write when that row was found. With
/// `synchronous_commit = on`, the statement returns once the transaction is durable.
const COMMIT: &str = "WITH lease AS (
         SELECT epoch FROM akashi_lease WHERE id = 1 AND epoch = $1 FOR SHARE
     ), upserted AS (
         INSERT INTO akashi_kv (k, v)
         SELECT k, v FROM unnest($2::bytea[], $3::bytea[]) AS w(k, v)
         WHERE EXISTS (SELECT 1 FROM lease)
         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v
         RETURNING 1
     ), deleted AS (
         DELETE FROM akashi_kv WHERE k = ANY($4::bytea[]) AND EXISTS (SELECT 1 FROM lease)
         RETURNING 1
     )
     SELECT (SELECT count(*) FROM lease), (SELECT count(*) FROM upserted),
            (SELECT count(*) FROM deleted)";

async fn commit_layer(pool: &Pool, lease: &Lease, layer: &Layer) -> Result<(), StoreError> {
    let mut put_keys: Vec<&[u8]> = Vec::new();
    let mut put_values: Vec<&[u8]> = Vec::new();
    let mut deleted: Vec<&[u8]> = Vec::new();
    for (key, value) in layer {
        match value {
            Some(value) => {
                put_keys.push(key);
                put_values.push(value);
            }
            None => deleted.push(key),
        }
    }
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(COMMIT).await.map_err(pg_error)?;
    let row = client
        .query_one(
            &statement,
            &[&lease.epoch, &put_keys, &put_values, &deleted],
        )
        .await
        .map_err(pg_error)?;
    let held: i64 = row.try_get(0).map_err(pg_error)?;
    if held != 1 {
        lease.fenced.store(true, Ordering::SeqCst);
        tracing::error!(
            ours = lease.epoch,
            "another akashi server took over the PostgreSQL store: this one no longer commits"
        );
        return Err(fenced(lease.epoch));
    }
    Ok(())
}

/// Keeps the lease alive every quarter of its lifetime until the store is dropped or the lease
/// is lost.
async fn renew(pool: Pool, lease: Arc<Lease>, ttl: Duration) {
    let ttl_ms = ttl.as_secs_f64() * 1000.0;
    let every = (ttl / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        if lease.closed.load(Ordering::SeqCst) || lease.fenced.load(Ordering::SeqCst) {
            return;
        }
        let sent = now_ms();
        let renewed = async {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE akashi_lease SET expires_at = now() + $2 * interval '1 millisecond'
                     WHERE id = 1 AND epoch = $1 AND expires_at <> '-infinity'",
                    &[&lease.epoch, &ttl_ms],
                )
                .await
                .map_err(pg_error)
        };
        match tokio::time::timeout(ttl, renewed).await {
            Ok(Ok(1)) => lease.renewed_ms.store(sent, Ordering::Relaxed),
            Ok(Ok(_)) => {
                lease.fenced.store(true, Ordering::SeqCst);
                tracing::error!(
                    epoch = lease.epoch,
                    "the PostgreSQL store's lease was taken over: this server no longer commits"
                );
                return;
            }
            Ok(Err(err)) => tracing::warn!(cause = %err, "PostgreSQL store's lease not renewed"),
            Err(_) => tracing::warn!("PostgreSQL store's lease renewal timed out"),
        }
    }
}

/// Creates the schema or brings it up to this build's version, one transaction per version,
/// under an advisory lock so that two processes starting together do not race.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS akashi_schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg_error)?;
    let applied: Option<i32> = tx
        .query_one("SELECT max(version) FROM akashi_schema_migrations", &[])
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    let applied = applied.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(StoreError::Engine(format!(
            "the database's akashi schema is version {applied}, newer than this build knows \
             ({known}): run a newer akashi"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO akashi_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(version, "migrated the PostgreSQL schema");
    }
    tx.commit().await.map_err(pg_error)
}

/// Takes `sslrootcert=FILE` out of the URL's query (tokio-postgres does not know it), returning
/// the rest of the URL and the file.
fn split_root_cert(url: &str) -> Result<(String, Option<std::path::PathBuf>), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("sslrootcert=") {
            Some(value) => root_cert = Some(std::path::PathBuf::from(percent_decode(value)?)),
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, root_cert))
}

fn percent_decode(text: &str) -> Result<String, StoreError> {
    let bad = || StoreError::Engine("the PostgreSQL URL's sslrootcert is not valid".to_owned());
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The TLS connector for `root_cert` (and `sslmode` set to `require`), or none for plaintext.
fn tls_for(
    config: &mut tokio_postgres::Config,
    root_cert: Option<&std::path::Path>,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, StoreError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    use tokio_postgres::config::SslMode;
    use tokio_rustls::rustls;
    let Some(path) = root_cert else {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Engine(
                "sslmode=require needs sslrootcert=FILE in the PostgreSQL URL: the CA that \
                 signed the database's certificate, to verify it"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(StoreError::Engine(
            "the PostgreSQL URL has both sslrootcert and sslmode=disable".to_owned(),
        ));
    }
    config.ssl_mode(SslMode::Require);
    let bad = |e: &dyn std::fmt::Display| {
        StoreError::Engine(format!("the PostgreSQL CA file {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(client)))
}

/// Rows fetched and writes not committed, merged: the writes win, deletes remove. Writes below
/// `floor` or above `ceiling` are left out (they cannot be ordered against rows not fetched).
fn merge(
    rows: Vec<KeyValue>,
    writes: Layer,
    floor: Option<&[u8]>,
    ceiling: Option<&[u8]>,
) -> Vec<KeyValue> {
    let mut merged: BTreeMap<Vec<u8>, Bytes> = rows.into_iter().collect();
    for (key, value) in writes {
        if floor.is_some_and(|floor| key.as_slice() < floor)
            || ceiling.is_some_and(|ceiling| key.as_slice() > ceiling)
        {
            continue;
        }
        match value {
            Some(value) => merged.insert(key, Bytes::from_shared(value)),
            None => merged.remove(&key),
        };
    }
    merged.into_iter().collect()
}

fn key_values(rows: Vec<tokio_postgres::Row>) -> Result<Vec<KeyValue>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let key: Vec<u8> = row.try_get(0).map_err(pg_error)?;
            let value: Vec<u8> = row.try_get(1).map_err(pg_error)?;
            Ok((key, shared(value)))
        })
        .collect()
}

fn shared(value: Vec<u8>) -> Bytes {
    Bytes::from_shared(Arc::from(value))
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Milliseconds on a monotonic clock (since the first call in this process): the lease's own
/// timing (when a renewal was sent, whether it lapsed) must not move with the wall clock, or a
/// clock stepped backwards would keep a replaced server believing it holds the lease.
fn now_ms() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

fn fenced(epoch: i64) -> StoreError {
    StoreError::Fenced { epoch }
}

fn pg_error(err: tokio_postgres::Error) -> StoreError {
    // The database's own message (with its SQLSTATE) says more than the client's summary.
    match err.as_db_error() {
        Some(db) => StoreError::Engine(format!(
            "PostgreSQL: {} ({})",
            db.message(),
            db.code().code()
        )),
        None => {
            // The client's summary ("error performing TLS handshake") hides the reason in its
            // source chain ("invalid peer certificate: UnknownIssuer").
            let mut message = format!("PostgreSQL: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            StoreError::Engine(message)
        }
    }
}

fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        // The database's own reason (no such database, authentication failed …).
        deadpool_postgres::PoolError::Backend(err) => pg_error(err),
        other => StoreError::Engine(format!("PostgreSQL connection: {other}")),
    }
}

#[cfg(test)]
mod tests;

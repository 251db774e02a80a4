//! Runs the storage conformance suite (`ledger::conformance`) against both stores.

#![allow(clippy::unwrap_used, missing_docs, reason = "test code")]

use std::sync::Arc;

use ledger::{
    conformance::{self, Harness},
    store::{MemoryStore, SledOptions, SledStore, Store},
};

struct Memory(MemoryStore);

impl Harness for Memory {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.0.clone())
    }
}

struct Sled(tempfile::TempDir);

impl Harness for Sled {
    fn open(&self) -> Arc<dyn Store> {
        // sled holds a lock on its folder: a reopen only succeeds once the previous handle is
        // gone, just as for a restarted process.
        Arc::new(SledStore::open(self.0.path(), &SledOptions::default()).unwrap())
    }
}

#[test]
fn memory_store_passes_the_suite() {
    conformance::run_all(|| Memory(MemoryStore::new()));
}

#[test]
fn sled_store_passes_the_suite() {
    conformance::run_all(|| Sled(tempfile::tempdir().unwrap()));
}

#[test]
fn sled_reopens_right_after_the_previous_handle_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
        store.put(b"k", b"v").unwrap();
        store.sync().unwrap();
        drop(store);
    }
}

#[test]
fn a_folder_held_by_a_live_store_is_refused_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let _held = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let err = SledStore::open(dir.path(), &SledOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("lock"), "{err}");
}

/// The PostgreSQL store, on a throwaway cluster (`ledger::store::postgres::testing`).
mod postgres {
    use std::{sync::Arc, time::Duration};

    use ledger::{
        conformance::{self, Harness},
        store::{
            MemoryStore, PostgresOptions, PostgresStore, Store, StoreError,
            postgres::{
                testing::{cluster, fresh_database},
                vault::PostgresSlots,
            },
        },
        vault::{BLOCK_SLOTS, KeyVault, VaultError, open_body, seal_body},
    };
    use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

    fn options() -> PostgresOptions {
        PostgresOptions {
            lease_ttl: Duration::from_millis(1_500),
            lease_wait: Duration::from_secs(3),
            ..PostgresOptions::default()
        }
    }

    struct Pg(String);

    /// The database name inside a test cluster URL (`postgres:///NAME?…`).
    pub(super) fn database_name(url: &str) -> String {
        url.split('?')
            .next()
            .unwrap()
            .trim_start_matches("postgres:///")
            .to_owned()
    }

    /// A `psql` session of its own holding row locks in an open transaction.
    struct RowLock {
        session: std::process::Child,
        input: std::process::ChildStdin,
    }

    impl RowLock {
        /// Runs `select_for_update` in a transaction left open in database `db`, once the
        /// session is seen waiting in it.
        fn take(db: &str, select_for_update: &str) -> Self {
            use std::io::Write as _;
            let cluster = cluster().unwrap();
            let mut session = cluster
                .psql_session(db)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut input = session.stdin.take().unwrap();
            writeln!(input, "BEGIN; {select_for_update};").unwrap();
            input.flush().unwrap();
            let idle = "SELECT count(*) FROM pg_stat_activity \
                        WHERE datname = current_database() AND state = 'idle in transaction'";
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while cluster.psql(db, idle) != "1" {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the psql session never began"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Self { session, input }
        }

        /// Commits the transaction, letting the rows go, and ends the session.
        fn release(mut self) {
            use std::io::Write as _;
            writeln!(self.input, "COMMIT;").unwrap();
            drop(self.input);
            self.session.wait().unwrap();
        }
    }

    impl Harness for Pg {
        fn open(&self) -> Arc<dyn Store> {
            // The previous handle released the lease when it was dropped: no wait.
            Arc::new(PostgresStore::open(&self.0, &options()).unwrap())
        }
    }

    #[test]
    fn postgres_store_passes_the_suite() {
        if cluster().is_none() {
            let _ = fresh_database("postgres_store_passes_the_suite");
            return;
        }
        conformance::run_all(|| Pg(fresh_database("suite").unwrap()));
    }

    /// Random puts, deletes, syncs and reads over a small keyspace give exactly what the
    /// in-memory store gives: the overlay of writes not yet committed merges with the
    /// database's rows in every read (point, scan with limits, last-at-or-before).
    #[test]
    fn reads_agree_with_the_memory_store_around_commits() {
        let Some(url) = fresh_database("reads_agree_with_the_memory_store_around_commits") else {
            return;
        };
        let pg = PostgresStore::open(&url, &options()).unwrap();
        let memory = MemoryStore::new();
        let mut rng = StdRng::seed_from_u64(0x616b_6173);
        let key = |rng: &mut StdRng| format!("k/{:02}", rng.gen_range(0..40)).into_bytes();
        for step in 0..3_000 {
            match rng.gen_range(0..100) {
                0..=34 => {
                    let (k, v) = (key(&mut rng), format!("v{step}").into_bytes());
                    pg.put(&k, &v).unwrap();
                    memory.put(&k, &v).unwrap();
                }
                35..=54 => {
                    let k = key(&mut rng);
                    pg.delete(&k).unwrap();
                    memory.delete(&k).unwrap();
                }
                55..=61 => {
                    pg.sync().unwrap();
                    memory.sync().unwrap();
                }
                62..=74 => {
                    let k = key(&mut rng);
                    let got = pg.get(&k).unwrap().map(|v| v.to_vec());
                    let want = memory.get(&k).unwrap().map(|v| v.to_vec());
                    assert_eq!(got, want, "step {step}: get {k:?}");
                }
                75..=87 => {
                    let (a, b) = (key(&mut rng), key(&mut rng));
                    let limit = rng.gen_range(0..12);
                    let flat = |kvs: Vec<ledger::store::KeyValue>| {
                        kvs.into_iter()
                            .map(|(k, v)| (k, v.to_vec()))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        flat(pg.scan(&a, &b, limit).unwrap()),
                        flat(memory.scan(&a, &b, limit).unwrap()),
                        "step {step}: scan {a:?}..{b:?} limit {limit}"
                    );
                }
                _ => {
                    let prefix = format!("k/{}", rng.gen_range(0..4)).into_bytes();
                    let k = key(&mut rng);
                    let flat =
                        |kv: Option<ledger::store::KeyValue>| kv.map(|(k, v)| (k, v.to_vec()));
                    assert_eq!(
                        flat(pg.last_at_or_before(&prefix, &k).unwrap()),
                        flat(memory.last_at_or_before(&prefix, &k).unwrap()),
                        "step {step}: last at or before {k:?} under {prefix:?}"
                    );
                }
            }
        }
        pg.sync().unwrap();
        drop(pg);
        // What the database holds after the last sync is what the memory store holds.
        let reopened = PostgresStore::open(&url, &options()).unwrap();
        let all = |s: &dyn Store| {
            s.scan(b"k/", b"k0", usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&reopened), all(&memory));
    }

    #[test]
    fn a_database_held_by_a_live_store_is_refused_after_the_wait() {
        let Some(url) = fresh_database("a_database_held_by_a_live_store_is_refused") else {
            return;
        };
        let _held = PostgresStore::open(&url, &options()).unwrap();
        let quick = PostgresOptions {
            lease_wait: Duration::from_millis(300),
            holder: "second".into(),
            ..options()
        };
        let err = PostgresStore::open(&url, &quick).err().unwrap();
        assert!(
            err.to_string().contains("holds this database's lease"),
            "{err}"
        );
    }

    /// A writer whose lease was taken over (it was paused or cut off for longer than the lease)
    /// can never commit again: its next sync fails and nothing it wrote reaches the database.
    #[test]
    fn a_deposed_writer_can_never_commit_again() {
        let Some(url) = fresh_database("a_deposed_writer_can_never_commit_again") else {
            return;
        };
        let cluster = cluster().unwrap();
        let old = PostgresStore::open(&url, &options()).unwrap();
        old.put(b"k", b"old").unwrap();
        old.sync().unwrap();
        let first_epoch = old.lease().epoch;
        // As if the old writer had been paused past its lease: the lease lapses.
        let db = database_name(&url);
        cluster.psql(&db, "UPDATE akashi_lease SET expires_at = '-infinity'");
        let new = PostgresStore::open(&url, &options()).unwrap();
        assert_eq!(new.lease().epoch, first_epoch + 1);
        old.put(b"k", b"forked").unwrap();
        let err = old.sync().unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        assert!(old.lease().fenced);
        // And it stays fenced, whatever it tries.
        assert!(matches!(old.sync(), Err(StoreError::Fenced { .. })));
        assert_eq!(new.get(b"k").unwrap().as_deref(), Some(&b"old"[..]));
        new.put(b"k", b"new").unwrap();
        new.sync().unwrap();
        drop(old);
        // The deposed writer's drop does not release the new holder's lease.
        let err = PostgresStore::open(
            &url,
            &PostgresOptions {
                lease_wait: Duration::from_millis(200),
                ..options()
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("lease"), "{err}");
    }

    /// A commit that timed out may still be running on the server and land later: after it,
    /// the store commits nothing more (a retry could be undone by the stale statement), and the
    /// store opened anew takes a new epoch, after which acknowledged writes stay.
    #[test]
    fn after_a_commit_of_unknown_outcome_the_store_commits_nothing_more() {
        let Some(url) = fresh_database("after_a_commit_of_unknown_outcome") else {
            return;
        };
        let db = database_name(&url);
        let quick = PostgresOptions {
            operation_timeout: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(60),
            ..options()
        };
        let store = PostgresStore::open(&url, &quick).unwrap();
        store.put(b"x", b"0").unwrap();
        store.sync().unwrap();
        // Another session holds x's row: the next commit blocks on the server and times out.
        let blocker = RowLock::take(
            &db,
            "SELECT k FROM akashi_kv WHERE k = 'x'::bytea FOR UPDATE",
        );
        store.put(b"a", b"from the stale batch").unwrap();
        store.put(b"x", b"1").unwrap();
        assert!(store.sync().is_err(), "the blocked commit times out");
        // The retry is refused, not acknowledged: the stale statement could undo it.
        store.delete(b"a").unwrap();
        let err = store.sync().unwrap_err();
        assert!(err.to_string().contains("opened again"), "{err}");
        blocker.release();
        drop(store);
        let reopened = PostgresStore::open(&url, &quick).unwrap();
        reopened.delete(b"a").unwrap();
        reopened.sync().unwrap();
        drop(reopened);
        let last = PostgresStore::open(&url, &quick).unwrap();
        assert!(
            last.get(b"a").unwrap().is_none(),
            "an acknowledged delete stays"
        );
    }

    /// A lease whose renewals do not reach the database for longer than its lifetime reads as
    /// lapsed (another server may have taken over unseen), and as held again once one does.
    #[test]
    fn a_lease_unrenewed_for_its_lifetime_reads_as_lapsed() {
        let Some(url) = fresh_database("a_lease_unrenewed_for_its_lifetime_reads_as_lapsed") else {
            return;
        };
        let db = database_name(&url);
        let short = PostgresOptions {
            lease_ttl: Duration::from_millis(800),
            ..options()
        };
        let store = PostgresStore::open(&url, &short).unwrap();
        assert!(!store.lease().lapsed);
        // Another session holds the lease row: renewals wait and time out.
        let blocker = RowLock::take(&db, "SELECT epoch FROM akashi_lease FOR UPDATE");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !store.lease().lapsed {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never lapsed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!store.lease().fenced, "lapsed, not taken over");
        blocker.release();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.lease().lapsed {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease was never renewed again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn database_vault(store: &Arc<PostgresStore>) -> KeyVault {
        KeyVault::with_slots(Box::new(PostgresSlots::new(store.clone()))).unwrap()
    }

    /// The key vault in the database: keys handed out are durable and found again by another
    /// server of the log, a shred overwrites the row (and the key is gone from every reader,
    /// including this one's memory), the allocation floor is kept, and a file vault copied in
    /// reads the same slot for slot.
    #[test]
    fn the_key_vault_in_the_database_is_shared_and_shreds_for_everyone() {
        let Some(url) = fresh_database("the_key_vault_in_the_database") else {
            return;
        };
        let db = database_name(&url);
        let first = Arc::new(PostgresStore::open(&url, &options()).unwrap());
        let vault = database_vault(&first);
        assert_eq!(vault.slots(), 0);
        let a = vault.allocate().unwrap();
        let b = vault.allocate().unwrap();
        assert_eq!((a.slot(), b.slot()), (0, 1));
        assert_eq!(vault.slots(), BLOCK_SLOTS);
        let sealed = seal_body(
            &vault.key(a).unwrap().unwrap(),
            a,
            7,
            b"body",
            &mut rand::rngs::OsRng,
        );
        // Another server of the log (after this one stops) reaches the same key.
        drop(vault);
        drop(first);
        let second = Arc::new(PostgresStore::open(&url, &options()).unwrap());
        let vault = database_vault(&second);
        assert_eq!(vault.slots(), BLOCK_SLOTS);
        let key = vault.key(a).unwrap().unwrap();
        assert_eq!(open_body(&key, 7, &sealed).unwrap(), b"body");
        // The floor comes from the caller's store, as for a file vault.
        vault.set_floor(2);
        assert_eq!(vault.allocate().unwrap().slot(), 2);
        // A shred: gone from this reader (which had the key in memory) and from the table.
        assert!(vault.shred(a).unwrap());
        assert!(vault.key(a).unwrap().is_none());
        assert!(vault.key(b).unwrap().is_some());
        let row = cluster().unwrap().psql(
            &db,
            "SELECT encode(tag, 'hex') || encode(key, 'hex') FROM akashi_vault WHERE slot = 0",
        );
        assert_eq!(row, "0".repeat(80));
        assert!(!vault.shred(a).unwrap(), "a second shred finds nothing");
        // A file vault copied in reads the same, slot for slot.
        let dir = tempfile::tempdir().unwrap();
        let file = KeyVault::open(dir.path()).unwrap();
        let kept = file.allocate().unwrap();
        let other = fresh_database("the_key_vault_in_the_database_copy").unwrap();
        let third = Arc::new(PostgresStore::open(&other, &options()).unwrap());
        let copy = database_vault(&third);
        assert_eq!(file.copy_into(&copy).unwrap(), BLOCK_SLOTS);
        assert!(file.is_prefix_of(&copy).unwrap() && copy.is_prefix_of(&file).unwrap());
        assert_eq!(
            copy.key(kept).unwrap().map(|k| format!("{k:?}")),
            Some("BodyKey(<redacted>)".to_owned())
        );
        // Not into a vault that holds keys.
        let err = file.copy_into(&copy).unwrap_err();
        assert!(err.to_string().contains("already holds keys"), "{err}");
        // A move cut short after its first block is finished by copying the rest; a slot
        // shredded on one side still agrees; another vault's keys do not.
        file.set_floor(BLOCK_SLOTS);
        let later = file.allocate().unwrap();
        assert_eq!(file.slots(), 2 * BLOCK_SLOTS);
        assert!(file.agrees_with(&copy, u64::MAX).unwrap());
        assert_eq!(file.copy_rest_into(&copy).unwrap(), BLOCK_SLOTS);
        assert!(file.is_prefix_of(&copy).unwrap() && copy.is_prefix_of(&file).unwrap());
        assert!(copy.key(later).unwrap().is_some());
        assert!(copy.shred(kept).unwrap());
        assert!(file.agrees_with(&copy, u64::MAX).unwrap() && !file.is_prefix_of(&copy).unwrap());
        // A shred in one copy reaches the other.
        assert!(file.key(kept).unwrap().is_some());
        assert_eq!(file.adopt_shreds_from(&copy, u64::MAX).unwrap(), 1);
        assert!(file.key(kept).unwrap().is_none());
        assert!(file.is_prefix_of(&copy).unwrap());
        let stranger_dir = tempfile::tempdir().unwrap();
        let stranger = KeyVault::open(stranger_dir.path()).unwrap();
        stranger.allocate().unwrap();
        assert!(!stranger.agrees_with(&copy, u64::MAX).unwrap());
        // The file, destroyed once moved, holds no key and is gone.
        drop(file);
        KeyVault::destroy_file(dir.path()).unwrap();
        assert!(!dir.path().join(ledger::vault::FILE_NAME).exists());
    }

    /// A server that lost the store adds no keys to its vault: the block's statement checks the
    /// lease's epoch, as a commit does.
    #[test]
    fn a_deposed_server_adds_no_keys() {
        let Some(url) = fresh_database("a_deposed_server_adds_no_keys") else {
            return;
        };
        let old = Arc::new(PostgresStore::open(&url, &options()).unwrap());
        let vault = database_vault(&old);
        let db = database_name(&url);
        cluster()
            .unwrap()
            .psql(&db, "UPDATE akashi_lease SET expires_at = '-infinity'");
        let new = PostgresStore::open(&url, &options()).unwrap();
        let err = vault.allocate().unwrap_err();
        assert!(matches!(err, VaultError::Fenced { .. }), "{err}");
        assert_eq!(
            cluster()
                .unwrap()
                .psql(&db, "SELECT count(*) FROM akashi_vault"),
            "0"
        );
        assert!(old.lease().fenced);
        drop(new);
    }

    #[test]
    fn a_schema_newer_than_the_build_is_refused() {
        let Some(url) = fresh_database("a_schema_newer_than_the_build_is_refused") else {
            return;
        };
        drop(PostgresStore::open(&url, &options()).unwrap());
        let db = database_name(&url);
        cluster().unwrap().psql(
            &db,
            "INSERT INTO akashi_schema_migrations (version) VALUES (99)",
        );
        let err = PostgresStore::open(&url, &options()).err().unwrap();
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error() {
        let Some(cluster) = cluster() else {
            let _ = fresh_database("an_unreachable_database_is_a_clear_error");
            return;
        };
        let url = cluster.url("no_such_database");
        let err = PostgresStore::open(&url, &options()).err().unwrap();
        assert!(err.to_string().contains("no_such_database"), "{err}");
        let err = PostgresStore::open("postgres://[bad", &options())
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not parse"), "{err}");
    }
}

/// The PostgreSQL store over TCP with TLS (`sslrootcert=`), on the same throwaway cluster.
mod postgres_tls {
    use std::time::Duration;

    use ledger::store::{
        PostgresOptions, PostgresStore, Store as _,
        postgres::testing::{cluster, fresh_database},
    };

    fn options() -> PostgresOptions {
        PostgresOptions {
            lease_wait: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
            ..PostgresOptions::default()
        }
    }

    #[test]
    fn connections_are_tls_verified_against_the_given_ca() {
        let Some(socket_url) = fresh_database("connections_are_tls_verified_against_the_given_ca")
        else {
            return;
        };
        let cluster = cluster().unwrap();
        let db = super::postgres::database_name(&socket_url);
        let store = PostgresStore::open(&cluster.tls_url(&db), &options()).unwrap();
        store.put(b"k", b"v").unwrap();
        store.sync().unwrap();
        // Other tests' stores use the same cluster: count this database's connections only.
        let encrypted = cluster.psql(
            &db,
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'akashi' AND datname = current_database() AND ssl",
        );
        assert!(encrypted.parse::<u32>().unwrap() >= 1, "{encrypted}");
        let plain = cluster.psql(
            &db,
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'akashi' AND datname = current_database() AND NOT ssl",
        );
        assert_eq!(plain, "0");
        drop(store);

        // A CA that did not sign the database's certificate: refused, nothing sent in clear.
        let wrong = cluster.tls_url(&db).replace(
            &format!(
                "sslrootcert={}",
                cluster.tls_url(&db).rsplit('=').next().unwrap()
            ),
            &format!("sslrootcert={}", cluster.other_ca().display()),
        );
        let err = PostgresStore::open(&wrong, &options()).err().unwrap();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );

        // Asked for TLS with nothing to verify it by, or told both ways: refused.
        let plain_url = cluster.tls_url(&db);
        let base = plain_url.split('?').next().unwrap();
        let err = PostgresStore::open(&format!("{base}?sslmode=require"), &options())
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        let err = PostgresStore::open(&format!("{plain_url}&sslmode=disable"), &options())
            .err()
            .unwrap();
        assert!(err.to_string().contains("sslmode=disable"), "{err}");
        let err = PostgresStore::open(&format!("{base}?sslrootcert=/no/such/ca.pem"), &options())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
    }
}

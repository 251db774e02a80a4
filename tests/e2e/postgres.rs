//! The server on the PostgreSQL store (`--store postgres://…`), on a throwaway cluster
//! (`ledger::store::postgres::testing`): decisions, histories and receipts across a restart; a
//! server whose lease another node took fails closed; a database restored from an older backup,
//! or emptied, is refused by the data dir's anchor; `akashi store copy` from a data dir to a
//! database and back, after which the server runs on the copy.
//!
//! Without PostgreSQL's server binaries each test says so and does nothing, unless
//! `AKASHI_REQUIRE_POSTGRES=1` (CI) makes that a failure. `AKASHI_E2E_STORE=postgres` runs every
//! other end-to-end test on PostgreSQL too (see `harness.rs`).

use std::process::Command;

use akashi::auth::Role;
use ledger::store::postgres::testing::{cluster, fresh_database};
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, allowed, ask, checkpoint_root, grant, verify_receipt},
    harness::TestServer,
};

const AKASHI: &str = env!("CARGO_BIN_EXE_akashi");

/// The database name inside a test cluster URL (`postgres:///NAME?…`).
fn database_name(url: &str) -> &str {
    url.split('?')
        .next()
        .unwrap()
        .trim_start_matches("postgres:///")
}

fn research_question(patient: &str) -> pb::AuthorizeRequest {
    ask(
        "Organization",
        "uni",
        "secondary_use",
        patient,
        "lab_result",
        "research",
        "IDENTIFIED",
    )
}

/// Registers `uni`, gives `patient`'s consent to it and asks once: allowed.
async fn consent_and_decide(api: &Api, patient: &str) -> pb::AuthorizeResponse {
    api.grant(grant(
        patient,
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    let answer = api.authorize(research_question(patient)).await;
    assert!(allowed(&answer), "{answer:?}");
    answer
}

/// The server's consistency proof takes the tree at `old` to the tree at `new`.
async fn assert_consistent(
    api: &Api,
    (old_size, old_root): (ledger::hash::TreeSize, ledger::hash::Hash),
    (new_size, new_root): (ledger::hash::TreeSize, ledger::hash::Hash),
) {
    let proof = api
        .transparency()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old_size.get(),
            new_size: new_size.get(),
        })
        .await
        .unwrap()
        .into_inner();
    ledger::proof::ConsistencyProof {
        old_size,
        new_size,
        path: proof
            .path
            .iter()
            .map(|h| ledger::hash::Hash::from_slice(h).unwrap())
            .collect(),
    }
    .verify(&old_root, &new_root)
    .unwrap();
}

#[tokio::test]
async fn a_server_on_postgres_keeps_its_log_across_a_restart() {
    let Some(url) = fresh_database("a_server_on_postgres_keeps_its_log_across_a_restart") else {
        return;
    };
    let with_store = |url: String| move |c: &mut akashi::config::Config| c.store = Some(url);
    let server =
        TestServer::start_with(tempfile::tempdir().unwrap(), with_store(url.clone())).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let first = consent_and_decide(&api, "p1").await;
    let receipt = first.receipt.unwrap();
    verify_receipt(&receipt, &server.vkey);
    let (old_size, old_root) = checkpoint_root(&receipt.checkpoint, &server.vkey);
    // Nothing of the log is in the data dir: the sled folder was never made.
    assert!(!server.data_dir().join("ledger").exists());
    let vkey = server.vkey.clone();
    let dir = server.stop().await;

    let server = TestServer::start_with(dir, with_store(url.clone())).await;
    assert_eq!(server.vkey, vkey);
    let api = Api::new(&server, Role::Platform, None).await;
    assert_eq!(api.size().await, old_size.get());
    let again = api.authorize(research_question("p1")).await;
    assert!(allowed(&again), "the consent survived the restart");
    let receipt = again.receipt.unwrap();
    let new_size = verify_receipt(&receipt, &vkey);
    let (_, new_root) = checkpoint_root(&receipt.checkpoint, &vkey);
    assert_consistent(
        &api,
        (old_size, old_root),
        (ledger::hash::TreeSize(new_size), new_root),
    )
    .await;
    // The patient's history (sealed bodies, read through the data dir's key vault) is whole.
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("p1").await.unwrap();
    assert_eq!(history.entries.len(), 3, "grant and two decisions");
    let records = cluster()
        .unwrap()
        .psql(database_name(&url), "SELECT count(*) FROM akashi_kv");
    assert!(records.parse::<u64>().unwrap() > 10, "{records}");
    let data = server.data_dir();
    let dir = server.stop().await;
    // `akashi fsck` checks the log in the database, held to the data dir's anchor.
    let output = Command::new(AKASHI)
        .arg("fsck")
        .arg("--data-dir")
        .arg(&data)
        .args(["--store", &url])
        .env("AKASHI_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with(&format!("ok: {new_size} entries")),
        "{stdout}"
    );
    drop(dir);
}

/// A server whose lease another node took (it was paused past its lease, say) must never
/// commit again: its next decision is refused, not allowed, and nothing reaches the database.
#[tokio::test]
async fn a_server_whose_lease_was_taken_fails_closed() {
    let Some(url) = fresh_database("a_server_whose_lease_was_taken_fails_closed") else {
        return;
    };
    let db = database_name(&url).to_owned();
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.store = Some(url.clone());
    })
    .await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    consent_and_decide(&api, "p1").await;
    let cluster = cluster().unwrap();
    let count = || cluster.psql(&db, "SELECT count(*) FROM akashi_kv");
    let before = count();
    // Another node takes the store over, as it would once the lease expired.
    cluster.psql(
        &db,
        "UPDATE akashi_lease SET epoch = epoch + 1, holder = 'another node'",
    );
    let refused = api
        .access()
        .authorize(api.req(research_question("p1")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(count(), before, "nothing was committed under the old epoch");
    let (status, _) = crate::harness::http_get(server.admin_addr, "/readyz").await;
    assert_eq!(status, 503);
    let (_, metrics) = crate::harness::http_get(server.admin_addr, "/metrics").await;
    assert_eq!(
        crate::audit::counter(&metrics, "akashi_store_lease_fenced"),
        1,
        "{metrics}"
    );
    // Reads go on.
    assert!(api.size().await > 0);
    drop(server);
}

fn store_copy(from: &str, to: &str, keys: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(AKASHI);
    command.args(["store", "copy", "--from", from, "--to", to]);
    if let Some(keys) = keys {
        command.arg("--keys").arg(keys);
    }
    command.env("AKASHI_LOG", "warn").output().unwrap()
}

#[tokio::test]
async fn store_copy_moves_a_log_to_postgres_and_back() {
    let Some(url) = fresh_database("store_copy_moves_a_log_to_postgres_and_back") else {
        return;
    };
    // A log on sled.
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let answer = consent_and_decide(&api, "p1").await;
    let (size, root) = checkpoint_root(&answer.receipt.unwrap().checkpoint, &server.vkey);
    let data = server.data_dir();
    let dir = server.stop().await;
    let data_text = data.to_str().unwrap();

    let output = store_copy(data_text, &url, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("verified"), "{stdout}");
    assert!(
        stdout.contains(&format!("(size {})", size.get())),
        "{stdout}"
    );
    // Into a store that is not empty: refused, nothing touched.
    let again = store_copy(data_text, &url, None);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The server runs on the copy with the same data dir (keys, vault, anchor): same log.
    let server = TestServer::start_with(dir, |c| c.store = Some(url.clone())).await;
    let api = Api::new(&server, Role::Platform, None).await;
    assert_eq!(api.size().await, size.get());
    let after = api.authorize(research_question("p1")).await;
    assert!(allowed(&after));
    let receipt = after.receipt.unwrap();
    let (new_size, new_root) = checkpoint_root(&receipt.checkpoint, &server.vkey);
    assert_consistent(&api, (size, root), (new_size, new_root)).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("p1").await.unwrap().entries;
    assert_eq!(history.len(), 3);
    // The sealed bodies open: the data dir's key vault moved into the database at the start,
    // and the file is gone, so that a shred reaches every copy of a key.
    assert!(history.iter().all(|e| !e.redacted && !e.body.is_empty()));
    let vault_file = data
        .join(akashi::server::VAULT_DIR)
        .join(ledger::vault::FILE_NAME);
    assert!(!vault_file.exists(), "{}", vault_file.display());
    let db = database_name(&url);
    let slots = cluster().unwrap().psql(
        db,
        "SELECT count(*) FROM akashi_vault WHERE tag <> '\\x0000000000000000'",
    );
    assert!(slots.trim().parse::<u64>().unwrap() >= 1024, "{slots}");
    let dir = server.stop().await;

    // And back, into a new data dir's sled store, verified with the first data dir's key; the
    // database's vault comes with it into the new data dir.
    let back_root = tempfile::tempdir().unwrap();
    let back_data = back_root.path().join("data");
    let back_text = back_data.to_str().unwrap();
    let output = store_copy(&url, back_text, Some(&data));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(back_data.join("ledger").is_dir());
    assert!(stdout.contains("key vault's"), "{stdout}");
    assert!(
        back_data
            .join(akashi::server::VAULT_DIR)
            .join(ledger::vault::FILE_NAME)
            .is_file()
    );
    // A server on the copied data dir (the keys and the anchor copied beside it) opens every
    // body.
    crate::harness::copy_keys(&data, &back_data);
    std::fs::copy(
        data.join(akashi::server::ANCHOR_FILE),
        back_data.join(akashi::server::ANCHOR_FILE),
    )
    .unwrap();
    {
        let server = TestServer::start_with(back_root, |c| c.store = None).await;
        let regulator = Api::new(&server, Role::Regulator, None).await;
        let history = regulator.subject_history("p1").await.unwrap().entries;
        assert_eq!(history.len(), 3);
        assert!(history.iter().all(|e| !e.redacted && !e.body.is_empty()));
        server.stop().await;
    }
    // A store with records but no committed log is not a source; nothing is written to it.
    let junk = tempfile::tempdir().unwrap();
    {
        let store = akashi::server::open_store(junk.path(), None).unwrap();
        store.put(b"e\x00junk", b"not a log").unwrap();
        store.sync().unwrap();
    }
    let empty_target = cluster().unwrap().create_database();
    let output = store_copy(junk.path().to_str().unwrap(), &empty_target, Some(&data));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no committed log"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(dir);
}

/// The log never rolls back silently on PostgreSQL either: a database restored from an older
/// backup is refused naming both sizes, and an emptied one is refused rather than started
/// afresh, by the checkpoint anchor kept in the data dir.
#[tokio::test]
async fn a_database_restored_from_an_older_backup_is_refused() {
    use akashi::error::StartError;
    use ledger::log::OpenError;
    let Some(url) = fresh_database("a_database_restored_from_an_older_backup_is_refused") else {
        return;
    };
    let cluster = cluster().unwrap();
    let db = database_name(&url).to_owned();
    let with_store = |url: String| move |c: &mut akashi::config::Config| c.store = Some(url);
    let server =
        TestServer::start_with(tempfile::tempdir().unwrap(), with_store(url.clone())).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    consent_and_decide(&api, "p1").await;
    let backup_size = api.size().await;
    // The operator's backup, taken while the server runs.
    cluster.psql(&db, "CREATE TABLE backup AS SELECT * FROM akashi_kv");
    consent_and_decide(&api, "p2").await;
    let size = api.size().await;
    assert!(size > backup_size);
    let config = |dir: &std::path::Path| akashi::config::Config {
        data_dir: dir.join("data"),
        store: Some(url.clone()),
        ..akashi::config::Config::default()
    };
    let dir = server.stop().await;

    cluster.psql(
        &db,
        "BEGIN; DELETE FROM akashi_kv; INSERT INTO akashi_kv SELECT * FROM backup; COMMIT;",
    );
    let Err(err) = akashi::server::Server::open(config(dir.path())) else {
        panic!("a database behind its anchor was opened");
    };
    assert!(
        matches!(
            err,
            StartError::LedgerOpen(OpenError::StoreBehindAnchor { store_size, anchored_size })
                if store_size == backup_size && anchored_size == size
        ),
        "{err}"
    );
    // Nothing was written to it: the restored rows are the backup's, unchanged.
    let differing = cluster.psql(
        &db,
        "SELECT (SELECT count(*) FROM (SELECT * FROM akashi_kv EXCEPT SELECT * FROM backup) a) \
              + (SELECT count(*) FROM (SELECT * FROM backup EXCEPT SELECT * FROM akashi_kv) b)",
    );
    assert_eq!(differing, "0", "rows added, changed or deleted");

    cluster.psql(&db, "DELETE FROM akashi_kv");
    let Err(err) = akashi::server::Server::open(config(dir.path())) else {
        panic!("an emptied database was started afresh");
    };
    assert!(
        matches!(
            err,
            StartError::LedgerOpen(OpenError::StoreEmpty { anchored_size }) if anchored_size == size
        ),
        "{err}"
    );
}

/// A server run as `akashi serve` runs it (under `akashi::supervisor`), on fresh loopback ports.
struct Supervised {
    addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), akashi::error::StartError>>,
}

impl Supervised {
    fn start(config: akashi::config::Config) -> Self {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = grpc.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(akashi::supervisor::serve(
            config,
            grpc,
            http,
            admin,
            akashi::supervisor::OptionalApis::default(),
            async {
                let _ = stopped.await;
            },
            |_| {},
        ));
        Self {
            addr,
            admin_addr,
            stop,
            task,
        }
    }

    /// Whether a health check on a fresh connection says it serves, within a second or two (a
    /// follower that knows no other lease holder answers `NOT_SERVING`).
    async fn answers(&self) -> bool {
        let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(1))
            .timeout(std::time::Duration::from_secs(1))
            .connect()
            .await
        else {
            return false;
        };
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok_and(|answer| {
                answer.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            })
    }

    /// Waits (at most 40 s) until it answers, or until it stopped answering.
    async fn wait_until_it_answers(&self, answering: bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        while self.answers().await != answering {
            assert!(
                std::time::Instant::now() < deadline,
                "answering never became {answering}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Registers organisation `n` with a platform token of `data_dir`, retrying (at most 40 s)
    /// until the server takes it (a token that cannot be minted yet is sent empty and refused).
    async fn write(&self, data_dir: &std::path::Path, n: usize) -> pb::Receipt {
        use proto::pb::directory_service_client::DirectoryServiceClient;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            // The keys appear when the server first opens: minted in the loop.
            let token = akashi::keys::mint_token(
                data_dir,
                Role::Platform,
                None,
                std::time::Duration::from_secs(600),
            )
            .unwrap_or_default();
            let request = crate::harness::with_token(
                pb::UpsertOrganizationRequest {
                    request_id: String::new(),
                    id: format!("org-{n}"),
                    name: format!("organisation {n}"),
                    recipient_class: "university".into(),
                },
                &token,
            );
            if let Ok(channel) =
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                    .unwrap()
                    .connect_timeout(std::time::Duration::from_secs(1))
                    .timeout(std::time::Duration::from_secs(2))
                    .connect()
                    .await
                && let Ok(answer) = DirectoryServiceClient::new(channel)
                    .upsert_organization(request)
                    .await
            {
                return answer.into_inner().receipt.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never took a write",
                self.addr
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// The epoch in database `db`'s lease row.
fn lease_epoch(db: &str) -> i64 {
    cluster()
        .unwrap()
        .psql(db, "SELECT epoch FROM akashi_lease")
        .parse()
        .unwrap()
}

/// A configuration with its data dir in `dir` and its log in the database `url`.
fn on_postgres(dir: &tempfile::TempDir, url: &str) -> akashi::config::Config {
    akashi::config::Config {
        data_dir: dir.path().join("data"),
        store: Some(url.to_owned()),
        ..akashi::config::Config::default()
    }
}

/// Under the supervisor (as `akashi serve` runs), a server that learns its lease was taken stops
/// serving, waits for the lease like a standby, and takes the store over again once the other
/// holder lets it go, with a new epoch and every acknowledged entry.
#[tokio::test]
async fn a_replaced_server_steps_down_and_takes_over_again_when_the_lease_is_free() {
    let Some(url) = fresh_database("a_replaced_server_steps_down") else {
        return;
    };
    let db = database_name(&url).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = on_postgres(&dir, &url);
    let data_dir = config.data_dir.clone();
    let server = Supervised::start(config);
    server.wait_until_it_answers(true).await;
    let first = server.write(&data_dir, 1).await;
    let first_epoch = lease_epoch(&db);

    // Another server takes the store over and holds the lease for a while.
    cluster().unwrap().psql(
        &db,
        "UPDATE akashi_lease SET epoch = epoch + 1, holder = 'another server', \
         expires_at = now() + interval '1 hour'",
    );
    server.wait_until_it_answers(false).await;
    // It lets the lease go: the first server takes the store again.
    cluster()
        .unwrap()
        .psql(&db, "UPDATE akashi_lease SET expires_at = '-infinity'");
    server.wait_until_it_answers(true).await;
    assert_eq!(lease_epoch(&db), first_epoch + 2);
    let second = server.write(&data_dir, 2).await;
    assert!(second.leaf_index > first.leaf_index);
    let (_, metrics) = crate::harness::http_get(server.admin_addr, "/metrics").await;
    assert_eq!(
        crate::audit::counter(&metrics, "akashi_store_lease_epoch"),
        u64::try_from(first_epoch + 2).unwrap(),
        "{metrics}"
    );
    server.stop().await;
}

/// A standby (`--standby`) on the same data dir follows while the server it stands by for holds
/// the store (every call reaching it is forwarded there), and takes the store over, with every
/// acknowledged entry, once that server stops: a restart or an upgrade without refusing a single
/// call for longer than the takeover.
#[tokio::test]
async fn a_standby_takes_the_store_over_when_the_server_stops() {
    let Some(url) = fresh_database("a_standby_takes_the_store_over") else {
        return;
    };
    let db = database_name(&url).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = on_postgres(&dir, &url);
    let data_dir = config.data_dir.clone();
    let first = Supervised::start(config.clone());
    let before = first.write(&data_dir, 1).await;
    let first_epoch = lease_epoch(&db);
    let standby = Supervised::start(akashi::config::Config {
        standby: true,
        ..config
    });
    standby.wait_until_it_answers(true).await;
    let (status, ready) = crate::harness::http_get(standby.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("following"), "{ready}");
    // A write through the standby is forwarded to the server holding the store.
    let during = standby.write(&data_dir, 2).await;
    assert_eq!(lease_epoch(&db), first_epoch, "nobody took over yet");

    first.stop().await;
    let after = standby.write(&data_dir, 3).await;
    assert!(
        lease_epoch(&db) > first_epoch,
        "the standby took a new epoch"
    );
    assert!(after.leaf_index > during.leaf_index && during.leaf_index > before.leaf_index);
    // Every entry the first server acknowledged is in the log the standby serves.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", standby.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut transparency = pb::transparency_service_client::TransparencyServiceClient::new(channel);
    for receipt in [&before, &during] {
        let proof = transparency
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf_index: receipt.leaf_index,
                tree_size: after.leaf_index + 1,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(proof.leaf_index, receipt.leaf_index);
    }
    standby.stop().await;
}

/// A standby waits only for a store another server holds: any other reason not to open (here,
/// a database that does not exist) stops it, as it stops a start.
#[tokio::test]
async fn a_standby_stops_on_anything_but_a_held_store() {
    let Some(cluster) = cluster() else {
        let _ = fresh_database("a_standby_stops_on_anything_but_a_held_store");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = akashi::config::Config {
        data_dir: dir.path().join("data"),
        store: Some(cluster.url("no_such_database")),
        standby: true,
        ..akashi::config::Config::default()
    };
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let served = tokio::time::timeout(
        crate::harness::TIMEOUT,
        akashi::supervisor::serve(
            config,
            bind(),
            bind(),
            bind(),
            akashi::supervisor::OptionalApis::default(),
            std::future::pending(),
            |_| {},
        ),
    )
    .await
    .expect("the standby kept waiting for a database that does not exist");
    let err = served.err().unwrap();
    assert!(err.to_string().contains("no_such_database"), "{err}");
}

/// A standby that has joined a working log (it found the store held, and follows) rides out the
/// database going away (a restart, a failover) as a running server does, rather than exiting
/// and leaving the log one server short; only at its start does any failure but a held store
/// stop it (the test above).
#[tokio::test]
async fn a_standby_that_joined_rides_out_the_database_going_away() {
    let Some(url) = fresh_database("a_standby_that_joined_rides_out") else {
        return;
    };
    let db = database_name(&url).to_owned();
    let first_dir = tempfile::tempdir().unwrap();
    let first_config = on_postgres(&first_dir, &url);
    let first_data = first_config.data_dir.clone();
    let first = Supervised::start(first_config);
    first.write(&first_data, 1).await;
    let standby_dir = tempfile::tempdir().unwrap();
    crate::harness::copy_keys(&first_data, &standby_dir.path().join("data"));
    let standby = Supervised::start(akashi::config::Config {
        standby: true,
        ..on_postgres(&standby_dir, &url)
    });
    standby.wait_until_it_answers(true).await;
    cluster()
        .unwrap()
        .psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"));
    // Once the lease it last saw has run out, the follower reports itself not serving (a load
    // balancer takes it out) and keeps trying to open the store.
    standby.wait_until_it_answers(false).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        !standby.task.is_finished(),
        "the standby stopped when the database went away"
    );
    standby.stop().await;
    first.stop().await;
}

/// A log on PostgreSQL keeps its key vault in the database. A vault file found in the data dir
/// beside a database vault that holds other keys is refused, naming both, rather than one of
/// them being silently ignored; the database's keys and the file are left as they were.
#[tokio::test]
async fn a_data_dir_vault_that_differs_from_the_database_vault_is_refused() {
    let Some(url) = fresh_database("a_data_dir_vault_that_differs") else {
        return;
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| {
        c.store = Some(url.clone());
    })
    .await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    consent_and_decide(&api, "p1").await;
    let data = server.data_dir();
    let dir = server.stop().await;
    let vault_dir = data.join(akashi::server::VAULT_DIR);
    assert!(!vault_dir.join(ledger::vault::FILE_NAME).exists());
    // Another vault's keys appear in the data dir.
    ledger::vault::KeyVault::open(&vault_dir)
        .unwrap()
        .allocate()
        .unwrap();
    let config = akashi::config::Config {
        data_dir: data.clone(),
        store: Some(url.clone()),
        ..akashi::config::Config::default()
    };
    let err = akashi::server::Server::open(config).err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains("differs from the key vault in the PostgreSQL database"),
        "{message}"
    );
    assert!(vault_dir.join(ledger::vault::FILE_NAME).exists());
    // Moved aside, the server starts on the database's vault and opens every body.
    std::fs::remove_dir_all(&vault_dir).unwrap();
    let server = TestServer::start_with(dir, |c| c.store = Some(url.clone())).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("p1").await.unwrap().entries;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|e| !e.redacted && !e.body.is_empty()));
    server.stop().await;
}

/// Moving a data dir's key vault into the database survives being cut short and carries the
/// file's shreds: a move stopped after its first slot is finished by the next start (the bodies
/// of every patient open), a destruction stopped before its end is finished, and a key
/// shredded in the file only is shredded in the database too before the file goes.
#[tokio::test]
async fn a_vault_move_cut_short_is_finished_and_carries_the_files_shreds() {
    let Some(url) = fresh_database("a_vault_move_cut_short") else {
        return;
    };
    let db = database_name(&url).to_owned();
    // A log on sled with two patients, each with a key of their own.
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |c| c.store = None).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    consent_and_decide(&api, "p1").await;
    consent_and_decide(&api, "p2").await;
    let data = server.data_dir();
    let dir = server.stop().await;
    let vault_file = data
        .join(akashi::server::VAULT_DIR)
        .join(ledger::vault::FILE_NAME);
    let destroying = vault_file.with_file_name(ledger::vault::DESTROYING_NAME);
    let saved = std::fs::read(&vault_file).unwrap();
    let output = store_copy(data.to_str().unwrap(), &url, None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let open_bodies = |history: &[pb::HistoryEntry]| {
        history
            .iter()
            .filter(|e| !e.redacted && !e.body.is_empty())
            .count()
    };
    let url_for = url.clone();
    let on_postgres = move |dir| {
        let url = url_for.clone();
        TestServer::start_with(dir, move |c| c.store = Some(url))
    };
    let dir = on_postgres(dir).await.stop().await;
    assert!(!vault_file.exists());

    // A move cut short: the database holds the first slot only, the file is still there, and
    // a destruction left its renamed copy behind.
    cluster()
        .unwrap()
        .psql(&db, "DELETE FROM akashi_vault WHERE slot >= 1");
    std::fs::write(&vault_file, &saved).unwrap();
    std::fs::write(&destroying, &saved).unwrap();
    let server = on_postgres(dir).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    for patient in ["p1", "p2"] {
        let history = regulator.subject_history(patient).await.unwrap().entries;
        assert_eq!(open_bodies(&history), history.len(), "{patient}");
    }
    assert!(!vault_file.exists() && !destroying.exists());
    let dir = server.stop().await;

    // A key shredded in the file only (an erasure in that copy): the move shreds it in the
    // database too. Which slot is p2's: the one whose key the database no longer serves after.
    let mut shredded = saved.clone();
    let slot_of_p2 = 1;
    let at = 16 + 40 * slot_of_p2;
    shredded[at..at + 40].fill(0);
    std::fs::write(&vault_file, &shredded).unwrap();
    let server = on_postgres(dir).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let p1 = regulator.subject_history("p1").await.unwrap().entries;
    assert_eq!(open_bodies(&p1), p1.len());
    let p2 = regulator.subject_history("p2").await.unwrap().entries;
    assert_eq!(open_bodies(&p2), 0, "p2's key was shredded in the file");
    assert_eq!(
        cluster().unwrap().psql(
            &db,
            &format!("SELECT count(*) FROM akashi_vault WHERE slot = {slot_of_p2} AND tag = '\\x0000000000000000'")
        ),
        "1"
    );
    assert!(!vault_file.exists());
    server.stop().await;
}

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
    let proof = api
        .transparency()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old_size.get(),
            new_size,
        })
        .await
        .unwrap()
        .into_inner();
    ledger::proof::ConsistencyProof {
        old_size,
        new_size: ledger::hash::TreeSize(new_size),
        path: proof
            .path
            .iter()
            .map(|h| ledger::hash::Hash::from_slice(h).unwrap())
            .collect(),
    }
    .verify(&old_root, &new_root)
    .unwrap();
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
    let proof = api
        .transparency()
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: size.get(),
            new_size: new_size.get(),
        })
        .await
        .unwrap()
        .into_inner();
    ledger::proof::ConsistencyProof {
        old_size: size,
        new_size,
        path: proof
            .path
            .iter()
            .map(|h| ledger::hash::Hash::from_slice(h).unwrap())
            .collect(),
    }
    .verify(&root, &new_root)
    .unwrap();
    let regulator = Api::new(&server, Role::Regulator, None).await;
    assert_eq!(
        regulator.subject_history("p1").await.unwrap().entries.len(),
        3
    );
    let dir = server.stop().await;

    // And back, into a new data dir's sled store, verified with the first data dir's key.
    let back = tempfile::tempdir().unwrap();
    let back_text = back.path().to_str().unwrap();
    let output = store_copy(&url, back_text, Some(&data));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(back.path().join("ledger").is_dir());
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

/// Under the supervisor (as `akashi serve` runs), a server that learns its lease was taken stops
/// serving, waits for the lease like a standby, and takes the store over again once the other
/// holder lets it go, with a new epoch and every acknowledged entry.
#[tokio::test]
async fn a_replaced_server_steps_down_and_takes_over_again_when_the_lease_is_free() {
    use proto::pb::directory_service_client::DirectoryServiceClient;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Some(url) = fresh_database("a_replaced_server_steps_down") else {
        return;
    };
    let cluster = cluster().unwrap();
    let db = database_name(&url).to_owned();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = grpc.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = akashi::config::Config {
        data_dir: dir.path().join("data"),
        store: Some(url.clone()),
        ..akashi::config::Config::default()
    };
    let data_dir = config.data_dir.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(akashi::supervisor::serve(
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
    // Serving: a health check on a fresh connection answers.
    let serving = || async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(1))
            .timeout(std::time::Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()
            .map(|answer| answer.into_inner().status)
    };
    let wait_until = |want_serving: bool| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            let status = serving().await;
            if status.is_some() == want_serving {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serving never became {want_serving}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    wait_until(true).await;
    let token = crate::harness::mint(&data_dir, Role::Platform, None);
    let upsert = |n: usize| {
        crate::harness::with_token(
            pb::UpsertOrganizationRequest {
                request_id: String::new(),
                id: format!("org-{n}"),
                name: format!("organisation {n}"),
                recipient_class: "university".into(),
            },
            &token,
        )
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let first = DirectoryServiceClient::new(channel)
        .upsert_organization(upsert(1))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let epoch = || {
        cluster
            .psql(&db, "SELECT epoch FROM akashi_lease")
            .parse::<i64>()
            .unwrap()
    };
    let first_epoch = epoch();

    // Another server takes the store over and holds the lease for a while.
    cluster.psql(
        &db,
        "UPDATE akashi_lease SET epoch = epoch + 1, holder = 'another server', \
         expires_at = now() + interval '1 hour'",
    );
    wait_until(false).await;
    // It lets the lease go: the first server takes the store again.
    cluster.psql(&db, "UPDATE akashi_lease SET expires_at = '-infinity'");
    wait_until(true).await;
    assert_eq!(epoch(), first_epoch + 2);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let second = DirectoryServiceClient::new(channel)
        .upsert_organization(upsert(2))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert!(second.leaf_index > first.leaf_index);
    let (_, metrics) = crate::harness::http_get(admin_addr, "/metrics").await;
    assert_eq!(
        crate::audit::counter(&metrics, "akashi_store_lease_epoch"),
        u64::try_from(first_epoch + 2).unwrap(),
        "{metrics}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A standby (`--standby`) on the same data dir waits while the server it stands by for holds
/// the store, and takes it over, with every acknowledged entry, once that server stops: a
/// restart or an upgrade without refusing a single call for longer than the takeover.
#[tokio::test]
async fn a_standby_takes_the_store_over_when_the_server_stops() {
    use proto::pb::directory_service_client::DirectoryServiceClient;
    let Some(url) = fresh_database("a_standby_takes_the_store_over") else {
        return;
    };
    let cluster = cluster().unwrap();
    let db = database_name(&url).to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = akashi::config::Config {
        data_dir: dir.path().join("data"),
        store: Some(url.clone()),
        ..akashi::config::Config::default()
    };
    let start = |config: akashi::config::Config| {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = grpc.local_addr().unwrap();
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
        (addr, stop, task)
    };
    let connect = |addr: std::net::SocketAddr| async move {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(1))
            .timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
            .ok()
    };
    let token = || crate::harness::mint(&dir.path().join("data"), Role::Platform, None);
    let upsert = |n: usize, token: &str| {
        crate::harness::with_token(
            pb::UpsertOrganizationRequest {
                request_id: String::new(),
                id: format!("org-{n}"),
                name: format!("organisation {n}"),
                recipient_class: "university".into(),
            },
            token,
        )
    };
    // Until `addr` serves a write, for at most 40 s.
    let write = |addr: std::net::SocketAddr, n: usize| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            if let Some(channel) = connect(addr).await
                && let Ok(answer) = DirectoryServiceClient::new(channel)
                    .upsert_organization(upsert(n, &token()))
                    .await
            {
                return answer.into_inner().receipt.unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "{addr} never served");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };

    let (first_addr, stop_first, first) = start(config.clone());
    let before = write(first_addr, 1).await;
    let epoch = || {
        cluster
            .psql(&db, "SELECT epoch FROM akashi_lease")
            .parse::<i64>()
            .unwrap()
    };
    let first_epoch = epoch();
    let (standby_addr, stop_standby, standby) = start(akashi::config::Config {
        standby: true,
        ..config.clone()
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let standby_answers = match connect(standby_addr).await {
        Some(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok(),
        None => false,
    };
    assert!(
        !standby_answers,
        "the standby serves nothing while the store is held"
    );
    let during = write(first_addr, 2).await;

    stop_first.send(()).unwrap();
    first.await.unwrap().unwrap();
    let after = write(standby_addr, 3).await;
    assert!(epoch() > first_epoch, "the standby took a new epoch");
    assert!(after.leaf_index > during.leaf_index && during.leaf_index > before.leaf_index);
    // Every entry the first server acknowledged is in the log the standby serves.
    let channel = connect(standby_addr).await.unwrap();
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
    stop_standby.send(()).unwrap();
    standby.await.unwrap().unwrap();
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

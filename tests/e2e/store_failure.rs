//! A full disk under the data dir: the failed sync poisons the log, health reports the write
//! path `NOT_SERVING` while reads go on, and once space is freed the server reopens its store by
//! itself (`akashi::supervisor`), keeping every entry it acknowledged.
//!
//! The disk is a small tmpfs mounted for the test, which needs root (as CI runs); elsewhere the
//! test says so and does nothing.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use akashi::{auth::Role, config::Config};
use proto::pb::{self, directory_service_client::DirectoryServiceClient};
use tokio::sync::oneshot;
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::harness::{TIMEOUT, mint, with_token};

/// A tmpfs mounted on a temporary folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes, or `None` where mounting is not allowed (not root).
    fn mount(size: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk may have left a few blocks: fill them byte by byte.
    while file.write_all(&[0u8; 512]).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .unwrap()
}

/// Health of `service` as seen on a fresh connection (the server may have been reopened).
async fn health(addr: std::net::SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Polls `service`'s health until it is `want` (bounded by [`TIMEOUT`]).
async fn wait_health(addr: std::net::SocketAddr, service: &str, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if health(addr, service).await == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{service}` never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn organization(n: usize) -> pb::UpsertOrganizationRequest {
    pb::UpsertOrganizationRequest {
        request_id: String::new(),
        id: format!("org-{n}"),
        // A long name, so that the disk fills within a few hundred writes.
        name: format!("organisation {n} {}", "x".repeat(200)),
        recipient_class: "university".into(),
    }
}

#[tokio::test]
async fn full_disk_poisons_then_the_server_reopens_its_store_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount(24 * 1024 * 1024) else {
        eprintln!("store_failure: cannot mount a tmpfs here (not root): test not run");
        return;
    };
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let addr = grpc.local_addr().unwrap();
    let config = Config {
        data_dir: disk.path().join("data"),
        grpc_addr: addr,
        http_addr: http.local_addr().unwrap(),
        admin_addr,
        ..Config::default()
    };
    let data_dir = config.data_dir.clone();
    let (stop, stopped) = oneshot::channel::<()>();
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
    wait_health(addr, "", ServingStatus::Serving).await;
    let token = mint(&data_dir, Role::Platform, None);
    let access = pb::access_service_server::SERVICE_NAME;

    // Acknowledged writes until the disk is full.
    let mut directory = DirectoryServiceClient::new(connect(addr).await);
    let mut acknowledged = Vec::new();
    for n in 0..50 {
        let receipt = directory
            .upsert_organization(with_token(organization(n), &token))
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        acknowledged.push((receipt.leaf_index, receipt.leaf_hash));
    }
    let filler = fill(disk.path());
    let mut failed = None;
    for n in 50..5_000 {
        match directory
            .upsert_organization(with_token(organization(n), &token))
            .await
        {
            Ok(response) => {
                let receipt = response.into_inner().receipt.unwrap();
                acknowledged.push((receipt.leaf_index, receipt.leaf_hash));
            }
            Err(status) => {
                failed = Some(status);
                break;
            }
        }
    }
    let failed = failed.expect("a full disk never failed a write");
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");

    // Poisoned: the write path says so, reads go on.
    wait_health(addr, access, ServingStatus::NotServing).await;
    wait_health(addr, "", ServingStatus::NotServing).await;
    // The admin port says so to an orchestrator: alive, not ready.
    let (status, _) = crate::harness::http_get(admin_addr, "/readyz").await;
    assert_eq!(status, 503);
    let (status, _) = crate::harness::http_get(admin_addr, "/healthz").await;
    assert_eq!(status, 200);
    let (_, metrics) = crate::harness::http_get(admin_addr, "/metrics").await;
    assert_eq!(
        crate::audit::counter(&metrics, "akashi_ledger_poisoned"),
        1,
        "{metrics}"
    );
    assert_eq!(
        health(addr, pb::transparency_service_server::SERVICE_NAME).await,
        Some(ServingStatus::Serving)
    );

    // Space comes back: the server reopens its store by itself and takes writes again.
    fs::remove_file(filler).unwrap();
    wait_health(addr, access, ServingStatus::Serving).await;
    let (status, _) = crate::harness::http_get(admin_addr, "/readyz").await;
    assert_eq!(status, 200);
    let (_, metrics) = crate::harness::http_get(admin_addr, "/metrics").await;
    assert_eq!(
        crate::audit::counter(&metrics, "akashi_ledger_poisoned"),
        0,
        "{metrics}"
    );
    let channel = connect(addr).await;
    let receipt = DirectoryServiceClient::new(channel.clone())
        .upsert_organization(with_token(organization(9_999), &token))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert!(receipt.tree_size > acknowledged.len() as u64);

    // Every acknowledged entry is in the recovered log, unchanged.
    let mut transparency = pb::transparency_service_client::TransparencyServiceClient::new(channel);
    for (index, hash) in &acknowledged {
        let leaves = transparency
            .get_leaves(pb::GetLeavesRequest {
                start: *index,
                count: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .leaves;
        assert_eq!(
            ledger::hash::hash_leaf(&leaves[0]).as_bytes().as_slice(),
            hash.as_slice(),
            "leaf {index}"
        );
    }

    stop.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("server did not stop in time")
        .unwrap()
        .unwrap();
    drop(disk);
}

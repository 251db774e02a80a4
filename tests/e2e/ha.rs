//! Several akashi servers on one PostgreSQL database, as real processes: every server answers
//! every call (followers forward to the lease holder), the leader is killed (`kill -9`) and the
//! next one paused (`SIGSTOP` for 15 s) under write load through every server, and afterwards
//! every acknowledged receipt is in the final log with its leaf hash, every checkpoint any
//! server signed is a prefix of the final one, no two checkpoints of one size differ, and the
//! writes resumed within 10 s each time; the auditor's replay of the whole log finds nothing.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use akashi::auth::Role;
use ledger::store::postgres::testing::fresh_database;
use ledger::{
    hash::{Hash, LeafIndex, TreeSize},
    proof::{ConsistencyProof, InclusionProof},
};
use proto::pb;
use tonic::transport::{Channel, Endpoint};

use crate::{
    api::{Api, allowed, ask, checkpoint_root, grant, verify_receipt},
    harness::{copy_keys, mint},
};

const AKASHI: &str = env!("CARGO_BIN_EXE_akashi");
/// The longest writes may stop when a leader dies or stalls.
const RESUME_WITHIN: Duration = Duration::from_secs(10);
/// Patients the load asks about (each has a consent, so every decision is an allow).
const PATIENTS: usize = 8;

/// A free loopback port (bound, then released for the server to bind).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The raw answer to `GET path`, or `None` when nothing answers.
async fn get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    Some(answer)
}

/// An `akashi serve` process with `--standby` on a data dir of its own.
struct Node {
    name: &'static str,
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
    authzen: SocketAddr,
    channel: Channel,
}

impl Node {
    fn start(name: &'static str, data: &Path, url: &str, logs: &Path) -> Self {
        let (grpc, http, admin, authzen) = (free_addr(), free_addr(), free_addr(), free_addr());
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let child = Command::new(AKASHI)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--store", url, "--standby"])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--authzen-addr", &authzen.to_string()])
            .env("AKASHI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let channel = Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Self {
            name,
            child,
            grpc,
            http,
            admin,
            authzen,
            channel,
        }
    }

    /// `/readyz` of the admin port: `Some(true)` leading, `Some(false)` following, `None` not
    /// ready.
    async fn role(&self) -> Option<bool> {
        let answer = tokio::time::timeout(Duration::from_secs(2), get(self.admin, "/readyz"))
            .await
            .ok()??;
        answer
            .starts_with("HTTP/1.1 200")
            .then(|| !answer.contains("following"))
    }

    async fn wait_role(&self, leading: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.role().await != Some(leading) {
            assert!(
                Instant::now() < deadline,
                "{} never became {}",
                self.name,
                if leading { "the leader" } else { "a follower" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An acknowledged decision: which server answered, when, and its receipt.
struct Ack {
    node: usize,
    at: Instant,
    leaf_index: u64,
    leaf_hash: Vec<u8>,
    checkpoint: String,
}

fn research(patient: usize) -> pb::AuthorizeRequest {
    ask(
        "Organization",
        "uni",
        "secondary_use",
        &format!("p{patient}"),
        "lab_result",
        "research",
        "IDENTIFIED",
    )
}

/// The longest stretch without an acknowledgement from any server between `from` and the first
/// acknowledgement at least `settle` after it: how long the writes stopped around a fault
/// (answers sent before the fault may still arrive just after it; they only split the stretch).
fn longest_silence(acks: &[Ack], from: Instant, settle: Duration) -> Duration {
    let mut times: Vec<Instant> = acks.iter().map(|a| a.at).filter(|at| *at >= from).collect();
    times.sort();
    let Some(end) = times.iter().position(|at| *at >= from + settle) else {
        return Duration::MAX;
    };
    std::iter::once(from)
        .chain(times.iter().take(end + 1).copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_keep_answering_through_a_leader_kill_and_a_leader_pause() {
    let Some(url) = fresh_database("three_servers_keep_answering") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let data: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| root.path().join(n))
        .collect();
    // The first server creates the keys; the others get copies (the same key files on every
    // server, as the README says).
    let logs =
        std::env::var_os("AKASHI_HA_LOGS").map_or_else(|| root.path().to_owned(), PathBuf::from);
    let a = Node::start("a", &data[0], &url, &logs);
    a.wait_role(true).await;
    copy_keys(&data[0], &data[1]);
    copy_keys(&data[0], &data[2]);
    let b = Node::start("b", &data[1], &url, &logs);
    let c = Node::start("c", &data[2], &url, &logs);
    b.wait_role(false).await;
    c.wait_role(false).await;
    // Every server shows its role; a follower also shows the epoch it follows.
    let metrics = get(b.admin, "/metrics").await.unwrap();
    assert!(metrics.contains("\nakashi_follower 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nakashi_follower_leader_epoch 1\n"),
        "{metrics}"
    );
    let left: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("akashi_follower_leader_lease_left_seconds "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(left > 0.0 && left <= 6.0, "{metrics}");
    let metrics = get(a.admin, "/metrics").await.unwrap();
    assert!(metrics.contains("\nakashi_follower 0\n"), "{metrics}");
    assert!(
        metrics.contains("\nakashi_store_lease_epoch 1\n"),
        "{metrics}"
    );
    // A follower answers health itself: serving while it knows a leader.
    let health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "akashi.v1.AccessService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let vkey = std::fs::read_to_string(data[0].join(akashi::keys::CHECKPOINT_VKEY_FILE))
        .unwrap()
        .trim()
        .to_owned();
    let token = mint(&data[0], Role::Platform, None);

    // Set up through the followers: forwarded to the leader.
    let via_b = Api {
        channel: b.channel.clone(),
        token: token.clone(),
    };
    let via_c = Api {
        channel: c.channel.clone(),
        token: token.clone(),
    };
    via_b.org("uni", "university").await;
    for patient in 0..PATIENTS {
        via_c
            .grant(grant(
                &format!("p{patient}"),
                &["research"],
                &["clinical"],
                &["uni"],
                &[],
                "IDENTIFIED",
            ))
            .await;
    }
    let answer = via_b.authorize(research(0)).await;
    assert!(allowed(&answer), "{answer:?}");
    // The public HTTP port and the AuthZEN API are forwarded too.
    let (status, checkpoint) = crate::harness::http_get(c.http, "/checkpoint").await;
    assert_eq!(status, 200, "{checkpoint}");
    assert_eq!(
        checkpoint_root(&checkpoint, &vkey).0.get(),
        answer.receipt.unwrap().tree_size
    );
    let evaluation = serde_json::json!({
        "subject": { "type": "organization", "id": "uni" },
        "action": { "name": "secondary_use" },
        "resource": {
            "type": "patient", "id": "p1", "properties": { "data_category": "lab_result" }
        },
        "context": { "purpose": "research", "level": "IDENTIFIED" }
    });
    let (status, decided) = crate::authzen::call(
        b.authzen,
        "POST",
        "/access/v1/evaluation",
        Some(&token),
        &evaluation.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["decision"], true, "{decided}");
    // A call another server already forwarded is not forwarded again (a misconfigured
    // advertised address could otherwise send it round for ever).
    let mut twice = via_c.req(research(1));
    twice
        .metadata_mut()
        .insert(akashi::follower::FORWARDED, "1".parse().unwrap());
    let refused = via_c.access().authorize(twice).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("advertise_host"), "{refused:?}");

    // Write load through every server, and every checkpoint any server shows, recorded.
    let nodes = [&a, &b, &c];
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let checkpoints: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut load = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for worker in 0..2 {
            let api = Api {
                channel: node.channel.clone(),
                token: token.clone(),
            };
            let (acks, stopped, vkey) = (acks.clone(), stopped.clone(), vkey.clone());
            load.push(tokio::spawn(async move {
                let mut i = worker;
                while !*stopped.borrow() {
                    i += 1;
                    let asked = api
                        .access()
                        .authorize(api.req(research(i % PATIENTS)))
                        .await;
                    match asked {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            assert!(allowed(&answer), "{answer:?}");
                            let receipt = answer.receipt.unwrap();
                            acks.lock().unwrap().push(Ack {
                                node: n,
                                at: Instant::now(),
                                leaf_index: receipt.leaf_index,
                                leaf_hash: receipt.leaf_hash.clone(),
                                checkpoint: receipt.checkpoint.clone(),
                            });
                            verify_receipt(&receipt, &vkey);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let channel = node.channel.clone();
        let (checkpoints, stopped) = (checkpoints.clone(), stopped.clone());
        load.push(tokio::spawn(async move {
            let mut transparency =
                pb::transparency_service_client::TransparencyServiceClient::new(channel);
            while !*stopped.borrow() {
                if let Ok(cp) = transparency
                    .get_checkpoint(pb::GetCheckpointRequest {})
                    .await
                {
                    checkpoints.lock().unwrap().push(cp.into_inner().checkpoint);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        (0..3).all(|n| acks.lock().unwrap().iter().any(|a| a.node == n)),
        "every server answers writes before the faults"
    );

    // The leader is killed: one of the others takes the store over.
    a.signal("-KILL");
    let killed = Instant::now();
    let next = loop {
        if b.role().await == Some(true) {
            break &b;
        }
        if c.role().await == Some(true) {
            break &c;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "nobody took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = if std::ptr::eq(next, &b) { &c } else { &b };
    tokio::time::sleep_until((killed + RESUME_WITHIN + Duration::from_secs(1)).into()).await;
    let gap = longest_silence(&acks.lock().unwrap(), killed, RESUME_WITHIN);
    eprintln!(
        "{} took over; writes stopped for at most {gap:?} after the kill",
        next.name
    );
    assert!(
        gap <= RESUME_WITHIN,
        "writes stopped for {gap:?} after the kill"
    );

    // The new leader stops responding for 15 s: the last one takes over; the paused one, when it
    // wakes up, commits nothing and follows.
    next.signal("-STOP");
    let paused = Instant::now();
    other.wait_role(true).await;
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(paused.elapsed())).await;
    next.signal("-CONT");
    let woke = Instant::now();
    let gap = longest_silence(&acks.lock().unwrap(), paused, RESUME_WITHIN);
    eprintln!(
        "{} took over; writes stopped for at most {gap:?} after the pause",
        other.name
    );
    assert!(
        gap <= RESUME_WITHIN,
        "writes stopped for {gap:?} after the pause"
    );
    next.wait_role(false).await;
    let next_index = nodes.iter().position(|n| std::ptr::eq(*n, next)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acks
        .lock()
        .unwrap()
        .iter()
        .any(|a| a.node == next_index && a.at > woke)
    {
        assert!(
            Instant::now() < deadline,
            "the server that was paused never forwarded a write"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    for task in load {
        task.await.unwrap();
    }

    // Every acknowledged receipt is in the final log with its hash; every checkpoint seen is a
    // prefix of the final one; no two checkpoints of one size differ.
    let final_api = Api {
        channel: other.channel.clone(),
        token,
    };
    let final_note = final_api
        .transparency()
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .checkpoint;
    let (final_size, final_root) = checkpoint_root(&final_note, &vkey);
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    assert!(acks.len() > 50, "only {} writes acknowledged", acks.len());
    eprintln!(
        "{} writes acknowledged ({} through a, {} through b, {} through c), {} checkpoints seen, \
         final size {final_size}",
        acks.len(),
        acks.iter().filter(|a| a.node == 0).count(),
        acks.iter().filter(|a| a.node == 1).count(),
        acks.iter().filter(|a| a.node == 2).count(),
        checkpoints.lock().unwrap().len(),
    );
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut notes: Vec<String> = acks.iter().map(|a| a.checkpoint.clone()).collect();
    notes.extend(checkpoints.lock().unwrap().iter().cloned());
    for note in &notes {
        let (size, root) = checkpoint_root(note, &vkey);
        if let Some(seen) = roots.insert(size.get(), root) {
            assert_eq!(seen, root, "two checkpoints of size {size} differ");
        }
    }
    let mut transparency = final_api.transparency();
    for (size, root) in &roots {
        if *size == final_size.get() {
            assert_eq!(*root, final_root);
            continue;
        }
        let proof = transparency
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                old_size: *size,
                new_size: final_size.get(),
            })
            .await
            .unwrap()
            .into_inner();
        ConsistencyProof {
            old_size: TreeSize(*size),
            new_size: final_size,
            path: proof
                .path
                .iter()
                .map(|h| Hash::from_slice(h).unwrap())
                .collect(),
        }
        .verify(root, &final_root)
        .unwrap();
    }
    // The keys are shared: the last lease holder opens bodies sealed under keys the first one
    // handed out (the patients' grants) and the second one used.
    let regulator = Api {
        channel: other.channel.clone(),
        token: mint(&data[0], Role::Regulator, None),
    };
    let history = regulator.subject_history("p1").await.unwrap().entries;
    assert!(history.len() > 2, "{}", history.len());
    assert!(history.iter().all(|e| !e.redacted && !e.body.is_empty()));
    // The auditor replays the whole log through the last lease holder: every entry, tile and
    // checkpoint verifies, and every logged decision is the one the rules make.
    let report = auditor::cli::replay(
        &auditor::cli::ReplayConfig {
            tls: Default::default(),
            verifier: ledger::note::NoteVerifier::from_vkey(&vkey).unwrap(),
            grpc: format!("http://{}", other.grpc),
            token: mint(&data[0], Role::Regulator, None),
        },
        false,
    )
    .await
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(report.entries >= final_size.get(), "{}", report.entries);
    assert_eq!(report.decisions_checked, report.decisions_matching);
    for ack in &acks {
        let proof = transparency
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf_index: ack.leaf_index,
                tree_size: final_size.get(),
            })
            .await
            .unwrap()
            .into_inner();
        InclusionProof {
            leaf_index: LeafIndex(ack.leaf_index),
            tree_size: final_size,
            path: proof
                .path
                .iter()
                .map(|h| Hash::from_slice(h).unwrap())
                .collect(),
        }
        .verify(&Hash::from_slice(&ack.leaf_hash).unwrap(), &final_root)
        .unwrap();
    }
    drop((b, c));
}

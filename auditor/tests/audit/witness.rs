//! `akashi-audit witness` over real HTTP on loopback, against c2sp.org/tlog-witness: every
//! status the spec names (200, 400, 403, 404, 409 with `text/x.tlog.size`, 422), a fork refused
//! with its evidence kept, the state surviving a restart, the state directory's lock, and
//! `witness-keygen`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use auditor::cli::{EVIDENCE_DIR, STATE_FILE, WitnessServer, witness_keygen};
use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    cosignature::{WitnessVerifier, WitnessedCheckpoint, append_signatures},
    hash::{Hash, TreeSize},
    log::Log,
    note::{KeyName, NoteSigner},
    witness::{AddCheckpoint, parse_cosignatures},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;

use crate::support::{self, append_plain, plain_log};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Running {
    addr: SocketAddr,
    vkey: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(key: &Path, state: &Path) -> Self {
        let server = WitnessServer::open(key, support::signer().verifier(), state).unwrap();
        let vkey = server.vkey().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            vkey,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `POST /add-checkpoint` with `body`, over a fresh connection.
async fn post(addr: SocketAddr, body: &[u8]) -> Answer {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /add-checkpoint HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // A refused oversize body may close the connection before all of it is sent.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8(response).unwrap()
    };
    let response = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// The log's latest checkpoint, with the consistency proof from `old` when there is one.
fn request(old: u64, log: &Log) -> Vec<u8> {
    let note = log.checkpoint().note().to_owned();
    let size = log.size();
    let proof = if old > 0 && old < size.get() {
        log.consistency_proof(TreeSize(old), size).unwrap().path
    } else {
        Vec::new()
    };
    AddCheckpoint {
        old_size: TreeSize(old),
        proof,
        note,
    }
    .to_body()
    .into_bytes()
}

fn body_of(old: u64, proof: Vec<Hash>, note: &str) -> Vec<u8> {
    AddCheckpoint {
        old_size: TreeSize(old),
        proof,
        note: note.to_owned(),
    }
    .to_body()
    .into_bytes()
}

fn new_key(dir: &Path, name: &str) -> (std::path::PathBuf, WitnessVerifier) {
    let path = dir.join(format!("{}.key", name.replace('/', "_")));
    let vkey = witness_keygen(name, &path).unwrap();
    (path, WitnessVerifier::from_vkey(&vkey).unwrap())
}

fn evidence(state: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(state.join(EVIDENCE_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_spec_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let (key, verifier) = new_key(dir.path(), "witness.test/w1");
    let state = dir.path().join("state");
    let witness = Running::start(&key, &state).await;
    assert_eq!(witness.vkey, verifier.to_vkey());
    let log = plain_log(20, 7, "a");

    // 200: the first checkpoint, from old size 0; the answer is a valid cosignature line.
    let first = post(witness.addr, &request(0, &log)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let lines = parse_cosignatures(first.body.as_bytes()).unwrap();
    let note = append_signatures(log.checkpoint().note(), &lines);
    let witnessed = WitnessedCheckpoint::verify(
        &note,
        &support::signer().verifier(),
        std::slice::from_ref(&verifier),
    )
    .unwrap();
    assert_eq!(witnessed.require_quorum(1), Ok(()));
    // The state is on disk before the answer.
    assert_eq!(
        std::fs::read_to_string(state.join(STATE_FILE)).unwrap(),
        log.checkpoint().note()
    );

    // 409 with the latest size, as text/x.tlog.size, when the old size is not it.
    append_plain(&log, 20..50, 10, "a");
    let conflict = post(witness.addr, &request(0, &log)).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.content_type, "text/x.tlog.size");
    assert_eq!(conflict.body, "20\n");

    // 200 again with the proof from 20.
    let grown = post(witness.addr, &request(20, &log)).await;
    assert_eq!(grown.status, 200, "{}", grown.body);

    // 400: not a request, and an old size beyond the checkpoint.
    assert_eq!(post(witness.addr, b"old x\n\nhello\n").await.status, 400);
    assert_eq!(post(witness.addr, &request(51, &log)).await.status, 400);

    // 403: the log's origin signed by another key.
    let forged = SignedCheckpoint::sign(
        log.checkpoint().checkpoint().clone(),
        &support_other_signer(),
    )
    .unwrap();
    let answer = post(witness.addr, &body_of(50, Vec::new(), forged.note())).await;
    assert_eq!(answer.status, 403, "{}", answer.body);

    // 404: a log the witness does not know.
    let stranger = NoteSigner::from_seed(KeyName::new("other.test/log").unwrap(), &[5; 32]);
    let theirs = SignedCheckpoint::sign(
        Checkpoint::new(
            "other.test/log",
            TreeSize(50),
            log.checkpoint().checkpoint().root,
        ),
        &stranger,
    )
    .unwrap();
    assert_eq!(
        post(witness.addr, &body_of(50, Vec::new(), theirs.note()))
            .await
            .status,
        404
    );

    // 422: a proof that does not connect 50 to 60.
    append_plain(&log, 50..60, 10, "a");
    let mut bad = log
        .consistency_proof(TreeSize(50), TreeSize(60))
        .unwrap()
        .path;
    bad[0].0[3] ^= 1;
    let answer = post(witness.addr, &body_of(50, bad, log.checkpoint().note())).await;
    assert_eq!(answer.status, 422, "{}", answer.body);

    // 413: a body past the cap is refused unread.
    let huge = vec![b'a'; ledger::witness::MAX_REQUEST_SIZE + 1];
    assert_eq!(post(witness.addr, &huge).await.status, 413);

    // Refusals changed nothing: the latest cosigned size is still 50.
    let conflict = post(witness.addr, &request(0, &log)).await;
    assert_eq!(conflict.body, "50\n");
    witness.stop().await;
}

fn support_other_signer() -> NoteSigner {
    NoteSigner::from_seed(KeyName::new(support::ORIGIN).unwrap(), &[8; 32])
}

#[tokio::test]
async fn a_fork_is_refused_and_its_evidence_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = new_key(dir.path(), "witness.test/w1");
    let state = dir.path().join("state");
    let witness = Running::start(&key, &state).await;

    let ours = plain_log(30, 10, "a");
    assert_eq!(post(witness.addr, &request(0, &ours)).await.status, 200);
    let cosigned = ours.checkpoint().note().to_owned();

    // The same size with other entries: a split view.
    let theirs = plain_log(30, 10, "b");
    let same_size = post(witness.addr, &request(30, &theirs)).await;
    assert_eq!(same_size.status, 409, "{}", same_size.body);
    let kept = evidence(&state);
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read_to_string(kept[0].join("cosigned")).unwrap(),
        cosigned
    );
    let presented = std::fs::read_to_string(kept[0].join("request")).unwrap();
    let parsed = AddCheckpoint::parse(presented.as_bytes()).unwrap();
    assert_eq!(parsed.note, theirs.checkpoint().note());
    assert!(
        std::fs::read_to_string(kept[0].join("problem"))
            .unwrap()
            .contains("another root")
    );

    // Their branch grown, with the proof that is valid on their branch: it does not connect to
    // what the witness cosigned.
    append_plain(&theirs, 30..40, 10, "b");
    let grown = post(witness.addr, &request(30, &theirs)).await;
    assert_eq!(grown.status, 422, "{}", grown.body);
    let kept = evidence(&state);
    assert_eq!(kept.len(), 2);
    // The same request again is not kept twice.
    let again = post(witness.addr, &request(30, &theirs)).await;
    assert_eq!(again.status, 422);
    assert_eq!(evidence(&state).len(), 2);

    // The witness still follows the honest branch.
    append_plain(&ours, 30..40, 10, "a");
    assert_eq!(post(witness.addr, &request(30, &ours)).await.status, 200);
    witness.stop().await;
}

#[tokio::test]
async fn the_state_survives_a_restart_and_is_locked_while_served() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = new_key(dir.path(), "witness.test/w1");
    let state = dir.path().join("state");
    let witness = Running::start(&key, &state).await;
    let log = plain_log(12, 5, "a");
    assert_eq!(post(witness.addr, &request(0, &log)).await.status, 200);

    let busy = WitnessServer::open(&key, support::signer().verifier(), &state);
    assert!(
        format!("{:#}", busy.unwrap_err()).contains("another witness"),
        "a second witness on the same state directory"
    );
    witness.stop().await;

    let restarted = Running::start(&key, &state).await;
    let conflict = post(restarted.addr, &request(0, &log)).await;
    assert_eq!((conflict.status, conflict.body.as_str()), (409, "12\n"));
    restarted.stop().await;

    // A state not signed by the log key is refused at start.
    std::fs::write(
        state.join(STATE_FILE),
        plain_log_with_other_key().checkpoint().note(),
    )
    .unwrap();
    let refused = WitnessServer::open(&key, support::signer().verifier(), &state);
    assert!(refused.is_err());
}

fn plain_log_with_other_key() -> Log {
    Log::open(
        std::sync::Arc::new(ledger::store::MemoryStore::new()),
        support_other_signer(),
    )
    .unwrap()
}

#[test]
fn keygen_writes_a_private_key_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.key");
    let vkey = witness_keygen("witness.test/w1", &path).unwrap();
    let verifier = WitnessVerifier::from_vkey(&vkey).unwrap();
    assert_eq!(verifier.name().as_str(), "witness.test/w1");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let skey = std::fs::read_to_string(&path).unwrap();
    let signer = ledger::cosignature::WitnessSigner::from_skey(skey.trim()).unwrap();
    assert_eq!(signer.verifier(), verifier);

    let again = witness_keygen("witness.test/w1", &path);
    assert!(format!("{:#}", again.unwrap_err()).contains("exists"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        skey,
        "not overwritten"
    );
    assert!(witness_keygen("bad name", &dir.path().join("x.key")).is_err());
}

#[tokio::test]
async fn a_slow_client_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = new_key(dir.path(), "witness.test/w1");
    let witness = Running::start(&key, &dir.path().join("state")).await;
    // A client that sends its headers and half a body, then nothing.
    let mut slow = tokio::net::TcpStream::connect(witness.addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /add-checkpoint HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\nold 0\n",
            witness.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Another client is answered meanwhile: the state lock is taken only once a body is in.
    let log = plain_log(3, 3, "a");
    let answer = post(witness.addr, &request(0, &log)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    drop(slow);
    witness.stop().await;
}

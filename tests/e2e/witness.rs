//! Witness cosigning through the real path: the server with `--witness VKEY@URL` and a quorum,
//! two `akashi-audit witness` servers on loopback, `GET /checkpoint` carrying both
//! cosignatures, `akashi-audit verify-receipt --witness ... --witness-quorum 2` and `watch`
//! accepting it (and refusing an unknown witness), the witnessed checkpoint surviving a
//! restart, writes going on when every witness is down, and a patient's history proven complete
//! at a checkpoint both witnesses cosigned (directly, or through a later witnessed checkpoint).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use akashi::{auth::Role, config::WitnessSpec};
use auditor::{
    cli::{
        Cli, HistoryConfig, LogSource, WatchConfig, WatchStep, WitnessServer, fetch_history, run,
        verify_responses, watch_once, witness_history, witness_keygen,
    },
    exit::AuditExitCode,
    quorum::WitnessPolicy,
};
use clap::Parser as _;
use ledger::{
    cosignature::{CosignatureError, WitnessVerifier, WitnessedCheckpoint},
    hash::{LeafIndex, TreeSize},
    note::NoteVerifier,
    proof::InclusionProof,
    tlog_proof::TlogProof,
};
use proto::pb;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    api::{Api, ask, grant},
    audit::counter,
    harness::{TIMEOUT, TestServer, http_get, tls_front, tls_identity},
};

/// A witness key and where its server listens (bound before the log's server starts, so the
/// log can be configured with its URL; it serves once the log's key is known).
struct Planned {
    key: PathBuf,
    verifier: WitnessVerifier,
    listener: TcpListener,
}

struct RunningWitness {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningWitness {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn plan(dir: &Path, name: &str) -> Planned {
    let key = dir.join(format!("{}.key", name.replace('/', "_")));
    let vkey = witness_keygen(name, &key).unwrap();
    Planned {
        key,
        verifier: WitnessVerifier::from_vkey(&vkey).unwrap(),
        listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    }
}

fn spec(verifier: &WitnessVerifier, addr: SocketAddr) -> WitnessSpec {
    format!("{}@http://{addr}", verifier.to_vkey())
        .parse()
        .unwrap()
}

fn serve(planned: Planned, log_vkey: &str, state: &Path) -> RunningWitness {
    let server = WitnessServer::open(
        &planned.key,
        NoteVerifier::from_vkey(log_vkey).unwrap(),
        state,
    )
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(planned.listener, async {
        let _ = stopped.await;
    }));
    RunningWitness { stop, task }
}

/// Polls `GET /checkpoint` until it serves a checkpoint of at least `size` entries with a
/// quorum of `witnesses`' cosignatures; returns the note.
async fn witnessed_at_least(
    server: &TestServer,
    witnesses: &[WitnessVerifier],
    size: u64,
) -> WitnessedCheckpoint {
    let log = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, body) = http_get(server.http_addr, "/checkpoint").await;
        if status == 200 {
            let witnessed = WitnessedCheckpoint::verify(&body, &log, witnesses).unwrap();
            if witnessed.signed().checkpoint().size.get() >= size {
                return witnessed;
            }
        } else {
            assert_eq!(status, 503, "{body}");
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size {size} witnessed in time (last answer {status})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Writes a `.tlog-proof` of entry `index` against `witnessed`, and the leaf, into `dir`.
async fn tlog_proof(
    api: &Api,
    witnessed: &WitnessedCheckpoint,
    index: u64,
    dir: &Path,
) -> (PathBuf, PathBuf) {
    let size = witnessed.signed().checkpoint().size;
    let proof = api
        .transparency()
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf_index: index,
            tree_size: size.get(),
        })
        .await
        .unwrap()
        .into_inner();
    let path = proof
        .path
        .iter()
        .map(|h| ledger::hash::Hash::from_slice(h).unwrap())
        .collect();
    let leaf = api
        .transparency()
        .get_leaves(pb::GetLeavesRequest {
            start: index,
            count: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .leaves
        .remove(0);
    let text = TlogProof::new(
        InclusionProof {
            leaf_index: LeafIndex(index),
            tree_size: TreeSize(size.get()),
            path,
        },
        witnessed.note().to_owned(),
    )
    .to_text();
    let (proof_file, leaf_file) = (dir.join("entry.tlog-proof"), dir.join("entry.leaf"));
    std::fs::write(&proof_file, text).unwrap();
    std::fs::write(&leaf_file, leaf).unwrap();
    (proof_file, leaf_file)
}

/// `akashi-audit ARGS...` in-process: the exit code and what it printed. A command that talks
/// to a server starts its own runtime: call it from `spawn_blocking` ([`audit_online`]).
pub(crate) fn audit(args: &[&str]) -> (AuditExitCode, String) {
    let cli =
        Cli::try_parse_from(std::iter::once("akashi-audit").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(cli, &mut out, &mut err);
    let mut text = String::from_utf8(out).unwrap();
    text.push_str(&String::from_utf8(err).unwrap());
    (code, text)
}

/// [`audit`] off the async runtime, for commands that connect to a server.
pub(crate) async fn audit_online(args: Vec<String>) -> (AuditExitCode, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        audit(&args)
    })
    .await
    .unwrap()
}

/// A log server whose checkpoints two witnesses must cosign (quorum 2), both serving.
struct TwoWitnesses {
    dir: tempfile::TempDir,
    server: TestServer,
    /// The witnesses' verifier keys, addresses and secret key files, in configuration order.
    verifiers: [WitnessVerifier; 2],
    addrs: [SocketAddr; 2],
    keys: [PathBuf; 2],
    /// The server's `--witness` flags, for a restart.
    specs: Vec<WitnessSpec>,
    running: [RunningWitness; 2],
}

async fn two_witnesses() -> TwoWitnesses {
    let dir = tempfile::tempdir().unwrap();
    let planned = [
        plan(dir.path(), "witness.test/w1").await,
        plan(dir.path(), "witness.test/w2").await,
    ];
    let verifiers = planned.each_ref().map(|w| w.verifier.clone());
    let addrs = planned.each_ref().map(|w| w.listener.local_addr().unwrap());
    let keys = planned.each_ref().map(|w| w.key.clone());
    let specs = vec![spec(&verifiers[0], addrs[0]), spec(&verifiers[1], addrs[1])];
    let config_specs = specs.clone();
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.witnesses = config_specs;
        c.witness_quorum = Some(2);
    })
    .await;
    let [w1, w2] = planned;
    let running = [
        serve(w1, &server.vkey, &dir.path().join("w1")),
        serve(w2, &server.vkey, &dir.path().join("w2")),
    ];
    TwoWitnesses {
        dir,
        server,
        verifiers,
        addrs,
        keys,
        specs,
        running,
    }
}

#[tokio::test]
async fn two_witnesses_cosign_and_the_auditor_holds_the_log_to_them() {
    let TwoWitnesses {
        dir,
        server,
        verifiers: [v1, v2],
        specs,
        running,
        ..
    } = two_witnesses().await;
    let both = [v1.clone(), v2.clone()];

    // A write, then the checkpoint served is one that covers it, cosigned by both witnesses.
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni-tokyo", "university").await;
    let consent = api
        .consent()
        .grant_consent(api.req(grant(
            "patient-1",
            &["research"],
            &["clinical"],
            &["uni-tokyo"],
            &[],
            "PSEUDONYMIZED",
        )))
        .await
        .unwrap()
        .into_inner();
    let index = consent.receipt.unwrap().leaf_index;
    let witnessed = witnessed_at_least(&server, &both, index + 1).await;
    let names: Vec<_> = witnessed
        .cosignatures()
        .iter()
        .map(|c| c.witness().as_str().to_owned())
        .collect();
    assert_eq!(names, ["witness.test/w1", "witness.test/w2"]);

    // The admin address tells an operator how far each witness has got, and that the store is
    // healthy.
    let (status, metrics) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let size = witnessed.signed().checkpoint().size.get();
    assert!(
        counter(&metrics, "akashi_witnessed_tree_size") >= size,
        "{metrics}"
    );
    for name in ["witness.test/w1", "witness.test/w2"] {
        let series = format!("akashi_witness_cosigned_tree_size{{witness=\"{name}\"}}");
        assert!(counter(&metrics, &series) >= size, "{metrics}");
    }
    assert_eq!(counter(&metrics, "akashi_witness_quorum"), 2);
    assert_eq!(counter(&metrics, "akashi_ledger_poisoned"), 0);

    // gRPC offers the same, with the keys and quorum in force.
    let answer = api
        .transparency()
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.witnessed_checkpoint.is_empty());
    assert_eq!(answer.witness_keys, [v1.to_vkey(), v2.to_vkey()]);
    assert_eq!(answer.witness_quorum, 2);

    // verify-receipt with both witnesses and quorum 2 accepts a tlog-proof against it ...
    let (proof, leaf) = tlog_proof(&api, &witnessed, index, dir.path()).await;
    let (vkey1, vkey2) = (v1.to_vkey(), v2.to_vkey());
    let proof_arg = proof.to_str().unwrap();
    let leaf_arg = leaf.to_str().unwrap();
    let (code, text) = audit(&[
        "verify-receipt",
        "--vkey",
        &server.vkey,
        "--witness",
        &vkey1,
        "--witness",
        &vkey2,
        "--witness-quorum",
        "2",
        "--leaf",
        leaf_arg,
        proof_arg,
    ]);
    assert_eq!(code, AuditExitCode::Valid, "{text}");
    // ... and refuses it for a witness it does not carry, with exit code 2.
    let stranger = WitnessVerifier::from_vkey(
        &witness_keygen("witness.test/w3", &dir.path().join("w3.key")).unwrap(),
    )
    .unwrap();
    let vkey3 = stranger.to_vkey();
    let (code, text) = audit(&[
        "verify-receipt",
        "--vkey",
        &server.vkey,
        "--witness",
        &vkey1,
        "--witness",
        &vkey3,
        "--witness-quorum",
        "2",
        "--leaf",
        leaf_arg,
        proof_arg,
    ]);
    assert_eq!(code, AuditExitCode::Invalid, "{text}");
    assert!(text.contains("1 of the required 2"), "{text}");
    // The watcher, as a monitor of the witnessed checkpoint: accepted with both witnesses,
    // refused (not trusted) with a witness the log does not carry.
    let log = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let state = dir.path().join("watch.state");
    let watch = |witnesses: Vec<WitnessVerifier>, quorum| WatchConfig {
        tls: Default::default(),
        verifier: log.clone(),
        source: LogSource::Http(format!("http://{}", server.http_addr)),
        state: Some(state.clone()),
        witnesses: WitnessPolicy { witnesses, quorum },
    };
    let refused = watch_once(&watch(vec![stranger.clone()], 1)).await;
    assert!(
        format!("{:#}", refused.unwrap_err()).contains("not witnessed"),
        "an unknown witness's quorum"
    );
    assert!(!state.exists(), "nothing trusted without the quorum");
    match watch_once(&watch(both.to_vec(), 2)).await.unwrap() {
        WatchStep::Accepted { checkpoint, .. } => {
            assert!(checkpoint.checkpoint().size.get() > index);
        }
        WatchStep::Inconsistent(error) => panic!("{error}"),
    }
    let over_grpc = WatchConfig {
        tls: Default::default(),
        source: LogSource::Grpc(server.grpc_addr.to_string()),
        ..watch(both.to_vec(), 2)
    };
    assert!(matches!(
        watch_once(&over_grpc).await.unwrap(),
        WatchStep::Accepted { .. }
    ));

    // The public disclosure statistics are pinned to a witnessed checkpoint, and
    // `akashi-audit disclosure` holds them to the witnesses it is given.
    let deadline = Instant::now() + TIMEOUT;
    let document = loop {
        let (status, body) = http_get(server.http_addr, "/disclosure.json").await;
        if status == 200 {
            let document: policy::disclosure::Document = serde_json::from_str(&body).unwrap();
            if document.checkpoint.size > index {
                break document;
            }
        } else {
            assert_eq!(status, 503, "{body}");
        }
        assert!(Instant::now() < deadline, "no witnessed statistics in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    WitnessedCheckpoint::verify(&document.checkpoint.note, &log, &both)
        .unwrap()
        .require_quorum(2)
        .unwrap();
    let disclosure = |witness: &str, quorum: &str| {
        let args: Vec<String> = [
            "disclosure",
            "--vkey",
            &server.vkey,
            "--http",
            &format!("http://{}", server.http_addr),
            "--witness",
            witness,
            "--witness-quorum",
            quorum,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        // The command's HTTP client blocks: off this (single-threaded) runtime.
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            audit(&args)
        })
    };
    let (code, text) = disclosure(&vkey2, "1").await.unwrap();
    assert_eq!(code, AuditExitCode::Valid, "{text}");
    let (code, text) = disclosure(&vkey3, "1").await.unwrap();
    assert_eq!(code, AuditExitCode::Invalid, "{text}");
    assert!(
        text.contains("cosigned by the witnesses asked for"),
        "{text}"
    );

    // A restart serves the stored witnessed checkpoint at once, and the witnesses keep up with
    // a log that no longer knows what they cosigned (it learns it from their 409 answers).
    let before = witnessed.signed().checkpoint().size;
    let data = server.stop().await;
    let server = TestServer::start_with(data, move |c| {
        c.witnesses = specs;
        c.witness_quorum = Some(2);
    })
    .await;
    let (status, body) = http_get(server.http_addr, "/checkpoint").await;
    assert_eq!(status, 200, "{body}");
    let stored = WitnessedCheckpoint::verify(&body, &log, &both).unwrap();
    assert!(stored.signed().checkpoint().size >= before);
    // The metrics start from what the stored checkpoint says each witness cosigned.
    let (_, metrics) = http_get(server.admin_addr, "/metrics").await;
    for name in ["witness.test/w1", "witness.test/w2"] {
        let series = format!("akashi_witness_cosigned_tree_size{{witness=\"{name}\"}}");
        assert!(
            counter(&metrics, &series) >= stored.signed().checkpoint().size.get(),
            "{metrics}"
        );
    }
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni-kyoto", "university").await;
    let size = api.size().await;
    witnessed_at_least(&server, &both, size).await;

    server.stop().await;
    for witness in running {
        witness.stop().await;
    }
}

#[tokio::test]
async fn writes_go_on_when_every_witness_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // One witness refuses connections (nothing listens), one accepts them and never answers
    // (a listener that is never served).
    let (w1, w2) = (
        plan(dir.path(), "witness.test/w1").await,
        plan(dir.path(), "witness.test/w2").await,
    );
    let refused_addr = w1.listener.local_addr().unwrap();
    drop(w1.listener);
    let silent_addr = w2.listener.local_addr().unwrap();
    let _silent = w2.listener;
    let specs = vec![
        spec(&w1.verifier, refused_addr),
        spec(&w2.verifier, silent_addr),
    ];
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.witnesses = specs;
        c.witness_quorum = Some(1);
    })
    .await;
    let api = Api::new(&server, Role::Platform, None).await;

    // Every write is answered, each well within one witness request timeout.
    let timed = |started: Instant, what: &str| {
        let took = started.elapsed();
        assert!(
            took < akashi::witness::REQUEST_TIMEOUT,
            "{what} took {took:?} with every witness down"
        );
    };
    for i in 0..5 {
        let started = Instant::now();
        api.org(&format!("org-{i}"), "university").await;
        timed(started, "UpsertOrganization");
    }
    let started = Instant::now();
    api.consent()
        .grant_consent(api.req(grant(
            "patient-1",
            &["research"],
            &["clinical"],
            &["org-0"],
            &[],
            "PSEUDONYMIZED",
        )))
        .await
        .unwrap();
    timed(started, "GrantConsent");
    let started = Instant::now();
    let decision = api
        .authorize(ask(
            "Organization",
            "org-0",
            "secondary_use",
            "patient-1",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    timed(started, "Authorize");
    assert!(crate::api::allowed(&decision), "{:?}", decision.reasons);

    // With a quorum configured and none met, /checkpoint says so rather than serve an
    // unwitnessed checkpoint; gRPC still has the log's newest, and no witnessed one.
    let (status, body) = http_get(server.http_addr, "/checkpoint").await;
    assert_eq!(status, 503, "{body}");
    let answer = api
        .transparency()
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(answer.witnessed_checkpoint.is_empty());
    assert!(!answer.checkpoint.is_empty());
    // The admin address counts the failed submissions of the witness that refuses them; no
    // checkpoint is witnessed yet.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, metrics) = http_get(server.admin_addr, "/metrics").await;
        assert_eq!(counter(&metrics, "akashi_witnessed_tree_size"), 0);
        if counter(
            &metrics,
            "akashi_witness_failures_total{witness=\"witness.test/w1\"}",
        ) > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "no failure counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Stopping does not wait for the silent witness either.
    let started = Instant::now();
    server.stop().await;
    timed(started, "stopping the server");
}

#[test]
fn an_unknown_witness_cannot_make_a_quorum() {
    // The quorum counts only the witnesses given; checked here apart from any server.
    let policy = WitnessPolicy {
        witnesses: Vec::new(),
        quorum: 1,
    };
    let log = ledger::note::NoteSigner::from_seed(
        ledger::note::KeyName::new("akashi.test/log").unwrap(),
        &[1; 32],
    );
    let cp = ledger::checkpoint::SignedCheckpoint::sign(
        ledger::checkpoint::Checkpoint::new(
            "akashi.test/log",
            TreeSize(0),
            ledger::hash::empty_root(),
        ),
        &log,
    )
    .unwrap();
    assert_eq!(
        policy.check(&log.verifier(), cp.note()).unwrap_err(),
        CosignatureError::NoQuorum { got: 0, want: 1 }
    );
}

/// A patient asks for their history with both witnesses required: when nothing was logged since
/// the witnesses cosigned, the proof's own checkpoint carries their cosignatures (online, and
/// again offline from the saved file); while a witness is down a newer history cannot be
/// vouched for and says so; once it is back, a later witnessed checkpoint proven to extend the
/// history's tree vouches for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_complete_history_is_vouched_for_by_the_witnesses() {
    let TwoWitnesses {
        dir,
        server,
        verifiers: [v1, v2],
        addrs: [_, a2],
        keys: [_, w2_key],
        running: [first, second],
        ..
    } = two_witnesses().await;
    let both = [v1.clone(), v2.clone()];
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "patient-1",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    let decision = api
        .authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "patient-1",
            "lab_result",
            "research",
            "PSEUDONYMIZED",
        ))
        .await;
    let size = decision.receipt.unwrap().leaf_index + 1;
    witnessed_at_least(&server, &both, size).await;

    let grpc = format!("http://{}", server.grpc_addr);
    let token = server.token(Role::Patient, Some("patient-1"));
    let (vkey1, vkey2) = (v1.to_vkey(), v2.to_vkey());
    let saved = dir.path().join("history.json");
    let online = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "history",
            "--vkey",
            &server.vkey,
            "--grpc",
            &grpc,
            "--token",
            &token,
            "--witness",
            &vkey1,
            "--witness",
            &vkey2,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        audit_online(args)
    };
    // Nothing was logged since the witnesses cosigned: the proof is bound to their checkpoint.
    let (code, text) = online(&["--save", saved.to_str().unwrap()]).await;
    assert_eq!(code, AuditExitCode::Valid, "{text}");
    assert!(
        text.contains("complete: the log holds exactly 2 entries"),
        "{text}"
    );
    assert!(
        text.contains("witnessed: 2 of the witnesses you trust cosigned the checkpoint"),
        "{text}"
    );
    let offline = |file: &Path, witnesses: &[&str]| {
        let mut args = vec![
            "history",
            "--vkey",
            &server.vkey,
            "--patient",
            "patient-1",
            "--input",
            file.to_str().unwrap(),
        ];
        for w in witnesses {
            args.extend(["--witness", w]);
        }
        audit(&args)
    };
    let (code, text) = offline(&saved, &[&vkey1, &vkey2]);
    assert_eq!(code, AuditExitCode::Valid, "{text}");
    // A witness the checkpoint does not carry cannot vouch for it.
    let stranger = witness_keygen("witness.test/w3", &dir.path().join("w3.key")).unwrap();
    let (code, text) = offline(&saved, &[&vkey1, &stranger]);
    assert_eq!(code, AuditExitCode::Invalid, "{text}");
    assert!(
        text.contains("not vouched for by the witnesses you trust"),
        "{text}"
    );

    // One witness down, and something new about another patient: the newest map is
    // cosigned by one witness at most, so the history cannot be vouched for.
    second.stop().await;
    api.grant(grant(
        "patient-2",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
    let (code, text) = online(&["--witness-wait", "1"]).await;
    assert_eq!(code, AuditExitCode::Invalid, "{text}");
    assert!(
        text.contains("no witnessed checkpoint reached its size"),
        "{text}"
    );
    // The same history, fetched now and checked once the witness is back and the log has
    // moved on: a later checkpoint cosigned by both is proven to extend its tree.
    let verifier = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let config = HistoryConfig {
        tls: Default::default(),
        verifier: verifier.clone(),
        grpc: grpc.clone(),
        token: token.clone(),
        patient: None,
    };
    let (patient, responses) = fetch_history(&config).await.unwrap();
    let note = responses.last().unwrap().checkpoint.clone();
    let history_size = responses.last().unwrap().tree_size;
    let _second = serve(
        Planned {
            key: w2_key,
            verifier: v2.clone(),
            listener: TcpListener::bind(a2).await.unwrap(),
        },
        &server.vkey,
        &dir.path().join("w2"),
    );
    api.org("uni-2", "university").await;
    let mut history = verify_responses(&verifier, &patient, responses)
        .unwrap()
        .unwrap();
    let policy = WitnessPolicy {
        witnesses: both.to_vec(),
        quorum: 2,
    };
    witness_history(
        &mut history,
        &verifier,
        &policy,
        &note,
        Some((&grpc, &Default::default(), TIMEOUT)),
    )
    .await
    .unwrap();
    assert!(history.is_valid(), "{:?}", history.findings);
    let witnessed = history.witnessed.unwrap();
    assert!(!witnessed.direct);
    assert_eq!(witnessed.cosignatures, 2);
    assert!(witnessed.tree_size > history_size);
    first.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn witnesses_behind_https_cosign_when_their_certificate_chains_to_the_witness_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, stranger) = (
        plan(dir.path(), "witness.test/tls").await,
        plan(dir.path(), "witness.test/stranger").await,
    );
    // One witness's front shows a certificate of the CA the server is given; the other's, of a
    // CA it does not know.
    let (ca_pem, cert, key) = tls_identity();
    let (_, other_cert, other_key) = tls_identity();
    let ca_file = dir.path().join("witness-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let (trusted_front, trusted_task) =
        tls_front(&cert, &key, trusted.listener.local_addr().unwrap()).await;
    let (stranger_front, stranger_task) = tls_front(
        &other_cert,
        &other_key,
        stranger.listener.local_addr().unwrap(),
    )
    .await;
    let https = |verifier: &WitnessVerifier, addr: SocketAddr| -> WitnessSpec {
        format!("{}@https://{addr}", verifier.to_vkey())
            .parse()
            .unwrap()
    };
    let specs = vec![
        https(&trusted.verifier, trusted_front),
        https(&stranger.verifier, stranger_front),
    ];
    let trusted_verifier = trusted.verifier.clone();
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), move |c| {
        c.witnesses = specs;
        c.witness_quorum = Some(1);
        c.witness_ca = Some(ca_file);
    })
    .await;
    let running = [
        serve(trusted, &server.vkey, &dir.path().join("tls")),
        serve(stranger, &server.vkey, &dir.path().join("stranger")),
    ];
    // The witness over TLS cosigns the log's checkpoint; `/checkpoint` serves it.
    let witnessed = witnessed_at_least(&server, std::slice::from_ref(&trusted_verifier), 1).await;
    assert_eq!(witnessed.cosignatures().len(), 1);
    // The witness whose certificate does not chain to the configured CA is never asked: the
    // handshake fails, and the server counts a failed submission.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, metrics) = http_get(server.admin_addr, "/metrics").await;
        let failed = counter(
            &metrics,
            "akashi_witness_failures_total{witness=\"witness.test/stranger\"}",
        );
        if failed > 0 {
            assert_eq!(
                counter(
                    &metrics,
                    "akashi_witness_cosigned_tree_size{witness=\"witness.test/stranger\"}"
                ),
                0
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failure counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.stop().await;
    for witness in running {
        witness.stop().await;
    }
    trusted_task.abort();
    stranger_task.abort();
}

#[tokio::test]
async fn an_https_witness_with_an_unusable_ca_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let witness = plan(dir.path(), "witness.test/tls").await;
    let spec: WitnessSpec = format!("{}@https://127.0.0.1:1", witness.verifier.to_vkey())
        .parse()
        .unwrap();
    let ca_file = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca_file, "no certificate here\n").unwrap();
    let config = akashi::config::Config {
        data_dir: dir.path().join("data"),
        witnesses: vec![spec],
        witness_ca: Some(ca_file),
        ..akashi::config::Config::default()
    };
    let Err(err) = akashi::server::Server::open(config) else {
        panic!("a server started trusting no CA for its https:// witness");
    };
    let message = err.to_string();
    assert!(
        message.contains("not-a-ca.pem") && message.contains("no CA certificate"),
        "{message}"
    );
}

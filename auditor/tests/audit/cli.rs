//! The `akashi-audit` binary: exit codes (0 valid, 2 invalid, 1 error) and what it prints, as
//! insta snapshots. Keys, entries and nonces are fixed, so hashes are the same on every run.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;

use ledger::chunk::Record;
use ledger::hash::LeafIndex;

use crate::support::{self, REGULATOR_TOKEN, Served, World, flipped, org_request, patient_token};

/// Runs the binary in `dir`; returns (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_akashi-audit"))
        .args(args)
        .current_dir(dir)
        .env_remove("AKASHI_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs the binary from async tests, off the runtime's threads.
async fn run_async(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, &args)
    })
    .await
    .unwrap()
}

/// A directory with `vkey`, a receipt of entry 3 of a 6-entry log, its leaf and its body.
fn receipt_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = support::plain_log(6, 2, "a");
    std::fs::write(dir.path().join("vkey"), support::vkey()).unwrap();
    std::fs::write(
        dir.path().join("receipt.json"),
        support::receipt_json(&log, 3),
    )
    .unwrap();
    let leaf = log.leaves(LeafIndex(3), 1).unwrap().remove(0);
    std::fs::write(dir.path().join("leaf"), &leaf).unwrap();
    let Record::Present(body) = log.body(LeafIndex(3)).unwrap() else {
        unreachable!()
    };
    std::fs::write(dir.path().join("body"), body).unwrap();
    let proof = log.inclusion_proof(LeafIndex(3), log.size()).unwrap();
    let tlog = ledger::tlog_proof::TlogProof::new(proof, log.checkpoint().note().to_owned());
    std::fs::write(dir.path().join("entry.tlog-proof"), tlog.to_text()).unwrap();
    dir
}

#[test]
fn verify_receipt_valid() {
    let dir = receipt_files();
    let (code, out, err) = run(
        dir.path(),
        &["verify-receipt", "--vkey", "@vkey", "receipt.json"],
    );
    assert_eq!((code, err.as_str()), (0, ""));
    insta::assert_snapshot!("verify_receipt_valid", out);
    let (code, out, _) = run(
        dir.path(),
        &[
            "verify-receipt",
            "--vkey",
            "@vkey",
            "receipt.json",
            "--leaf",
            "leaf",
            "--body",
            "body",
        ],
    );
    assert_eq!(code, 0);
    insta::assert_snapshot!("verify_receipt_valid_with_leaf_and_body", out);
    // The key inline works as well as from a file.
    let (code, _, _) = run(
        dir.path(),
        &["verify-receipt", "--vkey", &support::vkey(), "receipt.json"],
    );
    assert_eq!(code, 0);
}

#[test]
fn verify_receipt_invalid() {
    let dir = receipt_files();
    let text = std::fs::read_to_string(dir.path().join("receipt.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut cases = Vec::new();
    let mut changed = value.clone();
    changed["treeSize"] = serde_json::json!("7");
    cases.push(("tree_size", changed));
    let mut changed = value.clone();
    let hash =
        changed["leafHash"]
            .as_str()
            .unwrap()
            .replacen(|c: char| c.is_ascii_alphabetic(), "A", 1);
    let hash = if hash == value["leafHash"] {
        hash.replacen('A', "B", 1)
    } else {
        hash
    };
    changed["leafHash"] = serde_json::json!(hash);
    cases.push(("leaf_hash", changed));
    let mut changed = value.clone();
    changed["checkpoint"] = serde_json::json!(
        value["checkpoint"]
            .as_str()
            .unwrap()
            .replacen("\n6\n", "\n5\n", 1)
    );
    cases.push(("checkpoint", changed));
    for (name, receipt) in cases {
        std::fs::write(dir.path().join("bad.json"), receipt.to_string()).unwrap();
        let (code, out, _) = run(
            dir.path(),
            &["verify-receipt", "--vkey", "@vkey", "bad.json"],
        );
        assert_eq!(code, 2, "{name}: {out}");
        insta::assert_snapshot!(format!("verify_receipt_invalid_{name}"), out);
    }
    // A body that is not the entry's.
    std::fs::write(dir.path().join("other-body"), b"0123456789abcdef other").unwrap();
    let (code, out, _) = run(
        dir.path(),
        &[
            "verify-receipt",
            "--vkey",
            "@vkey",
            "receipt.json",
            "--leaf",
            "leaf",
            "--body",
            "other-body",
        ],
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!("verify_receipt_invalid_body", out);
}

#[test]
fn verify_receipt_tlog_proof() {
    let dir = receipt_files();
    let (code, out, _) = run(
        dir.path(),
        &[
            "verify-receipt",
            "--vkey",
            "@vkey",
            "entry.tlog-proof",
            "--leaf",
            "leaf",
        ],
    );
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("verify_receipt_tlog_proof", out);
    let (code, out, _) = run(
        dir.path(),
        &["verify-receipt", "--vkey", "@vkey", "entry.tlog-proof"],
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!("verify_receipt_tlog_proof_needs_leaf", out);
}

#[test]
fn verify_receipt_errors() {
    let dir = receipt_files();
    std::fs::write(dir.path().join("junk.json"), "{not json").unwrap();
    let (code, out, _) = run(
        dir.path(),
        &["verify-receipt", "--vkey", "@vkey", "junk.json"],
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!("verify_receipt_error_malformed", out);
    let (code, out, err) = run(
        dir.path(),
        &["verify-receipt", "--vkey", "@vkey", "missing.json"],
    );
    assert_eq!((code, out.as_str()), (1, ""));
    // The OS's wording of "not found" is not ours to snapshot.
    let first_line = err.split(": No such file").next().unwrap();
    insta::assert_snapshot!("verify_receipt_error_missing_file", first_line);
    let (code, _, err) = run(
        dir.path(),
        &["verify-receipt", "--vkey", "not-a-key", "receipt.json"],
    );
    assert_eq!(code, 1);
    insta::assert_snapshot!("verify_receipt_error_bad_vkey", err);
    let (code, _, err) = run(dir.path(), &["verify-receipt"]);
    assert_eq!(code, 1);
    assert!(err.contains("--vkey"), "{err}");
}

/// A directory with `vkey`, a log of real decisions, and the whole `Authorize` response of an
/// allowed one (`response.json`), with the entry's leaf and body; also the response of a
/// consent grant's receipt dressed as an answer (`not-a-decision.json`).
fn authorize_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vkey"), support::vkey()).unwrap();
    let mut world = World::new();
    let index = world.decisions()[0];
    let response = support::authorize_response_json(&world.log, index);
    assert_eq!(response["decision"], "ALLOW");
    let write = |name: &str, value: &serde_json::Value| {
        std::fs::write(dir.path().join(name), value.to_string()).unwrap();
    };
    write("response.json", &response);
    let leaf = world.log.leaves(LeafIndex(index), 1).unwrap().remove(0);
    std::fs::write(dir.path().join("leaf"), &leaf).unwrap();
    let Record::Present(body) = world.log.body(LeafIndex(index)).unwrap() else {
        unreachable!()
    };
    std::fs::write(dir.path().join("body"), body).unwrap();
    let mut no_leaf = response.clone();
    no_leaf["receipt"]
        .as_object_mut()
        .unwrap()
        .remove("leaf")
        .unwrap();
    write("no-leaf.json", &no_leaf);
    // Entry 5 is a directory change: a receipt of it does not prove a decision.
    let mut other = support::authorize_response_json(&world.log, index);
    let leaf5 = world.log.leaves(LeafIndex(5), 1).unwrap().remove(0);
    let receipt5: serde_json::Value =
        serde_json::from_str(&support::receipt_json(&world.log, 5)).unwrap();
    other["receipt"] = receipt5;
    other["receipt"]["leaf"] =
        serde_json::json!(base64::engine::general_purpose::STANDARD.encode(leaf5));
    write("not-a-decision.json", &other);
    dir
}

#[test]
fn verify_receipt_binds_the_authorize_answer() {
    let dir = authorize_files();
    let verify = |file: &str, extra: &[&str]| {
        let mut args = vec!["verify-receipt", "--vkey", "@vkey", file];
        args.extend_from_slice(extra);
        run(dir.path(), &args)
    };
    let (code, out, err) = verify("response.json", &[]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    insta::assert_snapshot!("verify_receipt_answer_valid", out);
    let (code, out, _) = verify("response.json", &["--body", "body"]);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("verify_receipt_answer_valid_with_body", out);

    let response: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("response.json")).unwrap())
            .unwrap();
    let edit = |name: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut edited = response.clone();
        change(&mut edited);
        std::fs::write(dir.path().join(name), edited.to_string()).unwrap();
    };
    edit("deny.json", &|r| r["decision"] = serde_json::json!("DENY"));
    edit("deny-number.json", &|r| {
        r["decision"] = serde_json::json!(2)
    });
    edit("review.json", &|r| {
        r["reviewRequired"] = serde_json::json!(true)
    });
    edit("policies.json", &|r| {
        r["determiningPolicies"] = serde_json::json!(["secondary-use.anonymized-opt-out"]);
    });
    edit("reasons.json", &|r| {
        r["reasons"] = serde_json::json!(["the patient said yes"]);
    });
    edit("no-decision.json", &|r| {
        r.as_object_mut().unwrap().remove("decision").unwrap();
    });
    for (file, extra, snapshot) in [
        (
            "deny.json",
            &[][..],
            "verify_receipt_answer_flipped_decision",
        ),
        (
            "deny-number.json",
            &[],
            "verify_receipt_answer_flipped_decision",
        ),
        ("no-decision.json", &[], "verify_receipt_answer_no_decision"),
        ("review.json", &[], "verify_receipt_answer_flipped_review"),
        (
            "policies.json",
            &["--body", "body"],
            "verify_receipt_answer_changed_policies",
        ),
        (
            "reasons.json",
            &["--body", "body"],
            "verify_receipt_answer_changed_reasons",
        ),
        (
            "not-a-decision.json",
            &[],
            "verify_receipt_answer_not_a_decision",
        ),
    ] {
        let (code, out, _) = verify(file, extra);
        assert_eq!(code, 2, "{file}: {out}");
        insta::assert_snapshot!(snapshot, out);
    }
    // Without the body, changed policies cannot be seen, and the output says so.
    let (code, out, _) = verify("policies.json", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not checked"), "{out}");

    // A response whose receipt carries no leaf (an older server's) needs `--leaf`.
    let (code, out, _) = verify("no-leaf.json", &[]);
    assert_eq!(code, 1, "{out}");
    insta::assert_snapshot!("verify_receipt_answer_needs_leaf", out);
    let (code, out, _) = verify("no-leaf.json", &["--leaf", "leaf"]);
    assert_eq!(code, 0, "{out}");
    edit("deny-no-leaf.json", &|r| {
        r["decision"] = serde_json::json!("DENY");
        r["receipt"].as_object_mut().unwrap().remove("leaf");
    });
    let (code, _, _) = verify("deny-no-leaf.json", &["--leaf", "leaf"]);
    assert_eq!(code, 2);
}

#[test]
fn watch_once_over_http_then_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vkey"), support::vkey()).unwrap();
    let log = support::plain_log(300, 7, "a");
    let served = Served::new(log.clone());
    let url = support::start_http(served.clone());
    let args = [
        "watch", "--vkey", "@vkey", "--http", &url, "--state", "trusted", "--once",
    ];
    let (code, out, err) = run(dir.path(), &args);
    assert_eq!((code, err.as_str()), (0, ""));
    insta::assert_snapshot!("watch_first", out);
    support::append_plain(&log, 300..400, 7, "a");
    let (code, out, _) = run(dir.path(), &args);
    assert_eq!(code, 0);
    insta::assert_snapshot!("watch_grown", out);
    let fork = support::plain_log(350, 7, "a");
    support::append_plain(&fork, 350..450, 7, "b");
    served.switch(fork);
    let (code, out, _) = run(dir.path(), &args);
    assert_eq!(code, 2);
    insta::assert_snapshot!("watch_fork", out);
    served.switch(support::plain_log(200, 7, "a"));
    let (code, out, _) = run(dir.path(), &args);
    assert_eq!(code, 2);
    insta::assert_snapshot!("watch_rollback", out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_history_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vkey"), support::vkey()).unwrap();
    let mut world = World::with_subject_map();
    world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    let addr = support::start_grpc(served.clone()).await.to_string();

    let replay = [
        "replay",
        "--vkey",
        "@vkey",
        "--grpc",
        &addr,
        "--token",
        REGULATOR_TOKEN,
    ];
    let (code, out, err) = run_async(dir.path(), &replay).await;
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    insta::assert_snapshot!("replay_clean", out);
    let mut json_args = replay.to_vec();
    json_args.push("--json");
    let (code, out, _) = run_async(dir.path(), &json_args).await;
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["decisions_checked"], 8);
    assert_eq!(report["findings"], serde_json::json!([]));

    let patient = patient_token("p1");
    let history = [
        "history", "--vkey", "@vkey", "--grpc", &addr, "--token", &patient,
    ];
    let (code, out, err) = run_async(dir.path(), &history).await;
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    insta::assert_snapshot!("history_p1", out);
    // An entry hidden from the patient.
    served.withhold(9);
    let (code, out, _) = run_async(dir.path(), &history).await;
    assert_eq!(code, 2, "{out}");
    insta::assert_snapshot!("history_p1_hidden_consent", out);
    // A log without a subject map: nothing found wrong, but nothing proven complete either.
    let plain = World::new();
    served.switch(plain.log.clone());
    served.map_serving(|m| m.enabled = false);
    let (code, out, _) = run_async(dir.path(), &history).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("completeness cannot be checked: this log does not commit to per-patient completeness (no subject map in its checkpoint)\n"),
        "{out}"
    );
    assert!(
        !out.contains("valid:") && !out.contains("complete:"),
        "{out}"
    );
    served.switch(world.log.clone());
    served.map_serving(|m| m.enabled = true);

    world.apply(flipped(world.decision_event(org_request(
        "univ-a",
        3,
        policy::domain::Purpose::Research,
        policy::domain::Level::Anonymized,
    ))));
    let (code, out, _) = run_async(dir.path(), &replay).await;
    assert_eq!(code, 2, "{out}");
    insta::assert_snapshot!("replay_flipped_decision", out);
    let (code, out, _) = run_async(dir.path(), &json_args).await;
    assert_eq!(code, 2);
    insta::assert_snapshot!("replay_flipped_decision_json", out);

    let (code, _, err) = run_async(
        dir.path(),
        &[
            "replay", "--vkey", "@vkey", "--grpc", &addr, "--token", "wrong",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: while listing checkpoints"), "{err}");
}

#[test]
fn history_from_a_saved_response() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vkey"), support::vkey()).unwrap();
    let mut world = World::with_subject_map();
    world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    let request = |after_index, limit| proto::pb::GetSubjectHistoryRequest {
        patient_id: "p1".to_owned(),
        after_index,
        limit,
    };
    let whole = served.history_response(&request(None, 0)).unwrap();
    std::fs::write(
        dir.path().join("p1.json"),
        serde_json::to_string_pretty(&support::history_json(&whole)).unwrap(),
    )
    .unwrap();
    let args = |file: &str, patient: &str| {
        [
            "history",
            "--vkey",
            "@vkey",
            "--patient",
            patient,
            "--input",
            file,
        ]
        .map(str::to_owned)
    };
    let run_file = |file: &str, patient: &str| {
        let args = args(file, patient);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(dir.path(), &args)
    };
    let (code, out, err) = run_file("p1.json", "p1");
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    insta::assert_snapshot!("history_input_p1", out);
    // Someone else's saved history is not p1's: the VRF proof is for another id.
    let (code, out, _) = run_file("p1.json", "p2");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("finding: the proof that these are all the entries about you does not verify"),
        "{out}"
    );

    // Pages, as an array: 3 entries each, the last with `more` false.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = served.history_response(&request(after, 3)).unwrap();
        after = page.entries.last().map(|e| e.leaf_index);
        let more = page.more;
        pages.push(support::history_json(&page));
        if !more {
            break;
        }
    }
    assert_eq!(pages.len(), 3);
    std::fs::write(
        dir.path().join("pages.json"),
        serde_json::to_string(&pages).unwrap(),
    )
    .unwrap();
    let (code, out, err) = run_file("pages.json", "p1");
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        out.contains("complete: the log holds exactly 8 entries about you up to tree size 20\n"),
        "{out}"
    );
    // The first page left out.
    std::fs::write(
        dir.path().join("tail.json"),
        serde_json::to_string(&pages[1..]).unwrap(),
    )
    .unwrap();
    let (code, out, _) = run_file("tail.json", "p1");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("finding: an entry about you is missing before entry 15\n"),
        "{out}"
    );

    // A patient with no entries: proven absent.
    let absent = served
        .history_response(&proto::pb::GetSubjectHistoryRequest {
            patient_id: "p5".to_owned(),
            after_index: None,
            limit: 0,
        })
        .unwrap();
    std::fs::write(
        dir.path().join("p5.json"),
        support::history_json(&absent).to_string(),
    )
    .unwrap();
    let (code, out, _) = run_file("p5.json", "p5");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("complete: the log says it holds nothing about you up to tree size 20\n"),
        "{out}"
    );

    // Numbers where grpcurl prints strings are read too.
    let mut numbers = support::history_json(&whole);
    numbers["treeSize"] = serde_json::json!(20);
    numbers["completeness"]["count"] = serde_json::json!(8);
    std::fs::write(dir.path().join("numbers.json"), numbers.to_string()).unwrap();
    let (code, out, _) = run_file("numbers.json", "p1");
    assert_eq!(code, 0, "{out}");

    // Unusable input: exit 1, nothing verified.
    for (name, text) in [
        ("garbage.json", "not json at all"),
        ("shape.json", "{\"entries\": 3}"),
        ("empty.json", "[]"),
        ("number.json", "42"),
        (
            "field.json",
            "{\"checkpoint\": \"x\", \"entries\": [{\"leafIndex\": \"-1\"}]}",
        ),
        (
            "proof.json",
            "{\"checkpoint\": \"x\", \"completeness\": {\"mapSiblings\": \"abc\"}}",
        ),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
        let (code, out, err) = run_file(name, "p1");
        assert_eq!((code, out.as_str()), (1, ""), "{name}: {err}");
        assert!(
            err.starts_with("error: while reading the history in"),
            "{name}: {err}"
        );
    }
    let (code, _, err) = run_file("missing.json", "p1");
    assert_eq!(code, 1);
    assert!(err.contains("while reading"), "{err}");
    // `--input` needs `--patient`; `--grpc` and `--input` exclude each other.
    let (code, _, err) = run(
        dir.path(),
        &["history", "--vkey", "@vkey", "--input", "p1.json"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`--patient`"), "{err}");
    let (code, _, _) = run(
        dir.path(),
        &[
            "history",
            "--vkey",
            "@vkey",
            "--input",
            "p1.json",
            "--grpc",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(code, 1, "a usage error");
}

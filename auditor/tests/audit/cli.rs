//! The `akashi-audit` binary: exit codes (0 valid, 2 invalid, 1 error) and what it prints, as
//! insta snapshots. Keys, entries and nonces are fixed, so hashes are the same on every run.

use std::path::Path;
use std::process::Command;

use ledger::LeafIndex;
use ledger::chunk::Record;

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
    let tlog = ledger::TlogProof::new(proof, log.checkpoint().note.clone());
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
    let mut world = World::new();
    world.decisions();
    let served = Served::new(world.log.clone());
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

    world.apply(flipped(world.decision_event(org_request(
        "univ-a",
        3,
        policy::Purpose::Research,
        policy::Level::Anonymized,
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

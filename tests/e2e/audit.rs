//! The auditor against the real server: regulator `replay` re-decides every logged decision,
//! a patient's `history` verifies, `verify-receipt` checks a receipt as grpcurl prints it, and
//! `watch` trusts a growing log but catches a fork (a copied data dir, different entries
//! appended to each copy, the server restarted on the copy) over both gRPC and HTTP tiles, in
//! the clear or over TLS.

use std::path::Path;

use akashi::auth::Role;
use auditor::cli::{
    HistoryConfig, LogSource, ReplayConfig, WatchConfig, WatchStep, history, replay,
    verify_receipt, watch_once,
};
use auditor::{
    exit::AuditExitCode,
    receipt::{AnswerCheck, ReceiptError},
};
use base64::Engine as _;
use ledger::note::NoteVerifier;
use proto::pb;

use crate::{
    api::{Api, ask, grant},
    harness::{TestServer, http_get, tls_front, tls_identity},
    witness::{audit, audit_online},
};

async fn activity(api: &Api) -> pb::Receipt {
    api.org("uni", "university").await;
    api.facility("hosp-a", "", &["psychiatry"], &["carol"])
        .await;
    let id = api
        .grant(grant(
            "alice",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED",
        ))
        .await;
    let mut last = None;
    for patient in ["alice", "bob", "carol"] {
        let decision = api
            .authorize(pb::AuthorizeRequest {
                source_facility: "hosp-a".into(),
                ..ask(
                    "Organization",
                    "uni",
                    "secondary_use",
                    patient,
                    "lab_result",
                    "research",
                    "IDENTIFIED",
                )
            })
            .await;
        last = decision.receipt;
    }
    api.consent()
        .revoke_consent(api.req(pb::RevokeConsentRequest {
            request_id: String::new(),
            patient_id: "alice".into(),
            consent_id: id,
        }))
        .await
        .unwrap();
    api.authorize(ask(
        "Organization",
        "uni",
        "secondary_use",
        "alice",
        "lab_result",
        "research",
        "IDENTIFIED",
    ))
    .await;
    // A cohort, and a cohort for statistics (decided with the size left after denials): six
    // more decisions, each its own entry, that replay re-decides like any other.
    for (action, level) in [
        ("secondary_use", "IDENTIFIED"),
        ("export_statistics", "STATISTICAL"),
    ] {
        api.access()
            .authorize_cohort(
                api.req(pb::AuthorizeCohortRequest {
                    principal: Some(pb::Principal {
                        r#type: "Organization".into(),
                        id: "uni".into(),
                    }),
                    action: action.into(),
                    data_category: "lab_result".into(),
                    source_facility: "hosp-a".into(),
                    purpose: "research".into(),
                    level: level.into(),
                    subjects: ["alice", "bob", "carol"]
                        .into_iter()
                        .map(|p| pb::CohortSubject {
                            patient_id: p.into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    }
    last.unwrap()
}

/// A receipt in proto3 JSON form, as grpcurl prints it.
fn receipt_json(receipt: &pb::Receipt) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let path: Vec<String> = receipt
        .inclusion_proof
        .iter()
        .map(|h| format!("\"{}\"", b64(h)))
        .collect();
    format!(
        "{{\"leafIndex\":\"{}\",\"leafHash\":\"{}\",\"checkpoint\":{},\"inclusionProof\":[{}],\"treeSize\":\"{}\"}}",
        receipt.leaf_index,
        b64(&receipt.leaf_hash),
        serde_json::to_string(&receipt.checkpoint).unwrap(),
        path.join(","),
        receipt.tree_size
    )
}

#[tokio::test]
async fn replay_history_and_receipts_verify_against_the_running_server() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    let receipt = activity(&api).await;
    let verifier = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let grpc = format!("http://{}", server.grpc_addr);

    let report = replay(
        &ReplayConfig {
            tls: Default::default(),
            verifier: verifier.clone(),
            grpc: grpc.clone(),
            token: server.token(Role::Regulator, None),
        },
        false,
    )
    .await
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.decisions_checked, 10);
    assert_eq!(report.decisions_matching, 10);
    assert_eq!(report.entries, api.size().await);
    // Every batch is checked; each cohort's three entries share one.
    assert!(report.checkpoints_checked + 4 >= report.entries);
    // Every checkpoint but the empty tree's commits to the subject map, and replay recomputed
    // each of them.
    assert_eq!(report.subject_maps_checked + 1, report.checkpoints_checked);

    let alice = history(&HistoryConfig {
        tls: Default::default(),
        verifier: verifier.clone(),
        grpc: grpc.clone(),
        token: server.token(Role::Patient, Some("alice")),
        patient: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert!(alice.findings.is_empty(), "{:?}", alice.findings);
    assert_eq!(
        alice.rows.len(),
        6,
        "grant, decision, revocation, decision, two cohorts"
    );
    assert!(
        matches!(
            alice.completeness,
            auditor::history::Completeness::Complete { entries: 6, tree_size } if tree_size == alice.tree_size
        ),
        "{:?}",
        alice.completeness
    );
    assert!(alice.is_valid());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, receipt_json(&receipt)).unwrap();
    assert!(
        verify_receipt(&verifier, &file, None, None)
            .unwrap()
            .is_ok()
    );
    // Any changed byte of the leaf hash makes it invalid.
    let mut bad = receipt.clone();
    bad.leaf_hash[7] ^= 1;
    std::fs::write(&file, receipt_json(&bad)).unwrap();
    assert!(
        verify_receipt(&verifier, &file, None, None)
            .unwrap()
            .is_err()
    );
    server.stop().await;
}

/// A whole `Authorize` response in proto3 JSON form, as grpcurl prints it (fields at their
/// default value left out).
fn response_json(response: &pb::AuthorizeResponse) -> serde_json::Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let receipt = response.receipt.as_ref().unwrap();
    let mut receipt_value: serde_json::Value =
        serde_json::from_str(&receipt_json(receipt)).unwrap();
    receipt_value["leaf"] = serde_json::json!(b64(&receipt.leaf));
    let mut value = serde_json::json!({
        "decision": response.decision().as_str_name(),
        "determiningPolicies": response.determining_policies,
        "reasons": response.reasons,
        "receipt": receipt_value,
    });
    if response.review_required {
        value["reviewRequired"] = serde_json::json!(true);
    }
    value
}

#[tokio::test]
async fn an_authorize_response_verifies_against_the_log_and_an_edited_one_does_not() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "alice",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    let response = api
        .authorize(ask(
            "Organization",
            "uni",
            "secondary_use",
            "alice",
            "lab_result",
            "research",
            "IDENTIFIED",
        ))
        .await;
    assert_eq!(response.decision(), pb::Decision::Allow);
    assert!(!response.receipt.as_ref().unwrap().leaf.is_empty());
    let verifier = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("response.json");
    let genuine = response_json(&response);
    let verify = |value: &serde_json::Value, body: Option<&Path>| {
        std::fs::write(&file, value.to_string()).unwrap();
        verify_receipt(&verifier, &file, None, body).unwrap()
    };
    let verified = verify(&genuine, None).unwrap();
    let (answer, check) = verified.answer().unwrap();
    assert_eq!(
        (answer.decision.as_str(), *check),
        ("ALLOW", AnswerCheck::Leaf)
    );

    // The body, as a regulator reads it, lets the determining policies be checked too.
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let index = response.receipt.as_ref().unwrap().leaf_index;
    let entry = regulator
        .audit()
        .get_entries(regulator.req(pb::GetEntriesRequest {
            start: index,
            count: 1,
        }))
        .await
        .unwrap()
        .into_inner()
        .entries
        .remove(0);
    let body = dir.path().join("body");
    std::fs::write(&body, &entry.body).unwrap();
    let verified = verify(&genuine, Some(&body)).unwrap();
    assert_eq!(verified.answer().unwrap().1, AnswerCheck::LeafAndBody);

    let mut denied = genuine.clone();
    denied["decision"] = serde_json::json!("DENY");
    let mut reviewed = genuine.clone();
    reviewed["reviewRequired"] = serde_json::json!(true);
    let mut policies = genuine.clone();
    policies["determiningPolicies"] = serde_json::json!(["secondary-use.anonymized-opt-out"]);
    for (edited, body) in [
        (denied, None),
        (reviewed, None),
        (policies, Some(body.as_path())),
    ] {
        let error = verify(&edited, body).unwrap_err();
        assert_eq!(error.exit_code(), AuditExitCode::Invalid, "{error}");
        assert!(
            matches!(error, ReceiptError::AnswerMismatch { .. }),
            "{error}"
        );
    }
    server.stop().await;
}

async fn watch(verifier: &NoteVerifier, source: LogSource, state: &Path) -> WatchStep {
    watch_once(&WatchConfig {
        tls: Default::default(),
        verifier: verifier.clone(),
        source,
        state: Some(state.to_path_buf()),
        witnesses: Default::default(),
    })
    .await
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn watch_trusts_growth_and_catches_a_fork_over_grpc_and_http() {
    let server = TestServer::start().await;
    let verifier = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let api = Api::new(&server, Role::Platform, None).await;
    activity(&api).await;
    let dir = server.stop().await;
    // The operator copies the data dir before appending: the copy will tell another story.
    let fork = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), fork.path());

    let states = tempfile::tempdir().unwrap();
    let grpc_state = states.path().join("grpc.checkpoint");
    let http_state = states.path().join("http.checkpoint");
    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("honest", "pharma").await;
    for (source, state) in [
        (
            LogSource::Grpc(format!("http://{}", server.grpc_addr)),
            &grpc_state,
        ),
        (
            LogSource::Http(format!("http://{}", server.http_addr)),
            &http_state,
        ),
    ] {
        assert!(matches!(
            watch(&verifier, source.clone(), state).await,
            WatchStep::Accepted { .. }
        ));
        api.org(&format!("more-{}", api.size().await), "pharma")
            .await;
        assert!(matches!(
            watch(&verifier, source, state).await,
            WatchStep::Accepted { .. }
        ));
    }
    server.stop().await;

    // The same key, a different history at the same sizes.
    let server = TestServer::start_in(fork).await;
    let api = Api::new(&server, Role::Platform, None).await;
    for i in 0..3 {
        api.org(&format!("forked-{i}"), "pharma").await;
    }
    for (source, state) in [
        (
            LogSource::Grpc(format!("http://{}", server.grpc_addr)),
            &grpc_state,
        ),
        (
            LogSource::Http(format!("http://{}", server.http_addr)),
            &http_state,
        ),
    ] {
        let step = watch(&verifier, source, state).await;
        assert!(matches!(step, WatchStep::Inconsistent(_)), "{step:?}");
        assert_eq!(step.exit_code().code(), 2, "{step:?}");
    }
    server.stop().await;
}

/// The value of a counter line in Prometheus text.
pub fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
}

/// Decisions are prepared on the callers' tasks while revocations and new grants race with
/// them: replay must still find every logged decision to be the one the operator's rules give
/// at its position, and decisions about patients nobody writes to are taken as prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_and_revocations_all_replay_as_the_rules_decide() {
    const PATIENTS: usize = 8;
    const ROUNDS: usize = 12;
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let patient = |n: usize| format!("patient-{n}");
    // The one consent each patient holds, revokes and grants again.
    let research_grant = move |n: usize| {
        grant(
            &patient(n),
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "IDENTIFIED",
        )
    };
    let mut consents = Vec::new();
    for n in 0..PATIENTS {
        consents.push(api.grant(research_grant(n)).await);
    }
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let n = (worker + round) % PATIENTS;
                api.authorize(ask(
                    "Organization",
                    "uni",
                    "secondary_use",
                    &patient(n),
                    "lab_result",
                    "research",
                    "IDENTIFIED",
                ))
                .await;
            }
        }));
    }
    // Meanwhile the even patients revoke and grant again, over and over.
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            for round in 0..ROUNDS / 2 {
                for (n, consent) in consents.iter_mut().enumerate().step_by(2) {
                    api.consent()
                        .revoke_consent(api.req(pb::RevokeConsentRequest {
                            request_id: String::new(),
                            patient_id: patient(n),
                            consent_id: consent.clone(),
                        }))
                        .await
                        .unwrap();
                    if round % 2 == 0 {
                        tokio::task::yield_now().await;
                    }
                    *consent = api.grant(research_grant(n)).await;
                }
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    writer.await.unwrap();

    let decisions = (4 * ROUNDS) as u64;
    let report = replay(
        &ReplayConfig {
            tls: Default::default(),
            verifier: NoteVerifier::from_vkey(&server.vkey).unwrap(),
            grpc: format!("http://{}", server.grpc_addr),
            token: server.token(Role::Regulator, None),
        },
        false,
    )
    .await
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.decisions_checked, decisions);
    assert_eq!(report.decisions_matching, decisions);

    let (status, metrics) = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    let accepted = counter(
        &metrics,
        "akashi_authorize_prepared_total{outcome=\"accepted\"}",
    );
    let redone = counter(
        &metrics,
        "akashi_authorize_prepared_total{outcome=\"redone\"}",
    );
    assert_eq!(accepted + redone, decisions, "every decision was prepared");
    // Half the decisions are about odd patients, whose records nobody writes after setup.
    assert!(
        accepted >= decisions / 2,
        "accepted {accepted}, redone {redone}"
    );
}

/// A patient checks their history online, saves what the server sent, and checks the saved
/// file again with no server; the same file does not pass for another patient, and a copy
/// with one entry cut out says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_history_verifies_offline_and_a_cut_one_does_not() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    activity(&api).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("alice.json");
    let grpc = format!("http://{}", server.grpc_addr);
    let token = server.token(Role::Patient, Some("alice"));
    let vkey = server.vkey.clone();
    let online = {
        let (grpc, saved, vkey) = (grpc.clone(), saved.clone(), vkey.clone());
        audit_online(
            [
                "history",
                "--vkey",
                &vkey,
                "--grpc",
                &grpc,
                "--token",
                &token,
                "--save",
                saved.to_str().unwrap(),
            ]
            .map(str::to_owned)
            .to_vec(),
        )
        .await
    };
    assert_eq!(online.0, AuditExitCode::Valid, "{}", online.1);
    assert!(online.1.contains("complete"), "{}", online.1);
    server.stop().await;

    // The server is gone; the saved pages still prove the history whole.
    let offline = |patient: &str, file: &Path| {
        audit(&[
            "history",
            "--vkey",
            &vkey,
            "--patient",
            patient,
            "--input",
            file.to_str().unwrap(),
        ])
    };
    let (code, text) = offline("alice", &saved);
    assert_eq!(code, AuditExitCode::Valid, "{text}");
    assert_eq!(text, online.1, "offline and online say the same");
    // Under another patient id the VRF proof is not theirs.
    let (code, text) = offline("bob", &saved);
    assert_eq!(code, AuditExitCode::Invalid, "{text}");

    // The first entry (the consent grant) cut out of the saved response.
    let mut pages: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let entries = pages[0]["entries"].as_array_mut().unwrap();
    assert_eq!(
        entries.len(),
        6,
        "a grant, a revocation, two decisions and two cohorts'"
    );
    entries.remove(0);
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, pages.to_string()).unwrap();
    let (code, text) = offline("alice", &cut);
    assert_eq!(code, AuditExitCode::Invalid, "{text}");
    assert!(text.contains("missing"), "{text}");

    // The patient's own export (APPI 33条5項): the verified rows with the domain's words in
    // Japanese or English, as CSV or a page.
    let export = |format: &str, lang: &str| {
        audit(&[
            "history",
            "--vkey",
            &vkey,
            "--patient",
            "alice",
            "--input",
            saved.to_str().unwrap(),
            "--format",
            format,
            "--lang",
            lang,
        ])
    };
    let (code, csv) = export("csv", "ja");
    assert_eq!(code, AuditExitCode::Valid, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "a header and six entries: {csv}");
    assert!(lines[0].contains("利用目的"), "{csv}");
    assert!(
        csv.contains("学術研究") && csv.contains("同意の撤回"),
        "{csv}"
    );
    assert!(csv.contains("検証済み"), "{csv}");
    // The kind of data and the level come from the bodies.
    assert!(
        csv.contains("検査結果") && csv.contains("本人がわかる形"),
        "{csv}"
    );
    let (code, html) = export("html", "en");
    assert_eq!(code, AuditExitCode::Valid, "{html}");
    assert!(html.contains("<html lang=\"en\">"), "{html}");
    assert!(html.contains("exactly these 6 entries"), "{html}");
    assert!(
        html.contains("Consent revoked") && html.contains("Research"),
        "{html}"
    );
}

/// `akashi-audit` follows a log its server now serves over TLS — gRPC with `[tls]` on, the public
/// tiles behind a TLS front — trusting the CA given with `--ca`: each watcher proves the log grew
/// consistently from what it trusted in the clear, and the disclosure statistics are recomputed
/// from the tiles. Without `--ca` (the system's bundle does not know the CA) no connection is
/// made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_follows_the_log_over_https_trusting_the_ca_it_is_given() {
    let server = TestServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let vkey = server.vkey.clone();
    let states = [
        files.path().join("grpc.state"),
        files.path().join("tiles.state"),
    ];
    let watch = |source: &str, url: &str, state: &Path, ca: Option<&Path>| {
        let mut args = vec![
            "watch".to_owned(),
            "--vkey".to_owned(),
            vkey.clone(),
            source.to_owned(),
            url.to_owned(),
            "--state".to_owned(),
            state.display().to_string(),
            "--once".to_owned(),
        ];
        if let Some(ca) = ca {
            args.extend(["--ca".to_owned(), ca.display().to_string()]);
        }
        audit_online(args)
    };
    let plain = format!("http://{}", server.grpc_addr);
    for state in &states {
        let (code, text) = watch("--grpc", &plain, state, None).await;
        assert_eq!(code, AuditExitCode::Valid, "{text}");
    }
    let api = Api::new(&server, Role::Platform, None).await;
    activity(&api).await;
    let dir = server.stop().await;

    let (ca_pem, cert, key) = tls_identity();
    let write = |name: &str, text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let ca = write("ca.pem", &ca_pem, 0o644);
    let tls = akashi::config::TlsConfig {
        cert: write("server.pem", &cert, 0o644),
        key: write("server.key", &key, 0o600),
        client_ca: None,
    };
    let server = TestServer::start_with(dir, |c| c.tls = Some(tls)).await;
    let (front, front_task) = tls_front(&cert, &key, server.http_addr).await;
    let sources = [
        ("--grpc", format!("https://{}", server.grpc_addr)),
        ("--http", format!("https://{front}")),
    ];
    for ((source, url), state) in sources.iter().zip(&states) {
        let (code, text) = watch(source, url, state, None).await;
        assert_eq!(code, AuditExitCode::Error, "{source} {text}");
        // The handshake itself refused the certificate (not, say, a missing bundle).
        assert!(text.contains("UnknownIssuer"), "{source} {text}");
        let (code, text) = watch(source, url, state, Some(&ca)).await;
        assert_eq!(code, AuditExitCode::Valid, "{source} {text}");
        assert!(text.contains("is consistent"), "{source} {text}");
    }
    let (code, text) = audit_online(
        [
            "disclosure",
            "--vkey",
            &vkey,
            "--http",
            &sources[1].1,
            "--ca",
            ca.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    assert_eq!(code, AuditExitCode::Valid, "{text}");
    front_task.abort();
    server.stop().await;
}

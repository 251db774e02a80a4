//! The public disclosure platform against a running server: known decisions and consents are
//! driven through gRPC, then the page (Japanese and English), the JSON and the CSV are checked
//! for exactly those numbers, small ones hidden; `akashi-audit disclosure` recomputes them from
//! the tiles and catches a tampered JSON served by a proxy; and the page is loaded in headless
//! Chromium when it is installed (CI installs it), which saves a screenshot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use akashi::auth::Role;
use auditor::cli::{Cli, DisclosureConfig, disclosure};
use clap::Parser as _;
use ledger::note::NoteVerifier;
use policy::disclosure::{
    CONSENT_BY_MONTH, DECISIONS_BY_CATEGORY, DECISIONS_BY_MONTH, DECISIONS_BY_RECIPIENT, Document,
};
use proto::pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    api::{Api, allowed, ask, grant},
    harness::{TIMEOUT, TestServer},
};

/// A raw HTTP/1.1 exchange: status, lower-cased headers, body.
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

async fn get(addr: SocketAddr, path: &str, extra: &str) -> Reply {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(TIMEOUT, exchange).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let headers = String::from_utf8(response[..split].to_vec()).unwrap();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: headers.to_ascii_lowercase(),
        body: response[split + 4..].to_vec(),
    }
}

/// Decisions and consents with known counts: 12 allowed (uni, research, lab results, each with
/// an opt-in), 15 denied to an insurer and 3 to an AI vendor (no consent), 12 grants, 2 opt-outs.
async fn populate(api: &Api) {
    api.org("uni", "university").await;
    api.org("insurer", "private_insurer").await;
    api.org("adco", "ai_vendor").await;
    for i in 0..12 {
        let patient = format!("p{i}");
        api.grant(grant(
            &patient,
            &["research"],
            &["lab_result"],
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
                &patient,
                "lab_result",
                "research",
                "PSEUDONYMIZED",
            ))
            .await;
        assert!(allowed(&decision));
    }
    for (org, purpose, times) in [
        ("insurer", "insurance", 15),
        ("adco", "product_development", 3),
    ] {
        for i in 0..times {
            let decision = api
                .authorize(ask(
                    "Organization",
                    org,
                    "secondary_use",
                    &format!("q{i}"),
                    "lab_result",
                    purpose,
                    "PSEUDONYMIZED",
                ))
                .await;
            assert!(!allowed(&decision));
        }
    }
    for patient in ["p0", "p1"] {
        api.consent()
            .record_opt_out(api.req(pb::RecordOptOutRequest {
                request_id: String::new(),
                patient_id: patient.into(),
                purposes: vec!["marketing".into()],
                replace: false,
            }))
            .await
            .unwrap();
    }
}

/// Polls `/disclosure.json` until it covers the whole log (it refreshes at most once a second).
async fn document(server: &TestServer, api: &Api) -> Document {
    let size = api.size().await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let reply = get(server.http_addr, "/disclosure.json", "").await;
        assert_eq!(reply.status, 200);
        let document: Document = serde_json::from_slice(&reply.body).unwrap();
        if document.statistics.size == size {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "statistics stuck at {}",
            document.statistics.size
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server holding the known entries, all in one month (a run that crosses a month boundary
/// in UTC starts over once, so the month-by-month numbers below are exact).
async fn populated() -> (TestServer, Api, Document, String) {
    for _ in 0..2 {
        let server = TestServer::start().await;
        let api = Api::new(&server, Role::Platform, None).await;
        populate(&api).await;
        let document = document(&server, &api).await;
        if let [month] = document.statistics.months.as_slice() {
            let month = month.clone();
            return (server, api, document, month);
        }
    }
    panic!("the entries fell into two months twice in a row");
}

fn cell(document: &Document, table: &str, key: &[&str]) -> Option<Option<u64>> {
    document
        .statistics
        .table(table)
        .unwrap()
        .rows
        .iter()
        .find(|row| row.key == key)
        .map(|row| row.count)
}

#[tokio::test]
async fn the_page_the_json_and_the_csv_show_what_was_decided() {
    let (server, api, document, month) = populated().await;
    let m = month.as_str();
    // Pinned to a checkpoint signed by the log's key, covering every entry.
    let verifier = NoteVerifier::from_vkey(&server.vkey).unwrap();
    let pinned =
        ledger::checkpoint::SignedCheckpoint::verify(&document.checkpoint.note, &verifier).unwrap();
    assert_eq!(pinned.checkpoint().size.get(), document.checkpoint.size);
    assert_eq!(document.statistics.size, api.size().await);
    assert_eq!(document.statistics.threshold, 10);

    assert_eq!(
        cell(&document, DECISIONS_BY_MONTH, &[m, "allowed"]),
        Some(Some(12))
    );
    assert_eq!(
        cell(&document, DECISIONS_BY_MONTH, &[m, "denied"]),
        Some(Some(18))
    );
    assert_eq!(
        cell(
            &document,
            DECISIONS_BY_RECIPIENT,
            &[m, "uni", "university", "allowed"]
        ),
        Some(Some(12))
    );
    // 3 is below the threshold; 15 is hidden with it, or 18 − 15 would give the 3 away.
    assert_eq!(
        cell(
            &document,
            DECISIONS_BY_RECIPIENT,
            &[m, "adco", "ai_vendor", "denied"]
        ),
        Some(None)
    );
    assert_eq!(
        cell(
            &document,
            DECISIONS_BY_RECIPIENT,
            &[m, "insurer", "private_insurer", "denied"]
        ),
        Some(None)
    );
    assert_eq!(
        cell(
            &document,
            DECISIONS_BY_CATEGORY,
            &[m, "lab_result", "allowed"]
        ),
        Some(Some(12))
    );
    assert_eq!(
        cell(&document, CONSENT_BY_MONTH, &[m, "grant"]),
        Some(Some(12))
    );
    assert_eq!(
        cell(&document, CONSENT_BY_MONTH, &[m, "opt_out"]),
        Some(None)
    );
    assert_eq!(document.statistics.policy_sets.len(), 1);
    assert_eq!(document.statistics.policy_sets[0].from_index, 0);

    // The page: Japanese by default, English when asked either way.
    let ja = get(server.http_addr, "/", "").await;
    assert_eq!(ja.status, 200);
    assert!(
        ja.headers
            .contains("content-type: text/html; charset=utf-8")
    );
    assert!(
        ja.headers
            .contains("content-security-policy: default-src 'none'")
    );
    let page = ja.text();
    assert!(page.contains("<html lang=\"ja\">"));
    assert!(
        page.contains("<dd id=\"summary-allowed\">12</dd>"),
        "{page}"
    );
    assert!(page.contains("<dd id=\"summary-denied\">18</dd>"));
    assert!(page.contains("秘匿"));
    assert!(page.contains(&format!(
        "<strong id=\"tree-size\">{}</strong>",
        document.checkpoint.size
    )));
    assert!(!page.contains("<script"));
    let en = get(
        server.http_addr,
        "/disclosure",
        "Accept-Language: en-GB,en;q=0.9,ja;q=0.5\r\n",
    )
    .await;
    assert!(en.headers.contains("content-language: en"));
    assert!(en.headers.contains("vary: accept-language"));
    assert!(en.text().contains("<html lang=\"en\">"));
    assert!(en.text().contains("Summary for"));
    let en = get(
        server.http_addr,
        &format!("/disclosure?lang=en&month={m}"),
        "",
    )
    .await;
    assert!(en.text().contains("<dd id=\"summary-allowed\">12</dd>"));
    assert_eq!(
        get(server.http_addr, "/disclosure?lang=fr", "")
            .await
            .status,
        400
    );
    assert_eq!(
        get(server.http_addr, "/disclosure?month=May", "")
            .await
            .status,
        400
    );
    assert_eq!(
        get(server.http_addr, "/disclosure?month=1999-01", "")
            .await
            .status,
        404
    );

    // Cacheable: an entity tag per checkpoint, language and month.
    let tag = ja
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .to_owned();
    let again = get(server.http_addr, "/", &format!("If-None-Match: {tag}\r\n")).await;
    assert_eq!(again.status, 304);

    // A CSV per table.
    let csv = get(
        server.http_addr,
        &format!("/disclosure/{DECISIONS_BY_RECIPIENT}.csv"),
        "",
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers.contains("content-type: text/csv"));
    let csv = csv.text();
    assert!(csv.starts_with("month,recipient,recipient_class,outcome,count,suppressed\r\n"));
    assert!(csv.contains(&format!("{m},uni,university,allowed,12,false\r\n")));
    assert!(csv.contains(&format!("{m},adco,ai_vendor,denied,,true\r\n")));
    assert_eq!(
        get(server.http_addr, "/disclosure/nope.csv", "")
            .await
            .status,
        404
    );

    // The policy text in force, under its hash.
    let hash = &document.statistics.policy_sets[0].hash;
    let text = get(server.http_addr, &format!("/policy/{hash}"), "").await;
    assert_eq!(text.status, 200);
    assert_eq!(policy::policy_set::hash_text(&text.text()).to_hex(), *hash);
    assert_eq!(
        get(server.http_addr, &format!("/policy/{}", "0".repeat(64)), "")
            .await
            .status,
        404
    );
    assert_eq!(get(server.http_addr, "/policy/xyz", "").await.status, 400);

    // The operators' counters agree (the same public fields, counted as the answers went out).
    let metrics = get(server.admin_addr, "/metrics", "").await.text();
    for (labels, count) in [
        (
            "action=\"secondary_use\",purpose=\"research\",level=\"PSEUDONYMIZED\",decision=\"ALLOW\",review=\"false\"",
            12,
        ),
        (
            "action=\"secondary_use\",purpose=\"insurance\",level=\"PSEUDONYMIZED\",decision=\"DENY\",review=\"false\"",
            15,
        ),
        (
            "action=\"secondary_use\",purpose=\"product_development\",level=\"PSEUDONYMIZED\",decision=\"DENY\",review=\"false\"",
            3,
        ),
    ] {
        let line = format!("akashi_decisions_total{{{labels}}} {count}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert_eq!(metrics.matches("akashi_decisions_total{").count(), 3);
    // Each of the 30 calls was timed before the writer and through it.
    for phase in ["prepare", "sequenced"] {
        let line = format!("akashi_authorize_phase_seconds_count{{phase=\"{phase}\"}} 30\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // The independent verifier recomputes every cell from the tiles.
    let config = DisclosureConfig {
        tls: Default::default(),
        verifier,
        http: format!("http://{}", server.http_addr),
        witnesses: auditor::quorum::WitnessPolicy::default(),
    };
    let report = tokio::task::spawn_blocking(move || disclosure(&config, false))
        .await
        .unwrap()
        .unwrap();
    assert!(report.differences.is_empty(), "{report}");
    assert!(report.cells > 10);
    assert_eq!(report.size, document.checkpoint.size);
}

/// A proxy in front of the server that changes one number of `disclosure.json`.
async fn tampering_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let reply = get(upstream, &path, "").await;
                let mut body = reply.body;
                if path == "/disclosure.json" {
                    let mut document: Document = serde_json::from_slice(&body).unwrap();
                    let table = document
                        .statistics
                        .tables
                        .iter_mut()
                        .find(|t| t.name == DECISIONS_BY_RECIPIENT)
                        .unwrap();
                    for row in &mut table.rows {
                        if row.key[1] == "uni" {
                            row.count = Some(13);
                        }
                    }
                    body = serde_json::to_vec(&document).unwrap();
                }
                let response = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.status,
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_verifier_names_the_cell_of_a_tampered_json_and_exits_2() {
    let (server, _api, _document, month) = populated().await;
    let proxy = tampering_proxy(server.http_addr).await;
    let args = [
        "akashi-audit".to_owned(),
        "disclosure".to_owned(),
        "--vkey".to_owned(),
        server.vkey.clone(),
        "--http".to_owned(),
        format!("http://{proxy}"),
    ];
    let (code, out) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = auditor::cli::run(Cli::parse_from(args), &mut out, &mut err);
        (code, String::from_utf8(out).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(code.code(), 2, "{out}");
    assert!(
        out.contains(&format!(
            "decisions_by_recipient [month={month} recipient=uni recipient_class=university outcome=allowed]: published 13, recomputed 12"
        )),
        "{out}"
    );
    // Through no proxy, the same command finds nothing.
    let args = [
        "akashi-audit".to_owned(),
        "disclosure".to_owned(),
        "--vkey".to_owned(),
        server.vkey.clone(),
        "--http".to_owned(),
        format!("http://{}", server.http_addr),
    ];
    let code = tokio::task::spawn_blocking(move || {
        auditor::cli::run(Cli::parse_from(args), &mut Vec::new(), &mut Vec::new())
    })
    .await
    .unwrap();
    assert_eq!(code.code(), 0);
}

/// Debian's `chromium`, or another Chromium on the path.
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Where tests leave files for people to look at: `target/test-artifacts`.
fn artifacts() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts")
}

async fn headless(
    chromium: &std::path::Path,
    profile: &std::path::Path,
    args: &[String],
) -> Vec<u8> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium took over two minutes")
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn a_person_reads_the_numbers_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        eprintln!("chromium is not installed: the browser test did not run (.ci/run installs it)");
        return;
    };
    let (server, _api, _document, _month) = populated().await;
    let profile = tempfile::tempdir().unwrap();
    for (lang, summary) in [("ja", "の概要"), ("en", "Summary for")] {
        let url = format!("http://{}/disclosure?lang={lang}", server.http_addr);
        let dom = headless(
            &chromium,
            profile.path(),
            &["--dump-dom".to_owned(), url.clone()],
        )
        .await;
        let dom = String::from_utf8(dom).unwrap();
        assert!(dom.contains(&format!("<html lang=\"{lang}\">")), "{dom}");
        assert!(dom.contains("<dd id=\"summary-allowed\">12</dd>"), "{dom}");
        assert!(dom.contains("<dd id=\"summary-denied\">18</dd>"), "{dom}");
        assert!(dom.contains(summary));
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let shot = dir.join(format!("disclosure-{lang}.png"));
        let _ = std::fs::remove_file(&shot);
        headless(
            &chromium,
            profile.path(),
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1100,2600".to_owned(),
                "--hide-scrollbars".to_owned(),
                url,
            ],
        )
        .await;
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", shot.display());
        eprintln!("screenshot: {}", shot.display());
    }
}

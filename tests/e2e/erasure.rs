//! Lawful erasure through the real server (`ErasureService/Erase`): the bodies of a patient's
//! entries are deleted while leaves and proofs stay valid, later decisions no longer count the
//! erased consents, entries under the retention period are refused unless a regulator forces,
//! a backup of the store taken before the erasure cannot read the erased bodies once the key is
//! destroyed, and the write is idempotent.

use std::path::Path;

use akashi::auth::Role;
use ledger::{
    entry::Leaf,
    hash::{Hash, LeafIndex, hash_leaf},
    proof::InclusionProof,
};
use proto::pb::{self, erasure_service_client::ErasureServiceClient};
use tempfile::TempDir;
use tonic::Code;

use crate::{
    api::{Api, allowed, ask, checkpoint_root, grant, verify_receipt},
    harness::{TestServer, expect_status, with_token},
};

/// Bytes of the nonce before a body's payload.
const NONCE_LEN: usize = 16;

/// A server whose retention period is over at once.
async fn start_without_retention(dir: TempDir) -> TestServer {
    TestServer::start_with(dir, |config| config.erasure_retention_days = 0).await
}

/// A server without a retention period, and a platform client that registered `uni`.
async fn with_uni() -> (TestServer, Api) {
    let server = start_without_retention(tempfile::tempdir().unwrap()).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    (server, api)
}

/// The regulator's replay of `server`'s log.
async fn regulator_replay(
    server: &TestServer,
    verifier: &ledger::note::NoteVerifier,
) -> auditor::report::Report {
    let config = auditor::cli::ReplayConfig {
        tls: Default::default(),
        verifier: verifier.clone(),
        grpc: format!("http://{}", server.grpc_addr),
        token: server.token(Role::Regulator, None),
    };
    auditor::cli::replay(&config, false).await.unwrap()
}

/// Asks the research question about `patient`: it must be denied, logged as the next entry
/// with a valid receipt, and its body readable by `regulator` (sealed under the patient's
/// current key).
async fn denied_and_logged(server: &TestServer, api: &Api, regulator: &Api, patient: &str) {
    let size = api.size().await;
    let decided = api.authorize(research_ask(patient)).await;
    assert!(!allowed(&decided), "{decided:?}");
    let receipt = decided.receipt.unwrap();
    assert_eq!(receipt.leaf_index, size);
    verify_receipt(&receipt, &server.vkey);
    assert_eq!(api.size().await, size + 1);
    let entries = all_entries(regulator).await;
    assert!(!payload(&entries[receipt.leaf_index as usize]).is_empty());
}

/// `patient`'s research consent to `uni` (as in restart.rs).
fn research_grant(patient: &str) -> pb::GrantConsentRequest {
    grant(
        patient,
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "IDENTIFIED",
    )
}

/// The question that consent answers with an allow.
fn research_ask(patient: &str) -> pb::AuthorizeRequest {
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

/// Grants `patient` the research consent: (consent id, leaf index).
async fn grant_research(api: &Api, patient: &str) -> (String, u64) {
    let granted = api
        .consent()
        .grant_consent(api.req(research_grant(patient)))
        .await
        .unwrap()
        .into_inner();
    (granted.consent_id, granted.receipt.unwrap().leaf_index)
}

/// An erasure request of every entry about `patient` (or of `indices`).
fn erase_request(patient: &str, indices: &[u64], reason: &str) -> pb::EraseRequest {
    pb::EraseRequest {
        patient_id: patient.into(),
        leaf_indices: indices.to_vec(),
        reason: reason.into(),
        force: false,
        request_id: String::new(),
    }
}

async fn erase(
    server: &TestServer,
    token: &str,
    request: pb::EraseRequest,
) -> Result<pb::EraseResponse, tonic::Status> {
    ErasureServiceClient::new(server.channel().await)
        .erase(with_token(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// Every entry of the log (`auditor` is a regulator's or auditor's client).
async fn all_entries(auditor: &Api) -> Vec<pb::AuditEntry> {
    let size = auditor.size().await;
    let mut entries = Vec::new();
    while (entries.len() as u64) < size {
        let page = auditor
            .audit()
            .get_entries(auditor.req(pb::GetEntriesRequest {
                start: entries.len() as u64,
                count: 1024,
            }))
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(!page.is_empty());
        entries.extend(page);
    }
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.leaf_index, i as u64);
    }
    entries
}

/// The payload of a present body (after its nonce).
fn payload(entry: &pb::AuditEntry) -> Vec<u8> {
    assert!(
        !entry.redacted && entry.body.len() > NONCE_LEN,
        "entry {} has no body",
        entry.leaf_index
    );
    entry.body[NONCE_LEN..].to_vec()
}

/// Asserts entry `index` of `entries` had its body erased by the erasure at `by`, with its leaf
/// as it was in `before`.
fn assert_erased(entries: &[pb::AuditEntry], before: &[pb::AuditEntry], index: u64, by: u64) {
    let entry = &entries[index as usize];
    assert!(entry.redacted, "entry {index} must be redacted");
    assert!(
        entry.body.is_empty(),
        "entry {index}: a redacted body is empty"
    );
    assert_eq!(entry.erased_by, Some(by), "entry {index}: which erasure");
    assert_eq!(
        entry.leaf, before[index as usize].leaf,
        "entry {index}: the leaf is kept"
    );
}

#[tokio::test]
async fn erasure_deletes_bodies_keeps_proofs_and_later_decisions_work() {
    let server = start_without_retention(tempfile::tempdir().unwrap()).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let org = api.org("uni", "university").await.leaf_index;
    let (consent, grant1) = grant_research(&api, "p1").await;
    let decision = api.authorize(research_ask("p1")).await;
    assert!(allowed(&decision), "the consent allows before the erasure");
    let decision1 = decision.receipt.unwrap().leaf_index;
    let (_, grant2) = grant_research(&api, "p2").await;
    let before = all_entries(&regulator).await;
    for index in [grant1, decision1, grant2, org] {
        assert!(!before[index as usize].redacted);
        assert!(before[index as usize].body.len() > NONCE_LEN);
    }
    let size = api.size().await;

    let erased = erase(
        &server,
        &api.token,
        erase_request("p1", &[], "patient request"),
    )
    .await
    .unwrap();
    assert_eq!(erased.erased, 2, "p1's grant and decision");
    let receipt = erased.receipt.unwrap();
    assert_eq!(receipt.leaf_index, size, "the erasure is the next entry");
    assert!(verify_receipt(&receipt, &server.vkey) > receipt.leaf_index);
    let erasure = receipt.leaf_index;

    let after = all_entries(&regulator).await;
    assert_eq!(after.len() as u64, size + 1);
    assert_erased(&after, &before, grant1, erasure);
    assert_erased(&after, &before, decision1, erasure);
    // The erasure itself keeps its body, which says why.
    let record = payload(&after[erasure as usize]);
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["reason"], "patient request", "{record}");
    assert_eq!(after[erasure as usize].erased_by, None);
    // Everything else is as it was, leaves and bodies.
    for (old, new) in before.iter().zip(&after) {
        if [grant1, decision1].contains(&old.leaf_index) {
            continue;
        }
        assert_eq!(old, new, "entry {} must be untouched", old.leaf_index);
    }
    assert_eq!(
        payload(&after[grant2 as usize]),
        payload(&before[grant2 as usize])
    );

    // The patient's history still lists the erased entries, marked, with valid proofs.
    let history = regulator.subject_history("p1").await.unwrap();
    let indices: Vec<u64> = history.entries.iter().map(|e| e.leaf_index).collect();
    assert_eq!(indices, [grant1, decision1, erasure]);
    let (tree_size, root) = checkpoint_root(&history.checkpoint, &server.vkey);
    assert_eq!(tree_size.get(), history.tree_size);
    for entry in &history.entries {
        let erased = entry.leaf_index != erasure;
        assert_eq!(entry.redacted, erased, "entry {}", entry.leaf_index);
        assert_eq!(entry.body.is_empty(), erased, "entry {}", entry.leaf_index);
        assert_eq!(entry.leaf, after[entry.leaf_index as usize].leaf);
        InclusionProof {
            leaf_index: LeafIndex(entry.leaf_index),
            tree_size,
            path: entry
                .inclusion_proof
                .iter()
                .map(|h| Hash::from_slice(h).unwrap())
                .collect(),
        }
        .verify(&hash_leaf(&entry.leaf), &root)
        .unwrap();
    }

    // The same question again: decided without the erased consent, and logged.
    // Its body is sealed under the patient's new key, and readable.
    denied_and_logged(&server, &api, &regulator, "p1").await;
    assert!(api.consent_state("p1").await.consents.is_empty());
    assert_eq!(api.consent_state("p2").await.consents.len(), 1);
    expect_status(
        "revoking an erased consent",
        api.consent()
            .revoke_consent(api.req(pb::RevokeConsentRequest {
                request_id: String::new(),
                patient_id: "p1".into(),
                consent_id: consent,
            }))
            .await,
        Code::FailedPrecondition,
        "revoked",
    );
    // p2's consent still counts.
    assert!(allowed(&api.authorize(research_ask("p2")).await));
    server.stop().await;
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[tokio::test]
async fn erasure_within_retention_is_refused_unless_a_regulator_forces() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let org = api.org("uni", "university").await.leaf_index;
    let (_, grant1) = grant_research(&api, "p1").await;
    let size = api.size().await;

    // The first day the grant may be erased: its day plus the default 1,095 days.
    let leaf = all_entries(&regulator).await[grant1 as usize].leaf.clone();
    let day = Leaf::decode(&leaf).unwrap().day;
    let (year, month, dom) = civil_from_days(
        days_from_civil(
            i64::from(day.year),
            i64::from(day.month),
            i64::from(day.day),
        ) + 1095,
    );
    let until = format!("{year:04}-{month:02}-{dom:02}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (this_year, _, _) = civil_from_days(i64::try_from(now / 86_400).unwrap());
    assert!(
        [this_year + 2, this_year + 3].contains(&year),
        "{until} is three years from {this_year}"
    );

    expect_status(
        "platform, within the retention period",
        erase(
            &server,
            &api.token,
            erase_request("p1", &[], "patient request"),
        )
        .await,
        Code::FailedPrecondition,
        &format!("can be erased from {until} on"),
    );
    assert_eq!(api.size().await, size);
    expect_status(
        "platform with force",
        erase(
            &server,
            &api.token,
            pb::EraseRequest {
                force: true,
                ..erase_request("p1", &[], "patient request")
            },
        )
        .await,
        Code::PermissionDenied,
        "force",
    );
    assert_eq!(api.size().await, size);
    let patient = server.token(Role::Patient, Some("p1"));
    expect_status(
        "the patient",
        erase(&server, &patient, erase_request("p1", &[], "my request")).await,
        Code::PermissionDenied,
        "",
    );
    expect_status(
        "no reason",
        erase(&server, &api.token, erase_request("p1", &[], "")).await,
        Code::InvalidArgument,
        "reason",
    );
    expect_status(
        "an entry about no patient",
        erase(
            &server,
            &regulator.token,
            pb::EraseRequest {
                force: true,
                ..erase_request("p1", &[org], "court order")
            },
        )
        .await,
        Code::InvalidArgument,
        "leaf_indices",
    );
    expect_status(
        "a patient with no entries",
        erase(
            &server,
            &regulator.token,
            pb::EraseRequest {
                force: true,
                ..erase_request("p-unknown", &[], "court order")
            },
        )
        .await,
        Code::FailedPrecondition,
        "no entry",
    );
    assert_eq!(api.size().await, size, "refusals log nothing");
    let entries = all_entries(&regulator).await;
    assert!(!entries[grant1 as usize].redacted);

    let forced = erase(
        &server,
        &regulator.token,
        pb::EraseRequest {
            force: true,
            ..erase_request("p1", &[grant1], "court order")
        },
    )
    .await
    .unwrap();
    assert_eq!(forced.erased, 1);
    let receipt = forced.receipt.unwrap();
    verify_receipt(&receipt, &server.vkey);
    assert_eq!(api.size().await, size + 1);
    let entries = all_entries(&regulator).await;
    assert!(entries[grant1 as usize].redacted);
    assert_eq!(entries[grant1 as usize].erased_by, Some(receipt.leaf_index));
    let record: serde_json::Value =
        serde_json::from_slice(&payload(&entries[receipt.leaf_index as usize])).unwrap();
    assert_eq!(record["forced"], true, "{record}");
    server.stop().await;
}

/// Copies the folder `from` into `to`, except its top-level entries named in `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, &[]);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The contents of every file under `dir`, by path.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
        }
    }
    out
}

/// The files of `files` that hold `needle`.
fn holding<'a>(files: &'a [(std::path::PathBuf, Vec<u8>)], needle: &[u8]) -> Vec<&'a Path> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path.as_path())
        .collect()
}

/// Fragments of a body's JSON payload that no other record of the store holds: its first 48
/// bytes, and 48 bytes from each of the keys `"purposes"`, `"time"` and `"granted_at"` (which
/// carry what the patient consented to and when).
fn fragments(payload: &[u8]) -> Vec<Vec<u8>> {
    assert!(payload.len() >= 48, "{}", String::from_utf8_lossy(payload));
    let mut out = vec![payload[..48].to_vec()];
    for key in [&b"\"purposes\""[..], b"\"time\"", b"\"granted_at\""] {
        if let Some(at) = payload.windows(key.len()).position(|w| w == key) {
            out.push(payload[at..(at + 48).min(payload.len())].to_vec());
        }
    }
    out
}

#[tokio::test]
async fn erasure_reaches_a_backup_taken_before_it() {
    let server = start_without_retention(tempfile::tempdir().unwrap()).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let org = api.org("uni", "university").await.leaf_index;
    let (_, grant1) = grant_research(&api, "p1").await;
    let decision = api.authorize(research_ask("p1")).await;
    assert!(allowed(&decision));
    let decision1 = decision.receipt.unwrap().leaf_index;
    let (_, grant2) = grant_research(&api, "p2").await;
    let before = all_entries(&regulator).await;
    let payloads: Vec<Vec<u8>> = [org, grant1, decision1, grant2]
        .iter()
        .map(|i| payload(&before[*i as usize]))
        .collect();
    let data = server.data_dir();
    let dir = server.stop().await;

    // A backup of the store: everything but the vault, which is kept apart.
    let backup = tempfile::tempdir().unwrap();
    let backup_data = backup.path().join("data");
    copy_tree(&data, &backup_data, &[akashi::server::VAULT_DIR]);
    assert!(!backup_data.join(akashi::server::VAULT_DIR).exists());

    let server = start_without_retention(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let erased = erase(
        &server,
        &api.token,
        erase_request("p1", &[], "patient request"),
    )
    .await
    .unwrap();
    assert_eq!(erased.erased, 2);
    let dir = server.stop().await;

    // The backup is restored beside the vault, which survived.
    copy_tree(
        &data.join(akashi::server::VAULT_DIR),
        &backup_data.join(akashi::server::VAULT_DIR),
        &[],
    );
    drop(dir);
    // In the backup's store the bodies about patients are sealed; the directory's are in the
    // clear (which shows the scan finds bodies stored as they are).
    let files = files_under(&backup_data.join(akashi::server::LEDGER_DIR));
    assert!(!files.is_empty());
    let (control, sealed) = payloads.split_first().unwrap();
    for fragment in fragments(control) {
        assert!(
            !holding(&files, &fragment).is_empty(),
            "the scan must find the clear body of the directory entry: {}",
            String::from_utf8_lossy(&fragment)
        );
    }
    for payload in sealed {
        for fragment in fragments(payload) {
            let found = holding(&files, &fragment);
            assert!(
                found.is_empty(),
                "`{}` found at rest in {found:?}",
                String::from_utf8_lossy(&fragment)
            );
        }
    }
    // Nor do the consent-state records hold a consent's terms in the clear (their compact
    // field names: purposes `p`, data categories `d`, recipients `r`).
    let terms = br#""p":["research"],"d":["clinical"],"r":["uni"]"#;
    assert!(holding(&files, terms).is_empty(), "consent terms at rest");

    let server = start_without_retention(backup).await;
    let api = Api::new(&server, Role::Platform, None).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let restored = all_entries(&regulator).await;
    assert_eq!(
        restored.len(),
        before.len(),
        "the backup ends before the erasure"
    );
    for index in [grant1, decision1] {
        let entry = &restored[index as usize];
        assert!(entry.redacted, "entry {index}: its key was destroyed");
        assert!(entry.body.is_empty());
        // The erasure is not in the backup's log, so nothing says which erasure it was.
        assert_eq!(entry.erased_by, None);
        assert_eq!(entry.leaf, before[index as usize].leaf);
    }
    assert_eq!(restored[grant2 as usize], before[grant2 as usize]);
    assert_eq!(restored[org as usize], before[org as usize]);

    // The restored server still decides about p1 and logs it, sealed under a fresh key. Its
    // derived state predates the erasure, but p1's consent-state record was sealed under the
    // destroyed key too: it reads as no consent and an opt-out of every secondary use, so the
    // erased grant does not come back. p2's consent still counts.
    denied_and_logged(&server, &api, &regulator, "p1").await;
    assert!(allowed(&api.authorize(research_ask("p2")).await));
    server.stop().await;
}

#[tokio::test]
async fn erase_is_idempotent_with_request_id() {
    let (server, api) = with_uni().await;
    grant_research(&api, "p1").await;
    assert!(allowed(&api.authorize(research_ask("p1")).await));
    grant_research(&api, "p2").await;
    let size = api.size().await;

    let request = pb::EraseRequest {
        request_id: "e-1".into(),
        ..erase_request("p1", &[], "patient request")
    };
    let first = erase(&server, &api.token, request.clone()).await.unwrap();
    assert_eq!(first.erased, 2);
    assert_eq!(api.size().await, size + 1);
    let again = erase(&server, &api.token, request.clone()).await.unwrap();
    let (a, b) = (first.receipt.unwrap(), again.receipt.unwrap());
    assert_eq!(a.leaf_index, b.leaf_index);
    assert_eq!(a.leaf_hash, b.leaf_hash);
    verify_receipt(&b, &server.vkey);
    assert_eq!(again.erased, first.erased);
    assert_eq!(api.size().await, size + 1, "the retry logs nothing");

    expect_status(
        "the same id for another patient",
        erase(
            &server,
            &api.token,
            pb::EraseRequest {
                patient_id: "p2".into(),
                ..request
            },
        )
        .await,
        Code::AlreadyExists,
        "request_id",
    );
    assert_eq!(api.size().await, size + 1);
    server.stop().await;
}

/// The regulator's replay of a log with an erasure: the erased grant's body is accounted for by
/// the erasure that names it, the decision that relied on it is withdrawn (counted, not a
/// finding), everything else is re-decided; the patient's own history still verifies complete,
/// with the erased entry marked. A body deleted outside an erasure is a finding.
#[tokio::test]
async fn replay_and_history_account_for_an_erasure_and_catch_a_body_deleted_without_one() {
    let (server, api) = with_uni().await;
    let (_, grant_index) = grant_research(&api, "p1").await;
    assert!(allowed(&api.authorize(research_ask("p1")).await));
    let (_, p2_grant) = grant_research(&api, "p2").await;
    assert!(allowed(&api.authorize(research_ask("p2")).await));
    // Over a thousand more entries (one cohort), so that the erasure lies pages beyond the
    // grant it erases and replay must read it ahead of its turn.
    let template = research_ask("");
    let cohort = pb::AuthorizeCohortRequest {
        principal: template.principal.clone(),
        action: template.action.clone(),
        data_category: template.data_category.clone(),
        purpose: template.purpose.clone(),
        level: template.level.clone(),
        subjects: (0..1_100)
            .map(|n| pb::CohortSubject {
                patient_id: format!("c{n}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let decided = api
        .access()
        .authorize_cohort(api.req(cohort))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.decisions.len(), 1_100);
    // Only the grant: the decision that relied on it stays, with its body.
    let platform = server.token(Role::Platform, None);
    let erased = erase(
        &server,
        &platform,
        erase_request("p1", &[grant_index], "withdrawn"),
    )
    .await
    .unwrap();
    assert_eq!(erased.erased, 1);
    assert!(!allowed(&api.authorize(research_ask("p1")).await));

    let verifier = ledger::note::NoteVerifier::from_vkey(&server.vkey).unwrap();
    let grpc = format!("http://{}", server.grpc_addr);
    let report = regulator_replay(&server, &verifier).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.redacted, 1);
    assert_eq!(report.erasures, 1);
    assert_eq!(
        report.withdrawn_after_erasure, 1,
        "p1's first decision rested on the erased grant"
    );
    // p2's decision, the cohort's and p1's decision after the erasure are re-decided and
    // agree; p1's first decision names the erased grant as the patient's previous entry, which
    // replay cannot see.
    assert_eq!(report.decisions_checked, 1_102);
    assert_eq!(report.decisions_matching, 1_102);
    // The erasure, read ahead, tells whose map record the erased grant updated: every map
    // checkpoint is still recomputed and compared.
    assert_eq!(report.subject_maps_unchecked_after_erasure, 0);
    assert_eq!(report.subject_maps_checked + 1, report.checkpoints_checked);

    let history = auditor::cli::history(&auditor::cli::HistoryConfig {
        tls: Default::default(),
        verifier: verifier.clone(),
        grpc: grpc.clone(),
        token: server.token(Role::Patient, Some("p1")),
        patient: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert!(history.findings.is_empty(), "{:?}", history.findings);
    assert!(history.is_valid());
    let erased_rows: Vec<u64> = history
        .rows
        .iter()
        .filter(|row| row.erased)
        .map(|row| row.index)
        .collect();
    assert_eq!(erased_rows, [grant_index]);
    assert!(matches!(
        history.completeness,
        auditor::history::Completeness::Complete { entries: 4, .. }
    ));

    // The operator deletes p2's grant body behind the log's back (server stopped, store
    // opened directly): replay names it.
    let data_dir = server.data_dir();
    let dir = server.stop().await;
    {
        let keys =
            akashi::keys::Keys::load(&data_dir, &akashi::config::Config::default().origin).unwrap();
        let store = akashi::server::open_store(&data_dir, None).unwrap();
        let log = akashi::server::open_log(&data_dir, store, None, keys.checkpoint_signer).unwrap();
        assert!(log.redact_body(LeafIndex(p2_grant)).unwrap());
    }
    let server = TestServer::start_in(dir).await;
    let report = regulator_replay(&server, &verifier).await;
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, auditor::report::Finding::ErasedWithoutErasure { index } if *index == p2_grant)),
        "{:?}",
        report.findings
    );
    server.stop().await;
}

/// An erasure whose entry is durable but whose work a stop cut off (the process died between
/// the batch's sync and the deletion) is finished at the next start, before anything is served:
/// the bodies are gone and the old key destroyed.
#[tokio::test]
async fn an_erasure_cut_off_by_a_stop_is_finished_at_the_next_start() {
    let (server, api) = with_uni().await;
    let (_, grant_index) = grant_research(&api, "p1").await;
    let data_dir = server.data_dir();
    let dir = server.stop().await;

    // The erasure logged through the sequencer alone: what a stop right after its batch leaves.
    let logged = {
        let config = akashi::config::Config {
            data_dir: data_dir.clone(),
            erasure_retention_days: 0,
            ..akashi::config::Config::default()
        };
        let server = akashi::server::Server::open(config).unwrap();
        let core = server.core().clone();
        let subject = core.subject("patient_id", "p1").unwrap();
        let (receipt, _) = core
            .submit(akashi::state_machine::Command::Erase {
                subject,
                indices: Vec::new(),
                reason: "patient request".to_owned(),
                force: false,
                retention_days: 0,
            })
            .await
            .unwrap();
        // Before the restart the body is still there: nothing but the entry was done.
        assert!(matches!(
            core.log().body(LeafIndex(grant_index)).unwrap(),
            ledger::chunk::Record::Present(_)
        ));
        core.sequencer().shutdown().await;
        receipt.leaf_index.get()
    };

    let server = start_without_retention(dir).await;
    let auditor = Api::new(&server, Role::Auditor, None).await;
    let entries = all_entries(&auditor).await;
    let grant = &entries[usize::try_from(grant_index).unwrap()];
    assert!(grant.redacted && grant.body.is_empty(), "{grant:?}");
    assert_eq!(grant.erased_by, Some(logged));
    // The patient's later entries are sealed under the fresh key and read back.
    assert!(!allowed(
        &api_for(&server).await.authorize(research_ask("p1")).await
    ));
    server.stop().await;
}

async fn api_for(server: &TestServer) -> Api {
    Api::new(server, Role::Platform, None).await
}

/// A data dir whose vault is gone is refused at start, never served with every sealed body
/// reading as erased.
#[tokio::test]
async fn a_store_without_its_vault_is_refused() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    grant_research(&api, "p1").await;
    let data_dir = server.data_dir();
    let _dir = server.stop().await;
    let vault_dir = data_dir.join(akashi::server::VAULT_DIR);
    std::fs::remove_dir_all(&vault_dir).unwrap();
    let config = akashi::config::Config {
        data_dir,
        ..akashi::config::Config::default()
    };
    let err = akashi::server::Server::open(config.clone()).unwrap_err();
    assert!(
        matches!(&err, akashi::error::StartError::Vault(message) if message.contains("missing")),
        "{err}"
    );
    // Another vault (an older copy, say) without the keys the store handed out is refused too.
    drop(ledger::vault::KeyVault::open(&vault_dir).unwrap());
    let err = akashi::server::Server::open(config).unwrap_err();
    assert!(
        matches!(&err, akashi::error::StartError::Vault(message) if message.contains("older copy")),
        "{err}"
    );
}

/// A recipient watching consent changes learns that an erasure ended the consent it held: a
/// revocation at the erasure's entry, naming the consent, although the grant's body is gone.
#[tokio::test]
async fn recipients_learn_that_an_erasure_ended_their_consent() {
    let (server, api) = with_uni().await;
    let (consent_id, grant_index) = grant_research(&api, "p1").await;
    let mut stream = api
        .consent()
        .watch_consent_changes(api.req(pb::WatchConsentChangesRequest {
            recipient: "uni".into(),
            after_index: Some(grant_index),
        }))
        .await
        .unwrap()
        .into_inner();
    let platform = server.token(Role::Platform, None);
    let erased = erase(
        &server,
        &platform,
        erase_request("p1", &[], "patient request"),
    )
    .await
    .unwrap();
    let erasure_index = erased.receipt.unwrap().leaf_index;
    let change = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let message = stream.message().await.unwrap().expect("the stream ended");
            if let Some(change) = message.changes.into_iter().next() {
                return change;
            }
        }
    })
    .await
    .expect("no change within 30 s");
    assert_eq!(change.kind, "revoke");
    assert_eq!(change.leaf_index, erasure_index);
    assert_eq!(change.consent_id, consent_id);
    assert!(
        change.purposes.contains(&"research".to_owned()),
        "{change:?}"
    );
    server.stop().await;
}

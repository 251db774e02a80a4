//! Per-patient completeness through the real server: every `GetSubjectHistory` answer carries a
//! proof, against its signed checkpoint's subject-map line, that its entries are all the log holds
//! about the patient; checked here with the ledger's own verifier (the auditor CLI's checks of
//! the same answers are in `audit.rs`).

use akashi::{auth::Role, config::Config, keys::SUBJECT_MAP_KEY_FILE, server::Server};
use ledger::{
    checkpoint::SignedCheckpoint,
    completeness::{MapCommitment, SubjectProof, SubjectRecord},
    hash::{Hash, hash_leaf},
    map::{MapProof, Terminal},
    note::NoteVerifier,
    vrf::VrfProof,
};
use proto::pb;

use crate::api::{Api, ask, grant};
use crate::harness::TestServer;

/// The checkpoint's map commitment, after checking its signature.
fn commitment(note: &str, vkey: &str) -> (u64, MapCommitment) {
    let verifier = NoteVerifier::from_vkey(vkey).unwrap();
    let checkpoint = SignedCheckpoint::verify(note, &verifier).unwrap();
    let commitment = MapCommitment::of(checkpoint.checkpoint())
        .unwrap()
        .expect("every checkpoint carries the subject-map line");
    (checkpoint.checkpoint().size.get(), commitment)
}

/// The proof as the ledger's verifier takes it.
fn subject_proof(c: &pb::SubjectCompleteness) -> SubjectProof {
    let record = (c.count > 0).then(|| SubjectRecord {
        count: c.count,
        first: c.first_index,
        last: c.last_index,
        head: Hash::from_slice(&c.chain_head).unwrap(),
    });
    let terminal = if c.leaf_key.is_empty() {
        Terminal::Empty
    } else {
        Terminal::Leaf {
            key: c.leaf_key.clone().try_into().unwrap(),
            value: Hash::from_slice(&c.leaf_value).unwrap(),
        }
    };
    SubjectProof {
        vrf_proof: VrfProof::from_bytes(&c.vrf_proof).unwrap(),
        record,
        map_proof: MapProof {
            siblings: c
                .map_siblings
                .iter()
                .map(|h| Hash::from_slice(h).unwrap())
                .collect(),
            terminal,
        },
    }
}

/// Verifies `pages` (oldest first) of `patient`'s history; returns the entry indices and the
/// count the map holds.
fn verify(pages: &[pb::GetSubjectHistoryResponse], patient: &str, vkey: &str) -> (Vec<u64>, u64) {
    let last = pages.last().unwrap();
    let (size, commitment) = commitment(&last.checkpoint, vkey);
    assert_eq!(size, last.tree_size);
    let c = last.completeness.as_ref().expect("a completeness proof");
    let proof = subject_proof(c);
    let (beta, held) = proof.verify(patient, &commitment).unwrap();
    let entries: Vec<(u64, Hash)> = pages
        .iter()
        .flat_map(|p| p.entries.iter())
        .map(|e| (e.leaf_index, hash_leaf(&e.leaf)))
        .collect();
    assert!(entries.iter().all(|(i, _)| *i < size));
    assert_eq!(
        held,
        SubjectRecord::of(&beta, &entries),
        "the history is complete"
    );
    (
        entries.iter().map(|(i, _)| *i).collect(),
        held.map_or(0, |r| r.count),
    )
}

async fn setup(api: &Api) {
    api.org("uni", "university").await;
    api.grant(grant(
        "alice",
        &["research"],
        &["diagnosis"],
        &["uni"],
        &[],
        "PSEUDONYMIZED",
    ))
    .await;
}

fn research(patient: &str) -> pb::AuthorizeRequest {
    ask(
        "Organization",
        "uni",
        "secondary_use",
        patient,
        "diagnosis",
        "research",
        "PSEUDONYMIZED",
    )
}

#[tokio::test]
async fn a_patient_proves_their_history_complete_consents_and_decisions_alike() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    setup(&api).await;
    for patient in ["alice", "bob", "alice"] {
        api.authorize(research(patient)).await;
    }
    api.consent()
        .record_opt_out(api.req(pb::RecordOptOutRequest {
            request_id: String::new(),
            patient_id: "alice".into(),
            purposes: vec!["marketing".into()],
            replace: false,
        }))
        .await
        .unwrap();
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let history = alice.subject_history("alice").await.unwrap();
    let (indices, count) = verify(std::slice::from_ref(&history), "alice", &server.vkey);
    // The grant, two decisions, the opt-out.
    assert_eq!(count, 4);
    assert_eq!(indices.len(), 4);
    // The bodies carry the VRF output the map key comes from (for a regulator's replay).
    for entry in &history.entries {
        let body = String::from_utf8_lossy(&entry.body);
        assert!(body.contains("\"subject_vrf_output\":\""), "{body}");
    }

    // Hiding any one entry is caught: the map's record no longer matches.
    let c = history.completeness.clone().unwrap();
    for hidden in 0..history.entries.len() {
        let mut shown = history.clone();
        shown.entries.remove(hidden);
        let (_, commitment) = commitment(&shown.checkpoint, &server.vkey);
        let beta = ledger::vrf::VrfPublicKey::from_bytes(&commitment.vrf_key)
            .unwrap()
            .verify(b"alice", &VrfProof::from_bytes(&c.vrf_proof).unwrap())
            .unwrap();
        let entries: Vec<(u64, Hash)> = shown
            .entries
            .iter()
            .map(|e| (e.leaf_index, hash_leaf(&e.leaf)))
            .collect();
        let record = SubjectRecord::of(&beta, &entries).unwrap();
        assert_ne!(
            record.head.0.to_vec(),
            c.chain_head,
            "hiding entry {hidden}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_patient_without_entries_gets_a_proof_of_absence() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    setup(&api).await;
    for i in 0..20 {
        api.authorize(research(&format!("p{i}"))).await;
    }
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("nobody").await.unwrap();
    assert!(history.entries.is_empty());
    let c = history.completeness.as_ref().unwrap();
    assert_eq!(c.count, 0);
    let (indices, count) = verify(std::slice::from_ref(&history), "nobody", &server.vkey);
    assert_eq!((indices.len(), count), (0, 0));
    // The same proof does not pass for a patient who has entries.
    let (_, commitment) = commitment(&history.checkpoint, &server.vkey);
    assert!(subject_proof(c).verify("p3", &commitment).is_err());
    server.stop().await;
}

#[tokio::test]
async fn paged_histories_are_complete_across_pages_and_restarts() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    setup(&api).await;
    for i in 0..11 {
        api.authorize(research("alice")).await;
        if i % 3 == 0 {
            api.authorize(research("bob")).await;
        }
    }
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let pages = all_pages(&alice, "alice", 4).await;
    assert!(pages.len() >= 3);
    let (indices, count) = verify(&pages, "alice", &server.vkey);
    assert_eq!((indices.len(), count), (12, 12));
    let vrf_key = commitment(&pages[0].checkpoint, &server.vkey).1.vrf_key;

    // After a restart the map goes on from where it was, under the same VRF key.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.authorize(research("alice")).await;
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let pages = all_pages(&alice, "alice", 1000).await;
    let (indices, count) = verify(&pages, "alice", &server.vkey);
    assert_eq!((indices.len(), count), (13, 13));
    assert_eq!(
        commitment(&pages[0].checkpoint, &server.vkey).1.vrf_key,
        vrf_key
    );
    server.stop().await;
}

async fn all_pages(api: &Api, patient: &str, limit: u32) -> Vec<pb::GetSubjectHistoryResponse> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = api
            .history()
            .get_subject_history(api.req(pb::GetSubjectHistoryRequest {
                patient_id: patient.into(),
                after_index: after,
                limit,
            }))
            .await
            .unwrap()
            .into_inner();
        after = page.entries.last().map(|e| e.leaf_index).or(after);
        let more = page.more;
        pages.push(page);
        if !more {
            return pages;
        }
    }
}

#[tokio::test]
async fn histories_read_during_writes_are_complete_against_their_own_checkpoint() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    setup(&api).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    api.authorize(research(if i % 2 == 0 { "alice" } else { "bob" }))
                        .await;
                    let _ = w;
                }
            })
        })
        .collect();
    let alice = Api::new(&server, Role::Patient, Some("alice")).await;
    let mut checked = 0;
    while writers.iter().any(|w| !w.is_finished()) || checked < 5 {
        let history = alice.subject_history("alice").await.unwrap();
        verify(std::slice::from_ref(&history), "alice", &server.vkey);
        checked += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    let history = alice.subject_history("alice").await.unwrap();
    let (_, count) = verify(std::slice::from_ref(&history), "alice", &server.vkey);
    assert_eq!(count, 1 + 80);
    server.stop().await;
}

#[tokio::test]
async fn the_public_checkpoint_carries_the_subject_map_line() {
    let server = TestServer::start().await;
    let (status, body) = crate::harness::http_get(server.http_addr, "/checkpoint").await;
    assert_eq!(status, 200);
    let (_, commitment) = commitment(&body, &server.vkey);
    assert_ne!(commitment.vrf_key, [0; 32]);
    server.stop().await;
}

#[tokio::test]
async fn a_log_with_a_subject_map_refuses_to_start_without_its_vrf_key() {
    let server = TestServer::start().await;
    let dir = server.stop().await;
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let key = config.data_dir.join(SUBJECT_MAP_KEY_FILE);
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let err = Server::open(config.clone()).expect_err("refused");
    assert!(err.to_string().contains(SUBJECT_MAP_KEY_FILE), "{err}");
    // Another key is refused as well: it would give every patient another map key.
    write_secret(&key, format!("{}\n", "11".repeat(32)).as_bytes());
    let err = Server::open(config.clone()).expect_err("refused");
    assert!(err.to_string().contains("not the key"), "{err}");
    write_secret(&key, &saved);
    drop(Server::open(config).unwrap());
}

fn write_secret(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// The value of the unlabelled metric `name` in `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let (status, body) = crate::harness::http_get(server.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_map_s_held_tiles_and_journal_are_reported_and_replayed_after_a_restart() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    setup(&api).await;
    for patient in ["alice", "bob", "carol"] {
        api.authorize(research(patient)).await;
    }
    let held = metric(&server, "akashi_subject_map_held_tiles").await;
    let journaled = metric(&server, "akashi_subject_map_journal_updates").await;
    // Three patients, one update each at least (the grant and each decision about alice).
    assert!(held >= 1, "{held} tiles held");
    assert!(journaled >= 3, "{journaled} journaled updates");
    assert_eq!(
        metric(&server, "akashi_subject_map_write_outs_total").await,
        0
    );

    // After a restart the journal is replayed over the stored tiles: the same tiles are held,
    // and the histories still prove complete.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir).await;
    assert_eq!(metric(&server, "akashi_subject_map_held_tiles").await, held);
    assert_eq!(
        metric(&server, "akashi_subject_map_journal_updates").await,
        journaled
    );
    let bob = Api::new(&server, Role::Patient, Some("bob")).await;
    let history = bob.subject_history("bob").await.unwrap();
    let (indices, count) = verify(std::slice::from_ref(&history), "bob", &server.vkey);
    assert_eq!((indices.len(), count), (1, 1));
    server.stop().await;
}

//! A patient's history: every entry proven, bodies checked, and the per-subject chain catches an
//! entry left out between two shown ones.

use auditor::cli::{HistoryConfig, history};
use auditor::history::{HistoryEntry, HistoryError, HistoryPage, HistoryRow, verify_history};
use auditor::report::Finding;
use ledger::chunk::Record;
use ledger::hash::{LeafIndex, TreeSize};
use ledger::log::Log;
use policy::{
    domain::{Level, Purpose},
    event::Event,
};

use crate::support::{self, Served, World, org_request, patient_token};

fn config(addr: std::net::SocketAddr, patient: &str) -> HistoryConfig {
    HistoryConfig {
        verifier: support::signer().verifier(),
        grpc: addr.to_string(),
        token: patient_token(patient),
        patient: None,
    }
}

/// The entries about patient `n`, proven against `size`.
fn entries_of(log: &Log, n: u8, size: u64) -> Vec<HistoryEntry> {
    (0..size)
        .filter_map(|i| {
            let Record::Present(body) = log.body(LeafIndex(i)).unwrap() else {
                return None;
            };
            let event = Event::from_json(&body[16..]).ok()?;
            (event.subject() == Some(&support::subject(n))).then(|| HistoryEntry {
                leaf_index: LeafIndex(i),
                leaf: log.leaves(LeafIndex(i), 1).unwrap().remove(0),
                body: Some(body),
                inclusion_proof: log
                    .inclusion_proof(LeafIndex(i), TreeSize(size))
                    .unwrap()
                    .path,
            })
        })
        .collect()
}

#[tokio::test]
async fn a_patients_history_verifies_and_reads_as_a_table() {
    let mut world = World::new();
    world.decisions();
    let served = Served::new(world.log.clone());
    let addr = support::start_grpc(served).await;
    let history = history(&config(addr, "p1")).await.unwrap().unwrap();
    assert!(history.is_valid(), "{:?}", history.findings);
    // Two grants, five decisions about p1, the revocation.
    assert_eq!(history.rows.len(), 8);
    assert!(history.rows.iter().all(|r| r.verified));
    let first_decision = history
        .rows
        .iter()
        .find(|r| r.kind == "access.decision")
        .unwrap();
    assert_eq!(first_decision.recipient.as_deref(), Some("univ-a"));
    assert_eq!(first_decision.purpose.as_deref(), Some("research"));
    assert_eq!(first_decision.decision.as_deref(), Some("ALLOW"));
    assert_eq!(history.tree_size, world.size());
}

#[tokio::test]
async fn a_withheld_entry_breaks_the_chain() {
    let mut world = World::new();
    let decisions = world.decisions();
    let served = Served::new(world.log.clone());
    // The patient's second decision is left out of the answer.
    served.withhold(decisions[4]);
    let addr = support::start_grpc(served).await;
    let history = history(&config(addr, "p1")).await.unwrap().unwrap();
    let broken: Vec<&Finding> = history
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::SubjectChainBroken { .. }))
        .collect();
    assert_eq!(
        broken,
        vec![&Finding::SubjectChainBroken {
            index: decisions[5],
            names_previous: Some(decisions[4]),
            shown_previous: Some(decisions[0]),
        }]
    );
    assert_eq!(history.findings.len(), 1);
}

/// p1's history from a server that serves p1's first decision with `fault`: checks that it is
/// the one finding, a bad commitment, and returns that decision's row.
async fn history_with_a_bad_first_decision(fault: impl FnOnce(&Served, u64)) -> HistoryRow {
    let mut world = World::new();
    let decisions = world.decisions();
    let served = Served::new(world.log.clone());
    fault(&served, decisions[0]);
    let addr = support::start_grpc(served).await;
    let history = history(&config(addr, "p1")).await.unwrap().unwrap();
    assert!(!history.is_valid());
    assert_eq!(
        history.findings,
        vec![Finding::BadCommitment {
            index: decisions[0]
        }]
    );
    let row = history
        .rows
        .into_iter()
        .find(|r| r.index == decisions[0])
        .unwrap();
    assert!(!row.verified);
    row
}

#[tokio::test]
async fn a_tampered_body_fails_its_row() {
    let row = history_with_a_bad_first_decision(Served::tamper_body).await;
    // The public header still tells what kind of entry it was.
    assert_eq!(row.decision.as_deref(), Some("ALLOW"));
}

#[tokio::test]
async fn a_missing_body_not_marked_erased_fails_its_row() {
    // An empty body with `redacted` false: the server neither shows the entry nor says it was
    // lawfully erased. It must not read as a verified (erased) row.
    history_with_a_bad_first_decision(Served::blank_body).await;
}

#[tokio::test]
async fn another_patients_token_is_refused_and_no_patient_is_an_error() {
    let world = World::new();
    let addr = support::start_grpc(Served::new(world.log.clone())).await;
    let mut other = config(addr, "p2");
    other.patient = Some("p1".to_owned());
    let err = history(&other).await.unwrap_err();
    assert!(format!("{err:#}").contains("wrong token"), "{err:#}");
    let mut no_patient = config(addr, "p1");
    no_patient.token = "opaque".to_owned();
    let err = history(&no_patient).await.unwrap_err();
    assert!(err.to_string().contains("`--patient`"), "{err}");
}

#[test]
fn pages_against_growing_checkpoints_chain_across_pages() {
    let mut world = World::new();
    world.decisions();
    let first_size = world.size();
    let first = entries_of(&world.log, 1, first_size);
    let first_note = world.log.checkpoint().note().to_owned();
    world.decide(org_request(
        "univ-a",
        1,
        Purpose::Research,
        Level::Anonymized,
    ));
    let all = entries_of(&world.log, 1, world.size());
    let pages = vec![
        HistoryPage {
            checkpoint: first_note.clone(),
            entries: first.clone(),
        },
        HistoryPage {
            checkpoint: world.log.checkpoint().note().to_owned(),
            entries: all[first.len()..].to_vec(),
        },
    ];
    let history = verify_history(&support::signer().verifier(), &pages).unwrap();
    assert!(history.is_valid(), "{:?}", history.findings);
    assert_eq!(history.rows.len(), all.len());
    assert_eq!(history.tree_size, world.size());

    // Proofs must be against their own page's checkpoint.
    let mixed = vec![HistoryPage {
        checkpoint: first_note,
        entries: all.clone(),
    }];
    let history = verify_history(&support::signer().verifier(), &mixed).unwrap();
    assert!(
        history
            .findings
            .iter()
            .all(|f| matches!(f, Finding::BadInclusionProof { .. }))
    );
    assert_eq!(history.findings.len(), all.len());

    // Another patient's entry shown in this history, and entries out of order.
    let mut foreign = all.clone();
    foreign.insert(1, entries_of(&world.log, 2, world.size()).remove(0));
    foreign.swap(3, 4);
    let history = verify_history(
        &support::signer().verifier(),
        &[HistoryPage {
            checkpoint: world.log.checkpoint().note().to_owned(),
            entries: foreign,
        }],
    )
    .unwrap();
    assert!(
        history
            .findings
            .iter()
            .any(|f| matches!(f, Finding::NotAboutSubject { .. }))
    );
    assert!(
        history
            .findings
            .iter()
            .any(|f| matches!(f, Finding::HistoryNotAscending { .. }))
    );
}

#[test]
fn a_checkpoint_by_another_key_is_invalid() {
    let world = World::new();
    let forged = ledger::checkpoint::SignedCheckpoint::sign(
        world.log.checkpoint().checkpoint().clone(),
        &ledger::note::NoteSigner::from_seed(
            ledger::note::KeyName::new(support::ORIGIN).unwrap(),
            &[9; 32],
        ),
    )
    .unwrap();
    let err = verify_history(
        &support::signer().verifier(),
        &[HistoryPage {
            checkpoint: forged.note().to_owned(),
            entries: Vec::new(),
        }],
    )
    .unwrap_err();
    assert!(matches!(err, HistoryError::Checkpoint(_)));
    assert_eq!(err.exit_code(), auditor::exit::AuditExitCode::Invalid);
}

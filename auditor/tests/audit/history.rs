//! A patient's history: every entry proven, bodies checked, the per-subject chain catches an
//! entry left out between two shown ones, and the subject map proves the entries shown are all:
//! an entry hidden first, in the middle, last, or a consent, a stale map or record, a missing
//! proof are each caught in a patient's words; a patient with no entries is proven absent.

use auditor::cli::{HistoryConfig, history};
use auditor::exit::AuditExitCode;
use auditor::history::{
    Completeness, CompletenessProof, History, HistoryEntry, HistoryError, HistoryPage, HistoryRow,
    verify_history,
};
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
        tls: Default::default(),
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

/// A world with a subject map and its decisions, served with the map; `fault` changes what the
/// server does before the history of `patient` is fetched.
async fn mapped_history(
    patient: &str,
    fault: impl FnOnce(&Served, &[u64], &World),
) -> (History, World, Vec<u64>) {
    let mut world = World::with_subject_map();
    let decisions = world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    fault(&served, &decisions, &world);
    let addr = support::start_grpc(served).await;
    let history = history(&config(addr, patient)).await.unwrap().unwrap();
    (history, world, decisions)
}

#[tokio::test]
async fn a_patients_history_verifies_and_reads_as_a_table() {
    let (history, world, _) = mapped_history("p1", |_, _, _| {}).await;
    assert!(history.is_valid(), "{:?}", history.findings);
    assert_eq!(
        history.completeness,
        Completeness::Complete {
            entries: 8,
            tree_size: world.size()
        }
    );
    assert_eq!(history.exit_code(), AuditExitCode::Valid);
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
    // The patient's second decision is left out of the answer.
    let (history, _, decisions) =
        mapped_history("p1", |served, decisions, _| served.withhold(decisions[4])).await;
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
    // The map counts it too, and the chain says where it is.
    assert_eq!(
        history.findings[1..],
        [Finding::EntriesMissingBetween {
            after: decisions[0],
            before: decisions[5],
        }]
    );
    assert_eq!(
        history.findings[1].to_string(),
        format!(
            "an entry about you is missing between entries {} and {}",
            decisions[0], decisions[5]
        )
    );
    assert!(matches!(history.completeness, Completeness::Failed { .. }));
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

/// p1's entries in the world of [`mapped_history`]: grants 8 and 9, decisions 11, 15, 16, 17,
/// the revocation 18 and decision 19.
const P1: [u64; 8] = [8, 9, 11, 15, 16, 17, 18, 19];

#[tokio::test]
async fn hiding_the_first_entry_is_caught() {
    let (history, _, _) = mapped_history("p1", |served, _, _| served.withhold(P1[0])).await;
    assert_eq!(
        history.findings,
        [Finding::EntriesMissingBefore { first_shown: P1[1] }]
    );
    assert_eq!(
        history.findings[0].to_string(),
        "an entry about you is missing before entry 9"
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

#[tokio::test]
async fn hiding_the_last_entry_is_caught() {
    let (history, _, _) = mapped_history("p1", |served, _, _| served.withhold(P1[7])).await;
    assert_eq!(
        history.findings,
        [Finding::EntriesMissingAfter { last_shown: P1[6] }]
    );
    assert_eq!(
        history.findings[0].to_string(),
        "an entry about you is missing after entry 18"
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

#[tokio::test]
async fn hiding_a_consent_entry_is_caught() {
    // The second grant: no decision before the next shown one names it, as consents name no
    // previous entry; only the map shows it.
    let (history, _, _) = mapped_history("p1", |served, _, _| served.withhold(P1[1])).await;
    assert!(
        history.findings.iter().any(|f| matches!(
            f,
            Finding::EntriesMissing {
                recorded: 8,
                shown: 7
            } | Finding::EntriesMissingBetween {
                after: 8,
                before: 11
            }
        )),
        "{:?}",
        history.findings
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
    // The revocation between two decisions.
    let (history, _, _) = mapped_history("p1", |served, _, _| served.withhold(P1[6])).await;
    assert!(
        history.findings.contains(&Finding::EntriesMissingBetween {
            after: 17,
            before: 19
        }),
        "{:?}",
        history.findings
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

#[tokio::test]
async fn an_entry_hidden_between_two_consents_is_counted() {
    // Two opt-outs after p1's last decision; the first is hidden. Nothing after it names it, so
    // only the count shows it.
    let mut world = World::with_subject_map();
    world.decisions();
    let opt_out = |world: &mut World| {
        world.apply(Event::RecordOptOut {
            subject: support::subject(1),
            purposes: vec![Purpose::Insurance],
        })
    };
    let hidden = opt_out(&mut world);
    opt_out(&mut world);
    let served = Served::new(world.log.clone()).with_subject_map();
    served.withhold(hidden);
    let addr = support::start_grpc(served).await;
    let history = history(&config(addr, "p1")).await.unwrap().unwrap();
    assert_eq!(
        history.findings,
        [Finding::EntriesMissing {
            recorded: 10,
            shown: 9
        }]
    );
    assert_eq!(
        history.findings[0].to_string(),
        "an entry about you is missing: 10 recorded, 9 shown"
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

#[tokio::test]
async fn a_stale_map_or_record_is_caught() {
    // The log signs the map as it was before p1's last decision, with a proof from that map:
    // the proof holds, but the map does not count an entry shown.
    let (history, _, _) = mapped_history("p1", |served, _, _| {
        served.map_serving(|m| m.stale_map = Some(19))
    })
    .await;
    assert_eq!(
        history.findings,
        [Finding::EntriesNotRecorded {
            recorded: 7,
            shown: 8
        }]
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
    // The record from that older map against the current root: the proof fails.
    let (history, _, _) = mapped_history("p1", |served, _, _| {
        served.map_serving(|m| m.stale_proof = Some(19))
    })
    .await;
    assert!(
        matches!(
            history.findings.as_slice(),
            [Finding::BadCompletenessProof { tree_size: 20, .. }]
        ),
        "{:?}",
        history.findings
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
    // A stale map signed with the newer entry hidden as well looks complete to the patient: the
    // log signed a false map root, which the patient trusts and the regulator's replay checks
    // (`replay::a_wrong_subject_map_root_is_caught`).
    let (history, _, _) = mapped_history("p1", |served, _, _| {
        served.map_serving(|m| m.stale_map = Some(19));
        served.withhold(P1[7]);
    })
    .await;
    assert!(history.findings.is_empty(), "{:?}", history.findings);
    assert_eq!(
        history.completeness,
        Completeness::Complete {
            entries: 7,
            tree_size: 20
        }
    );
}

#[tokio::test]
async fn a_missing_proof_is_caught() {
    let (history, _, _) = mapped_history("p1", |served, _, _| {
        served.map_serving(|m| m.omit_proof = true)
    })
    .await;
    assert_eq!(
        history.findings,
        [Finding::CompletenessProofMissing { tree_size: 20 }]
    );
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

/// Patients the test server knows who have no entries.
const ABSENT: [&str; 12] = [
    "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11", "p12", "p13", "p14", "p15",
];

#[tokio::test]
async fn a_patient_with_no_entries_is_proven_absent() {
    let mut world = World::with_subject_map();
    world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    let mut kinds = std::collections::BTreeSet::new();
    for patient in ABSENT {
        let response = served
            .history_response(&proto::pb::GetSubjectHistoryRequest {
                patient_id: patient.to_owned(),
                after_index: None,
                limit: 0,
            })
            .unwrap();
        kinds.insert(response.completeness.unwrap().leaf_key.is_empty());
    }
    // Both kinds of absence proof: an empty subtree, another patient's leaf.
    assert_eq!(kinds.len(), 2);
    let addr = support::start_grpc(served.clone()).await;
    for patient in ABSENT {
        let history = history(&config(addr, patient)).await.unwrap().unwrap();
        assert!(history.rows.is_empty());
        assert!(history.is_valid(), "{patient}: {:?}", history.findings);
        assert_eq!(
            history.completeness,
            Completeness::Complete {
                entries: 0,
                tree_size: world.size()
            }
        );
    }
    // p1's entries all hidden: the map still records them.
    for index in P1 {
        served.withhold(index);
    }
    let history = history(&config(addr, "p1")).await.unwrap().unwrap();
    assert_eq!(history.findings, [Finding::NoEntriesShown { recorded: 8 }]);
    assert_eq!(
        history.findings[0].to_string(),
        "no entries were shown but the log records 8 about you"
    );
}

#[tokio::test]
async fn another_patients_proof_or_a_log_without_a_map_is_not_complete() {
    let mut world = World::with_subject_map();
    world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    let mut response = served
        .history_response(&proto::pb::GetSubjectHistoryRequest {
            patient_id: "p1".to_owned(),
            after_index: None,
            limit: 0,
        })
        .unwrap();
    let other = served
        .history_response(&proto::pb::GetSubjectHistoryRequest {
            patient_id: "p2".to_owned(),
            after_index: None,
            limit: 0,
        })
        .unwrap();
    response.completeness = other.completeness;
    let pages = vec![page(response)];
    let verified = verify_history(&support::signer().verifier(), "p1", &pages).unwrap();
    assert!(
        matches!(
            verified.findings.as_slice(),
            [Finding::BadCompletenessProof { .. }]
        ),
        "{:?}",
        verified.findings
    );
    // A log whose checkpoints commit to no map: every entry verifies, completeness cannot.
    let mut world = World::new();
    world.decisions();
    let addr = support::start_grpc(Served::new(world.log.clone())).await;
    let history = history(&config(addr, "p1")).await.unwrap().unwrap();
    assert!(history.findings.is_empty());
    assert_eq!(
        history.completeness,
        Completeness::Uncommitted {
            tree_size: world.size()
        }
    );
    assert!(!history.is_valid());
    assert_eq!(history.exit_code(), AuditExitCode::Invalid);
}

/// The log's latest checkpoint, signed with its subject map's line.
fn mapped_note(log: &Log) -> String {
    let size = log.size().get();
    support::with_map_line(
        log.checkpoint().note(),
        Some(&support::SubjectMap::of(log, size).commitment()),
    )
}

/// p1's completeness proof in the map of `log`'s first `size` entries.
fn proof_of(log: &Log, size: u64) -> CompletenessProof {
    let c = support::SubjectMap::of(log, size).completeness("p1");
    CompletenessProof {
        vrf_proof: c.vrf_proof,
        count: c.count,
        first_index: c.first_index,
        last_index: c.last_index,
        chain_head: c.chain_head,
        map_siblings: c.map_siblings,
        leaf_key: c.leaf_key,
        leaf_value: c.leaf_value,
    }
}

/// A response as the CLI reads it.
fn page(response: proto::pb::GetSubjectHistoryResponse) -> HistoryPage {
    let text = support::history_json(&response).to_string();
    auditor::history::pages_from_json(&text).unwrap().remove(0)
}

/// p1's history from a server that serves p1's first decision with `fault`: checks that it is
/// the one finding, a bad commitment, and returns that decision's row.
async fn history_with_a_bad_first_decision(fault: impl FnOnce(&Served, u64)) -> HistoryRow {
    let mut world = World::new();
    let decisions = world.decisions();
    let served = Served::new(world.log.clone());
    fault(&served, decisions[0]);
    // Completeness is not what these tests are about: a log without a map.
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
    let mut world = World::with_subject_map();
    world.decisions();
    let first_size = world.size();
    let first = entries_of(&world.log, 1, first_size);
    let first_note = mapped_note(&world.log);
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
            completeness: Some(proof_of(&world.log, first_size)),
        },
        HistoryPage {
            checkpoint: mapped_note(&world.log),
            entries: all[first.len()..].to_vec(),
            completeness: Some(proof_of(&world.log, world.size())),
        },
    ];
    let history = verify_history(&support::signer().verifier(), "p1", &pages).unwrap();
    assert!(history.is_valid(), "{:?}", history.findings);
    assert_eq!(history.rows.len(), all.len());
    assert_eq!(history.tree_size, world.size());
    // Completeness is judged at the last page: its proof counts the first page's entries too.
    assert_eq!(
        history.completeness,
        Completeness::Complete {
            entries: all.len() as u64,
            tree_size: world.size()
        }
    );
    // The last page alone is missing the entries before it.
    let history = verify_history(&support::signer().verifier(), "p1", &pages[1..]).unwrap();
    let first_shown = all[first.len()].leaf_index.get();
    assert_eq!(
        history.findings[1..],
        [Finding::EntriesMissingBefore { first_shown }]
    );

    // Proofs must be against their own page's checkpoint.
    let mixed = vec![HistoryPage {
        checkpoint: first_note,
        entries: all.clone(),
        completeness: Some(proof_of(&world.log, first_size)),
    }];
    let history = verify_history(&support::signer().verifier(), "p1", &mixed).unwrap();
    let (bad_proofs, others): (Vec<&Finding>, Vec<&Finding>) = history
        .findings
        .iter()
        .partition(|f| matches!(f, Finding::BadInclusionProof { .. }));
    assert_eq!(bad_proofs.len(), all.len());
    // The entry beyond the checkpoint's size is not counted against its map.
    assert!(others.is_empty(), "{others:?}");

    // Another patient's entry shown in this history, and entries out of order.
    let mut foreign = all.clone();
    foreign.insert(1, entries_of(&world.log, 2, world.size()).remove(0));
    foreign.swap(3, 4);
    let history = verify_history(
        &support::signer().verifier(),
        "p1",
        &[HistoryPage {
            checkpoint: world.log.checkpoint().note().to_owned(),
            entries: foreign,
            completeness: None,
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
fn a_checkpoint_by_anleaf_key_is_invalid() {
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
        "p1",
        &[HistoryPage {
            checkpoint: forged.note().to_owned(),
            entries: Vec::new(),
            completeness: None,
        }],
    )
    .unwrap_err();
    assert!(matches!(err, HistoryError::Checkpoint(_)));
    assert_eq!(err.exit_code(), auditor::exit::AuditExitCode::Invalid);
}

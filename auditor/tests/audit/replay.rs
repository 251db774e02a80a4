//! Regulator replay: honest logs replay clean; a decision the rules would not have made, a header
//! that disagrees with its body, a body that does not match its commitment, and erased bodies
//! are each reported, and nothing else is. With a subject map: a signed map root that is not the
//! entries', a changed VRF key, bodies without `subject_vrf_output`, and an erasure that stops
//! the map's recomputation.

use auditor::cli::{ReplayConfig, replay};
use auditor::replay::Replay;
use auditor::report::{Finding, Report};
use ledger::chunk::Record;
use ledger::hash::{LeafIndex, TreeSize};
use ledger::log::{Log, NewEntry};
use policy::{
    domain::{Effect, Level, Purpose},
    event::Event,
};

use crate::support::{
    self, REGULATOR_TOKEN, Served, SubjectMap, World, flipped, frame, note_size, org_request,
    with_map_line,
};

/// Replays a log in-process, as the CLI does over gRPC: every checkpoint, every entry.
fn replay_log(log: &Log) -> Report {
    replay_signed(log, str::to_owned)
}

/// [`replay_log`] with every checkpoint note as `sign` re-signs it.
fn replay_signed(log: &Log, sign: impl Fn(&str) -> String) -> Report {
    let mut replay = Replay::new(support::signer().verifier());
    let size = log.size().get();
    for note in log
        .checkpoints(TreeSize(0), TreeSize(size + 1), usize::MAX)
        .unwrap()
    {
        replay.add_checkpoint(&sign(&note)).unwrap();
    }
    let mut next = 0;
    while next < size {
        let leaves = log.leaves(LeafIndex(next), 1024).unwrap();
        let bodies = log.bodies(LeafIndex(next), 1024).unwrap();
        for (leaf, body) in leaves.iter().zip(bodies) {
            let body = match body {
                Record::Present(body) => Some(body),
                Record::Redacted => None,
            };
            replay.push(LeafIndex(next), leaf, body.as_deref()).unwrap();
            next += 1;
        }
    }
    replay.finish()
}

#[test]
fn an_honest_log_replays_clean() {
    let mut world = World::new();
    let decisions = world.decisions();
    let report = replay_log(&world.log);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.entries, world.size());
    assert_eq!(report.events_applied, world.size());
    assert_eq!(report.decisions_checked, decisions.len() as u64);
    assert_eq!(report.decisions_matching, decisions.len() as u64);
    // One checkpoint per entry plus the empty tree's, every one compared.
    assert_eq!(report.checkpoints_checked, world.size() + 1);
    assert_eq!(
        report.root,
        world.log.checkpoint().checkpoint().root.to_hex()
    );
}

#[test]
fn the_decisions_cover_allows_and_denies() {
    let mut world = World::new();
    let allow = world.decide(org_request(
        "univ-a",
        1,
        Purpose::Research,
        Level::Pseudonymized,
    ));
    let deny = world.decide(org_request(
        "univ-a",
        3,
        Purpose::Research,
        Level::Pseudonymized,
    ));
    assert_eq!((allow.1, deny.1), (Effect::Allow, Effect::Deny));
}

#[test]
fn a_flipped_decision_is_exactly_the_one_finding() {
    for (patient, level) in [(1, Level::Pseudonymized), (3, Level::Pseudonymized)] {
        let mut world = World::new();
        world.decisions();
        let honest = world.decision_event(org_request("univ-a", patient, Purpose::Research, level));
        let index = world.apply(flipped(honest));
        // Later decisions still replay against the same state.
        world.decide(org_request(
            "univ-a",
            1,
            Purpose::Research,
            Level::Anonymized,
        ));
        world.decide(org_request(
            "univ-a",
            2,
            Purpose::Research,
            Level::Anonymized,
        ));
        let report = replay_log(&world.log);
        assert_eq!(report.findings.len(), 1, "{report}");
        let Finding::DecisionMismatch {
            index: found,
            logged,
            recomputed,
        } = &report.findings[0]
        else {
            panic!("{report}");
        };
        assert_eq!(*found, index);
        assert_ne!(logged.effect, recomputed.effect);
        assert_eq!(report.decisions_checked, report.decisions_matching + 1);
        assert_eq!(report.exit_code(), auditor::exit::AuditExitCode::Invalid);
    }
}

#[test]
fn a_decision_naming_another_recipient_is_reported() {
    let mut world = World::new();
    world.decisions();
    let mut event = world.decision_event(org_request(
        "univ-a",
        1,
        Purpose::Research,
        Level::Pseudonymized,
    ));
    let Event::Decision { recipient, .. } = &mut event else {
        panic!("not a decision");
    };
    let honest = recipient.clone().expect("univ-a is in the directory");
    let class = honest.class.expect("with its class");
    // Body and leaf agree (the leaf is framed from the body), the decision itself is right:
    // only the organisation the log says received the data is not the one that asked.
    *recipient = Some(policy::decision::Recipient {
        id: policy::domain::OrgId::new("ai-vendor-x").unwrap(),
        class: Some(class),
    });
    let index = world.apply(event);
    let report = replay_log(&world.log);
    assert_eq!(
        report.findings,
        vec![Finding::RecipientMismatch {
            index,
            logged: Some(format!("ai-vendor-x/{class}")),
            recomputed: Some(format!("univ-a/{class}")),
        }],
        "{report}"
    );
    assert_eq!(report.exit_code(), auditor::exit::AuditExitCode::Invalid);
}

#[test]
fn a_header_that_disagrees_with_its_body_is_reported() {
    let world = World::new();
    let honest = world.decision_event(org_request(
        "univ-a",
        1,
        Purpose::Research,
        Level::Pseudonymized,
    ));
    // The public leaf says the opposite of the private body, which is the honest decision.
    let lying = frame(&flipped(honest.clone()), world.size());
    let body = frame(&honest, world.size()).body;
    let leaf = ledger::entry::Leaf {
        commitment: body.commitment(),
        ..lying.leaf
    };
    let index = world.size();
    world
        .log
        .append_batch(
            &[NewEntry {
                leaf,
                body,
                seal: None,
            }],
            Vec::new(),
        )
        .unwrap();
    let report = replay_log(&world.log);
    assert_eq!(
        report.findings,
        vec![Finding::HeaderMismatch {
            index,
            field: "decision".to_owned(),
            leaf: Some("DENY".to_owned()),
            body: Some("ALLOW".to_owned()),
        }],
        "{report}"
    );
}

#[test]
fn erased_bodies_are_counted_not_replayed() {
    let mut world = World::new();
    world.decisions();
    // The consent grant c2 (treatment by hospitals) is erased: the leaf stays.
    let grant = 9;
    world.log.redact_body(LeafIndex(grant)).unwrap();
    let report = replay_log(&world.log);
    assert_eq!(report.redacted, 1);
    let rejected = report
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::EventRejected { .. }))
        .count() as u64;
    assert_eq!(report.events_applied + rejected, world.size() - 1);
    // Every checkpoint still matches. What cannot be replayed without the erased event is
    // reported, and only for later entries: decisions that relied on it, and the patient's chain
    // (the erased entry was theirs, and the public leaf does not say whose it was).
    assert!(!report.findings.is_empty());
    for finding in &report.findings {
        match finding {
            Finding::DecisionMismatch { index, .. } | Finding::EventRejected { index, .. } => {
                assert!(*index > grant, "{finding}");
            }
            other => panic!("{other}"),
        }
    }
}

#[tokio::test]
async fn replay_over_grpc_reports_a_tampered_body_and_a_flipped_decision() {
    let mut world = World::new();
    world.decisions();
    let flipped_at = world.apply(flipped(world.decision_event(org_request(
        "insurer-a",
        1,
        Purpose::Insurance,
        Level::Identified,
    ))));
    let served = Served::new(world.log.clone());
    let addr = support::start_grpc(served.clone()).await;
    let config = ReplayConfig {
        tls: Default::default(),
        verifier: support::signer().verifier(),
        grpc: addr.to_string(),
        token: REGULATOR_TOKEN.to_owned(),
    };
    let report = replay(&config, false).await.unwrap();
    assert_eq!(report.findings.len(), 1, "{report}");
    assert!(matches!(
        report.findings[0],
        Finding::DecisionMismatch { index, .. } if index == flipped_at
    ));
    assert_eq!(report.checkpoints_checked, world.size() + 1);

    served.tamper_body(4);
    let report = replay(&config, false).await.unwrap();
    assert_eq!(
        report.findings[0],
        Finding::BadCommitment { index: 4 },
        "{report}"
    );
    // The tampered entry's event is not replayed: the organisation it registers is unknown
    // afterwards, so the log is reported, never trusted.
    assert!(!report.is_clean());

    let bad_token = ReplayConfig {
        tls: Default::default(),
        token: "nope".to_owned(),
        ..config
    };
    let err = replay(&bad_token, false).await.unwrap_err();
    assert!(format!("{err:#}").contains("wrong token"), "{err:#}");
}

#[tokio::test]
async fn replay_over_grpc_pages_through_thousands_of_entries_and_checkpoints() {
    let log = support::plain_log(3000, 7, "a");
    let addr = support::start_grpc(Served::new(log.clone())).await;
    let config = ReplayConfig {
        tls: Default::default(),
        verifier: support::signer().verifier(),
        grpc: addr.to_string(),
        token: REGULATOR_TOKEN.to_owned(),
    };
    let report = replay(&config, false).await.unwrap();
    assert_eq!(report.entries, 3000);
    assert_eq!(report.checkpoints_checked, 1 + 3000u64.div_ceil(7));
    // Plain test entries are not events: each is reported as such, and nothing else is.
    assert_eq!(report.findings.len(), 3000);
    assert!(
        report
            .findings
            .iter()
            .all(|f| matches!(f, Finding::BadEvent { .. }))
    );
}

#[tokio::test]
async fn a_larger_batched_log_replays_clean_over_grpc() {
    let mut world = World::new();
    world.grow_realistic(1500, 64);
    let addr = support::start_grpc(Served::new(world.log.clone())).await;
    let config = ReplayConfig {
        tls: Default::default(),
        verifier: support::signer().verifier(),
        grpc: addr.to_string(),
        token: REGULATOR_TOKEN.to_owned(),
    };
    let report = replay(&config, false).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.entries, world.size());
    // One consent grant in ten entries, decisions otherwise.
    assert!(report.decisions_checked > 1300, "{report}");
    assert_eq!(report.decisions_checked, report.decisions_matching);
}

/// A world with a subject map, its decisions, and a server that signs its map.
fn mapped_world() -> (World, Served) {
    let mut world = World::with_subject_map();
    world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    (world, served)
}

#[test]
fn a_log_with_a_subject_map_replays_clean() {
    let (world, served) = mapped_world();
    let report = replay_signed(&world.log, |note| served.sign(&world.log, note));
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.subject_maps_checked, world.size() + 1);
    assert!(
        report.to_string().contains("subject maps checked 21\n"),
        "{report}"
    );
}

#[test]
fn a_wrong_subject_map_root_is_caught() {
    let (world, served) = mapped_world();
    // The checkpoint of size 20 signs the map as it stood at 19 (p1's last decision missing).
    served.map_serving(|m| m.stale_map = Some(19));
    let report = replay_signed(&world.log, |note| served.sign(&world.log, note));
    assert_eq!(
        report.findings,
        [Finding::SubjectMapMismatch {
            size: 20,
            signed_root: SubjectMap::of(&world.log, 19).root.to_hex(),
            recomputed_root: SubjectMap::of(&world.log, 20).root.to_hex(),
        }],
        "{report}"
    );
    assert_eq!(report.exit_code(), auditor::exit::AuditExitCode::Invalid);
}

#[test]
fn a_changed_vrf_key_or_a_dropped_map_is_caught() {
    let (world, served) = mapped_world();
    let report = replay_signed(&world.log, |note| match note_size(note) {
        15 => {
            let mut commitment = SubjectMap::of(&world.log, 15).commitment();
            commitment.vrf_key = ledger::vrf::VrfSecretKey::from_seed([6; 32])
                .public()
                .to_bytes();
            with_map_line(note, Some(&commitment))
        }
        17 => note.to_owned(),
        _ => served.sign(&world.log, note),
    });
    assert_eq!(
        report.findings,
        [
            Finding::SubjectMapKeyChanged { size: 15 },
            Finding::SubjectMapDropped { size: 17 },
        ],
        "{report}"
    );
}

#[test]
fn bodies_without_vrf_outputs_are_caught() {
    // A log written without outputs, whose checkpoints commit to a map all the same.
    let mut world = World::new();
    world.decisions();
    let served = Served::new(world.log.clone()).with_subject_map();
    let report = replay_signed(&world.log, |note| served.sign(&world.log, note));
    // p1's first grant is the first entry about a patient.
    assert_eq!(
        report.findings[0],
        Finding::BadSubjectVrfOutput { index: 8 }
    );
    assert!(
        report.findings.contains(&Finding::SubjectMapUnverifiable {
            size: 9,
            index: 8,
            reason: auditor::report::Unattributable::WrongVrfOutput,
        }),
        "{report}"
    );
    assert!(
        report.findings.iter().all(|f| matches!(
            f,
            Finding::BadSubjectVrfOutput { .. } | Finding::SubjectMapUnverifiable { .. }
        )),
        "{report}"
    );
}

#[test]
fn an_erased_body_stops_the_map_once_without_a_mismatch() {
    let (world, served) = mapped_world();
    world.log.redact_body(LeafIndex(9)).unwrap();
    let report = replay_signed(&world.log, |note| served.sign(&world.log, note));
    let map_findings: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f,
                Finding::SubjectMapUnverifiable { .. } | Finding::SubjectMapMismatch { .. }
            )
        })
        .collect();
    assert_eq!(
        map_findings,
        [&Finding::SubjectMapUnverifiable {
            size: 10,
            index: 9,
            reason: auditor::report::Unattributable::Erased,
        }],
        "{report}"
    );
    assert_eq!(report.subject_maps_checked, 10);
    assert!(
        map_findings[0]
            .to_string()
            .contains("the subject map cannot be recomputed past entry 9 (its body was erased)")
    );
}

#[tokio::test]
async fn a_batched_log_with_a_subject_map_replays_clean_over_grpc() {
    let mut world = World::with_subject_map();
    world.grow_realistic(300, 32);
    let served = Served::new(world.log.clone()).with_subject_map();
    let addr = support::start_grpc(served.clone()).await;
    let config = ReplayConfig {
        tls: Default::default(),
        verifier: support::signer().verifier(),
        grpc: addr.to_string(),
        token: REGULATOR_TOKEN.to_owned(),
    };
    let report = replay(&config, false).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.subject_maps_checked, report.checkpoints_checked);
    // The last checkpoint (the batches end at 299, then 311) signs a stale map.
    served.map_serving(|m| m.stale_map = Some(world.size() - 5));
    let report = replay(&config, false).await.unwrap();
    assert!(
        matches!(
            report.findings.as_slice(),
            [Finding::SubjectMapMismatch { size, .. }] if *size == world.size()
        ),
        "{report}"
    );
}

use super::*;
use crate::hash::hash_leaf;
use crate::map::{self, MemoryNodes};
use crate::vrf::VrfSecretKey;

fn secret() -> VrfSecretKey {
    VrfSecretKey::from_seed([42; 32])
}

/// A map with the given patients' records, its commitment, and a proof builder.
fn setup(patients: &[(&str, &[u64])]) -> (MemoryNodes, MapCommitment) {
    let secret = secret();
    let mut nodes = MemoryNodes::default();
    let mut root = map::EMPTY;
    for (id, indices) in patients {
        let beta = secret.output(id.as_bytes());
        let entries: Vec<(u64, Hash)> = indices
            .iter()
            .map(|i| (*i, hash_leaf(format!("leaf {i}").as_bytes())))
            .collect();
        let record = SubjectRecord::of(&beta, &entries).unwrap();
        root = map::update(&mut nodes, b"s/", &map_key(&beta), &record.value_hash()).unwrap();
    }
    let commitment = MapCommitment {
        vrf_key: secret.public().to_bytes(),
        root,
    };
    (nodes, commitment)
}

fn proof_for(nodes: &MemoryNodes, id: &str, record: Option<SubjectRecord>) -> SubjectProof {
    let (vrf_proof, beta) = secret().prove(id.as_bytes());
    let (map_proof, _) = map::prove(nodes, b"s/", &map_key(&beta)).unwrap();
    SubjectProof {
        vrf_proof,
        record,
        map_proof,
    }
}

fn record_of(id: &str, indices: &[u64]) -> SubjectRecord {
    let beta = secret().output(id.as_bytes());
    let entries: Vec<(u64, Hash)> = indices
        .iter()
        .map(|i| (*i, hash_leaf(format!("leaf {i}").as_bytes())))
        .collect();
    SubjectRecord::of(&beta, &entries).unwrap()
}

#[test]
fn a_patient_proves_their_record_and_a_stranger_their_absence() {
    let (nodes, commitment) = setup(&[("alice", &[1, 4, 9]), ("bob", &[2, 3])]);
    let alice = record_of("alice", &[1, 4, 9]);
    let (_, held) = proof_for(&nodes, "alice", Some(alice))
        .verify("alice", &commitment)
        .unwrap();
    assert_eq!(held, Some(alice));
    let (_, held) = proof_for(&nodes, "carol", None)
        .verify("carol", &commitment)
        .unwrap();
    assert_eq!(held, None);
}

#[test]
fn a_shortened_history_or_a_borrowed_key_is_refused() {
    let (nodes, commitment) = setup(&[("alice", &[1, 4, 9]), ("bob", &[2, 3])]);
    // The server claims alice has only two entries.
    let claimed = record_of("alice", &[1, 4]);
    assert_eq!(
        proof_for(&nodes, "alice", Some(claimed)).verify("alice", &commitment),
        Err(CompletenessError::RecordMismatch)
    );
    // The server claims alice has none.
    assert!(
        proof_for(&nodes, "alice", None)
            .verify("alice", &commitment)
            .is_err()
    );
    // The server shows alice the (absent) proof of somebody else's key.
    let carol = proof_for(&nodes, "carol", None);
    assert!(matches!(
        carol.verify("alice", &commitment),
        Err(CompletenessError::Vrf(_))
    ));
}

#[test]
fn the_chain_changes_with_any_omission_or_reordering() {
    let beta = secret().output(b"alice");
    let h = |i: u64| hash_leaf(&i.to_be_bytes());
    let all = SubjectRecord::of(&beta, &[(1, h(1)), (5, h(5)), (7, h(7))]).unwrap();
    let missing_middle = SubjectRecord::of(&beta, &[(1, h(1)), (7, h(7))]).unwrap();
    let reordered = SubjectRecord::of(&beta, &[(5, h(5)), (1, h(1)), (7, h(7))]).unwrap();
    assert_ne!(all.head, missing_middle.head);
    assert_ne!(all.head, reordered.head);
    assert_eq!((all.count, all.first, all.last), (3, 1, 7));
    assert_eq!(SubjectRecord::decode(&all.encode()), Some(all));
    assert_eq!(SubjectRecord::decode(&[0; 10]), None);
    // Another patient's seed gives another chain over the same entries.
    let other = SubjectRecord::of(&secret().output(b"bob"), &[(1, h(1)), (5, h(5)), (7, h(7))]);
    assert_ne!(other.unwrap().head, all.head);
}

#[test]
fn the_extension_line_round_trips_and_malformed_lines_are_refused() {
    let c = MapCommitment {
        vrf_key: [1; 32],
        root: Hash([2; 32]),
    };
    let line = c.to_line();
    assert!(line.starts_with("akashi-subject-map "));
    assert_eq!(MapCommitment::parse_line(&line), Ok(Some(c)));
    assert_eq!(MapCommitment::parse_line("other extension"), Ok(None));
    for bad in [
        "akashi-subject-map",
        "akashi-subject-map AAAA AAAA",
        &format!("{line} extra"),
        &line.replace(' ', "  "),
    ] {
        assert_eq!(
            MapCommitment::parse_line(bad),
            Err(CompletenessError::MalformedLine),
            "{bad}"
        );
    }
    let mut checkpoint = Checkpoint::new("o", crate::hash::TreeSize(1), Hash([0; 32]));
    assert_eq!(MapCommitment::of(&checkpoint), Ok(None));
    checkpoint.extensions.push(line.clone());
    assert_eq!(MapCommitment::of(&checkpoint), Ok(Some(c)));
    checkpoint.extensions.push(line);
    assert_eq!(
        MapCommitment::of(&checkpoint),
        Err(CompletenessError::Duplicate)
    );
}

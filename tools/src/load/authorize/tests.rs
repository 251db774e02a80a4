use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    hash::{LeafIndex, TreeSize},
    note::{KeyName, NoteSigner},
    proof::{MemoryTree, prove_inclusion},
};
use proto::pb;

use super::{authorize_request, spread, verify_receipt};

fn signer() -> NoteSigner {
    NoteSigner::from_seed(KeyName::new("akashi.test/log").unwrap(), &[7; 32])
}

/// A valid receipt for leaf 3 of a 7-leaf tree.
fn receipt() -> pb::Receipt {
    let mut tree = MemoryTree::new();
    for i in 0..7u8 {
        tree.push_leaf(&[i; 10]);
    }
    let size = tree.size();
    let proof = prove_inclusion(&tree, LeafIndex(3), size).unwrap();
    let checkpoint = SignedCheckpoint::sign(
        Checkpoint::new("akashi.test/log", size, tree.root()),
        &signer(),
    )
    .unwrap();
    pb::Receipt {
        leaf_index: 3,
        leaf_hash: tree.leaf_hashes()[3].as_bytes().to_vec(),
        checkpoint: checkpoint.note().to_owned(),
        inclusion_proof: proof.path.iter().map(|h| h.as_bytes().to_vec()).collect(),
        tree_size: size.0,
        leaf: Vec::new(),
    }
}

#[test]
fn a_valid_receipt_verifies() {
    verify_receipt(&receipt(), &signer().verifier()).unwrap();
}

#[test]
fn corrupted_receipts_are_refused_naming_the_check() {
    let verifier = signer().verifier();
    type Corruption = (fn(&mut pb::Receipt), &'static str);
    let cases: [Corruption; 7] = [
        (|r| r.leaf_hash[0] ^= 1, "receipt_proof_invalid"),
        (|r| r.inclusion_proof[0][5] ^= 1, "receipt_proof_invalid"),
        (|r| r.leaf_index = 4, "receipt_proof_invalid"),
        (|r| r.tree_size = 8, "receipt_size_mismatch"),
        (|r| r.leaf_hash.truncate(31), "receipt_hash_invalid"),
        (
            |r| {
                r.inclusion_proof.pop();
            },
            "receipt_proof_invalid",
        ),
        (
            |r| r.checkpoint = r.checkpoint.replace('7', "8"),
            "receipt_checkpoint_invalid",
        ),
    ];
    for (corrupt, expected) in cases {
        let mut bad = receipt();
        corrupt(&mut bad);
        assert_eq!(verify_receipt(&bad, &verifier), Err(expected));
    }
    // Another log's key.
    let other = NoteSigner::from_seed(KeyName::new("akashi.test/log").unwrap(), &[8; 32]);
    assert_eq!(
        verify_receipt(&receipt(), &other.verifier()),
        Err("receipt_checkpoint_invalid")
    );
    let _ = TreeSize(0);
}

#[test]
fn the_mix_covers_every_kind_of_request() {
    let mut actions = std::collections::BTreeMap::new();
    for n in 0..100 {
        let request = authorize_request(n, 10);
        *actions
            .entry((request.action.clone(), request.level.clone()))
            .or_insert(0) += 1;
        assert!(request.principal.is_some());
        if request.action == "export_statistics" {
            assert!(request.patient_id.is_empty());
            assert!(request.cohort_size >= 10);
        } else {
            assert!(request.patient_id.starts_with("load-patient-"));
        }
    }
    assert_eq!(
        actions[&("secondary_use".into(), "PSEUDONYMIZED".into())],
        60
    );
    assert_eq!(actions[&("view_record".into(), "IDENTIFIED".into())], 20);
    assert_eq!(actions[&("secondary_use".into(), "ANONYMIZED".into())], 15);
    assert_eq!(
        actions[&("export_statistics".into(), "STATISTICAL".into())],
        5
    );
}

#[test]
fn spread_stays_in_range_and_varies() {
    let seen: std::collections::BTreeSet<u64> = (0..1000).map(|n| spread(n, 100)).collect();
    assert!(seen.iter().all(|p| *p < 100));
    assert!(seen.len() > 50);
    assert_eq!(spread(5, 0), 0);
}

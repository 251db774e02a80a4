//! Checks the pure part of the ledger against public test vectors (`vectors/rfc6962_vectors.json`:
//! RFC 6962 / RFC 9162 trees from transparency-dev/merkle and certificate-transparency-go, and the
//! signed-note examples of Go's `sumdb/note` and C2SP; the file names its sources).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use ledger::{
    checkpoint::Checkpoint,
    hash::{Hash, LeafIndex, TreeSize, hash_leaf},
    note::{KeyName, NoteError, NoteSigner, NoteVerifier, open_note, parse_note, sign_note},
    proof::{
        ConsistencyProof, InclusionProof, MemoryTree, NodeSource, prove_consistency,
        prove_inclusion, tree_root,
    },
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/rfc6962_vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("vectors file");
    serde_json::from_str(&text).expect("vectors json")
}

fn hash(v: &Value) -> Hash {
    Hash::from_hex(v.as_str().unwrap()).unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hash).collect()
}

fn size(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn tree(v: &Value) -> MemoryTree {
    let mut tree = MemoryTree::new();
    for leaf in v["leaves_hex"].as_array().unwrap() {
        tree.push_leaf(&hex::decode(leaf.as_str().unwrap()).unwrap());
    }
    tree
}

fn is_negative(case: &Value) -> bool {
    let negative = case["name"].as_str().unwrap().starts_with("NEG");
    assert_eq!(negative, !case["expect_valid"].as_bool().unwrap());
    negative
}

#[test]
fn the_file_keeps_its_sources() {
    let v = vectors();
    assert!(v["sources"].is_object());
    for case in v["inclusion_proofs"].as_array().unwrap() {
        assert!(case["source"].is_array() || case["source"] == "derived");
    }
}

#[test]
fn roots_of_every_size() {
    let v = vectors();
    let tree = tree(&v);
    let roots = v["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 9);
    for r in roots {
        let n = TreeSize(size(&r["size"]));
        let want = hash(&r["root_hex"]);
        assert_eq!(tree_root(&tree, n).unwrap(), want, "size {n}");
        assert_eq!(tree.root_at(n).unwrap(), want, "size {n}");
    }
}

#[test]
fn every_complete_node() {
    let v = vectors();
    let tree = tree(&v);
    for (level, nodes) in v["node_hashes_by_level"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (index, want) in nodes.as_array().unwrap().iter().enumerate() {
            let got = tree.node(level as u8, index as u64).unwrap();
            assert_eq!(got, hash(want), "level {level} index {index}");
        }
    }
}

#[test]
fn inclusion_proofs() {
    let v = vectors();
    let tree = tree(&v);
    let cases = v["inclusion_proofs"].as_array().unwrap();
    assert!(cases.iter().any(is_negative));
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let proof = InclusionProof {
            leaf_index: LeafIndex(size(&case["leaf_index"])),
            tree_size: TreeSize(size(&case["tree_size"])),
            path: hashes(&case["proof"]),
        };
        let leaf = hash_leaf(&hex::decode(case["leaf_data_hex"].as_str().unwrap()).unwrap());
        let root = hash(&case["root_hash"]);
        let result = proof.verify(&leaf, &root);
        if is_negative(case) {
            assert!(result.is_err(), "{name} must be rejected");
        } else {
            assert_eq!(result, Ok(()), "{name}");
            let ours = prove_inclusion(&tree, proof.leaf_index, proof.tree_size).unwrap();
            assert_eq!(ours, proof, "{name}: our proof");
        }
    }
}

#[test]
fn consistency_proofs() {
    let v = vectors();
    let tree = tree(&v);
    let cases = v["consistency_proofs"].as_array().unwrap();
    assert!(cases.iter().any(is_negative));
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let proof = ConsistencyProof {
            old_size: TreeSize(size(&case["old_size"])),
            new_size: TreeSize(size(&case["new_size"])),
            path: hashes(&case["proof"]),
        };
        let result = proof.verify(&hash(&case["old_root"]), &hash(&case["new_root"]));
        if is_negative(case) {
            assert!(result.is_err(), "{name} must be rejected");
        } else {
            assert_eq!(result, Ok(()), "{name}");
            let ours = prove_consistency(&tree, proof.old_size, proof.new_size).unwrap();
            assert_eq!(ours, proof, "{name}: our proof");
        }
    }
}

fn signed_note(v: &Value, name_prefix: &str) -> Value {
    v["signed_notes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_str().unwrap().starts_with(name_prefix))
        .unwrap_or_else(|| panic!("no signed note named {name_prefix}"))
        .clone()
}

#[test]
fn the_c2sp_signed_note_example_verifies() {
    let v = vectors();
    let case = signed_note(&v, "C2SP signed-note");
    let verifier = NoteVerifier::from_vkey(case["vkey"].as_str().unwrap()).unwrap();
    assert_eq!(verifier.to_vkey(), case["vkey"].as_str().unwrap());
    let note = case["note"].as_str().unwrap();
    let opened = open_note(note, std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(opened.text(), "This is an example message.\n");
    assert_eq!(
        opened.verified_by(),
        vec![KeyName::new("example.com/foo").unwrap()]
    );

    let tampered = note.replacen("example message", "example massage", 1);
    assert!(matches!(
        open_note(&tampered, &[verifier]),
        Err(NoteError::InvalidSignature { .. })
    ));
}

#[test]
fn the_go_note_example_signs_to_the_same_bytes() {
    let v = vectors();
    let case = signed_note(&v, "Go x/mod note");
    let skey = case["skey"].as_str().unwrap();
    let vkey = case["vkey"].as_str().unwrap();
    let note = case["note"].as_str().unwrap();

    let signer = NoteSigner::from_skey(skey).unwrap();
    assert_eq!(signer.to_skey(), skey);
    assert_eq!(signer.verifier().to_vkey(), vkey);
    assert_eq!(signer.key_id(), 0xc74f_20a3);

    let text = parse_note(note).unwrap().text;
    assert_eq!(sign_note(&text, &[&signer]).unwrap(), note);

    let verifier = NoteVerifier::from_vkey(vkey).unwrap();
    let opened = open_note(note, std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(opened.text(), text);
    assert_eq!(opened.verified_by(), vec![signer.name().clone()]);

    // The other example's key is unknown here, so its note verifies with nothing.
    let other = signed_note(&v, "C2SP signed-note");
    assert_eq!(
        open_note(other["note"].as_str().unwrap(), &[verifier]),
        Err(NoteError::NoVerifiedSignature)
    );
}

#[test]
fn the_c2sp_checkpoint_example_body_parses() {
    let v = vectors();
    let case = signed_note(&v, "C2SP tlog-checkpoint");
    let note = parse_note(case["note"].as_str().unwrap()).unwrap();
    let cp = Checkpoint::parse(&note.text).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, TreeSize(20_852_163));
    assert_eq!(
        cp.root.to_hex(),
        "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62"
    );
    assert_eq!(note.signatures.len(), 1);
    assert_eq!(note.signatures[0].name, cp.origin);
    assert_eq!(cp.to_text(), note.text);
}

/// The cosigned checkpoints of `vectors/akashi_vectors.json`, which `tools/interop/verify.go`
/// checks with Go's `sumdb/note` and `crypto/ed25519`, verify here too, and a flipped byte in
/// any cosignature is caught.
#[test]
fn go_checked_cosignatures_verify() {
    use ledger::cosignature::{CosignatureError, WitnessVerifier, WitnessedCheckpoint};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/akashi_vectors.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let log = NoteVerifier::from_vkey(v["vkey"].as_str().unwrap()).unwrap();
    let witnesses: Vec<WitnessVerifier> = v["witness_vkeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| WitnessVerifier::from_vkey(k.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(witnesses.len(), 2);
    let notes = v["cosigned_checkpoints"].as_array().unwrap();
    assert!(!notes.is_empty());
    for note in notes {
        let note = note.as_str().unwrap();
        let witnessed = WitnessedCheckpoint::verify(note, &log, &witnesses).unwrap();
        assert_eq!(witnessed.require_quorum(2), Ok(()));
        // Flip one bit inside the last cosignature's base64 (before its final `=` padding).
        let mut bad = note.as_bytes().to_vec();
        let at = bad.len() - 6;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(matches!(
            WitnessedCheckpoint::verify(&bad, &log, &witnesses),
            Err(CosignatureError::InvalidCosignature { .. })
        ));
    }
}

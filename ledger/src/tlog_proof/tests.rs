use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::checkpoint::Checkpoint;
use crate::hash::{TreeSize, hash_leaf};
use crate::note::{KeyName, NoteSigner};
use crate::proof::{MemoryTree, prove_inclusion};

/// The example of c2sp.org/tlog-proof. Its signatures are elided (`[...]`), so only the
/// structure can be checked.
const C2SP_EXAMPLE: &str = "c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

\u{2014} example.com/fancylog hI2DJw[...]1roloI=
\u{2014} witness1.example mJirIklj[...]qY9v2B/5bg==
";

struct Fixture {
    log: NoteSigner,
    leaves: Vec<Vec<u8>>,
    proof: TlogProof,
}

fn fixture(size: usize, index: usize) -> Fixture {
    let log = NoteSigner::generate(
        KeyName::new("example.com/log").unwrap(),
        &mut StdRng::seed_from_u64(1),
    );
    let mut tree = MemoryTree::new();
    let leaves: Vec<Vec<u8>> = (0..size)
        .map(|i| format!("leaf {i}").into_bytes())
        .collect();
    for leaf in &leaves {
        tree.push_leaf(leaf);
    }
    let cp = Checkpoint::new("example.com/log", tree.size(), tree.root());
    let signed = SignedCheckpoint::sign(cp, &log).unwrap();
    let inclusion = prove_inclusion(&tree, LeafIndex(index as u64), tree.size()).unwrap();
    let proof = TlogProof::new(inclusion.clone(), signed.note().to_owned());
    assert_eq!(
        proof,
        TlogProof {
            index: inclusion.leaf_index,
            path: inclusion.path,
            extra: None,
            checkpoint: signed.note().to_owned(),
        }
    );
    Fixture { log, leaves, proof }
}

#[test]
fn the_c2sp_example_parses() {
    let proof = TlogProof::parse(C2SP_EXAMPLE).unwrap();
    assert_eq!(proof.index, LeafIndex(73_894));
    assert_eq!(proof.path.len(), 5);
    assert_eq!(
        proof.extra.as_deref(),
        Some(
            BASE64
                .decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
                .unwrap()
                .as_slice()
        )
    );
    assert!(
        proof
            .checkpoint
            .starts_with("example.com/fancylog\n109482\n")
    );
    assert_eq!(proof.to_text(), C2SP_EXAMPLE);
}

#[test]
fn round_trip_and_verify() {
    let f = fixture(13, 6);
    let text = f.proof.to_text();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 6\n"));
    let parsed = TlogProof::parse(&text).unwrap();
    assert_eq!(parsed, f.proof);
    assert_eq!(parsed.to_text(), text);

    let cp = parsed
        .verify(&hash_leaf(&f.leaves[6]), &f.log.verifier())
        .unwrap();
    assert_eq!(cp.size, TreeSize(13));

    let with_extra = TlogProof {
        extra: Some(b"vrf proof".to_vec()),
        ..f.proof.clone()
    };
    let text = with_extra.to_text();
    assert!(text.contains("\nextra dnJmIHByb29m\nindex 6\n"));
    assert_eq!(TlogProof::parse(&text).unwrap(), with_extra);

    // An empty extra cannot be written, so it reads back as none.
    let empty_extra = TlogProof {
        extra: Some(Vec::new()),
        ..f.proof.clone()
    };
    assert_eq!(empty_extra.to_text(), f.proof.to_text());
}

#[test]
fn a_single_leaf_tree_has_an_empty_path() {
    let f = fixture(1, 0);
    assert!(f.proof.path.is_empty());
    let text = f.proof.to_text();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 0\n\nexample.com/log\n1\n"));
    let parsed = TlogProof::parse(&text).unwrap();
    parsed
        .verify(&hash_leaf(&f.leaves[0]), &f.log.verifier())
        .unwrap();
}

#[test]
fn verification_failures() {
    let f = fixture(20, 11);
    let leaf = hash_leaf(&f.leaves[11]);
    let v = f.log.verifier();

    assert!(matches!(
        f.proof.verify(&hash_leaf(&f.leaves[10]), &v),
        Err(TlogProofError::Proof(ProofError::RootMismatch))
    ));
    let moved = TlogProof {
        index: LeafIndex(10),
        ..f.proof.clone()
    };
    assert!(matches!(
        moved.verify(&leaf, &v),
        Err(TlogProofError::Proof(_))
    ));
    let mut short = f.proof.clone();
    short.path.pop();
    assert!(matches!(
        short.verify(&leaf, &v),
        Err(TlogProofError::Proof(ProofError::WrongPathLength { .. }))
    ));
    let other_key = NoteSigner::generate(
        KeyName::new("example.com/log").unwrap(),
        &mut StdRng::seed_from_u64(2),
    );
    assert!(matches!(
        f.proof.verify(&leaf, &other_key.verifier()),
        Err(TlogProofError::Checkpoint(_))
    ));
    let forged = TlogProof {
        checkpoint: f.proof.checkpoint.replacen("\n20\n", "\n21\n", 1),
        ..f.proof.clone()
    };
    assert!(matches!(
        forged.verify(&leaf, &v),
        Err(TlogProofError::Checkpoint(_))
    ));
    let beyond = TlogProof {
        index: LeafIndex(20),
        ..f.proof.clone()
    };
    assert!(matches!(
        beyond.verify(&leaf, &v),
        Err(TlogProofError::Proof(ProofError::IndexOutOfRange { .. }))
    ));
}

#[test]
fn malformed_files_are_rejected() {
    let f = fixture(5, 2);
    let good = f.proof.to_text();
    let first_hash = BASE64.encode(f.proof.path[0].0);
    let cases: Vec<(String, TlogProofError)> = vec![
        (
            good.replacen("@v1", "@v2", 1),
            TlogProofError::MissingHeader,
        ),
        (format!("\n{good}"), TlogProofError::MissingHeader),
        (
            good.replacen("c2sp.org/tlog-proof@v1\n", "c2sp.org/tlog-proof@v1\r\n", 1),
            TlogProofError::MissingHeader,
        ),
        (
            good.replacen("index 2", "index 02", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen("index 2", "index +2", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen("index 2", "index  2", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen("index 2", "index 18446744073709551616", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen("index 2", "Index 2", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen("index 2\n", "", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen("index 2\n", "index 2\nextra AAAA\n", 1),
            TlogProofError::InvalidHash { line: 3 },
        ),
        (
            good.replacen("index 2\n", "extra \nindex 2\n", 1),
            TlogProofError::InvalidExtra,
        ),
        (
            good.replacen("index 2\n", "extra AAA\nindex 2\n", 1),
            TlogProofError::InvalidExtra,
        ),
        (
            good.replacen("index 2\n", "extra AAAA\nextra AAAA\nindex 2\n", 1),
            TlogProofError::InvalidIndex,
        ),
        (
            good.replacen(&first_hash, &first_hash[..43], 1),
            TlogProofError::InvalidHash { line: 3 },
        ),
        (
            good.replacen(&first_hash, &BASE64.encode([1u8; 33]), 1),
            TlogProofError::InvalidHash { line: 3 },
        ),
        (
            good.replacen(&first_hash, &format!("{first_hash} "), 1),
            TlogProofError::InvalidHash { line: 3 },
        ),
        (
            good.split("\n\n").next().unwrap().to_owned(),
            TlogProofError::MissingCheckpoint,
        ),
        (
            format!("{}\n\n", good.split("\n\n").next().unwrap()),
            TlogProofError::MissingCheckpoint,
        ),
        (
            "c2sp.org/tlog-proof@v1\n".into(),
            TlogProofError::InvalidIndex,
        ),
        (String::new(), TlogProofError::MissingHeader),
    ];
    for (text, want) in cases {
        assert_eq!(TlogProof::parse(&text), Err(want), "{text:?}");
    }

    let long_path: String = (0..=MAX_PROOF_LEN)
        .map(|_| format!("{first_hash}\n"))
        .collect();
    let long = good.replacen(&format!("{first_hash}\n"), &long_path, 1);
    assert_eq!(
        TlogProof::parse(&long),
        Err(TlogProofError::PathTooLong { max: MAX_PROOF_LEN })
    );
    let huge_extra = BASE64.encode(vec![0u8; MAX_EXTRA_SIZE + 1]);
    let bad = good.replacen("index 2\n", &format!("extra {huge_extra}\nindex 2\n"), 1);
    assert_eq!(TlogProof::parse(&bad), Err(TlogProofError::InvalidExtra));
    let too_big = format!("{good}{}", "a".repeat(MAX_TLOG_PROOF_SIZE));
    assert!(matches!(
        TlogProof::parse(&too_big),
        Err(TlogProofError::TooLarge { .. })
    ));
}

#[test]
fn a_garbled_checkpoint_parses_but_does_not_verify() {
    let f = fixture(5, 2);
    let garbled = format!(
        "{}\n\nnot a checkpoint\n",
        f.proof.to_text().split("\n\n").next().unwrap()
    );
    let parsed = TlogProof::parse(&garbled).unwrap();
    assert!(matches!(
        parsed.verify(&hash_leaf(&f.leaves[2]), &f.log.verifier()),
        Err(TlogProofError::Checkpoint(_))
    ));
}

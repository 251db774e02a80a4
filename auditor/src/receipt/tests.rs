use ledger::log::Receipt as LogReceipt;
use ledger::{
    hash::{Hash, LeafIndex, TreeSize},
    note::NoteVerifier,
    tlog_proof::TlogProof,
};

use super::{MAX_RECEIPT_SIZE, Receipt, ReceiptError};
use crate::testing::{self, receipt_json};

struct Fixture {
    log_receipt: LogReceipt,
    leaf: Vec<u8>,
    body: Vec<u8>,
    verifier: NoteVerifier,
}

fn fixture(size: u64, index: u64) -> Fixture {
    let log = testing::log(size, 3);
    let log_receipt = testing::receipt(&log, index);
    let leaf = log.leaves(LeafIndex(index), 1).unwrap().remove(0);
    let body = match log.body(LeafIndex(index)).unwrap() {
        ledger::chunk::Record::Present(body) => body,
        ledger::chunk::Record::Redacted => unreachable!(),
    };
    Fixture {
        log_receipt,
        leaf,
        body,
        verifier: testing::signer().verifier(),
    }
}

fn parsed(f: &Fixture) -> Receipt {
    Receipt::parse(&receipt_json(&f.log_receipt)).unwrap()
}

fn assert_invalid(result: Result<crate::receipt::VerifiedReceipt, ReceiptError>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: accepted"),
        Err(err) => assert!(err.is_invalid(), "{what}: {err} is not a verdict"),
    }
}

#[test]
fn valid_json_receipt_verifies_with_leaf_and_body() {
    let f = fixture(6, 5);
    let receipt = parsed(&f);
    assert_eq!(receipt.leaf_index, LeafIndex(5));
    assert_eq!(receipt.tree_size, Some(TreeSize(6)));
    let bare = receipt.verify(&f.verifier, None, None).unwrap();
    assert_eq!(bare.checkpoint.checkpoint().size, TreeSize(6));
    assert!(bare.leaf.is_none() && !bare.body_checked);
    let full = receipt
        .verify(&f.verifier, Some(&f.leaf), Some(&f.body))
        .unwrap();
    assert_eq!(full.leaf.unwrap().attribute("n"), Some("5"));
    assert!(full.body_checked);
}

#[test]
fn every_leaf_index_of_a_log_verifies() {
    let log = testing::log(300, 7);
    let verifier = testing::signer().verifier();
    for index in [0, 1, 2, 127, 255, 256, 298, 299] {
        let receipt = Receipt::parse(&receipt_json(&testing::receipt(&log, index))).unwrap();
        receipt.verify(&verifier, None, None).unwrap();
    }
}

#[test]
fn every_changed_byte_of_leaf_hash_proof_or_checkpoint_is_invalid() {
    let f = fixture(13, 6);
    let good = parsed(&f);
    for i in 0..32 {
        let mut r = good.clone();
        let mut hash = r.leaf_hash.unwrap();
        hash.0[i] ^= 0x01;
        r.leaf_hash = Some(hash);
        assert_invalid(r.verify(&f.verifier, None, None), "leaf hash");
    }
    assert!(!good.inclusion_proof.is_empty());
    for (h, i) in (0..good.inclusion_proof.len()).flat_map(|h| (0..32).map(move |i| (h, i))) {
        let mut r = good.clone();
        r.inclusion_proof[h].0[i] ^= 0x80;
        assert_invalid(r.verify(&f.verifier, None, None), "proof hash");
    }
    let note = good.checkpoint.as_bytes().to_vec();
    for i in 0..note.len() {
        for replacement in [note[i] ^ 0x01, b'A', b'\n'] {
            if replacement == note[i] {
                continue;
            }
            let mut bytes = note.clone();
            bytes[i] = replacement;
            let mut r = good.clone();
            r.checkpoint = String::from_utf8_lossy(&bytes).into_owned();
            assert_invalid(r.verify(&f.verifier, None, None), "checkpoint byte");
        }
    }
}

#[test]
fn wrong_index_size_path_length_or_key_is_invalid() {
    let f = fixture(13, 6);
    let good = parsed(&f);
    type Mutation = Box<dyn Fn(&mut Receipt)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("index + 1", Box::new(|r| r.leaf_index = LeafIndex(7))),
        ("index - 1", Box::new(|r| r.leaf_index = LeafIndex(5))),
        ("index beyond", Box::new(|r| r.leaf_index = LeafIndex(13))),
        ("size + 1", Box::new(|r| r.tree_size = Some(TreeSize(14)))),
        ("size - 1", Box::new(|r| r.tree_size = Some(TreeSize(12)))),
        (
            "extra hash",
            Box::new(|r| r.inclusion_proof.push(Hash([9; 32]))),
        ),
        (
            "missing hash",
            Box::new(|r| {
                r.inclusion_proof.pop();
            }),
        ),
        ("no proof", Box::new(|r| r.inclusion_proof.clear())),
        ("swapped hashes", Box::new(|r| r.inclusion_proof.swap(0, 1))),
    ];
    for (what, mutate) in mutations {
        let mut r = good.clone();
        mutate(&mut r);
        assert_invalid(r.verify(&f.verifier, None, None), what);
    }
    let forger = testing::other_signer().verifier();
    assert_invalid(good.verify(&forger, None, None), "other key");
}

#[test]
fn leaf_and_body_must_match() {
    let f = fixture(6, 2);
    let good = parsed(&f);
    let mut leaf = f.leaf.clone();
    leaf[12] ^= 1;
    assert!(matches!(
        good.verify(&f.verifier, Some(&leaf), None),
        Err(ReceiptError::LeafHashMismatch)
    ));
    for i in 0..f.body.len() {
        let mut body = f.body.clone();
        body[i] ^= 0x20;
        let err = good
            .verify(&f.verifier, Some(&f.leaf), Some(&body))
            .unwrap_err();
        assert!(matches!(err, ReceiptError::Commitment(_)), "{err}");
        assert!(err.is_invalid());
    }
    let err = good.verify(&f.verifier, None, Some(&f.body)).unwrap_err();
    assert!(matches!(err, ReceiptError::NeedsLeaf) && !err.is_invalid());
}

#[test]
fn tlog_proof_form_verifies_with_the_leaf_only() {
    let f = fixture(9, 4);
    let text = TlogProof::new(
        f.log_receipt.inclusion_proof.clone(),
        f.log_receipt.checkpoint.note().to_owned(),
    )
    .to_text();
    let receipt = Receipt::parse(&text).unwrap();
    assert_eq!(receipt.leaf_hash, None);
    let verified = receipt.verify(&f.verifier, Some(&f.leaf), None).unwrap();
    assert_eq!(verified.leaf_hash, f.log_receipt.leaf_hash);
    let err = receipt.verify(&f.verifier, None, None).unwrap_err();
    assert!(matches!(err, ReceiptError::NeedsLeaf) && !err.is_invalid());
    let mut other_leaf = f.leaf.clone();
    other_leaf[0] ^= 1;
    assert_invalid(
        receipt.verify(&f.verifier, Some(&other_leaf), None),
        "other leaf",
    );
    // Any byte changed in the file either fails to parse, fails to verify, or reads back as the
    // same receipt (a change the format cannot see).
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[i] = if bytes[i] == b'B' { b'C' } else { b'B' };
        let Ok(changed) = String::from_utf8(changed) else {
            continue;
        };
        match Receipt::parse(&changed) {
            Err(_) => {}
            Ok(r) if r == receipt => {}
            Ok(r) => assert!(
                r.verify(&f.verifier, Some(&f.leaf), None).is_err(),
                "byte {i} changed and still valid"
            ),
        }
    }
}

#[test]
fn any_changed_byte_of_the_json_file_never_verifies_as_another_receipt() {
    let f = fixture(5, 3);
    let text = receipt_json(&f.log_receipt);
    let original = Receipt::parse(&text).unwrap();
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        for replacement in [b'0', b'x', b'"', b'+'] {
            if bytes[i] == replacement {
                continue;
            }
            let mut changed = bytes.to_vec();
            changed[i] = replacement;
            let Ok(changed) = String::from_utf8(changed) else {
                continue;
            };
            let Ok(r) = Receipt::parse(&changed) else {
                continue;
            };
            if r == original {
                continue;
            }
            let result = r.verify(&f.verifier, None, None);
            assert!(result.is_err(), "byte {i} -> {replacement} still valid");
        }
    }
}

#[test]
fn json_variants_that_proto3_allows() {
    let f = fixture(6, 5);
    let good = parsed(&f);
    let mut value: serde_json::Value = serde_json::from_str(&receipt_json(&f.log_receipt)).unwrap();
    // Numbers for uint64.
    value["leafIndex"] = serde_json::json!(5);
    value["treeSize"] = serde_json::json!(6);
    assert_eq!(Receipt::parse(&value.to_string()).unwrap(), good);
    // Proto field names, inside a whole response.
    let obj = value.as_object().unwrap();
    let snake: serde_json::Map<String, serde_json::Value> = obj
        .iter()
        .map(|(k, v)| {
            let k = match k.as_str() {
                "leafIndex" => "leaf_index",
                "leafHash" => "leaf_hash",
                "inclusionProof" => "inclusion_proof",
                "treeSize" => "tree_size",
                other => other,
            };
            (k.to_owned(), v.clone())
        })
        .collect();
    let wrapped = serde_json::json!({ "decision": "ALLOW", "receipt": snake });
    let whole = Receipt::parse(&wrapped.to_string()).unwrap();
    // The response around the receipt is read as the answer it states.
    assert_eq!(whole.answer.as_ref().unwrap().decision, "ALLOW");
    assert_eq!(
        Receipt {
            answer: None,
            ..whole
        },
        good
    );
    // Defaults may be omitted: leaf 0 of a one-entry log has no index and no proof.
    let one = fixture(1, 0);
    let mut value: serde_json::Value =
        serde_json::from_str(&receipt_json(&one.log_receipt)).unwrap();
    let obj = value.as_object_mut().unwrap();
    obj.remove("leafIndex");
    obj.remove("inclusionProof");
    obj.insert("futureField".to_owned(), serde_json::json!({"x": 1}));
    let r = Receipt::parse(&value.to_string()).unwrap();
    r.verify(&one.verifier, Some(&one.leaf), Some(&one.body))
        .unwrap();
}

#[test]
fn malformed_input_is_an_error_not_a_verdict() {
    let f = fixture(6, 5);
    let value: serde_json::Value = serde_json::from_str(&receipt_json(&f.log_receipt)).unwrap();
    let cases = [
        ("not json", "hello".to_owned()),
        ("array", "[1,2]".to_owned()),
        (
            "negative index",
            set(&value, "leafIndex", serde_json::json!(-1)),
        ),
        (
            "leading zero",
            set(&value, "leafIndex", serde_json::json!("05")),
        ),
        ("float", set(&value, "treeSize", serde_json::json!(6.5))),
        (
            "short hash",
            set(&value, "leafHash", serde_json::json!("AAAA")),
        ),
        (
            "bad base64",
            set(&value, "leafHash", serde_json::json!("!!")),
        ),
        (
            "proof not list",
            set(&value, "inclusionProof", serde_json::json!("AAAA")),
        ),
        (
            "checkpoint number",
            set(&value, "checkpoint", serde_json::json!(1)),
        ),
        (
            "bad tlog-proof",
            "c2sp.org/tlog-proof@v1\nindex x\n".to_owned(),
        ),
    ];
    for (what, text) in cases {
        let err = Receipt::parse(&text).unwrap_err();
        assert!(!err.is_invalid(), "{what}: {err}");
        assert_eq!(err.exit_code(), crate::exit::AuditExitCode::Error, "{what}");
    }
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RECEIPT_SIZE));
    assert!(matches!(
        Receipt::parse(&huge),
        Err(ReceiptError::TooLarge { .. })
    ));
}

fn set(value: &serde_json::Value, field: &str, new: serde_json::Value) -> String {
    let mut value = value.clone();
    value[field] = new;
    value.to_string()
}

use ledger::hash::Hash;
use ledger::map::Terminal;
use ledger::vrf::VrfSecretKey;
use serde_json::json;

use super::{
    CompletenessProof, CompletenessProofError, HistoryJsonError, MAX_HISTORY_JSON, pages_from_json,
};

fn proof() -> CompletenessProof {
    let (vrf_proof, _) = VrfSecretKey::from_seed([5; 32]).prove(b"p1");
    CompletenessProof {
        vrf_proof: vrf_proof.to_bytes().to_vec(),
        count: 2,
        first_index: 3,
        last_index: 9,
        chain_head: vec![1; 32],
        map_siblings: vec![vec![2; 32], vec![3; 32]],
        leaf_key: Vec::new(),
        leaf_value: Vec::new(),
    }
}

#[test]
fn a_response_or_pages_as_grpcurl_prints_them() {
    let response = json!({
        "checkpoint": "note",
        "entries": [{
            "leafIndex": "7",
            "leaf": "bGVhZg==",
            "body": "Ym9keQ",
            "inclusionProof": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
        }, {
            "leaf": "bGVhZg==",
            "redacted": true,
        }],
        "treeSize": "8",
        "more": true,
        "completeness": {
            "vrfProof": "AAAA",
            "count": 2,
            "firstIndex": "3",
            "lastIndex": "9",
            "chainHead": "AQ==",
            "mapSiblings": ["Ag==", "Aw=="],
        },
        "unknownField": {"ignored": [1, 2]},
    });
    let pages = pages_from_json(&response.to_string()).unwrap();
    let [page] = pages.as_slice() else {
        panic!("{pages:?}")
    };
    assert_eq!(page.checkpoint, "note");
    let [shown, erased] = page.entries.as_slice() else {
        panic!("{page:?}")
    };
    assert_eq!(shown.leaf_index.get(), 7);
    assert_eq!(shown.body.as_deref(), Some(&b"body"[..]));
    assert_eq!(shown.inclusion_proof, [Hash([0; 32])]);
    // Defaults are omitted: index 0, no proof; an erased body is none, not empty.
    assert_eq!((erased.leaf_index.get(), erased.body.as_deref()), (0, None));
    let completeness = page.completeness.as_ref().unwrap();
    assert_eq!(
        (
            completeness.count,
            completeness.first_index,
            completeness.last_index
        ),
        (2, 3, 9)
    );
    assert_eq!(completeness.map_siblings, [vec![2], vec![3]]);
    assert!(completeness.leaf_key.is_empty());

    let pages = pages_from_json(&json!([response, {"checkpoint": "next"}]).to_string()).unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1].completeness, None);
    assert!(pages[1].entries.is_empty());
}

#[test]
fn unusable_json_is_refused_with_its_reason() {
    let refused = |text: &str| pages_from_json(text).unwrap_err();
    assert_eq!(refused("{"), HistoryJsonError::Json);
    for shape in ["[]", "3", "\"x\"", "{}", "[{\"checkpoint\": \"x\"}, 3]"] {
        assert_eq!(refused(shape), HistoryJsonError::NotAResponse, "{shape}");
    }
    let siblings = vec!["AA=="; 257];
    for (text, field) in [
        (json!({"checkpoint": 3}), "checkpoint"),
        (json!({"checkpoint": "x", "entries": {}}), "entries"),
        (json!({"checkpoint": "x", "entries": [3]}), "entries"),
        (
            json!({"checkpoint": "x", "entries": [{"leafIndex": "07"}]}),
            "leafIndex",
        ),
        (
            json!({"checkpoint": "x", "entries": [{"leafIndex": -1}]}),
            "leafIndex",
        ),
        (
            json!({"checkpoint": "x", "entries": [{"leaf": "!"}]}),
            "leaf",
        ),
        (
            json!({"checkpoint": "x", "entries": [{"redacted": "yes"}]}),
            "redacted",
        ),
        (
            json!({"checkpoint": "x", "entries": [{"inclusionProof": ["AAAA"]}]}),
            "inclusionProof",
        ),
        (
            json!({"checkpoint": "x", "completeness": []}),
            "completeness",
        ),
        (
            json!({"checkpoint": "x", "completeness": {"count": "x"}}),
            "count",
        ),
        (
            json!({"checkpoint": "x", "completeness": {"mapSiblings": siblings}}),
            "mapSiblings",
        ),
        (
            json!({"checkpoint": "x", "completeness": {"leafKey": 3}}),
            "leafKey",
        ),
    ] {
        assert_eq!(
            refused(&text.to_string()),
            HistoryJsonError::InvalidField { field },
            "{text}"
        );
    }
    let huge = " ".repeat(MAX_HISTORY_JSON + 1);
    assert!(matches!(
        refused(&huge),
        HistoryJsonError::TooLarge {
            max: MAX_HISTORY_JSON,
            ..
        }
    ));
}

#[test]
fn proof_fields_of_the_wrong_length_are_refused() {
    let wrong = |change: &dyn Fn(&mut CompletenessProof)| {
        let mut p = proof();
        change(&mut p);
        p.subject_proof().unwrap_err()
    };
    assert_eq!(
        wrong(&|p| p.vrf_proof.truncate(79)),
        CompletenessProofError::VrfProof
    );
    assert_eq!(
        wrong(&|p| p.chain_head.push(0)),
        CompletenessProofError::ChainHead
    );
    assert_eq!(
        wrong(&|p| p.map_siblings[1].truncate(31)),
        CompletenessProofError::Sibling
    );
    assert_eq!(
        wrong(&|p| p.map_siblings = vec![vec![0; 32]; 257]),
        CompletenessProofError::TooManySiblings { got: 257 }
    );
    let absent = |p: &mut CompletenessProof| {
        p.count = 0;
        p.chain_head.clear();
    };
    assert_eq!(
        wrong(&|p| {
            absent(p);
            p.leaf_key = vec![1; 31];
            p.leaf_value = vec![1; 32];
        }),
        CompletenessProofError::LeafKey
    );
    assert_eq!(
        wrong(&|p| {
            absent(p);
            p.leaf_key = vec![1; 32];
        }),
        CompletenessProofError::LeafValue
    );

    // A record's terminal is the patient's own leaf; an absence's the other leaf, or empty.
    let present = proof().subject_proof().unwrap();
    let record = present.record.unwrap();
    assert_eq!((record.count, record.first, record.last), (2, 3, 9));
    assert!(matches!(
        present.map_proof.terminal,
        Terminal::Leaf { value, .. } if value == record.value_hash()
    ));
    let mut p = proof();
    absent(&mut p);
    let empty = p.subject_proof().unwrap();
    assert_eq!(
        (empty.record, empty.map_proof.terminal),
        (None, Terminal::Empty)
    );
    p.leaf_key = vec![4; 32];
    p.leaf_value = vec![5; 32];
    assert_eq!(
        p.subject_proof().unwrap().map_proof.terminal,
        Terminal::Leaf {
            key: [4; 32],
            value: Hash([5; 32])
        }
    );
}

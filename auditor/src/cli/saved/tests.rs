use proto::pb;

use super::{history_json, history_response_json};
use crate::history::{CompletenessProof, pages_from_json};

fn response(
    more: bool,
    completeness: Option<pb::SubjectCompleteness>,
) -> pb::GetSubjectHistoryResponse {
    pb::GetSubjectHistoryResponse {
        checkpoint: "akashi.test/log\n3\nroot\n\n— sig\n".into(),
        entries: vec![
            pb::HistoryEntry {
                leaf_index: 0,
                leaf: vec![0, 1, 2],
                body: b"{}".to_vec(),
                inclusion_proof: vec![vec![7; 32], vec![8; 32]],
                ..Default::default()
            },
            pb::HistoryEntry {
                leaf_index: 1 << 40,
                leaf: vec![3],
                body: Vec::new(),
                inclusion_proof: Vec::new(),
                redacted: true,
                unacknowledged: true,
                review_required: true,
            },
        ],
        tree_size: 3,
        more,
        completeness,
    }
}

#[test]
fn saved_pages_read_back_as_the_server_sent_them() {
    let proof = pb::SubjectCompleteness {
        vrf_proof: vec![9; 80],
        count: 2,
        first_index: 0,
        last_index: 1 << 40,
        chain_head: vec![4; 32],
        map_siblings: vec![vec![5; 32], vec![6; 32]],
        leaf_key: vec![1; 32],
        leaf_value: vec![2; 32],
    };
    let pages = [response(true, None), response(false, Some(proof.clone()))];
    let text = history_json(&pages).to_string();
    let read = pages_from_json(&text).unwrap();
    assert_eq!(read.len(), 2);
    for (page, sent) in read.iter().zip(&pages) {
        assert_eq!(page.checkpoint, sent.checkpoint);
        assert_eq!(page.entries.len(), 2);
        for (entry, sent) in page.entries.iter().zip(&sent.entries) {
            assert_eq!(entry.leaf_index.get(), sent.leaf_index);
            assert_eq!(entry.leaf, sent.leaf);
            assert_eq!(entry.body, (!sent.redacted).then(|| sent.body.clone()));
            let path: Vec<Vec<u8>> = entry.inclusion_proof.iter().map(|h| h.0.to_vec()).collect();
            assert_eq!(path, sent.inclusion_proof);
        }
    }
    assert_eq!(read[0].completeness, None);
    assert_eq!(
        read[1].completeness,
        Some(CompletenessProof {
            vrf_proof: proof.vrf_proof,
            count: proof.count,
            first_index: proof.first_index,
            last_index: proof.last_index,
            chain_head: proof.chain_head,
            map_siblings: proof.map_siblings,
            leaf_key: proof.leaf_key,
            leaf_value: proof.leaf_value,
        })
    );
}

#[test]
fn a_saved_response_is_proto3_json_as_grpcurl_prints_it() {
    let json = history_response_json(&response(false, Some(pb::SubjectCompleteness::default())));
    // Defaults left out, 64-bit integers as strings, bytes base64, lowerCamelCase names.
    assert_eq!(json["treeSize"], "3");
    assert!(json.get("more").is_none());
    assert!(json["entries"][0].get("leafIndex").is_none());
    assert_eq!(json["entries"][1]["leafIndex"], "1099511627776");
    assert_eq!(json["entries"][0]["leaf"], "AAEC");
    assert_eq!(
        json["entries"][0]["inclusionProof"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(json["entries"][1]["redacted"], true);
    assert_eq!(json["entries"][1]["unacknowledged"], true);
    assert_eq!(json["entries"][1]["reviewRequired"], true);
    assert!(json["entries"][0].get("reviewRequired").is_none());
    assert!(json["entries"][1].get("body").is_none());
    assert_eq!(json["completeness"], serde_json::json!({"vrfProof": ""}));
}

#[test]
fn saving_replaces_a_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.json");
    std::fs::write(&path, "old").unwrap();
    super::write_atomically(&path, b"new", "the history").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let err =
        super::write_atomically(&dir.path().join("no/such/dir"), b"x", "the history").unwrap_err();
    assert!(
        format!("{err:#}").contains("while saving the history"),
        "{err:#}"
    );
}

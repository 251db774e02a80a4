//! Saving what the server sent, so that it can be verified again later with no server: a
//! patient's `GetSubjectHistory` pages written as proto3 JSON exactly as grpcurl prints them
//! (lowerCamelCase names, `bytes` in standard base64, 64-bit integers as decimal strings, fields
//! at their default value left out), the form `history --input` reads.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use proto::pb;

/// The pages of a history as one JSON array, oldest first.
pub fn history_json(pages: &[pb::GetSubjectHistoryResponse]) -> serde_json::Value {
    serde_json::Value::Array(pages.iter().map(history_response_json).collect())
}

/// One `GetSubjectHistory` response as grpcurl prints it.
pub fn history_response_json(response: &pb::GetSubjectHistoryResponse) -> serde_json::Value {
    let b64 =
        |bytes: &[u8]| serde_json::json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    let mut out = serde_json::Map::new();
    out.insert("checkpoint".into(), serde_json::json!(response.checkpoint));
    let entries: Vec<serde_json::Value> = response
        .entries
        .iter()
        .map(|e| {
            let mut entry = serde_json::Map::new();
            if e.leaf_index != 0 {
                entry.insert(
                    "leafIndex".into(),
                    serde_json::json!(e.leaf_index.to_string()),
                );
            }
            entry.insert("leaf".into(), b64(&e.leaf));
            if !e.body.is_empty() {
                entry.insert("body".into(), b64(&e.body));
            }
            if !e.inclusion_proof.is_empty() {
                entry.insert(
                    "inclusionProof".into(),
                    e.inclusion_proof.iter().map(|h| b64(h)).collect(),
                );
            }
            for (name, set) in [
                ("redacted", e.redacted),
                ("unacknowledged", e.unacknowledged),
                ("reviewRequired", e.review_required),
            ] {
                if set {
                    entry.insert(name.into(), serde_json::json!(true));
                }
            }
            serde_json::Value::Object(entry)
        })
        .collect();
    if !entries.is_empty() {
        out.insert("entries".into(), entries.into());
    }
    out.insert(
        "treeSize".into(),
        serde_json::json!(response.tree_size.to_string()),
    );
    if response.more {
        out.insert("more".into(), serde_json::json!(true));
    }
    if let Some(c) = &response.completeness {
        let mut proof = serde_json::Map::new();
        proof.insert("vrfProof".into(), b64(&c.vrf_proof));
        for (name, value) in [
            ("count", c.count),
            ("firstIndex", c.first_index),
            ("lastIndex", c.last_index),
        ] {
            if value != 0 {
                proof.insert(name.into(), serde_json::json!(value.to_string()));
            }
        }
        for (name, value) in [
            ("chainHead", &c.chain_head),
            ("leafKey", &c.leaf_key),
            ("leafValue", &c.leaf_value),
        ] {
            if !value.is_empty() {
                proof.insert(name.into(), b64(value));
            }
        }
        if !c.map_siblings.is_empty() {
            proof.insert(
                "mapSiblings".into(),
                c.map_siblings.iter().map(|h| b64(h)).collect(),
            );
        }
        out.insert("completeness".into(), serde_json::Value::Object(proof));
    }
    serde_json::Value::Object(out)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed over
/// it, so that a reader sees the old file or the whole new one. `what` names the file in errors.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], what: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("while saving {what} to `{}`", path.display()))
}

#[cfg(test)]
mod tests;

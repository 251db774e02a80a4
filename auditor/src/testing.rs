//! Test helpers: real logs built with the ledger's store over memory, with a fixed key and
//! deterministic entries so that checkpoints and proofs are the same on every run.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ledger::log::{Log, NewEntry, Receipt as LogReceipt};
use ledger::store::MemoryStore;
use ledger::{
    entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf},
    hash::LeafIndex,
    note::{KeyName, NoteSigner},
};

/// The test log's origin and key name.
pub(crate) const ORIGIN: &str = "akashi.test/log";

/// The test log's signer, from a fixed seed.
pub(crate) fn signer() -> NoteSigner {
    NoteSigner::from_seed(KeyName::new(ORIGIN).unwrap(), &[7; 32])
}

/// Another key with the same name (what a forger would have).
pub(crate) fn other_signer() -> NoteSigner {
    NoteSigner::from_seed(KeyName::new(ORIGIN).unwrap(), &[8; 32])
}

/// A deterministic entry: fixed nonce and payload, `tag` distinguishes two logs' entries.
pub(crate) fn entry(i: u64, tag: &str) -> NewEntry {
    let body = Body {
        nonce: [(i % 251) as u8; 16],
        payload: format!("{tag} body {i}").into_bytes(),
    };
    let leaf = Leaf::new(
        EntryKind::new("test.entry").unwrap(),
        Day::parse("2026-11-24").unwrap(),
        vec![(
            AttrName::new("n").unwrap(),
            AttrValue::new(&i.to_string()).unwrap(),
        )],
        body.commitment(),
    )
    .unwrap();
    NewEntry {
        leaf,
        body,
        seal: None,
    }
}

/// A log over memory with `n` entries appended in batches of `batch`.
pub(crate) fn log(n: u64, batch: u64) -> Log {
    let log = Log::open(Arc::new(MemoryStore::new()), signer()).unwrap();
    append(&log, 0..n, batch, "a");
    log
}

/// Appends entries `range` in batches.
pub(crate) fn append(log: &Log, range: std::ops::Range<u64>, batch: u64, tag: &str) {
    let entries: Vec<NewEntry> = range.map(|i| entry(i, tag)).collect();
    for chunk in entries.chunks(batch as usize) {
        log.append_batch(chunk, Vec::new()).unwrap();
    }
}

/// The receipt of entry `index` against the log's latest checkpoint.
pub(crate) fn receipt(log: &Log, index: u64) -> LogReceipt {
    let leaf = log.leaves(LeafIndex(index), 1).unwrap().remove(0);
    log.receipt(
        LeafIndex(index),
        ledger::hash::hash_leaf(&leaf),
        log.checkpoint(),
    )
    .unwrap()
}

/// The receipt as grpcurl prints it (proto3 JSON, indented).
pub(crate) fn receipt_json(receipt: &LogReceipt) -> String {
    let value = serde_json::json!({
        "leafIndex": receipt.leaf_index.get().to_string(),
        "leafHash": STANDARD.encode(receipt.leaf_hash.0),
        "checkpoint": receipt.checkpoint.note(),
        "inclusionProof": receipt
            .inclusion_proof
            .path
            .iter()
            .map(|h| STANDARD.encode(h.0))
            .collect::<Vec<_>>(),
        "treeSize": receipt.checkpoint.checkpoint().size.get().to_string(),
    });
    serde_json::to_string_pretty(&value).unwrap()
}

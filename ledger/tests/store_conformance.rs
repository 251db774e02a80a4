//! Runs the storage conformance suite (`ledger::conformance`) against both stores.

#![allow(clippy::unwrap_used, missing_docs, reason = "test code")]

use std::sync::Arc;

use ledger::{
    conformance::{self, Harness},
    store::{MemoryStore, SledOptions, SledStore, Store},
};

struct Memory(MemoryStore);

impl Harness for Memory {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.0.clone())
    }
}

struct Sled(tempfile::TempDir);

impl Harness for Sled {
    fn open(&self) -> Arc<dyn Store> {
        // sled holds a lock on its folder: a reopen only succeeds once the previous handle is
        // gone, just as for a restarted process.
        Arc::new(SledStore::open(self.0.path(), &SledOptions::default()).unwrap())
    }
}

#[test]
fn memory_store_passes_the_suite() {
    conformance::run_all(|| Memory(MemoryStore::new()));
}

#[test]
fn sled_store_passes_the_suite() {
    conformance::run_all(|| Sled(tempfile::tempdir().unwrap()));
}

#[test]
fn sled_reopens_right_after_the_previous_handle_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
        store.put(b"k", b"v").unwrap();
        store.sync().unwrap();
        drop(store);
    }
}

#[test]
fn a_folder_held_by_a_live_store_is_refused_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let _held = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let err = SledStore::open(dir.path(), &SledOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("lock"), "{err}");
}

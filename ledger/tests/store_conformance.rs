//! Runs the storage conformance suite (`ledger::store::conformance`) against both stores.

#![allow(clippy::unwrap_used, missing_docs, reason = "test code")]

use std::sync::Arc;

use ledger::store::{
    MemoryStore, SledOptions, SledStore, Store,
    conformance::{self, Harness},
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

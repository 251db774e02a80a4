//! Crash test: a child process appends under concurrent load through the sequencer onto the
//! sled store and is killed with SIGKILL; the parent reopens the store and checks that every
//! entry acknowledged before the kill is there with its leaf hash, that every checkpoint the
//! child handed out is reproduced and consistent with the new tree, and that the derived state
//! matches the log, and that the checkpoint anchor beside the store is at least as new as every
//! checkpoint handed out (it is written before a batch is acknowledged) and accepts the recovered
//! store. Some writers submit groups of entries ([`Sequencer::submit_group`]): after recovery
//! every group is in the log whole or not at all. Three kill/restart cycles run on the same store.
//!
//! The same three cycles then run on the PostgreSQL store (a throwaway cluster, see
//! `ledger::store::postgres::testing`): the child is killed while it holds the database's lease,
//! so each restart also waits out the lease, as a standby taking over would.
//!
//! This binary is both parent and child (`harness = false`): with `AKASHI_CRASH_CHILD` set it
//! is the child writer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "test code"
)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
};

use ledger::{
    anchor::Anchor,
    conformance,
    hash::{Hash, LeafIndex, TreeSize},
    log::Log,
    note::NoteSigner,
    sequencer::{Applied, Sequencer, SequencerOptions, StateMachine, Tx},
    store::{PostgresOptions, PostgresStore, SledOptions, SledStore, Store},
};

const CHILD_ENV: &str = "AKASHI_CRASH_CHILD";
const KEY_ENV: &str = "AKASHI_CRASH_KEY";
/// The PostgreSQL URL of the store, when the cycle runs on PostgreSQL rather than sled.
const STORE_ENV: &str = "AKASHI_CRASH_STORE";
const ACKS_BEFORE_KILL: usize = 3000;

const GROUP_SIZE: u32 = 200;
/// Per group: how many of its entries are in the state, and the indices of its first and last.
const GROUP_COUNT: &[u8] = b"group/n/";
const GROUP_FIRST: &[u8] = b"group/f/";
const GROUP_LAST: &[u8] = b"group/l/";

/// Every entry bumps a counter in state; the output is the counter's new value. An entry of a
/// group (named by the command) also bumps the group's own counter.
struct Counter;

impl StateMachine for Counter {
    type Command = Option<u64>;
    type Output = u64;
    type Rejection = String;

    fn apply(&mut self, group: Option<u64>, tx: &mut Tx<'_>) -> Result<Applied<u64>, String> {
        let read = |tx: &Tx<'_>, key: &[u8]| -> Result<u64, String> {
            Ok(tx
                .get(key)
                .map_err(|e| e.to_string())?
                .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
                .unwrap_or(0))
        };
        let current = read(tx, b"counter")?;
        tx.put(b"counter", &(current + 1).to_be_bytes());
        if let Some(group) = group {
            let key = |prefix: &[u8]| [prefix, &group.to_be_bytes()].concat();
            let members = read(tx, &key(GROUP_COUNT))?;
            tx.put(&key(GROUP_COUNT), &(members + 1).to_be_bytes());
            if members == 0 {
                tx.put(&key(GROUP_FIRST), &tx.index().get().to_be_bytes());
            }
            tx.put(&key(GROUP_LAST), &tx.index().get().to_be_bytes());
        }
        Ok(Applied {
            entry: conformance::test_entry(tx.index().get()),
            output: current + 1,
        })
    }
}

/// The data dir `dir` holds the anchor and, unless the store is on PostgreSQL (`pg`), the sled
/// store in `ledger/`.
fn open_log(dir: &Path, skey: &str, pg: Option<&str>) -> Log {
    let store: Arc<dyn Store> = match pg {
        Some(url) => Arc::new(PostgresStore::open(url, &pg_options()).unwrap()),
        None => Arc::new(SledStore::open(&dir.join("ledger"), &SledOptions::default()).unwrap()),
    };
    let signer = NoteSigner::from_skey(skey).unwrap();
    let anchor = Anchor::open(&anchor_path(dir), &signer.verifier()).unwrap();
    Log::open_anchored(store, signer, anchor).unwrap()
}

/// A short lease, so that a restart after the kill waits little for it to expire.
fn pg_options() -> PostgresOptions {
    PostgresOptions {
        lease_ttl: std::time::Duration::from_secs(1),
        lease_wait: std::time::Duration::from_secs(15),
        ..PostgresOptions::default()
    }
}

fn anchor_path(dir: &Path) -> std::path::PathBuf {
    dir.join("ledger.anchor")
}

fn child(dir: &str, skey: &str, pg: Option<&str>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = Arc::new(open_log(Path::new(dir), skey, pg));
        // Batches far smaller than a group: a group must still be written whole, in one batch.
        let options = SequencerOptions {
            max_batch: 64,
            ..SequencerOptions::default()
        };
        let sequencer = Sequencer::start(log, Counter, options).unwrap();
        let (lines, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Groups: a few writers log 200 entries at a time, all or nothing.
        let run = std::process::id();
        for writer in 0..4_u64 {
            let sequencer = sequencer.clone();
            let lines = lines.clone();
            tokio::spawn(async move {
                for k in 0..1_000_000_u64 {
                    let group = (u64::from(run) << 32) | (writer << 24) | k;
                    let commands = vec![Some(group); GROUP_SIZE as usize];
                    let Ok(receipt) = sequencer.submit_group(commands).await else {
                        return;
                    };
                    let cp = &receipt.checkpoint.checkpoint();
                    for (offset, leaf_hash) in receipt.leaf_hashes.iter().enumerate() {
                        let line = format!(
                            "ack {} {} {} {}\n",
                            receipt.first.get() + offset as u64,
                            leaf_hash.to_hex(),
                            cp.size.get(),
                            cp.root.to_hex()
                        );
                        if lines.send(line).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        for _ in 0..32 {
            let sequencer = sequencer.clone();
            let lines = lines.clone();
            tokio::spawn(async move {
                // Bounded: the parent kills us long before this ends.
                for _ in 0..1_000_000 {
                    let Ok((receipt, _)) = sequencer.submit(None).await else {
                        return;
                    };
                    let cp = &receipt.checkpoint.checkpoint();
                    let line = format!(
                        "ack {} {} {} {}\n",
                        receipt.leaf_index.get(),
                        receipt.leaf_hash.to_hex(),
                        cp.size.get(),
                        cp.root.to_hex()
                    );
                    if lines.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        drop(lines);
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            // Write each acknowledgement as soon as it is made: the parent may kill us any time.
            if stdout
                .write_all(line.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return;
            }
        }
    });
}

fn cycle(dir: &Path, skey: &str, round: usize, pg: Option<&str>) -> (usize, usize) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD_ENV, dir).env(KEY_ENV, skey);
    if let Some(url) = pg {
        command.env(STORE_ENV, url);
    }
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut checkpoints: BTreeMap<u64, Hash> = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 5, "bad line from child: {line}");
        acked.insert(parts[1].parse().unwrap(), Hash::from_hex(parts[2]).unwrap());
        checkpoints.insert(parts[3].parse().unwrap(), Hash::from_hex(parts[4]).unwrap());
        if acked.len() >= ACKS_BEFORE_KILL {
            break;
        }
    }
    // SIGKILL, mid-write: the child's 32 writers are still submitting.
    child.kill().unwrap();
    child.wait().unwrap();

    let verifier = NoteSigner::from_skey(skey).unwrap().verifier();
    let anchored = Anchor::open(&anchor_path(dir), &verifier)
        .unwrap()
        .checkpoint()
        .unwrap()
        .checkpoint()
        .size;
    let newest = checkpoints.keys().max().copied().unwrap_or(0);
    assert!(
        anchored.get() >= newest,
        "round {round}: checkpoint {newest} was handed out but the anchor holds {anchored}"
    );

    let log = open_log(dir, skey, pg);
    let size = log.size();
    let root = log.checkpoint().checkpoint().root;
    for (&index, hash) in &acked {
        assert!(
            index < size.get(),
            "round {round}: acknowledged entry {index} lost (size {size})"
        );
        assert_eq!(
            log.leaf_hash(LeafIndex(index)).unwrap(),
            *hash,
            "entry {index}"
        );
    }
    for (&cp_size, cp_root) in &checkpoints {
        assert_eq!(
            log.root(TreeSize(cp_size)).unwrap(),
            *cp_root,
            "checkpoint {cp_size}"
        );
        if cp_size > 0 {
            log.consistency_proof(TreeSize(cp_size), size)
                .unwrap()
                .verify(cp_root, &root)
                .unwrap();
        }
    }
    let counter = u64::from_be_bytes(
        log.state_get(b"counter")
            .unwrap()
            .unwrap()
            .try_into()
            .unwrap(),
    );
    assert_eq!(
        counter,
        size.get(),
        "round {round}: state disagrees with the log"
    );
    let groups = log
        .state_range(GROUP_COUNT, Some(b"group/n0"), usize::MAX)
        .unwrap();
    let number = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().unwrap());
    for (key, members) in &groups {
        assert_eq!(
            number(members),
            u64::from(GROUP_SIZE),
            "round {round}: group {key:?} is in the log only in part"
        );
        let id = &key[GROUP_COUNT.len()..];
        let first = log.state_get(&[GROUP_FIRST, id].concat()).unwrap().unwrap();
        let last = log.state_get(&[GROUP_LAST, id].concat()).unwrap().unwrap();
        assert_eq!(
            number(&last) - number(&first) + 1,
            u64::from(GROUP_SIZE),
            "round {round}: group {key:?} is not at consecutive positions"
        );
    }
    assert!(!groups.is_empty(), "round {round}: no group was logged");
    log.fsck().unwrap();
    (acked.len(), checkpoints.len())
}

fn main() {
    if let (Ok(dir), Ok(skey)) = (std::env::var(CHILD_ENV), std::env::var(KEY_ENV)) {
        child(&dir, &skey, std::env::var(STORE_ENV).ok().as_deref());
        return;
    }
    let mut passed = 0;
    for (name, pg) in [
        ("sled", None),
        (
            "postgres",
            ledger::store::postgres::testing::fresh_database("crash on postgres"),
        ),
    ] {
        if name == "postgres" && pg.is_none() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let skey = conformance::test_signer().to_skey();
        let mut acks = 0;
        let mut checkpoints = 0;
        for round in 0..3 {
            let (a, c) = cycle(dir.path(), &skey, round, pg.as_deref());
            acks += a;
            checkpoints += c;
        }
        println!(
            "crash ({name}): 3 kill -9 cycles, {acks} acknowledged entries all present, \
             {checkpoints} checkpoints all consistent with the recovered tree"
        );
        passed += 1;
    }
    println!("{passed} passed, 0 failed");
}

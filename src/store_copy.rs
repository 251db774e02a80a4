//! `akashi store copy`: moves a stopped server's log from one store to another (the sled store
//! of a data dir to a PostgreSQL database, or back, or between databases) and proves the copy.
//!
//! The copy is record for record: every key and value of the source, in key order, in pages,
//! committed to the destination in transactions of bounded size. The source's records are only
//! read, never recovered or rewritten (it must hold a commit record; a PostgreSQL source's lease
//! is taken while it is read); the destination must be empty, and a copy that does not verify
//! is left there to be examined. Then the
//! copy is verified before the command says so: a second pass compares every record of both
//! stores byte for byte; the log opened on the copy (recovery runs there, on the copy) checks
//! every entry against its leaf hash, every full tile and the root against the last signed
//! checkpoint (`ledger::log::Log::fsck`); and when the keys' data dir has a checkpoint anchor,
//! the copy must reach the anchored checkpoint with the same root, as a server start requires.
//!
//! The data dir's other files are not copied: the signing and token keys and the checkpoint
//! anchor stay where they are, and the server is then started with the same data dir and the new
//! `--store` (see the README). The key vault goes where the log goes: a PostgreSQL source's vault
//! (a table of its database) is copied into the destination's, compared slot for slot; a sled
//! source's vault file stays in its data dir, and the first start on PostgreSQL moves it into
//! the database. Exit codes: 0 copied and verified, 2 the copy differs
//! or does not verify, 1 when the copy cannot run.

use std::{path::Path, process::ExitCode, sync::Arc};

use ledger::{
    anchor::Anchor,
    log::{Log, holds_committed_log},
    store::{PostgresStore, Store, postgres::vault::PostgresSlots},
    vault::KeyVault,
};

use crate::{keys, server};

/// Exit code for a copy that does not verify.
pub const EXIT_MISMATCH: u8 = 2;
/// Exit code for a copy that could not run.
pub const EXIT_ERROR: u8 = 1;

/// Records read per page.
const PAGE: usize = 1024;
/// Bytes written before the destination commits (a transaction on PostgreSQL).
const COMMIT_BYTES: usize = 32 << 20;

/// A store named on the command line: a data dir (its sled store) or a PostgreSQL URL.
fn open(spec: &str) -> Result<server::OpenedStore, String> {
    if ledger::store::postgres::is_postgres_url(spec) {
        server::open_store_watched(Path::new(""), Some(spec)).map_err(|e| e.to_string())
    } else {
        server::open_store_watched(Path::new(spec), None).map_err(|e| e.to_string())
    }
}

/// The key vault of a log on PostgreSQL moves with it: copied into the destination's vault (the
/// database's, or the destination data dir's file), which must hold no keys, and compared slot
/// for slot. A sled source's vault stays in its data dir: the first start on PostgreSQL moves it
/// into the database (`server::open_database_vault`). Returns what was done, for the summary.
fn copy_vault(
    source: Option<&Arc<PostgresStore>>,
    destination: Option<&Arc<PostgresStore>>,
    to: &str,
    log: &Log,
) -> Result<String, Failure> {
    let Some(source) = source else {
        return Ok(String::new());
    };
    let database = |store: &Arc<PostgresStore>| {
        KeyVault::with_slots(Box::new(PostgresSlots::new(store.clone())))
    };
    let from = database(source).map_err(|e| error(format_args!("the source's key vault: {e}")))?;
    let handed_out = crate::erasure::handed_out(log).map_err(error)?;
    if from.slots() < handed_out {
        return Err(error(format_args!(
            "the source database's key vault holds {} key slots, but its log has handed out \
             {handed_out}: its keys are still in a data dir's vault/ (a server started on the \
             database moves them in), or the vault is damaged; the destination holds the \
             copied records: empty it before copying again",
            from.slots()
        )));
    }
    let into = match destination {
        Some(store) => database(store),
        None => KeyVault::open(&Path::new(to).join(server::VAULT_DIR)),
    }
    .map_err(|e| error(format_args!("the destination's key vault: {e}")))?;
    let slots = from
        .copy_into(&into)
        .map_err(|e| error(format_args!("copying the key vault: {e}")))?;
    let same = from.slots() == into.slots()
        && from
            .is_prefix_of(&into)
            .map_err(|e| error(format_args!("comparing the key vaults: {e}")))?;
    if !same {
        return Err(Failure::Mismatch(
            "the copied key vault differs from the source's".to_owned(),
        ));
    }
    Ok(format!(
        "; the key vault's {slots} slots copied to {} and compared (the source keeps its own: \
         an erasure carried out on one does not reach the other, so drop the source once the \
         copy is in use)",
        into.location()
    ))
}

/// Copies `from` to `to` and verifies the copy with the checkpoint key of `keys_dir`.
pub fn run(from: &str, to: &str, keys_dir: &Path) -> ExitCode {
    match copy(from, to, keys_dir) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(Failure::Error(message)) => {
            eprintln!("akashi store copy: {message}");
            ExitCode::from(EXIT_ERROR)
        }
        Err(Failure::Mismatch(message)) => {
            eprintln!("akashi store copy: the copy does not verify: {message}");
            ExitCode::from(EXIT_MISMATCH)
        }
    }
}

enum Failure {
    Error(String),
    Mismatch(String),
}

fn error(message: impl std::fmt::Display) -> Failure {
    Failure::Error(message.to_string())
}

fn copy(from: &str, to: &str, keys_dir: &Path) -> Result<String, Failure> {
    if from == to {
        return Err(error("--from and --to name the same store"));
    }
    let signer = keys::load_checkpoint_signer(keys_dir).map_err(|e| {
        error(format_args!(
            "{e} (the checkpoint key verifies the copy: name the data dir that holds it with \
             --keys)"
        ))
    })?;
    let verifier = signer.verifier();
    let anchor = Anchor::open(&keys_dir.join(server::ANCHOR_FILE), &verifier)
        .map_err(|e| error(format_args!("the checkpoint anchor: {e}")))?;
    let anchored = anchor.checkpoint().map(|c| c.checkpoint().clone());
    let (source, source_postgres) =
        open(from).map_err(|e| error(format_args!("the source: {e}")))?;
    if !holds_committed_log(source.as_ref()).map_err(error)? {
        return Err(error("the source holds no committed log"));
    }
    let (destination, destination_postgres) =
        open(to).map_err(|e| error(format_args!("the destination: {e}")))?;
    if first_record(destination.as_ref())?.is_some() {
        return Err(error(
            "the destination is not empty: copy only into a new data dir or an empty database",
        ));
    }

    let (records, bytes) = copy_records(source.as_ref(), destination.as_ref())?;
    compare(source.as_ref(), destination.as_ref())?;
    let log = Log::open(destination, signer)
        .map_err(|e| Failure::Mismatch(format!("the copied log does not open: {e}")))?;
    let report = log
        .fsck()
        .map_err(|e| Failure::Mismatch(format!("the copied log is damaged: {e}")))?;
    let anchor_check = match &anchored {
        Some(anchored) => {
            let reaches = anchored.size <= log.size()
                && log
                    .root(anchored.size)
                    .is_ok_and(|root| root == anchored.root);
            if !reaches {
                return Err(Failure::Mismatch(format!(
                    "the copy (size {}) does not reach the anchored checkpoint (size {}) with \
                     its root: the source is older than the log this data dir acknowledged",
                    log.size(),
                    anchored.size
                )));
            }
            format!(
                "; it reaches the anchored checkpoint (size {})",
                anchored.size
            )
        }
        None => "; the keys' data dir has no checkpoint anchor to compare with".to_owned(),
    };
    let vault_check = copy_vault(
        source_postgres.as_ref(),
        destination_postgres.as_ref(),
        to,
        &log,
    )?;
    Ok(format!(
        "copied {records} records ({bytes} bytes); verified: every record equal, {} entries and \
         {} full tiles checked, root {} matches the newest signed checkpoint (size \
         {}){anchor_check}{vault_check}",
        report.leaves,
        report.full_tiles,
        report.root,
        log.checkpoint().checkpoint().size
    ))
}

/// The log's keys are all printable: everything sorts below 0xff.
const END: &[u8] = b"\xff";

fn first_record(store: &dyn Store) -> Result<Option<Vec<u8>>, Failure> {
    Ok(store
        .scan(b"", END, 1)
        .map_err(error)?
        .into_iter()
        .next()
        .map(|(k, _)| k))
}

/// Every record, page by page, committed every [`COMMIT_BYTES`] and at the end.
fn copy_records(source: &dyn Store, destination: &dyn Store) -> Result<(u64, u64), Failure> {
    let (mut records, mut bytes, mut unsynced) = (0_u64, 0_u64, 0_usize);
    let mut start = Vec::new();
    loop {
        let page = source.scan(&start, END, PAGE).map_err(error)?;
        let Some((last, _)) = page.last() else { break };
        start = successor(last);
        for (key, value) in &page {
            destination.put(key, value).map_err(error)?;
            records += 1;
            let size = key.len() + value.len();
            bytes += size as u64;
            unsynced += size;
        }
        if unsynced >= COMMIT_BYTES {
            destination.sync().map_err(error)?;
            unsynced = 0;
        }
        if page.len() < PAGE {
            break;
        }
    }
    destination.sync().map_err(error)?;
    Ok((records, bytes))
}

/// Both stores hold exactly the same records.
fn compare(source: &dyn Store, destination: &dyn Store) -> Result<(), Failure> {
    let mut start = Vec::new();
    loop {
        let left = source.scan(&start, END, PAGE).map_err(error)?;
        let right = destination.scan(&start, END, PAGE).map_err(error)?;
        for (a, b) in left.iter().zip(&right) {
            if a.0 != b.0 || *a.1 != *b.1 {
                return Err(Failure::Mismatch(format!(
                    "record {} differs",
                    String::from_utf8_lossy(&a.0)
                )));
            }
        }
        if left.len() != right.len() {
            return Err(Failure::Mismatch(
                "the stores hold different numbers of records".to_owned(),
            ));
        }
        match left.last() {
            Some((last, _)) if left.len() == PAGE => start = successor(last),
            _ => return Ok(()),
        }
    }
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

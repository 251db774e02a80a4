//! `akashi fsck`: checks a stopped server's data dir through the same open path the server
//! uses (store, checkpoint anchor, last signed checkpoint), then every entry against its leaf
//! hash, every full tile and the root (`ledger::log::Log::fsck`), and prints a summary or the
//! first problem with the first bad entry when one is known.
//!
//! Exit codes, as `akashi-audit`'s: 0 intact, 2 damaged, 1 when the check cannot run (no key, a
//! store held by a running server, an I/O error). Opening the log recovers as a start would
//! (an unacknowledged batch is dropped, an old data dir gets its anchor); it never repairs
//! damage. It does not read or check private bodies or derived state.

use std::{fmt::Display, path::Path, process::ExitCode};

use ledger::{
    anchor::AnchorError,
    log::{FsckError, OpenError, ReadError},
    store::StoreError,
};

use crate::{error::StartError, keys, server};

/// Exit code for a damaged data dir.
pub const EXIT_DAMAGED: u8 = 2;
/// Exit code for a check that could not run.
pub const EXIT_ERROR: u8 = 1;

/// Checks the log of `data_dir` (in the sled store there, or in the PostgreSQL database
/// `store` names), printing a summary to stdout or the problem to stderr.
pub fn run(data_dir: &Path, store: Option<&str>) -> ExitCode {
    match check(data_dir, store) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("akashi fsck: {}", problem.message);
            if let Some(index) = problem.first_bad_entry {
                eprintln!("first bad entry: {index}");
            }
            ExitCode::from(if problem.damaged {
                EXIT_DAMAGED
            } else {
                EXIT_ERROR
            })
        }
    }
}

struct Problem {
    message: String,
    first_bad_entry: Option<u64>,
    damaged: bool,
}

impl Problem {
    fn error(message: impl Display) -> Self {
        Self {
            message: message.to_string(),
            first_bad_entry: None,
            damaged: false,
        }
    }

    fn damage(message: impl Display, first_bad_entry: Option<u64>) -> Self {
        Self {
            message: message.to_string(),
            first_bad_entry,
            damaged: true,
        }
    }
}

fn check(data_dir: &Path, store: Option<&str>) -> Result<String, Problem> {
    let signer = keys::load_checkpoint_signer(data_dir).map_err(Problem::error)?;
    let no_log = || Problem::error(format_args!("`{}` holds no log", data_dir.display()));
    // An empty sled folder is not opened: opening it would create a store.
    if store.is_none() && !sled_folder_used(data_dir).map_err(Problem::error)? {
        return Err(no_log());
    }
    let opened = server::open_store_watched(data_dir, store).and_then(|(opened, postgres)| {
        if server::holds_log(data_dir, opened.as_ref())? {
            server::open_log(data_dir, opened, postgres.as_ref(), signer).map(Some)
        } else {
            Ok(None)
        }
    });
    let log = opened.map_err(|err| match &err {
        StartError::LedgerStore(store) if !store_damaged(store) => Problem::error(&err),
        StartError::LedgerOpen(open) if !open_damaged(open) => Problem::error(&err),
        StartError::LedgerOpen(open) => Problem::damage(&err, open.first_bad_entry()),
        _ => Problem::damage(&err, None),
    })?;
    let log = log.ok_or_else(no_log)?;
    let report = log.fsck().map_err(|err| match &err {
        FsckError::Entry { index } => Problem::damage(&err, Some(*index)),
        FsckError::Read(ReadError::Store(store)) if !store_damaged(store) => Problem::error(&err),
        _ => Problem::damage(&err, None),
    })?;
    let checkpoint = log.checkpoint();
    let anchored = report
        .anchored_size
        .map_or_else(|| "none".to_owned(), |size| size.to_string());
    Ok(format!(
        "ok: {} entries and {} full tiles checked; root {} matches the last signed checkpoint \
         (size {}) and the anchored checkpoint (size {anchored})",
        report.leaves,
        report.full_tiles,
        report.root,
        checkpoint.checkpoint().size,
    ))
}

/// Whether a store error means damaged files rather than a check that could not run.
fn store_damaged(err: &StoreError) -> bool {
    matches!(err, StoreError::Corrupt)
}

/// Whether an open error means a damaged or rolled-back data dir.
fn open_damaged(err: &OpenError) -> bool {
    match err {
        OpenError::Store(store) => store_damaged(store),
        OpenError::Anchor(AnchorError::Io { .. }) => false,
        _ => true,
    }
}

/// Whether the data dir has a checkpoint anchor or a non-empty sled folder.
fn sled_folder_used(data_dir: &Path) -> std::io::Result<bool> {
    if data_dir.join(server::ANCHOR_FILE).try_exists()? {
        return Ok(true);
    }
    match std::fs::read_dir(data_dir.join(server::LEDGER_DIR)) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

//! The server's side of safe policy changes: analysing a candidate set against the logged
//! decisions (`PolicyService/AnalyzePolicySet`) and the two-person rule (`ApprovePolicySet`).
//!
//! An analysis replays the log from its first entry into a fresh in-memory state with
//! [`policy::whatif::LogAnalysis`] and re-decides every logged decision of the window with the
//! candidate ([`policy::whatif::Analyzer`]: the same counting `akashi-audit policy-diff` runs on
//! the regulator's replay, so the two compute the same analysis id). The server does not
//! re-decide the logged decisions with the sets that made them; that check is the auditor's. Decisions read the state as it was when they were
//! made, so nothing shorter than a replay from the start gives the right facts; its cost grows
//! with the log (time with the entries, memory with the patients and directory records), which is
//! why one analysis runs at a time, off the async threads. [`Review`] remembers the analyses this
//! server made, so that an approval names one it really made for that set; an approval after a
//! restart needs a fresh analysis.
//!
//! This module does not sequence anything; the service submits proposals and approvals.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ledger::{
    chunk::Record,
    entry::Body,
    hash::LeafIndex,
    log::{Log, MAX_LEAVES_PER_READ},
};
use policy::{
    decision::PolicySetHash,
    domain::Timestamp,
    engine::PolicyEngine,
    event::Event,
    whatif::{Analysis, AnalysisId, Analyzer, LogAnalysis, WindowStart},
};
use tokio::sync::Semaphore;

use crate::config::PolicyApproval;
use crate::error::Error;

/// How many analyses a server remembers for approvals (the oldest is forgotten first).
pub const REMEMBERED_ANALYSES: usize = 64;

/// Pages of decoded events read ahead of the replay.
const PAGES_AHEAD: usize = 4;

/// Milliseconds in a day.
const DAY_MILLIS: i64 = 86_400_000;

/// Where the window of an analysis starts, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Every decision in the log.
    All,
    /// The decisions among the last this many entries.
    LastEntries(u64),
    /// From the first decision logged in the last this many days.
    Days(u32),
    /// From this leaf index.
    FromIndex(u64),
}

/// An analysis this server made, as an approval may name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    /// Its id.
    pub id: AnalysisId,
    /// The candidate's hash.
    pub candidate: PolicySetHash,
    /// The window's first leaf index.
    pub from: u64,
    /// The window's end (exclusive).
    pub to: u64,
}

/// The two-person rule in force, the analyses made, and the one-at-a-time gate.
#[derive(Debug)]
pub struct Review {
    approval: PolicyApproval,
    running: Arc<Semaphore>,
    made: Mutex<VecDeque<Made>>,
}

impl Review {
    /// A review under `approval`.
    pub fn new(approval: PolicyApproval) -> Self {
        Self {
            approval,
            running: Arc::new(Semaphore::new(1)),
            made: Mutex::new(VecDeque::with_capacity(REMEMBERED_ANALYSES)),
        }
    }

    /// Who must agree before a policy set takes effect.
    pub fn approval(&self) -> PolicyApproval {
        self.approval
    }

    /// Analyses `candidate` over `window` of `log`'s committed entries, on a blocking thread,
    /// and remembers the result for approvals.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while another analysis runs; [`Error::FailedPrecondition`] when an entry
    /// has no body (erased) or the log does not replay; [`Error::Unavailable`] when the store
    /// cannot be read.
    pub async fn analyze(
        &self,
        log: Arc<Log>,
        candidate: PolicyEngine,
        window: Window,
    ) -> Result<Analysis, Error> {
        // The permit goes with the replay itself: a caller that gives up does not free it
        // while the replay still runs.
        let permit = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy("another policy analysis is running"))?;
        let analysis = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            analyze(&log, candidate, window)
        })
        .await
        .map_err(|_| Error::Internal("the policy analysis task failed"))??;
        let made = Made {
            id: analysis.id(),
            candidate: analysis.candidate,
            from: analysis.from_index,
            to: analysis.to_index,
        };
        let mut remembered = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if !remembered.contains(&made) {
            if remembered.len() == REMEMBERED_ANALYSES {
                remembered.pop_front();
            }
            remembered.push_back(made);
        }
        Ok(analysis)
    }

    /// The analysis `id` this server made of `candidate`, if it remembers one.
    pub fn made(&self, id: AnalysisId, candidate: PolicySetHash) -> Option<Made> {
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|made| made.id == id && made.candidate == candidate)
            .copied()
    }
}

/// Replays `log` up to its committed size with an analysis of `candidate` over `window`.
/// Blocking: it reads every body of the log.
///
/// # Errors
///
/// As [`Review::analyze`].
pub fn analyze(log: &Log, candidate: PolicyEngine, window: Window) -> Result<Analysis, Error> {
    let size = log.size().get();
    let start = match window {
        Window::All => WindowStart::Index(0),
        Window::LastEntries(n) => WindowStart::Index(size.saturating_sub(n)),
        Window::FromIndex(index) => WindowStart::Index(index),
        Window::Days(days) => {
            let now = Timestamp::now().unix_millis();
            let since = now.saturating_sub(i64::from(days).saturating_mul(DAY_MILLIS));
            WindowStart::Since(
                Timestamp::from_unix_millis(since.max(0))
                    .ok_or(Error::Internal("the clock is outside 1970-9999"))?,
            )
        }
    };
    let mut replay = LogAnalysis::new(Analyzer::new(candidate, start, Some(size)));
    // Two stages, so that they overlap: this thread replays while a scoped one reads and decodes
    // the next pages of bodies.
    std::thread::scope(|scope| {
        let (pages_tx, pages) =
            std::sync::mpsc::sync_channel::<Vec<(u64, Option<Event>)>>(PAGES_AHEAD);
        let reader = scope.spawn(move || read_events(log, size, &pages_tx));
        // Once a body was erased, an event about a patient may refer to what it held (a
        // revocation of an erased grant): such an event is left out of the analysis, which
        // then judges that patient's later decisions without the erased entries.
        let mut erased_seen = false;
        for page in pages {
            for (index, event) in page {
                let Some(event) = event else {
                    erased_seen = true;
                    continue;
                };
                match replay.step(index, &event) {
                    Ok(()) => {}
                    Err(err) if erased_seen && event.subject().is_some() => {
                        tracing::debug!(index, cause = %err, "an event after an erasure is left out");
                    }
                    Err(err) => {
                        tracing::error!(cause = %err, "the log does not replay");
                        return Err(Error::FailedPrecondition(format!(
                            "the log does not replay at entry {index}: {err}"
                        )));
                    }
                }
            }
        }
        reader
            .join()
            .map_err(|_| Error::Internal("the log reader of an analysis failed"))?
    })?;
    Ok(replay.finish(size))
}

/// Reads and decodes the events of entries `0..size` of `log`, a page at a time, into `pages`
/// (until the receiver hangs up).
fn read_events(
    log: &Log,
    size: u64,
    pages: &std::sync::mpsc::SyncSender<Vec<(u64, Option<Event>)>>,
) -> Result<(), Error> {
    let mut next = 0u64;
    while next < size {
        let bodies = log.bodies(LeafIndex(next), (size - next).min(MAX_LEAVES_PER_READ))?;
        if bodies.is_empty() {
            return Err(Error::Internal("the log served no bodies below its size"));
        }
        let mut page = Vec::with_capacity(bodies.len());
        for body in bodies {
            let index = next;
            next += 1;
            let Record::Present(bytes) = body else {
                page.push((index, None));
                continue;
            };
            let event = Body::decode(&bytes)
                .ok()
                .and_then(|body| Event::from_json(&body.payload).ok())
                .ok_or(Error::Internal("a logged body does not decode"))?;
            page.push((index, Some(event)));
        }
        if pages.send(page).is_err() {
            break;
        }
    }
    Ok(())
}

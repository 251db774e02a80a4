//! Streaming a whole log in order, as a regulator does: every leaf into a [`CompactRange`] to
//! recompute the tree, every signed checkpoint compared with the recomputed root at its size,
//! every leaf decoded, every body checked against its leaf's commitment. Memory stays flat in
//! the log's size: O(log n) hashes, plus the checkpoints handed in but not reached yet.
//!
//! Checking that every checkpoint's root is the root of the entries at its size also shows that
//! the checkpoints are consistent with each other and with the final tree: they are all prefixes
//! of one sequence of leaves, so no separate consistency proof is needed.
//!
//! This module does not fetch anything and does not know what bodies mean: `replay` decodes
//! events and re-decides decisions on top of what [`LogScan::push`] returns.

use std::collections::BTreeMap;

use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    entry::{BODY_NONCE_LEN, Day, Leaf, verify_commitment},
    hash::{Hash, LeafIndex, TreeSize, hash_leaf},
    note::NoteVerifier,
};

use crate::compact::CompactRange;
use crate::report::{Finding, Report, error_chain};

/// The most checkpoints waiting for the scan to reach their size.
pub const MAX_PENDING_CHECKPOINTS: usize = 1 << 16;

/// A log being scanned.
#[derive(Debug)]
pub struct LogScan {
    verifier: NoteVerifier,
    range: CompactRange,
    /// Roots of verified checkpoints whose size the scan has not reached, by size.
    pending: BTreeMap<u64, Vec<Hash>>,
    pending_count: usize,
    /// How many checkpoint notes were handed in.
    listed: u64,
    /// The latest leaf day so far, and the entry that has it.
    latest_day: Option<(u64, Day)>,
    report: Report,
}

/// An entry whose leaf decoded and whose body matches the leaf's commitment.
#[derive(Debug)]
pub struct CheckedEntry<'a> {
    /// The entry's position.
    pub index: LeafIndex,
    /// The decoded public leaf.
    pub leaf: Leaf,
    /// The body's payload (without the nonce).
    pub payload: &'a [u8],
}

impl LogScan {
    /// A scan at the start of the log whose checkpoints `verifier` signs.
    pub fn new(verifier: NoteVerifier) -> Self {
        Self {
            verifier,
            range: CompactRange::new(),
            pending: BTreeMap::new(),
            pending_count: 0,
            listed: 0,
            latest_day: None,
            report: Report::default(),
        }
    }

    /// How many entries have been pushed: the size of the recomputed tree.
    pub fn size(&self) -> TreeSize {
        self.range.size()
    }

    /// Hands in a signed checkpoint note of the log. One at the current size is compared at once,
    /// a larger one when the scan reaches its size. A note that does not verify is a finding.
    ///
    /// # Errors
    ///
    /// [`ScanError::LateCheckpoint`] for a size the scan has passed (hand checkpoints in before
    /// the entries that reach them), [`ScanError::TooManyPending`].
    pub fn add_checkpoint(&mut self, note: &str) -> Result<(), ScanError> {
        self.add_signed_checkpoint(note).map(|_| ())
    }

    /// As [`LogScan::add_checkpoint`], and returns the checkpoint when its signature verified
    /// (none when it did not: that is a finding), for checks of its extension lines.
    ///
    /// # Errors
    ///
    /// As [`LogScan::add_checkpoint`].
    pub fn add_signed_checkpoint(&mut self, note: &str) -> Result<Option<Checkpoint>, ScanError> {
        let position = self.listed;
        self.listed = self.listed.saturating_add(1);
        let checkpoint = match SignedCheckpoint::verify(note, &self.verifier) {
            Ok(signed) => signed.into_checkpoint(),
            Err(err) => {
                self.report.add(Finding::BadCheckpoint {
                    position,
                    error: error_chain(&err),
                });
                return Ok(None);
            }
        };
        let (size, current) = (checkpoint.size, self.size());
        if size < current {
            return Err(ScanError::LateCheckpoint { size, current });
        }
        if size == current {
            self.compare(size, &checkpoint.root);
            return Ok(Some(checkpoint));
        }
        if self.pending_count >= MAX_PENDING_CHECKPOINTS {
            return Err(ScanError::TooManyPending {
                max: MAX_PENDING_CHECKPOINTS,
            });
        }
        self.pending
            .entry(size.get())
            .or_default()
            .push(checkpoint.root);
        self.pending_count += 1;
        Ok(Some(checkpoint))
    }

    /// Pushes the entry at `index` (the next one): its leaf bytes and its body, or none when the
    /// body was erased. Returns the entry when its leaf decodes and its body matches; otherwise
    /// the problem is recorded as a finding and none is returned.
    ///
    /// # Errors
    ///
    /// [`ScanError::OutOfOrder`] when `index` is not the next position.
    pub fn push<'a>(
        &mut self,
        index: LeafIndex,
        leaf: &[u8],
        body: Option<&'a [u8]>,
    ) -> Result<Option<CheckedEntry<'a>>, ScanError> {
        let expected = LeafIndex(self.size().get());
        if index != expected {
            return Err(ScanError::OutOfOrder {
                expected,
                got: index,
            });
        }
        self.range.push(hash_leaf(leaf));
        self.report.entries = self.report.entries.saturating_add(1);
        let size = self.size();
        if let Some(roots) = self.pending.remove(&size.get()) {
            self.pending_count -= roots.len();
            for root in roots {
                self.compare(size, &root);
            }
        }
        let decoded = match Leaf::decode(leaf) {
            Ok(decoded) => decoded,
            Err(err) => {
                self.report.add(Finding::BadLeaf {
                    index: index.get(),
                    error: error_chain(&err),
                });
                return Ok(None);
            }
        };
        // Entries are dated by their sequencing time, which never goes backwards (the server's
        // clock starts at the newest entry's day): an earlier day than one before it means the
        // entry was backdated, or the log reordered.
        match self.latest_day {
            Some((previous, day)) if decoded.day < day => {
                self.report.add(Finding::DayNotAscending {
                    index: index.get(),
                    day: decoded.day.to_string(),
                    previous,
                    previous_day: day.to_string(),
                });
            }
            Some((_, day)) if decoded.day == day => {}
            _ => self.latest_day = Some((index.get(), decoded.day)),
        }
        let Some(body) = body else {
            self.report.redacted = self.report.redacted.saturating_add(1);
            return Ok(None);
        };
        if verify_commitment(&decoded, body).is_err() {
            self.report
                .add(Finding::BadCommitment { index: index.get() });
            return Ok(None);
        }
        Ok(Some(CheckedEntry {
            index,
            leaf: decoded,
            payload: body.get(BODY_NONCE_LEN..).unwrap_or_default(),
        }))
    }

    /// Records a finding made on top of the scan.
    pub fn add_finding(&mut self, finding: Finding) {
        self.report.add(finding);
    }

    /// The report so far, to add counts to.
    pub fn report_mut(&mut self) -> &mut Report {
        &mut self.report
    }

    /// Ends the scan: checkpoints beyond the entries become findings, and the report gets the
    /// recomputed tree.
    pub fn finish(mut self) -> Report {
        let entries = self.size().get();
        for (size, roots) in std::mem::take(&mut self.pending) {
            for _ in roots {
                self.report
                    .add(Finding::CheckpointBeyondLog { size, entries });
            }
        }
        self.report.tree_size = entries;
        self.report.root = self.range.root().to_hex();
        self.report
    }

    fn compare(&mut self, size: TreeSize, signed_root: &Hash) {
        self.report.checkpoints_checked = self.report.checkpoints_checked.saturating_add(1);
        let recomputed = self.range.root();
        if recomputed != *signed_root {
            self.report.add(Finding::CheckpointMismatch {
                size: size.get(),
                signed_root: signed_root.to_hex(),
                recomputed_root: recomputed.to_hex(),
            });
        }
    }
}

/// Why a scan cannot go on: the caller handed in entries or checkpoints out of order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A checkpoint came after the scan had passed its size.
    #[error("checkpoint at size {size} arrived after the scan passed it (at size {current})")]
    LateCheckpoint {
        /// The checkpoint's size.
        size: TreeSize,
        /// The scan's size.
        current: TreeSize,
    },
    /// An entry is not the next one.
    #[error("expected entry {expected}, got entry {got}")]
    OutOfOrder {
        /// The next position.
        expected: LeafIndex,
        /// The entry's position.
        got: LeafIndex,
    },
    /// Too many checkpoints are waiting to be reached.
    #[error("more than {max} checkpoints ahead of the entries")]
    TooManyPending {
        /// The limit.
        max: usize,
    },
}

#[cfg(test)]
mod tests;

//! The client's witness policy: a checkpoint counts only if at least K of the given witnesses
//! cosigned it (c2sp.org/tlog-cosignature). With it, a log cannot show a verifier a checkpoint
//! (a split view) that those witnesses did not also see and check for consistency.
//!
//! This module checks one note; where the note comes from (a receipt, a `tlog-proof`, a log's
//! `/checkpoint`) is the caller's business.

use ledger::{
    cosignature::{CosignatureError, WitnessVerifier, WitnessedCheckpoint},
    note::NoteVerifier,
};

/// The witnesses a verifier trusts and how many of them must have cosigned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessPolicy {
    /// The trusted witnesses' keys.
    pub witnesses: Vec<WitnessVerifier>,
    /// How many of them must have cosigned (0: the policy asks nothing).
    pub quorum: usize,
}

impl WitnessPolicy {
    /// Whether the policy asks for any cosignature.
    pub fn is_required(&self) -> bool {
        self.quorum > 0
    }

    /// Verifies the log's signature on `note` and that at least `quorum` of the witnesses
    /// validly cosigned it; other signature lines are ignored.
    ///
    /// # Errors
    ///
    /// Any error of [`WitnessedCheckpoint::verify`] (a cosignature by a trusted witness that does
    /// not verify is an error, not a missing vote), and [`CosignatureError::NoQuorum`].
    pub fn check(
        &self,
        log: &NoteVerifier,
        note: &str,
    ) -> Result<WitnessedCheckpoint, CosignatureError> {
        let witnessed = WitnessedCheckpoint::verify(note, log, &self.witnesses)?;
        witnessed.require_quorum(self.quorum)?;
        Ok(witnessed)
    }
}

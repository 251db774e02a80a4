//! A witness's trust in a log: the last checkpoint it accepted, and the one rule for moving on
//! from it. A newer checkpoint is accepted only with a consistency proof from the trusted one
//! (RFC 9162 §2.1.4), so the log can never take back or rewrite what it showed once. A smaller
//! checkpoint is a *rollback*; the same size with another root, or a proof that does not connect
//! the two, is a *fork*. Either is reported with both sizes and both roots.
//!
//! The state is a small text file holding the trusted signed checkpoint note verbatim; it is
//! verified again with the log key whenever it is loaded.
//!
//! This module does not fetch checkpoints or proofs and does not write files: the caller does,
//! and saves [`Witness::state_text`] after every [`Witness::advance`] that returns `Ok`.

use ledger::{
    checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint},
    hash::{Hash, TreeSize, empty_root},
    note::NoteVerifier,
    proof::{ConsistencyProof, ProofError},
};

/// What accepting a new checkpoint did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advance {
    /// Nothing was trusted yet: the checkpoint is trusted on its signature alone.
    First {
        /// Its size.
        size: TreeSize,
    },
    /// The log grew, and the consistency proof connects the two checkpoints.
    Grown {
        /// The previously trusted size.
        from: TreeSize,
        /// The new trusted size.
        to: TreeSize,
    },
    /// The same size and root as the trusted checkpoint.
    Unchanged {
        /// The size.
        size: TreeSize,
    },
}

/// A witness: the log key, and the checkpoint trusted so far.
#[derive(Clone, Debug)]
pub struct Witness {
    verifier: NoteVerifier,
    trusted: Option<SignedCheckpoint>,
}

impl Witness {
    /// A witness that trusts nothing yet.
    pub fn new(verifier: NoteVerifier) -> Self {
        Self {
            verifier,
            trusted: None,
        }
    }

    /// A witness that trusts the checkpoint in a state file's text.
    ///
    /// # Errors
    ///
    /// [`TrustError::BadState`] when the text is not a checkpoint signed by the log key.
    pub fn with_state(verifier: NoteVerifier, state: &str) -> Result<Self, TrustError> {
        let trusted = SignedCheckpoint::verify(state, &verifier).map_err(TrustError::BadState)?;
        Ok(Self {
            verifier,
            trusted: Some(trusted),
        })
    }

    /// The log's key.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The trusted checkpoint, if any.
    pub fn trusted(&self) -> Option<&SignedCheckpoint> {
        self.trusted.as_ref()
    }

    /// What to save in the state file: the trusted note, verbatim.
    pub fn state_text(&self) -> Option<&str> {
        self.trusted.as_ref().map(|t| t.note())
    }

    /// Verifies a checkpoint note fetched from the log.
    ///
    /// # Errors
    ///
    /// [`TrustError::BadCheckpoint`] when it is malformed or not signed by the log key.
    pub fn verify_note(&self, note: &str) -> Result<SignedCheckpoint, TrustError> {
        SignedCheckpoint::verify(note, &self.verifier).map_err(TrustError::BadCheckpoint)
    }

    /// The consistency proof to ask the log for before [`Witness::advance`] can accept `new`:
    /// `(trusted size, new size)`, or none when no proof is needed (nothing or the empty tree is
    /// trusted, or `new` is not larger).
    pub fn proof_needed(&self, new: &Checkpoint) -> Option<(TreeSize, TreeSize)> {
        let trusted = &self.trusted.as_ref()?.checkpoint();
        (trusted.size.get() > 0 && new.size > trusted.size).then_some((trusted.size, new.size))
    }

    /// Accepts `new` (already verified with [`Witness::verify_note`]) if it is consistent with the
    /// trusted checkpoint, given the consistency proof that [`Witness::proof_needed`] named.
    /// On any error the trusted checkpoint stays as it was.
    ///
    /// # Errors
    ///
    /// [`TrustError::Rollback`] and [`TrustError::Fork`] (the log is inconsistent),
    /// [`TrustError::MissingProof`] when a needed proof was not given or is for other sizes.
    pub fn advance(
        &mut self,
        new: SignedCheckpoint,
        proof: Option<&ConsistencyProof>,
    ) -> Result<Advance, TrustError> {
        let next = &new.checkpoint();
        if next.size.get() == 0 && next.root != empty_root() {
            return Err(TrustError::Fork(Disagreement::new(next, next, None)));
        }
        let Some(trusted) = &self.trusted else {
            let size = next.size;
            self.trusted = Some(new);
            return Ok(Advance::First { size });
        };
        let old = &trusted.checkpoint();
        let advance = if next.size < old.size {
            return Err(TrustError::Rollback(Disagreement::new(old, next, None)));
        } else if next.size == old.size {
            if next.root != old.root {
                return Err(TrustError::Fork(Disagreement::new(old, next, None)));
            }
            Advance::Unchanged { size: old.size }
        } else if old.size.get() == 0 {
            // Every tree extends the empty tree: there is nothing to prove.
            Advance::Grown {
                from: old.size,
                to: next.size,
            }
        } else {
            let proof = proof
                .filter(|p| p.old_size == old.size && p.new_size == next.size)
                .ok_or(TrustError::MissingProof {
                    old: old.size,
                    new: next.size,
                })?;
            proof
                .verify(&old.root, &next.root)
                .map_err(|err| TrustError::Fork(Disagreement::new(old, next, Some(err))))?;
            Advance::Grown {
                from: old.size,
                to: next.size,
            }
        };
        self.trusted = Some(new);
        Ok(advance)
    }
}

/// Two checkpoints that cannot both be true of one append-only log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// The trusted checkpoint's size.
    pub trusted_size: TreeSize,
    /// The trusted checkpoint's root.
    pub trusted_root: Hash,
    /// The new checkpoint's size.
    pub new_size: TreeSize,
    /// The new checkpoint's root.
    pub new_root: Hash,
    /// Why the consistency proof failed, when one was checked.
    pub proof_error: Option<ProofError>,
}

impl Disagreement {
    fn new(trusted: &Checkpoint, new: &Checkpoint, proof_error: Option<ProofError>) -> Self {
        Self {
            trusted_size: trusted.size,
            trusted_root: trusted.root,
            new_size: new.size,
            new_root: new.root,
            proof_error,
        }
    }
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trusted size {} root {}, new size {} root {}",
            self.trusted_size, self.trusted_root, self.new_size, self.new_root
        )?;
        if let Some(err) = self.proof_error {
            write!(f, "; consistency proof: {err}")?;
        }
        Ok(())
    }
}

/// Why a checkpoint was not accepted. [`TrustError::is_inconsistency`] tells the verdicts (the log
/// showed something it cannot take back) from errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A fetched checkpoint is malformed or not signed by the log key.
    #[error("checkpoint does not verify")]
    BadCheckpoint(#[source] CheckpointError),
    /// The state file does not hold a checkpoint signed by the log key.
    #[error("trusted state is not a checkpoint signed by this key")]
    BadState(#[source] CheckpointError),
    /// Two checkpoints of the log contradict each other: the same size with different roots, or
    /// a larger tree that does not extend the trusted one.
    #[error("fork: {0}")]
    Fork(Disagreement),
    /// A consistency proof was needed and not given.
    #[error("no consistency proof from size {old} to size {new}")]
    MissingProof {
        /// The trusted size.
        old: TreeSize,
        /// The new size.
        new: TreeSize,
    },
    /// The log shows a smaller tree than one it showed before.
    #[error("rollback: {0}")]
    Rollback(Disagreement),
}

impl TrustError {
    /// True for a fork, a rollback or a badly signed checkpoint: evidence against the log
    /// (exit 2). False for what could not be checked (exit 1).
    pub fn is_inconsistency(&self) -> bool {
        match self {
            Self::BadCheckpoint(_) | Self::Fork(_) | Self::Rollback(_) => true,
            Self::BadState(_) | Self::MissingProof { .. } => false,
        }
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> crate::exit::AuditExitCode {
        if self.is_inconsistency() {
            crate::exit::AuditExitCode::Invalid
        } else {
            crate::exit::AuditExitCode::Error
        }
    }
}

#[cfg(test)]
mod tests;

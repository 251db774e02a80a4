//! A witness's rules (c2sp.org/tlog-witness `add-checkpoint`): what it checks before it
//! cosigns a checkpoint of the one log it follows, and which answer each refusal gets.
//!
//! [`Cosigner::add_checkpoint`] checks a request body, has the caller make the accepted
//! checkpoint durable, and only then records it and returns the cosignature line. It takes
//! `&mut self`: behind the caller's one lock, checking the old size and storing the new
//! checkpoint are a single step (the spec's rollback race cannot happen), and the answer is
//! given only after the store is durable. [`Cosigner::check`] decides without changing anything.
//!
//! Moving from the last cosigned checkpoint to a new one follows [`crate::trust`]: a consistency
//! proof from the old size, the same root at the same size. A checkpoint that contradicts the
//! one cosigned (same size and another root, or a proof that does not connect them) comes back
//! as [`Refusal`] with [`Evidence`]: both checkpoints, as signed by the log, and the proof.
//!
//! This module does no I/O and reads no clock (the `akashi-audit witness` command does both).

use ledger::{
    checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint},
    cosignature::{CosignatureError, WitnessSigner},
    hash::{Hash, TreeSize},
    note::{NoteSignature, NoteVerifier, parse_note},
    proof::ConsistencyProof,
    witness::{AddCheckpoint, WitnessProtocolError},
};

use crate::trust::{Advance, TrustError, Witness};

/// A witness of one log: its key, the log's key, and the latest checkpoint it cosigned.
#[derive(Debug)]
pub struct Cosigner {
    signer: WitnessSigner,
    trust: Witness,
}

/// A checkpoint that passed every check, about to be stored.
#[derive(Clone, Debug)]
pub struct Accepted {
    next: Witness,
    checkpoint: SignedCheckpoint,
    advance: Advance,
}

impl Accepted {
    /// The checkpoint as the log signed it (the request's note, verbatim).
    pub fn checkpoint(&self) -> &SignedCheckpoint {
        &self.checkpoint
    }

    /// How it moves on from the last cosigned checkpoint.
    pub fn advance(&self) -> Advance {
        self.advance
    }

    /// What to store as the witness's state: the checkpoint note, verbatim.
    pub fn state_text(&self) -> &str {
        self.checkpoint.note()
    }
}

impl Cosigner {
    /// A witness of the log whose key is `log` that has cosigned nothing yet.
    pub fn new(signer: WitnessSigner, log: NoteVerifier) -> Self {
        Self {
            signer,
            trust: Witness::new(log),
        }
    }

    /// A witness whose last cosigned checkpoint is the note `state` (a state file's text).
    ///
    /// # Errors
    ///
    /// [`TrustError::BadState`] when `state` is not a checkpoint signed by `log`.
    pub fn with_state(
        signer: WitnessSigner,
        log: NoteVerifier,
        state: &str,
    ) -> Result<Self, TrustError> {
        Ok(Self {
            signer,
            trust: Witness::with_state(log, state)?,
        })
    }

    /// The size of the latest cosigned checkpoint (0 when none).
    pub fn latest_size(&self) -> TreeSize {
        self.trust
            .trusted()
            .map_or(TreeSize(0), |t| t.checkpoint().size)
    }

    /// The latest cosigned checkpoint.
    pub fn latest(&self) -> Option<&SignedCheckpoint> {
        self.trust.trusted()
    }

    /// Checks an `add-checkpoint` request body against the spec's rules, in its order: the
    /// body's syntax, the origin, the log's signature, the old size, then the consistency
    /// proof. Changes nothing.
    ///
    /// # Errors
    ///
    /// A [`Refusal`]; [`Refusal::status`] is the HTTP status to answer with.
    pub fn check(&self, body: &[u8]) -> Result<Accepted, Refusal> {
        let request = AddCheckpoint::parse(body).map_err(Refusal::Malformed)?;
        let log = self.trust.verifier();
        // The origin decides 404 before any signature is checked.
        let note = parse_note(&request.note).map_err(|e| Refusal::MalformedCheckpoint(e.into()))?;
        let unsigned = Checkpoint::parse(&note.text).map_err(Refusal::MalformedCheckpoint)?;
        if unsigned.origin != log.name().as_str() {
            return Err(Refusal::UnknownOrigin {
                origin: unsigned.origin,
            });
        }
        let checkpoint =
            SignedCheckpoint::verify(&request.note, log).map_err(Refusal::BadSignature)?;
        let size = checkpoint.checkpoint().size;
        if request.old_size > size {
            return Err(Refusal::OldSizeTooLarge {
                old: request.old_size,
                size,
            });
        }
        let latest = self.latest_size();
        if request.old_size != latest {
            return Err(Refusal::OldSizeMismatch { latest });
        }
        if request.old_size.get() == 0 && !request.proof.is_empty() {
            return Err(Refusal::ProofFromZero);
        }
        let proof = ConsistencyProof {
            old_size: request.old_size,
            new_size: size,
            path: request.proof.clone(),
        };
        let mut next = self.trust.clone();
        match next.advance(checkpoint.clone(), Some(&proof)) {
            Ok(advance) => Ok(Accepted {
                next,
                checkpoint,
                advance,
            }),
            // A fork (same size, another root) or a proof that does not connect the two: the
            // log signed both checkpoints, so keep them.
            Err(_) => {
                let evidence = Box::new(Evidence {
                    cosigned: self.trust.state_text().unwrap_or_default().to_owned(),
                    presented: checkpoint.note().to_owned(),
                    old_size: request.old_size,
                    proof: request.proof,
                });
                if size == latest {
                    Err(Refusal::Fork(evidence))
                } else {
                    Err(Refusal::InvalidProof(evidence))
                }
            }
        }
    }

    /// Handles one `add-checkpoint` request: [`Cosigner::check`], cosign at `timestamp` (POSIX
    /// seconds), `store` the accepted state (the caller makes [`Accepted::state_text`] durable),
    /// and only then record it and return the cosignature line to answer with.
    ///
    /// # Errors
    ///
    /// [`AddError::Refused`] with the refusal, [`AddError::Cosign`] for a timestamp past
    /// 2^63 - 1, [`AddError::Store`] when `store` fails; in every case the state is unchanged.
    pub fn add_checkpoint(
        &mut self,
        body: &[u8],
        timestamp: u64,
        store: impl FnOnce(&Accepted) -> std::io::Result<()>,
    ) -> Result<NoteSignature, AddError> {
        let accepted = self.check(body).map_err(AddError::Refused)?;
        let line = self
            .signer
            .cosign(&accepted.checkpoint, timestamp)
            .map_err(AddError::Cosign)?;
        store(&accepted).map_err(AddError::Store)?;
        self.trust = accepted.next;
        Ok(line)
    }
}

/// Why an `add-checkpoint` request got no cosignature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The timestamp cannot be cosigned.
    #[error("cannot cosign")]
    Cosign(#[source] CosignatureError),
    /// The checkpoint was refused.
    #[error(transparent)]
    Refused(Refusal),
    /// The new state could not be stored.
    #[error("cannot store the witness state")]
    Store(#[source] std::io::Error),
}

/// Why a checkpoint was not cosigned, each with the status c2sp.org/tlog-witness gives it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The log's signature does not verify (403).
    #[error("checkpoint is not signed by the log key")]
    BadSignature(#[source] CheckpointError),
    /// The checkpoint contradicts the one cosigned at the same size (409): a fork.
    #[error("checkpoint has another root than the one cosigned at the same size")]
    Fork(Box<Evidence>),
    /// The consistency proof does not connect the cosigned checkpoint to this one (422).
    #[error("consistency proof does not verify")]
    InvalidProof(Box<Evidence>),
    /// The body is not an `add-checkpoint` request (400).
    #[error("malformed request")]
    Malformed(#[source] WitnessProtocolError),
    /// The note is not a checkpoint (400).
    #[error("malformed checkpoint")]
    MalformedCheckpoint(#[source] CheckpointError),
    /// The old size is not the latest cosigned size (409, with that size).
    #[error("old size does not match the latest cosigned size {latest}")]
    OldSizeMismatch {
        /// The latest cosigned size.
        latest: TreeSize,
    },
    /// The old size is larger than the checkpoint's (400).
    #[error("old size {old} is larger than the checkpoint size {size}")]
    OldSizeTooLarge {
        /// The request's old size.
        old: TreeSize,
        /// The checkpoint's size.
        size: TreeSize,
    },
    /// A consistency proof from size 0 must be empty (422).
    #[error("a consistency proof from size 0 must be empty")]
    ProofFromZero,
    /// The checkpoint is of another log (404).
    #[error("unknown log `{origin}`")]
    UnknownOrigin {
        /// The checkpoint's origin line.
        origin: String,
    },
}

impl Refusal {
    /// The HTTP status code of c2sp.org/tlog-witness for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::MalformedCheckpoint(_) | Self::OldSizeTooLarge { .. } => 400,
            Self::BadSignature(_) => 403,
            Self::UnknownOrigin { .. } => 404,
            Self::Fork(_) | Self::OldSizeMismatch { .. } => 409,
            Self::InvalidProof(_) | Self::ProofFromZero => 422,
        }
    }

    /// The evidence of log misbehaviour this refusal carries, if any.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            Self::Fork(evidence) | Self::InvalidProof(evidence) => Some(evidence),
            _ => None,
        }
    }
}

/// Two checkpoints signed by the log that the witness cannot both cosign, and the proof that
/// was offered between them: kept as evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The checkpoint the witness cosigned last (the note it stored).
    pub cosigned: String,
    /// The checkpoint presented, as signed by the log.
    pub presented: String,
    /// The request's old size.
    pub old_size: TreeSize,
    /// The consistency proof presented.
    pub proof: Vec<Hash>,
}

impl Evidence {
    /// The request as presented (an `add-checkpoint` body), re-encoded.
    pub fn request_body(&self) -> String {
        AddCheckpoint {
            old_size: self.old_size,
            proof: self.proof.clone(),
            note: self.presented.clone(),
        }
        .to_body()
    }
}

#[cfg(test)]
mod tests;

//! C2SP transparency log proofs (c2sp.org/tlog-proof): one offline-verifiable text file that holds
//! an entry's index, its inclusion proof and the signed checkpoint the proof is against. akashi's
//! auditor reads these as `.tlog-proof` files.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64>                  (optional, unauthenticated)
//! index <decimal>
//! <base64 hash>                   (zero or more: the inclusion proof, leaf level first)
//!
//! <signed checkpoint note, verbatim>
//! ```
//!
//! This module does not fetch anything and does not check witness cosignatures: it verifies the
//! log's signature on the checkpoint and the inclusion proof against it. The `extra` data is not
//! authenticated, and nothing here trusts it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint, parse_decimal, parse_root};
use crate::hash::{Hash, LeafIndex};
use crate::note::{MAX_NOTE_SIZE, NoteVerifier};
use crate::proof::{InclusionProof, MAX_PROOF_LEN, ProofError};

/// The first line of every proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// The largest `extra` data accepted, in bytes (before base64).
pub const MAX_EXTRA_SIZE: usize = 64 * 1024;

/// The largest proof file accepted, in bytes: a full-size checkpoint note plus room for the rest.
pub const MAX_TLOG_PROOF_SIZE: usize = MAX_NOTE_SIZE + 128 * 1024;

/// A parsed `tlog-proof`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// The zero-based index of the entry in the log.
    pub index: LeafIndex,
    /// The inclusion proof of the entry in the checkpoint's tree, leaf level first.
    pub path: Vec<Hash>,
    /// Opaque, unauthenticated extra data. `Some` of an empty vector is written as no extra line
    /// (the spec has no way to say "empty"), so it reads back as `None`.
    pub extra: Option<Vec<u8>>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// A proof from an inclusion proof and the signed checkpoint note it was made against, with
    /// no extra data. The proof's tree size is not stored: [`TlogProof::verify`] takes the size
    /// from the checkpoint.
    pub fn new(proof: InclusionProof, checkpoint_note: String) -> Self {
        Self {
            index: proof.leaf_index,
            path: proof.path,
            extra: None,
            checkpoint: checkpoint_note,
        }
    }

    /// The proof file text.
    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(64 + self.path.len() * 45 + self.checkpoint.len());
        text.push_str(TLOG_PROOF_HEADER);
        text.push('\n');
        if let Some(extra) = self.extra.as_ref().filter(|e| !e.is_empty()) {
            text.push_str("extra ");
            text.push_str(&BASE64.encode(extra));
            text.push('\n');
        }
        text.push_str("index ");
        text.push_str(&self.index.0.to_string());
        text.push('\n');
        for hash in &self.path {
            text.push_str(&BASE64.encode(hash.0));
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.checkpoint);
        text
    }

    /// Parses a proof file, strictly (canonical decimal and base64, no stray lines). The
    /// checkpoint is taken verbatim and checked only by [`TlogProof::verify`].
    ///
    /// # Errors
    ///
    /// [`TlogProofError::TooLarge`], [`TlogProofError::MissingHeader`],
    /// [`TlogProofError::InvalidExtra`], [`TlogProofError::InvalidIndex`],
    /// [`TlogProofError::InvalidHash`], [`TlogProofError::PathTooLong`],
    /// [`TlogProofError::MissingCheckpoint`].
    pub fn parse(text: &str) -> Result<Self, TlogProofError> {
        if text.len() > MAX_TLOG_PROOF_SIZE {
            return Err(TlogProofError::TooLarge {
                size: text.len(),
                max: MAX_TLOG_PROOF_SIZE,
            });
        }
        let mut lines = Lines { rest: text, no: 0 };
        if lines.next_line() != Some(TLOG_PROOF_HEADER) {
            return Err(TlogProofError::MissingHeader);
        }
        let mut line = lines.next_line().ok_or(TlogProofError::InvalidIndex)?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            let bytes = BASE64
                .decode(b64)
                .ok()
                .filter(|b| !b.is_empty() && b.len() <= MAX_EXTRA_SIZE)
                .ok_or(TlogProofError::InvalidExtra)?;
            extra = Some(bytes);
            line = lines.next_line().ok_or(TlogProofError::InvalidIndex)?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or(TlogProofError::InvalidIndex)?;
        let mut path = Vec::new();
        loop {
            let line = lines.next_line().ok_or(TlogProofError::MissingCheckpoint)?;
            if line.is_empty() {
                break;
            }
            if path.len() == MAX_PROOF_LEN {
                return Err(TlogProofError::PathTooLong { max: MAX_PROOF_LEN });
            }
            path.push(parse_root(line).ok_or(TlogProofError::InvalidHash { line: lines.no })?);
        }
        if lines.rest.is_empty() {
            return Err(TlogProofError::MissingCheckpoint);
        }
        Ok(Self {
            index: LeafIndex(index),
            path,
            extra,
            checkpoint: lines.rest.to_owned(),
        })
    }

    /// Verifies the checkpoint's signature by the log key `verifier` (and that its origin is the
    /// key's name), then the inclusion of the entry with hash `leaf_hash` at `index` in the
    /// checkpoint's tree. Returns the verified checkpoint.
    ///
    /// # Errors
    ///
    /// [`TlogProofError::Checkpoint`] when the checkpoint does not verify,
    /// [`TlogProofError::Proof`] when the inclusion proof does not.
    pub fn verify(
        &self,
        leaf_hash: &Hash,
        verifier: &NoteVerifier,
    ) -> Result<Checkpoint, TlogProofError> {
        let signed = SignedCheckpoint::verify(&self.checkpoint, verifier)?;
        let checkpoint = signed.into_checkpoint();
        let proof = InclusionProof {
            leaf_index: self.index,
            tree_size: checkpoint.size,
            path: self.path.clone(),
        };
        proof.verify(leaf_hash, &checkpoint.root)?;
        Ok(checkpoint)
    }
}

/// Why a `tlog-proof` was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlogProofError {
    /// The checkpoint does not verify.
    #[error("checkpoint")]
    Checkpoint(#[from] CheckpointError),
    /// The `extra` line is not canonical base64 of 1 to [`MAX_EXTRA_SIZE`] bytes.
    #[error("extra data is not base64 of 1 to {MAX_EXTRA_SIZE} bytes")]
    InvalidExtra,
    /// A proof line is not the base64 of a 32-byte hash.
    #[error("line {line} is not the base64 of a 32-byte hash")]
    InvalidHash {
        /// One-based line number.
        line: usize,
    },
    /// The `index` line is missing or not a decimal without leading zeros.
    #[error("missing or malformed `index` line")]
    InvalidIndex,
    /// No blank line followed by a checkpoint.
    #[error("no checkpoint after the inclusion proof")]
    MissingCheckpoint,
    /// The first line is not [`TLOG_PROOF_HEADER`].
    #[error("first line is not `{TLOG_PROOF_HEADER}`")]
    MissingHeader,
    /// More than [`MAX_PROOF_LEN`] proof hashes.
    #[error("inclusion proof has more than {max} hashes")]
    PathTooLong {
        /// The limit.
        max: usize,
    },
    /// The inclusion proof does not verify against the checkpoint.
    #[error("inclusion proof")]
    Proof(#[from] ProofError),
    /// The file is larger than [`MAX_TLOG_PROOF_SIZE`].
    #[error("proof is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Newline-terminated lines, keeping the unread rest.
struct Lines<'a> {
    rest: &'a str,
    /// The one-based number of the line last returned.
    no: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        let (line, rest) = self.rest.split_once('\n')?;
        self.rest = rest;
        self.no += 1;
        Some(line)
    }
}

#[cfg(test)]
mod tests;

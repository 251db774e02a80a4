//! The bodies of the c2sp.org/tlog-witness `add-checkpoint` call, for both sides: the request
//! a log sends (`old <size>`, consistency proof lines, a blank line, the checkpoint note), the
//! cosignature lines a witness answers with, and the tree size a witness answers a `409
//! Conflict` with (`Content-Type: text/x.tlog.size`).
//!
//! This module only encodes and parses, with every input bounded before it is read. It sends
//! nothing and decides nothing: checking signatures and consistency is the witness's (see the
//! auditor's `witness`), verifying the answers the log's (see `cosignature`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::parse_decimal;
use crate::hash::{Hash, TreeSize};
use crate::note::{MAX_NOTE_SIGNATURES, NoteError, NoteSignature};

/// The path of the call under a witness's submission prefix.
pub const ADD_CHECKPOINT_PATH: &str = "/add-checkpoint";

/// The `Content-Type` of a `409 Conflict` answer: the witness's latest cosigned size.
pub const TLOG_SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// The most consistency proof lines a request may carry (c2sp.org/tlog-witness: "MUST NOT send
/// more than 63").
pub const MAX_PROOF_LINES: usize = 63;

/// The largest request body accepted, in bytes: a checkpoint with many cosignatures, 63 proof
/// lines and room to spare. (Checkpoints larger than this are not witnessed.)
pub const MAX_REQUEST_SIZE: usize = 64 * 1024;

/// The largest answer body read from a witness, in bytes.
pub const MAX_RESPONSE_SIZE: usize = 16 * 1024;

/// An `add-checkpoint` request body, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the log believes the witness last cosigned (0 for none).
    pub old_size: TreeSize,
    /// The RFC 9162 consistency proof from `old_size` to the checkpoint's size (empty when
    /// `old_size` is 0).
    pub proof: Vec<Hash>,
    /// The checkpoint's signed note, verbatim (not yet verified).
    pub note: String,
}

impl AddCheckpoint {
    /// Parses a request body.
    ///
    /// # Errors
    ///
    /// [`WitnessProtocolError::TooLarge`] past [`MAX_REQUEST_SIZE`],
    /// [`WitnessProtocolError::NotText`], [`WitnessProtocolError::OldSizeLine`] when the first
    /// line is not `old <decimal>`, [`WitnessProtocolError::ProofLine`] for a line that is not
    /// the base64 of a 32-byte hash, [`WitnessProtocolError::TooManyProofLines`], and
    /// [`WitnessProtocolError::MissingCheckpoint`] when no blank line and note follow.
    pub fn parse(body: &[u8]) -> Result<Self, WitnessProtocolError> {
        if body.len() > MAX_REQUEST_SIZE {
            return Err(WitnessProtocolError::TooLarge {
                size: body.len(),
                max: MAX_REQUEST_SIZE,
            });
        }
        let text = std::str::from_utf8(body).map_err(|_| WitnessProtocolError::NotText)?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or(WitnessProtocolError::OldSizeLine)?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or(WitnessProtocolError::OldSizeLine)?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or(WitnessProtocolError::MissingCheckpoint)?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(WitnessProtocolError::TooManyProofLines {
                    max: MAX_PROOF_LINES,
                });
            }
            let line_no = proof.len() + 2;
            let hash = BASE64
                .decode(line)
                .ok()
                .and_then(|bytes| Hash::from_slice(&bytes).ok())
                .ok_or(WitnessProtocolError::ProofLine { line: line_no })?;
            proof.push(hash);
        }
        if rest.is_empty() {
            return Err(WitnessProtocolError::MissingCheckpoint);
        }
        Ok(Self {
            old_size: TreeSize(old_size),
            proof,
            note: rest.to_owned(),
        })
    }

    /// The request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size.get());
        for hash in &self.proof {
            body.push_str(&BASE64.encode(hash.0));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }
}

/// Parses a `200` answer: one or more note signature lines, each ending in a newline.
///
/// # Errors
///
/// [`WitnessProtocolError::TooLarge`] past [`MAX_RESPONSE_SIZE`],
/// [`WitnessProtocolError::NotText`], [`WitnessProtocolError::NoCosignatures`] for an empty body,
/// [`WitnessProtocolError::Signature`] for a malformed line or a missing final newline, and
/// [`WitnessProtocolError::TooManySignatures`].
pub fn parse_cosignatures(body: &[u8]) -> Result<Vec<NoteSignature>, WitnessProtocolError> {
    if body.len() > MAX_RESPONSE_SIZE {
        return Err(WitnessProtocolError::TooLarge {
            size: body.len(),
            max: MAX_RESPONSE_SIZE,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| WitnessProtocolError::NotText)?;
    if text.is_empty() {
        return Err(WitnessProtocolError::NoCosignatures);
    }
    let lines = text
        .strip_suffix('\n')
        .ok_or(WitnessProtocolError::Signature(
            NoteError::MissingSignatures,
        ))?;
    let mut out = Vec::new();
    for (i, line) in lines.split('\n').enumerate() {
        if i == MAX_NOTE_SIGNATURES {
            return Err(WitnessProtocolError::TooManySignatures {
                max: MAX_NOTE_SIGNATURES,
            });
        }
        let sig = NoteSignature::parse_line(line).map_err(|_| {
            WitnessProtocolError::Signature(NoteError::MalformedSignatureLine { line: i + 1 })
        })?;
        out.push(sig);
    }
    Ok(out)
}

/// The body of a `409 Conflict` answer: the latest cosigned size and a newline.
pub fn size_body(size: TreeSize) -> String {
    format!("{}\n", size.get())
}

/// Parses the body of a `409 Conflict` answer.
///
/// # Errors
///
/// [`WitnessProtocolError::SizeBody`] unless it is a decimal size and a newline.
pub fn parse_size_body(body: &[u8]) -> Result<TreeSize, WitnessProtocolError> {
    std::str::from_utf8(body)
        .ok()
        .filter(|_| body.len() <= 32)
        .and_then(|text| text.strip_suffix('\n'))
        .and_then(parse_decimal)
        .map(TreeSize)
        .ok_or(WitnessProtocolError::SizeBody)
}

/// Why an `add-checkpoint` body (request or answer) could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessProtocolError {
    /// The request has no blank line followed by a checkpoint.
    #[error("no blank line followed by a checkpoint")]
    MissingCheckpoint,
    /// The answer has no cosignature line.
    #[error("no cosignature in the answer")]
    NoCosignatures,
    /// The body is not UTF-8.
    #[error("body is not utf-8 text")]
    NotText,
    /// The first line is not `old <decimal size>`.
    #[error("first line must be `old <size>` (decimal, no leading zeros)")]
    OldSizeLine,
    /// A consistency proof line is not the base64 of a 32-byte hash.
    #[error("line {line} is not the base64 of a 32-byte hash")]
    ProofLine {
        /// One-based line number in the body.
        line: usize,
    },
    /// An answer line is not a note signature line.
    #[error("malformed cosignature line")]
    Signature(#[source] NoteError),
    /// A `409` body is not a decimal size and a newline.
    #[error("conflict answer is not a decimal tree size and a newline")]
    SizeBody,
    /// The body is larger than its cap.
    #[error("body is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_PROOF_LINES`] consistency proof lines.
    #[error("more than {max} consistency proof lines")]
    TooManyProofLines {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_NOTE_SIGNATURES`] cosignature lines.
    #[error("more than {max} cosignature lines")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
}

#[cfg(test)]
mod tests;

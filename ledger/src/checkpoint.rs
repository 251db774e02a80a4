//! C2SP checkpoints (c2sp.org/tlog-checkpoint): the signed statement "the log with this origin
//! had this many entries and this root hash".
//!
//! The note text is the origin line, the tree size in decimal, the base64 root hash, then
//! optional extension lines; it is signed as a C2SP signed note (see `note`).
//!
//! This module does not check that a checkpoint is consistent with an earlier one (that needs a
//! consistency proof, see `proof`) and does not handle witness cosignatures: signatures by keys
//! other than the log's are carried along unverified.
//!
//! ```
//! use ledger::checkpoint::{Checkpoint, SignedCheckpoint};
//! use ledger::note::{KeyName, NoteSigner};
//! use ledger::hash::{TreeSize, empty_root};
//!
//! let signer = NoteSigner::generate(KeyName::new("example.com/log")?, &mut rand::rngs::OsRng);
//! let cp = Checkpoint::new("example.com/log", TreeSize(0), empty_root());
//! let signed = SignedCheckpoint::sign(cp.clone(), &signer)?;
//! let verified = SignedCheckpoint::verify(signed.note(), &signer.verifier())?;
//! assert_eq!(verified.checkpoint(), &cp);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::hash::{Hash, TreeSize};
use crate::note::{MAX_NOTE_SIZE, NoteError, NoteSigner, NoteVerifier, open_note_with, sign_note};

/// The most extension lines a checkpoint may carry.
pub const MAX_CHECKPOINT_EXTENSIONS: usize = 64;

/// A checkpoint's note text, parsed (c2sp.org/tlog-checkpoint §Note text).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The log's identity, e.g. `example.com/log42`. For akashi this is also the log key's name.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: TreeSize,
    /// The RFC 9162 root hash of the tree of that size.
    pub root: Hash,
    /// Extension lines, opaque and non-empty, in order (not recommended by the spec).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint with no extension lines.
    pub fn new(origin: impl Into<String>, size: TreeSize, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text: `<origin>\n<size>\n<base64 root>\n` then one line per extension.
    ///
    /// A checkpoint whose fields break the rules of [`Checkpoint::parse`] (an empty origin, a
    /// newline inside a line, ...) gives text that `parse` rejects; [`SignedCheckpoint::sign`]
    /// refuses to sign such text.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size.0,
            BASE64.encode(self.root.0)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint's note text (without the signatures), strictly: `to_text` of the result
    /// gives back exactly `text`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::TooLarge`], [`CheckpointError::InvalidCharacter`],
    /// [`CheckpointError::MissingFinalNewline`], [`CheckpointError::MissingLines`],
    /// [`CheckpointError::EmptyLine`], [`CheckpointError::InvalidSize`],
    /// [`CheckpointError::InvalidRoot`] and [`CheckpointError::TooManyExtensions`].
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        if text.len() > MAX_NOTE_SIZE {
            return Err(CheckpointError::TooLarge {
                size: text.len(),
                max: MAX_NOTE_SIZE,
            });
        }
        if let Some(offset) = text.bytes().position(|b| b < 0x20 && b != b'\n') {
            return Err(CheckpointError::InvalidCharacter { offset });
        }
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingFinalNewline)?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::MissingLines);
        };
        let extensions: Vec<String> = lines
            .take(MAX_CHECKPOINT_EXTENSIONS + 1)
            .map(str::to_owned)
            .collect();
        if extensions.len() > MAX_CHECKPOINT_EXTENSIONS {
            return Err(CheckpointError::TooManyExtensions {
                max: MAX_CHECKPOINT_EXTENSIONS,
            });
        }
        let empty_line = [origin, size, root]
            .into_iter()
            .chain(extensions.iter().map(String::as_str))
            .position(str::is_empty);
        if let Some(line) = empty_line {
            return Err(CheckpointError::EmptyLine { line: line + 1 });
        }
        Ok(Self {
            origin: origin.to_owned(),
            size: parse_size(size).ok_or(CheckpointError::InvalidSize)?,
            root: parse_root(root).ok_or(CheckpointError::InvalidRoot)?,
            extensions,
        })
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint of `{}` at size {} with root {}",
            self.origin, self.size, self.root
        )
    }
}

/// A checkpoint together with its signed note. Only [`SignedCheckpoint::sign`] and
/// [`SignedCheckpoint::verify`] build one, so holding one means the note carries the log key's
/// signature over exactly this checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: String,
}

impl SignedCheckpoint {
    /// The parsed checkpoint.
    #[must_use]
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The full signed note text: checkpoint text, blank line, signature lines.
    #[must_use]
    pub fn note(&self) -> &str {
        &self.note
    }

    /// The signed note text, owned.
    #[must_use]
    pub fn into_note(self) -> String {
        self.note
    }

    /// The parsed checkpoint, owned.
    #[must_use]
    pub fn into_checkpoint(self) -> Checkpoint {
        self.checkpoint
    }

    /// Signs a checkpoint with the log's key. The origin must equal the key's name, so that
    /// [`SignedCheckpoint::verify`] accepts the result.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NotCanonical`] (or the parse error) when the checkpoint's text does not
    /// parse back to the same checkpoint, [`CheckpointError::OriginMismatch`] when its origin is
    /// not the signer's name, and [`CheckpointError::Note`] for any error of [`sign_note`].
    pub fn sign(cp: Checkpoint, signer: &NoteSigner) -> Result<Self, CheckpointError> {
        let text = cp.to_text();
        let parsed = Checkpoint::parse(&text)?;
        if parsed != cp {
            return Err(CheckpointError::NotCanonical);
        }
        if cp.origin != signer.name().as_str() {
            return Err(CheckpointError::OriginMismatch {
                origin: cp.origin,
                key_name: signer.name().to_string(),
            });
        }
        let note = sign_note(&text, &[signer])?;
        Ok(Self {
            checkpoint: cp,
            note,
        })
    }

    /// Verifies a signed checkpoint with the log's key and parses it.
    ///
    /// The note must carry a valid signature by `verifier`, and the checkpoint's origin must equal
    /// the verifier's key name: akashi names its log key after the log's origin, so a checkpoint
    /// signed by the right key for another origin is rejected. Signatures by other keys (witness
    /// cosignatures, rotated keys) are ignored.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Note`] when the note is malformed or not validly signed by `verifier`,
    /// any parse error of [`Checkpoint::parse`], and [`CheckpointError::OriginMismatch`].
    pub fn verify(note: &str, verifier: &NoteVerifier) -> Result<Self, CheckpointError> {
        let opened = open_note_with(note, &[verifier])?;
        let checkpoint = Checkpoint::parse(opened.text())?;
        if checkpoint.origin != verifier.name().as_str() {
            return Err(CheckpointError::OriginMismatch {
                origin: checkpoint.origin,
                key_name: verifier.name().to_string(),
            });
        }
        Ok(Self {
            checkpoint,
            note: note.to_owned(),
        })
    }
}

/// Why a checkpoint was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A line is empty.
    #[error("checkpoint line {line} is empty")]
    EmptyLine {
        /// One-based line number.
        line: usize,
    },
    /// The text holds a control character other than newline.
    #[error("control character at byte {offset} of the checkpoint")]
    InvalidCharacter {
        /// Byte offset of the character.
        offset: usize,
    },
    /// The third line is not the base64 of 32 bytes.
    #[error("checkpoint root hash is not the base64 of 32 bytes")]
    InvalidRoot,
    /// The second line is not a decimal tree size without leading zeros.
    #[error("checkpoint tree size is not a decimal number without leading zeros")]
    InvalidSize,
    /// The text does not end with a newline.
    #[error("checkpoint text must end with a newline")]
    MissingFinalNewline,
    /// Fewer than three lines.
    #[error("checkpoint needs an origin, a tree size and a root hash")]
    MissingLines,
    /// The checkpoint's fields do not survive encoding (e.g. a newline inside the origin).
    #[error("checkpoint fields do not encode to a valid checkpoint")]
    NotCanonical,
    /// The note is malformed or not validly signed by the log's key.
    #[error("checkpoint note")]
    Note(#[from] NoteError),
    /// The origin line is not the log key's name.
    #[error("checkpoint origin `{origin}` is not the log key name `{key_name}`")]
    OriginMismatch {
        /// The checkpoint's origin.
        origin: String,
        /// The log key's name.
        key_name: String,
    },
    /// The text is larger than [`MAX_NOTE_SIZE`].
    #[error("checkpoint is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The text's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_CHECKPOINT_EXTENSIONS`] extension lines.
    #[error("checkpoint has more than {max} extension lines")]
    TooManyExtensions {
        /// The limit.
        max: usize,
    },
}

/// A decimal `u64` with no sign and no leading zeros (`0` itself is allowed).
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return None;
    }
    text.parse().ok()
}

fn parse_size(text: &str) -> Option<TreeSize> {
    parse_decimal(text).map(TreeSize)
}

/// Standard base64 of exactly 32 bytes, canonical (padded, no stray bits).
pub(crate) fn parse_root(text: &str) -> Option<Hash> {
    let bytes = BASE64.decode(text).ok()?;
    Hash::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;

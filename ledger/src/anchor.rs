//! The checkpoint anchor: a small file beside the store that remembers the newest checkpoint the
//! log has ever acknowledged, so that a store that lost entries (a damaged file that the engine
//! "recovered" by dropping its tail, a deleted file, a restored backup) is refused at open
//! instead of being served as a shorter log signed on with the same key.
//!
//! The anchor must not share the store's fate, so it is a file of its own, outside the store's
//! folder. [`crate::log::Log::finish_batch`] writes it after the store's sync and before a batch
//! is acknowledged, and makes it durable with `fdatasync`. To avoid a rename and a folder sync
//! per batch, the file holds two fixed-size slots written alternately in place; each slot carries
//! its length and a SHA-256 of its content, so a torn write leaves the other, older slot valid.
//! On open the valid slot with the larger tree size wins, and its note must verify with the
//! log's key.
//!
//! Slot layout ([`SLOT_LEN`] bytes): magic `akashi-anchor/v1`, note length (u32, big-endian),
//! the signed checkpoint note, SHA-256 of everything before it, zero padding.
//!
//! Limits: deleting the anchor file together with the store is not detected here (only a
//! witness holding an older checkpoint notices); a data dir written before anchors existed has
//! its store's checkpoint adopted as the anchor on first open. This module does not compare the
//! anchor with the store: `Log::open` does.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use crate::{
    checkpoint::{CheckpointError, SignedCheckpoint},
    hash::Hash,
    note::NoteVerifier,
};

/// Bytes per slot; the file holds two.
pub const SLOT_LEN: usize = 4096;

const MAGIC: &[u8] = b"akashi-anchor/v1";
const HEADER_LEN: usize = MAGIC.len() + 4;
const DIGEST_LEN: usize = 32;
/// The longest note a slot holds.
const MAX_NOTE_LEN: usize = SLOT_LEN - HEADER_LEN - DIGEST_LEN;

/// The anchor file of one log: the newest acknowledged checkpoint, verified with the log's key.
#[derive(Debug)]
pub struct Anchor {
    path: PathBuf,
    /// The open file, once it exists.
    file: Option<File>,
    /// The slot the next write goes to (the one not holding `checkpoint`).
    next_slot: u64,
    checkpoint: Option<SignedCheckpoint>,
}

/// Why the anchor could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// Neither slot holds a whole checkpoint: the file is damaged.
    #[error("the checkpoint anchor `{path}` is damaged: neither slot holds a whole checkpoint")]
    Damaged {
        /// The anchor file.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("checkpoint anchor `{path}`: i/o error while {context}: {source}")]
    Io {
        /// The anchor file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not two slots long.
    #[error("the checkpoint anchor `{path}` is {len} bytes long, not {expected}")]
    Length {
        /// The anchor file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// Two slots.
        expected: u64,
    },
    /// A whole slot holds a checkpoint that does not verify with this log's key.
    #[error("the checkpoint in anchor `{path}` does not verify with this log's key: {source}")]
    Signature {
        /// The anchor file.
        path: PathBuf,
        /// Why it does not verify.
        #[source]
        source: CheckpointError,
    },
    /// A checkpoint note too long for a slot.
    #[error("a checkpoint note of {len} bytes does not fit an anchor slot (at most {max})")]
    TooLarge {
        /// The note's length.
        len: usize,
        /// The most a slot holds.
        max: usize,
    },
}

impl Anchor {
    /// Reads the anchor at `path`, verifying its checkpoint with `verifier`. A file that does not
    /// exist is an anchor with no checkpoint yet; it is created by the first
    /// [`Anchor::advance`].
    ///
    /// # Errors
    ///
    /// [`AnchorError::Damaged`] or [`AnchorError::Length`] for a damaged file,
    /// [`AnchorError::Signature`] for a checkpoint of another key, [`AnchorError::Io`].
    pub fn open(path: &Path, verifier: &NoteVerifier) -> Result<Self, AnchorError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: path.to_owned(),
                    file: None,
                    next_slot: 0,
                    checkpoint: None,
                });
            }
            Err(source) => return Err(io_error(path, "opening it", source)),
        };
        let expected = 2 * SLOT_LEN as u64;
        let len = file
            .metadata()
            .map_err(|source| io_error(path, "reading its length", source))?
            .len();
        if len != expected {
            return Err(AnchorError::Length {
                path: path.to_owned(),
                len,
                expected,
            });
        }
        let mut best: Option<(u64, SignedCheckpoint)> = None;
        for slot in 0..2u64 {
            let mut bytes = vec![0u8; SLOT_LEN];
            file.read_exact_at(&mut bytes, slot * SLOT_LEN as u64)
                .map_err(|source| io_error(path, "reading a slot", source))?;
            let Some(note) = decode_slot(&bytes) else {
                continue;
            };
            let checkpoint = SignedCheckpoint::verify(note, verifier).map_err(|source| {
                AnchorError::Signature {
                    path: path.to_owned(),
                    source,
                }
            })?;
            let newer = best
                .as_ref()
                .is_none_or(|(_, held)| checkpoint.checkpoint().size > held.checkpoint().size);
            if newer {
                best = Some((slot, checkpoint));
            }
        }
        let Some((slot, checkpoint)) = best else {
            return Err(AnchorError::Damaged {
                path: path.to_owned(),
            });
        };
        Ok(Self {
            path: path.to_owned(),
            file: Some(file),
            next_slot: 1 - slot,
            checkpoint: Some(checkpoint),
        })
    }

    /// The newest checkpoint anchored, if any.
    pub fn checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.checkpoint.as_ref()
    }

    /// The anchored tree size and root, if any.
    pub fn size_and_root(&self) -> Option<(u64, Hash)> {
        self.checkpoint
            .as_ref()
            .map(|c| (c.checkpoint().size.get(), c.checkpoint().root))
    }

    /// The anchor file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `checkpoint` the anchored one, durably: written over the older slot and
    /// `fdatasync`ed (the first call creates the file, mode 0600, and syncs its folder). The
    /// caller must have made the store durable up to `checkpoint` first. A checkpoint of a
    /// smaller tree than the anchored one changes nothing (the anchor already holds more), so the
    /// anchor never moves back, whatever order its callers come in.
    ///
    /// # Errors
    ///
    /// [`AnchorError::TooLarge`] for a note longer than a slot, [`AnchorError::Io`]; then the
    /// anchor may hold either checkpoint, and the caller must not acknowledge the new one.
    pub fn advance(&mut self, checkpoint: &SignedCheckpoint) -> Result<(), AnchorError> {
        if let Some(held) = self
            .checkpoint
            .as_ref()
            .filter(|held| held.checkpoint().size > checkpoint.checkpoint().size)
        {
            // The sequencer anchors in order, so this is a caller's ordering slip: harmless to
            // the anchor, worth seeing.
            tracing::warn!(
                anchored = held.checkpoint().size.get(),
                offered = checkpoint.checkpoint().size.get(),
                "anchor offered an older checkpoint; kept the newer one"
            );
            return Ok(());
        }
        let slot = encode_slot(checkpoint.note())?;
        match &self.file {
            Some(file) => {
                file.write_all_at(&slot, self.next_slot * SLOT_LEN as u64)
                    .map_err(|source| io_error(&self.path, "writing a slot", source))?;
                file.sync_data()
                    .map_err(|source| io_error(&self.path, "syncing it", source))?;
                self.next_slot = 1 - self.next_slot;
            }
            None => {
                self.file = Some(create(&self.path, &slot)?);
                self.next_slot = 1;
            }
        }
        self.checkpoint = Some(checkpoint.clone());
        Ok(())
    }
}

/// Creates the anchor file whole: slot 0 holds `slot`, slot 1 is empty. Written to a temporary
/// file, synced, renamed into place and the folder synced, so the file is whole or absent.
fn create(path: &Path, slot: &[u8]) -> Result<File, AnchorError> {
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(path, "removing a leftover temporary file", source)),
    }
    let mut bytes = slot.to_vec();
    bytes.resize(2 * SLOT_LEN, 0);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| io_error(path, "creating it", source))?;
    file.write_all_at(&bytes, 0)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, "writing it", source))?;
    fs::rename(&tmp, path).map_err(|source| io_error(path, "renaming it into place", source))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| io_error(path, "syncing its folder", source))?;
    Ok(file)
}

fn encode_slot(note: &str) -> Result<Vec<u8>, AnchorError> {
    let len = note.len();
    let too_large = AnchorError::TooLarge {
        len,
        max: MAX_NOTE_LEN,
    };
    if len > MAX_NOTE_LEN {
        return Err(too_large);
    }
    let len32 = u32::try_from(len).map_err(|_| too_large)?;
    let mut out = Vec::with_capacity(SLOT_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len32.to_be_bytes());
    out.extend_from_slice(note.as_bytes());
    let digest = Hash::sha256(&out);
    out.extend_from_slice(digest.as_bytes());
    out.resize(SLOT_LEN, 0);
    Ok(out)
}

/// The note a slot holds, if it is whole: magic, a length that fits, and a matching digest.
fn decode_slot(slot: &[u8]) -> Option<&str> {
    let rest = slot.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if len > MAX_NOTE_LEN {
        return None;
    }
    let (note, rest) = rest.split_at_checked(len)?;
    let (digest, _) = rest.split_first_chunk::<DIGEST_LEN>()?;
    let covered = slot.get(..HEADER_LEN + len)?;
    if Hash::sha256(covered).as_bytes() != digest {
        return None;
    }
    std::str::from_utf8(note).ok()
}

fn io_error(path: &Path, context: &'static str, source: io::Error) -> AnchorError {
    AnchorError::Io {
        path: path.to_owned(),
        context,
        source,
    }
}

#[cfg(test)]
mod tests;

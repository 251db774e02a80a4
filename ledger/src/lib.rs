//! akashi's append-only log: an RFC 9162 Merkle tree of entries, signed C2SP checkpoints,
//! inclusion and consistency proofs, and (feature `sled`) a durable store with group commit.
//!
//! # Layout
//!
//! Pure modules (no I/O; what the auditor links with `default-features = false`): [`hash`]
//! (RFC 9162 hashing and the [`LeafIndex`](hash::LeafIndex), [`TreeSize`](hash::TreeSize) and
//! [`Hash`](struct@hash::Hash) newtypes), [`proof`],
//! [`note`] (C2SP signed notes, compatible with Go's `sumdb/note`), [`checkpoint`]
//! (C2SP tlog-checkpoint), [`cosignature`] (witness cosignatures, C2SP tlog-cosignature
//! `cosignature/v1`), [`entry`] (the public leaf and the private body), [`tlog_proof`]
//! and [`tile`] (C2SP tlog-proof and tlog-tiles), [`witness`] (the C2SP tlog-witness
//! `add-checkpoint` bodies), and [`vrf`] (RFC 9381 ECVRF, for map keys that a patient can check
//! are derived from their own id).
//!
//! Feature `store`: `store` (the [`store::Store`] trait and the in-memory store), `anchor`
//! (the file that remembers the newest acknowledged checkpoint), `tree`
//! (tiled hash storage), `chunk`, `log` (open, recover, append, read), `vault` (the per-patient
//! keys bodies are sealed under, for erasure by crypto-shredding) and `sequencer` (group
//! commit). Feature `sled` adds `store::SledStore`. This crate does not know what entries mean:
//! the server's state machine decides that.
//!
//! # Life of an entry
//!
//! 1. **Submit.** A service sends a command to the [`sequencer`] (`Sequencer::submit`); the
//!    call waits.
//! 2. **Decide.** The writer thread takes every queued command (group commit) and runs each
//!    through the state machine in order, against the derived state as of the entries before
//!    it; the state machine returns the entry (public [`entry::Leaf`] committing to a private
//!    [`entry::Body`]) and its state writes. A refused command appends nothing.
//! 3. **Sequence.** The batch gets consecutive leaf indices; leaf hashes extend a copy of the
//!    in-memory frontier of partial tiles; tiles that fill up are collected.
//! 4. **Durable.** `Log::append_batch` writes the entry and body chunks and the full tiles,
//!    signs a checkpoint for the new size, writes the *commit record* (size, checkpoint, state
//!    writes) as the single commit point, applies the state writes, and syncs once (sled flush,
//!    then `fdatasync`: sled's own flush does not survive a power loss), then writes the new
//!    checkpoint to the anchor file and `fdatasync`s it.
//! 5. **Integrate.** The new frontier and checkpoint are published to readers.
//! 6. **Checkpoint and receipt.** Every submitter gets its leaf index, leaf hash and the signed
//!    checkpoint, and builds its inclusion proof on its own task: that is its receipt.
//!
//! On open, `Log::open` re-applies the last commit record's state writes, removes what a batch
//! that never committed wrote, rebuilds the frontier, and refuses to serve unless the stored
//! tree reproduces the last signed checkpoint. `Log::open_anchored` also holds the store to the
//! [`anchor`]: the newest checkpoint ever acknowledged, written beside the store after its sync
//! and before any submitter is answered, so a store that lost entries is refused, not served.
//!
//! # Who verifies what (claimant model)
//!
//! | claim made by the operator | who relies on it | who verifies it, with what |
//! |---|---|---|
//! | "this decision was logged before you were answered" | platform services, patients | the receipt: checkpoint signature and inclusion proof (`akashi-audit verify-receipt`) |
//! | "this is the one log; it only grows" | everyone | witnesses and monitors demanding consistency proofs between checkpoints (`akashi-audit watch`) |
//! | "these are all my entries about you" | patients | the per-subject chain in private bodies (`akashi-audit history`); the subject map root of docs/design.md §8 will close the remaining gaps |
//! | "every decision follows from the rules and consents in force" | regulators | re-deciding every logged decision from the log alone (`akashi-audit replay`) |
//! | "public statistics are right" | the public | recomputing them from public leaves served as tlog-tiles |

#[cfg(feature = "store")]
pub mod anchor;
pub mod checkpoint;
#[cfg(feature = "store")]
pub mod chunk;
#[cfg(feature = "store")]
mod codec;
pub mod completeness;
#[cfg(all(feature = "store", any(test, feature = "test-util")))]
pub mod conformance;
pub mod cosignature;
pub mod entry;
pub mod hash;
#[cfg(feature = "store")]
mod layout;
#[cfg(feature = "store")]
pub mod log;
pub mod map;
pub mod note;
pub mod proof;
#[cfg(feature = "store")]
pub mod sequencer;
#[cfg(feature = "store")]
pub mod store;
pub mod tile;
pub mod tlog_proof;
#[cfg(feature = "store")]
pub mod tree;
#[cfg(feature = "store")]
pub mod vault;
pub mod vrf;
pub mod witness;

//! akashi's independent verifier, for patients, regulators and witnesses: it trusts nothing the
//! operator says without checking it against the log's signed checkpoints.
//!
//! # Layout
//!
//! Verification (no features, no I/O, depends on `ledger`'s pure part only):
//!
//! - [`receipt`]: parse a receipt (proto3 JSON as grpcurl prints it, or a C2SP `tlog-proof`) and
//!   verify it offline: checkpoint signature, inclusion proof, leaf hash, body commitment, and
//!   for a whole `Authorize` response that its answer is the logged decision.
//! - [`trust`]: the last trusted checkpoint of a witness and the rule for moving on from it (a
//!   consistency proof, or the verdict *fork* or *rollback*).
//! - [`compact`]: a compact range, the O(log n) summary of a tree that lets a streaming reader
//!   recompute the root at every size without keeping the tree.
//! - [`scan`]: stream a whole log (leaves, bodies, signed checkpoints) in order; recompute the
//!   tree, compare every checkpoint with it, check every leaf and body commitment; collect
//!   [`report::Finding`]s in a [`report::Report`].
//! - [`quorum`]: a verifier's witness policy: K valid cosignatures from given witnesses.
//! - [`witness`]: a c2sp.org/tlog-witness witness's rules: when to cosign a checkpoint, and the
//!   answer to each refusal (fork evidence included); `akashi-audit witness` serves them.
//! - [`exit`]: the exit codes every verdict maps to (0 valid, 2 invalid, 1 error).
//!
//! With the `replay` feature (adds `policy`):
//!
//! - [`replay`]: on top of [`scan`], decode each body's event, check the public leaf header says
//!   what the event says, recompute the per-patient subject map and compare it with every
//!   checkpoint that commits to one, and re-decide every logged decision with `policy`'s
//!   replayer (two stages, `EntryCheck` and `DecisionCheck`, that the CLI runs on two threads).
//! - [`history`]: verify a patient's own history (inclusion, commitments, per-subject chain,
//!   and completeness against the checkpoint's subject map), fetched or read from saved JSON.
//!
//! With the `cli` feature (the default; adds gRPC, HTTP and the terminal): `cli`, the
//! `akashi-audit` commands as library functions, so that tests can run them in-process.
//!
//! This crate does not serve anything, store anything but the small trusted-checkpoint file,
//! or know the server's internals: everything it checks arrives over the public contract.
//!
//! ```
//! use auditor::compact::CompactRange;
//! use ledger::{proof::MemoryTree, hash::hash_leaf};
//!
//! let (mut range, mut tree) = (CompactRange::new(), MemoryTree::new());
//! for i in 0..100u8 {
//!     range.push(hash_leaf(&[i]));
//!     tree.push_leaf(&[i]);
//!     assert_eq!(range.root(), tree.root());
//! }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod compact;
pub mod exit;
#[cfg(feature = "replay")]
pub mod history;
mod proto_json;
#[cfg(feature = "replay")]
pub mod provision;
pub mod quorum;
pub mod receipt;
#[cfg(feature = "replay")]
pub mod replay;
pub mod report;
pub mod scan;
pub mod trust;
pub mod witness;

#[cfg(test)]
mod testing;

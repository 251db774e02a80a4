//! akashi's append-only log (skeleton under construction).

pub mod checkpoint;
#[cfg(feature = "store")]
pub mod chunk;
#[cfg(feature = "store")]
mod codec;
pub mod entry;
pub mod hash;
#[cfg(feature = "store")]
mod keys;
#[cfg(feature = "store")]
pub mod log;
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

pub use checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
pub use entry::{
    AttrName, AttrValue, BODY_NONCE_LEN, Body, Day, EntryError, EntryKind, Leaf, MAX_BODY_SIZE,
    MAX_LEAF_SIZE, verify_commitment,
};
pub use hash::{Hash, LeafIndex, TreeSize, empty_root, hash_children, hash_leaf};
pub use note::{
    KeyName, MAX_NOTE_SIGNATURES, MAX_NOTE_SIZE, Note, NoteError, NoteSignature, NoteSigner,
    NoteVerifier, VerifiedNote, open_note, parse_note, sign_note,
};
pub use proof::{
    ConsistencyProof, InclusionProof, MAX_PROOF_LEN, MemoryTree, NodeSource, ProofError,
    ProveError, prove_consistency, prove_inclusion, subtree_root, tree_root,
};
pub use tile::{BundleId, TILE_HEIGHT, TILE_WIDTH, TileError, TileId, TilePath};
pub use tlog_proof::{TlogProof, TlogProofError};

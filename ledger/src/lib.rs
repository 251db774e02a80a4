//! akashi's append-only log (skeleton under construction).

pub mod hash;
pub mod proof;

pub use hash::{Hash, LeafIndex, TreeSize, empty_root, hash_children, hash_leaf};
pub use proof::{
    ConsistencyProof, InclusionProof, MAX_PROOF_LEN, MemoryTree, NodeSource, ProofError, ProveError,
    prove_consistency, prove_inclusion, subtree_root, tree_root,
};

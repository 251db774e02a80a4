//! akashi's append-only log (skeleton under construction).

pub mod hash;

pub use hash::{Hash, LeafIndex, TreeSize, empty_root, hash_children, hash_leaf};

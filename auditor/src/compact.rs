//! A compact range over a log's first `n` leaves: one hash per set bit of `n` (at most 64), the
//! roots of the perfect subtrees that the RFC 9162 tree of `n` leaves splits into, largest first.
//!
//! Appending a leaf merges equal-sized subtrees like a binary counter (one leaf hash plus, on
//! average, one node hash), and the root of the tree of the current size folds these hashes
//! right to left (RFC 9162 §2.1.1). So a reader streaming a log of any size recomputes the root
//! at every size it wants in O(log n) memory, where keeping the tree would take O(n).
//!
//! This module does not prove anything (see `ledger::proof`) and cannot go back to an earlier
//! size: check each size while passing it.

use ledger::hash::{Hash, TreeSize, empty_root, hash_children};

/// The roots of the perfect subtrees of the tree of [`CompactRange::size`] leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Subtree roots, leftmost (largest) first; one per set bit of `size`.
    nodes: Vec<Hash>,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves have been pushed.
    pub fn size(&self) -> TreeSize {
        TreeSize(self.size)
    }

    /// Appends the leaf with RFC 9162 leaf hash `leaf_hash`.
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut node = leaf_hash;
        let mut size = self.size;
        // Each trailing one bit of the old size is a perfect subtree of the same height as
        // `node`: merge it in, as a carry propagates in binary addition.
        while size & 1 == 1 {
            match self.nodes.pop() {
                Some(left) => node = hash_children(&left, &node),
                // INVARIANT: `nodes` has one entry per set bit of `size`, so this is unreachable.
                None => break,
            }
            size >>= 1;
        }
        self.nodes.push(node);
        self.size = self.size.saturating_add(1);
    }

    /// The RFC 9162 root hash of the tree of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| hash_children(left, &right))
    }
}

#[cfg(test)]
mod tests;

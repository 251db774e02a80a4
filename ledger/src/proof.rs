//! RFC 9162 §2.1.3–2.1.4 Merkle inclusion and consistency proofs: verifying them, and building
//! them from any [`NodeSource`] with O(log n) node reads.
//!
//! Verification needs nothing but the proof, the hashes and the sizes, so it is what the auditor
//! links. Building a proof needs the hashes of complete subtrees, which a [`NodeSource`] provides
//! (the sled store, tiles fetched over HTTP, or [`MemoryTree`] in tests).
//!
//! This module does no I/O and knows nothing about checkpoints, signatures or how proofs travel
//! (see `checkpoint` and `tlog_proof` for those). It also does not decide whether an old size of
//! zero is acceptable to a caller: a consistency proof from the empty tree is not defined here
//! (RFC 9162 §2.1.4.1 defines `PROOF(m, D[n])` for `0 < m`), because every tree extends the empty
//! tree and there is nothing to prove. Callers that start from nothing trust their first
//! checkpoint on its signature alone.
//!
//! ```
//! use ledger::hash::{LeafIndex, TreeSize, hash_leaf};
//! use ledger::proof::{MemoryTree, prove_consistency, prove_inclusion};
//!
//! let mut tree = MemoryTree::new();
//! for i in 0..10u8 {
//!     tree.push_leaf(&[i]);
//! }
//! let old_root = tree.root_at(TreeSize(7))?;
//! let proof = prove_inclusion(&tree, LeafIndex(3), tree.size())?;
//! proof.verify(&hash_leaf(&[3]), &tree.root())?;
//! let proof = prove_consistency(&tree, TreeSize(7), tree.size())?;
//! proof.verify(&old_root, &tree.root())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::hash::{Hash, LeafIndex, TreeSize, empty_root, hash_children, hash_leaf};

/// The longest proof accepted or produced: 64 hashes, enough for any inclusion proof in a tree of
/// up to 2^64 − 1 leaves and any consistency proof between trees of up to 2^63 leaves.
pub const MAX_PROOF_LEN: usize = 64;

/// An RFC 9162 §2.1.3 inclusion proof: the audit path of one leaf in a tree of a given size.
///
/// The path runs from the leaf's sibling up to a child of the root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InclusionProof {
    /// The zero-based position of the leaf.
    pub leaf_index: LeafIndex,
    /// The size of the tree the proof is against.
    pub tree_size: TreeSize,
    /// The audit path, leaf level first.
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Checks that the leaf with hash `leaf_hash` sits at `leaf_index` in the tree of
    /// `tree_size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
    ///
    /// # Errors
    ///
    /// [`ProofError::IndexOutOfRange`] when the index is not below the size (this includes every
    /// proof against the empty tree), [`ProofError::PathTooLong`] or
    /// [`ProofError::WrongPathLength`] when the path does not have exactly the number of hashes the
    /// index and size call for, and [`ProofError::RootMismatch`] when the path leads elsewhere.
    pub fn verify(&self, leaf_hash: &Hash, root: &Hash) -> Result<(), ProofError> {
        if self.root_from_leaf(leaf_hash)? != *root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }

    /// The root that this proof leads to from `leaf_hash`: hashing the path without comparing
    /// the result to anything. Use [`InclusionProof::verify`] unless you need the root itself.
    ///
    /// # Errors
    ///
    /// As for [`InclusionProof::verify`], except that no root is compared.
    pub fn root_from_leaf(&self, leaf_hash: &Hash) -> Result<Hash, ProofError> {
        let (index, size) = (self.leaf_index.0, self.tree_size.0);
        if index >= size {
            return Err(ProofError::IndexOutOfRange {
                index: self.leaf_index,
                size: self.tree_size,
            });
        }
        check_len_cap(self.path.len())?;
        // INVARIANT: size > index >= 0, so size - 1 does not underflow.
        let shape = PathShape::new(index, size - 1);
        check_len(self.path.len(), shape.len())?;
        Ok(shape.fold(*leaf_hash, &self.path).full)
    }
}

/// An RFC 9162 §2.1.4 consistency proof: the hashes showing that the tree of `old_size` leaves is
/// a prefix of the tree of `new_size` leaves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsistencyProof {
    /// The size of the older, smaller tree.
    pub old_size: TreeSize,
    /// The size of the newer tree.
    pub new_size: TreeSize,
    /// The proof hashes, in RFC 9162 order.
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks that the tree with root `old_root` and `old_size` leaves is a prefix of the tree with
    /// root `new_root` and `new_size` leaves (RFC 9162 §2.1.4.2).
    ///
    /// Equal sizes need an empty path and equal roots. An old size of zero is rejected (see the
    /// module docs).
    ///
    /// # Errors
    ///
    /// [`ProofError::OldSizeZero`], [`ProofError::OldSizeLargerThanNew`],
    /// [`ProofError::PathTooLong`] or [`ProofError::WrongPathLength`] for proofs of the wrong shape,
    /// and [`ProofError::OldRootMismatch`] or [`ProofError::NewRootMismatch`] when the path leads
    /// elsewhere.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), ProofError> {
        let (old, new) = (self.old_size.0, self.new_size.0);
        if old == 0 {
            return Err(ProofError::OldSizeZero);
        }
        if old > new {
            return Err(ProofError::OldSizeLargerThanNew {
                old: self.old_size,
                new: self.new_size,
            });
        }
        check_len_cap(self.path.len())?;
        if old == new {
            check_len(self.path.len(), 0)?;
            if old_root != new_root {
                return Err(ProofError::NewRootMismatch);
            }
            return Ok(());
        }
        // The proof is the inclusion proof, in the new tree, of the rightmost complete subtree of
        // the old tree (node `index` at level `level`), preceded by that node's hash unless it is
        // the whole old tree (old size a power of two), whose hash the verifier already has.
        let level = old.trailing_zeros();
        // INVARIANT: 0 < old < new, so neither subtraction underflows.
        let (index, last) = ((old - 1) >> level, (new - 1) >> level);
        let shape = PathShape::new(index, last);
        let old_is_perfect = old.is_power_of_two();
        check_len(self.path.len(), shape.len() + usize::from(!old_is_perfect))?;
        let (seed, rest) = match (old_is_perfect, self.path.split_first()) {
            (true, _) => (*old_root, self.path.as_slice()),
            (false, Some((first, rest))) => (*first, rest),
            // INVARIANT: unreachable, the length check above asked for at least one hash.
            (false, None) => return Err(wrong_len(0, 1)),
        };
        let roots = shape.fold(seed, rest);
        if roots.left_only != *old_root {
            return Err(ProofError::OldRootMismatch);
        }
        if roots.full != *new_root {
            return Err(ProofError::NewRootMismatch);
        }
        Ok(())
    }
}

/// A source of complete-subtree node hashes: `node(level, index)` is the hash of the perfect
/// subtree of 2^level leaves starting at leaf `index << level` (level 0 = leaf hashes). Only nodes
/// that are complete in the tree being proven are ever requested.
pub trait NodeSource {
    /// Why a node could not be read.
    type Error;

    /// The hash of the perfect subtree of 2^`level` leaves starting at leaf `index << level`.
    ///
    /// # Errors
    ///
    /// Whatever the source fails with (a storage fault, a missing node).
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

impl<S: NodeSource + ?Sized> NodeSource for &S {
    type Error = S::Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        (**self).node(level, index)
    }
}

/// The root hash of the tree of the first `size` leaves, `MTH(D[0:size])` (RFC 9162 §2.1.1).
///
/// Reads at most 64 nodes (one per set bit of `size`).
///
/// # Errors
///
/// [`ProveError::Source`] when a node cannot be read.
pub fn tree_root<S: NodeSource>(src: &S, size: TreeSize) -> Result<Hash, ProveError<S::Error>> {
    if size.0 == 0 {
        return Ok(empty_root());
    }
    subtree_root(src, 0, size.0)
}

/// `MTH(D[start:end])`, where `[start, end)` is an RFC 9162 subtree: non-empty, and `start` is a
/// multiple of the smallest power of two not below `end - start`. The range is split into complete
/// nodes (one per set bit of its length, largest first) which are hashed together right to left.
///
/// # Errors
///
/// [`ProveError::NotASubtree`] for any other range, [`ProveError::Source`] when a node cannot be
/// read.
pub fn subtree_root<S: NodeSource>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Hash, ProveError<S::Error>> {
    let not_a_subtree = ProveError::NotASubtree { start, end };
    let Some(len) = end.checked_sub(start).filter(|len| *len > 0) else {
        return Err(not_a_subtree);
    };
    // The height of the smallest perfect tree that holds `len` leaves.
    let height = bit_len(len - 1);
    let aligned = match 1u64.checked_shl(height) {
        Some(block) => start.is_multiple_of(block),
        None => start == 0,
    };
    if !aligned {
        return Err(not_a_subtree);
    }
    let mut acc: Option<Hash> = None;
    let mut piece_end = end;
    for level in 0..64u8 {
        let piece = 1u64 << level;
        if len & piece == 0 {
            continue;
        }
        // INVARIANT: the pieces below this one sum to less than `piece_end - start`, so this
        // piece lies inside the range and does not underflow.
        let piece_start = piece_end - piece;
        let node = src
            .node(level, piece_start >> level)
            .map_err(ProveError::Source)?;
        acc = Some(match acc {
            None => node,
            Some(right) => hash_children(&node, &right),
        });
        piece_end = piece_start;
    }
    // INVARIANT: len > 0 has at least one set bit, so `acc` is set.
    acc.ok_or(not_a_subtree)
}

/// Builds the inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1).
///
/// Reads O(log size) nodes.
///
/// # Errors
///
/// [`ProveError::IndexOutOfRange`] when `index` is not below `size`, [`ProveError::Source`] when a
/// node cannot be read.
pub fn prove_inclusion<S: NodeSource>(
    src: &S,
    index: LeafIndex,
    size: TreeSize,
) -> Result<InclusionProof, ProveError<S::Error>> {
    if index.0 >= size.0 {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    let path = audit_path(src, 0, index.0, size.0)?;
    Ok(InclusionProof {
        leaf_index: index,
        tree_size: size,
        path,
    })
}

/// Builds the consistency proof from the tree of `old` leaves to the tree of `new` leaves
/// (RFC 9162 §2.1.4.1). Equal sizes give an empty proof; an old size of zero is rejected (see the
/// module docs).
///
/// Reads O(log new) nodes.
///
/// # Errors
///
/// [`ProveError::OldSizeZero`], [`ProveError::OldSizeLargerThanNew`], or [`ProveError::Source`]
/// when a node cannot be read.
pub fn prove_consistency<S: NodeSource>(
    src: &S,
    old: TreeSize,
    new: TreeSize,
) -> Result<ConsistencyProof, ProveError<S::Error>> {
    if old.0 == 0 {
        return Err(ProveError::OldSizeZero);
    }
    if old > new {
        return Err(ProveError::OldSizeLargerThanNew { old, new });
    }
    let mut path = Vec::new();
    if old != new {
        let level = old.0.trailing_zeros();
        // INVARIANT: old > 0, so this does not underflow.
        let index = (old.0 - 1) >> level;
        if !old.0.is_power_of_two() {
            path.push(
                src.node(level_u8(level), index)
                    .map_err(ProveError::Source)?,
            );
        }
        path.extend(audit_path(src, level, index, new.0)?);
    }
    Ok(ConsistencyProof {
        old_size: old,
        new_size: new,
        path,
    })
}

/// Why a proof was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index the proof claims.
        index: LeafIndex,
        /// The size the proof claims.
        size: TreeSize,
    },
    /// A consistency proof leads to a new root other than the expected one.
    #[error("consistency proof does not lead to the expected new root")]
    NewRootMismatch,
    /// A consistency proof leads to an old root other than the expected one.
    #[error("consistency proof does not lead to the expected old root")]
    OldRootMismatch,
    /// A consistency proof's old size is larger than its new size.
    #[error("old size {old} is larger than new size {new}")]
    OldSizeLargerThanNew {
        /// The old size the proof claims.
        old: TreeSize,
        /// The new size the proof claims.
        new: TreeSize,
    },
    /// A consistency proof from the empty tree, which is not defined.
    #[error("consistency proofs from the empty tree are not defined")]
    OldSizeZero,
    /// The proof is longer than [`MAX_PROOF_LEN`].
    #[error("proof has {got} hashes, more than the limit of {max}")]
    PathTooLong {
        /// How many hashes the proof has.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An inclusion proof leads to a root other than the expected one.
    #[error("inclusion proof does not lead to the expected root")]
    RootMismatch,
    /// The proof does not have the number of hashes its sizes call for.
    #[error("proof has {got} hashes, expected {want}")]
    WrongPathLength {
        /// How many hashes the proof has.
        got: usize,
        /// How many hashes the sizes call for.
        want: usize,
    },
}

/// Why a proof could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError<E> {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested index.
        index: LeafIndex,
        /// The requested tree size.
        size: TreeSize,
    },
    /// The range is not an RFC 9162 subtree.
    #[error("leaves {start}..{end} do not form a subtree")]
    NotASubtree {
        /// First leaf of the range.
        start: u64,
        /// One past the last leaf of the range.
        end: u64,
    },
    /// The old size is larger than the new size.
    #[error("old size {old} is larger than new size {new}")]
    OldSizeLargerThanNew {
        /// The requested old size.
        old: TreeSize,
        /// The requested new size.
        new: TreeSize,
    },
    /// A consistency proof from the empty tree was requested.
    #[error("consistency proofs from the empty tree are not defined")]
    OldSizeZero,
    /// The node source failed.
    #[error("reading a tree node failed")]
    Source(#[source] E),
}

/// An in-memory Merkle tree over a plain `Vec` of leaf hashes, for tests and small trees.
///
/// Every node is computed from the leaves by the RFC 9162 §2.1.1 definition on each request, so a
/// node at level `k` costs 2^k − 1 hashes: fine as a reference model in tests (it shares no code
/// with the stored tree, which makes it a useful oracle), far too slow for a real log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over these leaf hashes, in order.
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        Self { leaves }
    }

    /// Appends a leaf by its bytes; returns its index.
    pub fn push_leaf(&mut self, leaf: &[u8]) -> LeafIndex {
        self.push_hash(hash_leaf(leaf))
    }

    /// Appends a leaf by its leaf hash; returns its index.
    pub fn push_hash(&mut self, leaf_hash: Hash) -> LeafIndex {
        self.leaves.push(leaf_hash);
        LeafIndex(self.leaves.len() as u64 - 1)
    }

    /// The number of leaves.
    pub fn size(&self) -> TreeSize {
        TreeSize(self.leaves.len() as u64)
    }

    /// The leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        &self.leaves
    }

    /// The root hash of the whole tree.
    pub fn root(&self) -> Hash {
        mth(&self.leaves)
    }

    /// The root hash of the tree of the first `size` leaves.
    ///
    /// # Errors
    ///
    /// [`MemoryTreeError::SizeOutOfRange`] when the tree has fewer leaves.
    pub fn root_at(&self, size: TreeSize) -> Result<Hash, MemoryTreeError> {
        let prefix = usize::try_from(size.0)
            .ok()
            .and_then(|n| self.leaves.get(..n))
            .ok_or(MemoryTreeError::SizeOutOfRange {
                size,
                have: self.size(),
            })?;
        Ok(mth(prefix))
    }
}

impl NodeSource for MemoryTree {
    type Error = MemoryTreeError;

    fn node(&self, level: u8, index: u64) -> Result<Hash, MemoryTreeError> {
        let out_of_range = MemoryTreeError::NodeOutOfRange {
            level,
            index,
            size: self.size(),
        };
        let width = 1u64.checked_shl(u32::from(level)).ok_or(out_of_range)?;
        let start = index.checked_mul(width).ok_or(out_of_range)?;
        let end = start.checked_add(width).ok_or(out_of_range)?;
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(out_of_range);
        };
        let leaves = self.leaves.get(start..end).ok_or(out_of_range)?;
        Ok(mth(leaves))
    }
}

/// Why a [`MemoryTree`] could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryTreeError {
    /// The requested node is not complete in the tree.
    #[error("node {index} at level {level} is not complete in a tree of size {size}")]
    NodeOutOfRange {
        /// The requested level.
        level: u8,
        /// The requested index.
        index: u64,
        /// The tree's size.
        size: TreeSize,
    },
    /// The requested size is larger than the tree.
    #[error("tree size {size} is larger than the tree ({have} leaves)")]
    SizeOutOfRange {
        /// The requested size.
        size: TreeSize,
        /// The tree's size.
        have: TreeSize,
    },
}

impl fmt::Display for InclusionProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inclusion of leaf {} in tree of size {} ({} hashes)",
            self.leaf_index,
            self.tree_size,
            self.path.len()
        )
    }
}

impl fmt::Display for ConsistencyProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consistency from size {} to size {} ({} hashes)",
            self.old_size,
            self.new_size,
            self.path.len()
        )
    }
}

/// The shape of the audit path of node `index` at some level, in a tree whose last node at that
/// level is `last` (RFC 9162 §2.1.3).
///
/// The path has `inner` hashes for the levels where the node and `last` are still in different
/// subtrees (a left or right sibling at each level, the topmost perhaps an incomplete right
/// subtree), then `border` hashes: above that, the node's ancestor is on the right edge of the
/// tree, so it has a sibling only where it is a right child, and that sibling is on its left.
#[derive(Clone, Copy, Debug)]
struct PathShape {
    index: u64,
    inner: u32,
    border: u32,
}

/// The two roots [`PathShape::fold`] computes.
struct Roots {
    /// The seed hashed with every path element: the root of the whole tree.
    full: Hash,
    /// The seed hashed with its left siblings only: the root of the tree that ends with the seed
    /// (the old tree of a consistency proof).
    left_only: Hash,
}

impl PathShape {
    fn new(index: u64, last: u64) -> Self {
        let inner = bit_len(index ^ last);
        let border = index.checked_shr(inner).unwrap_or(0).count_ones();
        Self {
            index,
            inner,
            border,
        }
    }

    fn len(self) -> usize {
        // INVARIANT: inner + border <= 64.
        (self.inner + self.border) as usize
    }

    /// Hashes `seed` up the path. The caller has checked that `path.len() == self.len()`.
    fn fold(self, seed: Hash, path: &[Hash]) -> Roots {
        let mut roots = Roots {
            full: seed,
            left_only: seed,
        };
        for (i, sibling) in (0u32..).zip(path) {
            let sibling_on_left = i >= self.inner || (self.index >> i) & 1 == 1;
            if sibling_on_left {
                roots.full = hash_children(sibling, &roots.full);
                roots.left_only = hash_children(sibling, &roots.left_only);
            } else {
                roots.full = hash_children(&roots.full, sibling);
            }
        }
        roots
    }
}

/// The audit path of node `index` at `level` in the tree of `size` leaves.
fn audit_path<S: NodeSource>(
    src: &S,
    level: u32,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    // INVARIANT: callers pass a node that is inside the tree, so size > 0.
    let last = size.saturating_sub(1) >> level;
    let shape = PathShape::new(index, last);
    let mut path = Vec::with_capacity(shape.len());
    for i in 0..shape.inner {
        // INVARIANT: level + i < 64 because index and last differ in bit i, and last < 2^(64 -
        // level).
        let sibling_level = level + i;
        let sibling = (index >> i) ^ 1;
        let start = sibling << sibling_level;
        let end = start.saturating_add(1u64 << sibling_level).min(size);
        path.push(subtree_root(src, start, end)?);
    }
    let mut i = shape.inner;
    while let Some(ancestor) = index.checked_shr(i).filter(|a| *a != 0) {
        if ancestor & 1 == 1 {
            path.push(
                src.node(level_u8(level + i), ancestor ^ 1)
                    .map_err(ProveError::Source)?,
            );
        }
        i += 1;
    }
    Ok(path)
}

/// `MTH(leaves)` by the RFC 9162 §2.1.1 definition.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            // The largest power of two smaller than the length.
            let split = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
            match leaves.split_at_checked(split) {
                Some((left, right)) => hash_children(&mth(left), &mth(right)),
                None => empty_root(),
            }
        }
    }
}

/// The number of bits needed to write `x`: 0 for 0, 64 for values with the top bit set.
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// A tree level below 64 as the `u8` that [`NodeSource::node`] takes.
fn level_u8(level: u32) -> u8 {
    // INVARIANT: levels of nodes in a tree of at most 2^64 - 1 leaves are below 64.
    u8::try_from(level).unwrap_or(u8::MAX)
}

fn check_len_cap(got: usize) -> Result<(), ProofError> {
    if got > MAX_PROOF_LEN {
        return Err(ProofError::PathTooLong {
            got,
            max: MAX_PROOF_LEN,
        });
    }
    Ok(())
}

fn check_len(got: usize, want: usize) -> Result<(), ProofError> {
    if got != want {
        return Err(wrong_len(got, want));
    }
    Ok(())
}

fn wrong_len(got: usize, want: usize) -> ProofError {
    ProofError::WrongPathLength { got, want }
}

#[cfg(test)]
mod tests;

//! RFC 9162 Merkle tree hashing (§2.1.1) and the newtypes that keep positions and sizes apart.
//!
//! A leaf hash is `SHA-256(0x00 || leaf)` and an interior node hash is
//! `SHA-256(0x01 || left || right)`; the hash of the empty tree is `SHA-256("")`. This module
//! does no I/O and knows nothing about where hashes are stored.

use std::fmt;

use sha2::{Digest, Sha256};

/// Length in bytes of every hash in the tree.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, a node hash, a root hash or a body commitment.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// Reads a hash from exactly [`HASH_LEN`] bytes.
    ///
    /// # Errors
    ///
    /// Returns [`HashLenError`] when `bytes` is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashLenError> {
        let array: [u8; HASH_LEN] = bytes
            .try_into()
            .map_err(|_| HashLenError { got: bytes.len() })?;
        Ok(Self(array))
    }

    /// Parses 64 lowercase or uppercase hex digits.
    ///
    /// # Errors
    ///
    /// Returns [`HashLenError`] when the text is not 32 bytes of hex.
    pub fn from_hex(text: &str) -> Result<Self, HashLenError> {
        let bytes = hex::decode(text).map_err(|_| HashLenError {
            got: text.len() / 2,
        })?;
        Self::from_slice(&bytes)
    }

    /// The hash as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// `SHA-256(data)`, with no domain prefix (used for commitments and the empty tree).
    pub fn sha256(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<[u8; HASH_LEN]> for Hash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }
}

/// A byte string was not a 32-byte hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hash must be 32 bytes, got {got}")]
pub struct HashLenError {
    /// How many bytes were given.
    pub got: usize,
}

/// The zero-based position of a leaf in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeafIndex(pub u64);

/// The number of leaves in a tree: a checkpoint's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TreeSize(pub u64);

impl LeafIndex {
    /// The index as a plain integer.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The smallest tree that contains this leaf.
    pub fn tree_size_after(self) -> TreeSize {
        TreeSize(self.0.saturating_add(1))
    }
}

impl TreeSize {
    /// The size as a plain integer.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Whether the leaf at `index` is inside a tree of this size.
    pub fn contains(self, index: LeafIndex) -> bool {
        index.0 < self.0
    }
}

impl fmt::Display for LeafIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for TreeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The hash of a leaf: `SHA-256(0x00 || leaf)` (RFC 9162 §2.1.1).
pub fn hash_leaf(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)` (RFC 9162 §2.1.1).
pub fn hash_children(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// The root hash of the empty tree: `SHA-256("")` (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Hash::sha256(b"")
}

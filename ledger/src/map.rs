//! A sparse Merkle map from 32-byte keys to 32-byte value hashes, kept node by node in a
//! key-value store and proven key by key: what per-patient completeness stands on.
//!
//! **Shape.** Keys are paths of 256 bits, most significant bit first, `0` to the left. The tree
//! is *compact*: a subtree holding no key is the empty hash ([`EMPTY`], 32 zero bytes), a subtree
//! holding exactly one key is that key's leaf node, placed as high as it can go, and any other
//! subtree is an inner node over its two halves. So the root is a function of the set of
//! `(key, value)` pairs alone (not of the order they arrived in), and a key's leaf sits about
//! `log2(n)` levels down when keys are uniformly random (map keys are VRF outputs).
//!
//! **Hashes** (domain bytes distinct from RFC 9162's `0x00` and `0x01`, so a map node can never
//! pass for a log node): leaf `SHA-256(0x12 || key || value)`, inner `SHA-256(0x13 || left ||
//! right)`.
//!
//! **Proofs** ([`MapProof`]): the sibling hashes from the root down to where the key's path ends,
//! and what it ends at: the key's own leaf (present, with its value), the empty hash or another
//! key's leaf whose key shares the path so far (absent). A verifier folds the siblings back up
//! and compares with a root it trusts.
//!
//! **Storage** ([`update`], [`prove`]): one stored record per node, keyed by its depth and path
//! under a caller-chosen prefix. An update reads and writes the nodes on one path (O(log n)
//! store operations and hashes), a proof reads them; nothing is ever held or rebuilt in memory,
//! so memory does not grow with the number of keys. The store is any [`NodeRead`] /
//! [`NodeWrite`]: the server passes its state transaction. [`root_of`] computes a root from a
//! whole set in memory, for tests and for a regulator's replay, which holds the set anyway.
//!
//! ```
//! use ledger::map::{self, MemoryNodes};
//! use ledger::hash::Hash;
//!
//! let mut nodes = MemoryNodes::default();
//! let (a, b) = ([1u8; 32], [0xf0u8; 32]);
//! map::update(&mut nodes, b"m/", &a, &Hash([7; 32]))?;
//! let root = map::update(&mut nodes, b"m/", &b, &Hash([8; 32]))?;
//! let (proof, proven_root) = map::prove(&nodes, b"m/", &a)?;
//! assert_eq!(proven_root, root);
//! assert_eq!(proof.verify(&root, &a)?, Some(Hash([7; 32])));
//! let (absent, _) = map::prove(&nodes, b"m/", &[0x80; 32])?;
//! assert_eq!(absent.verify(&root, &[0x80; 32])?, None);
//! # Ok::<(), ledger::map::MapError<std::convert::Infallible>>(())
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;

use sha2::{Digest as _, Sha256};

use crate::hash::{HASH_LEN, Hash};

/// A map key: 256 bits.
pub type MapKey = [u8; 32];

/// Bits in a key, so the deepest a node can be.
pub const KEY_BITS: usize = 256;

/// The hash of a subtree holding no key.
pub const EMPTY: Hash = Hash([0; HASH_LEN]);

const LEAF_DOMAIN: u8 = 0x12;
const INNER_DOMAIN: u8 = 0x13;
const INNER_TAG: u8 = 1;
const LEAF_TAG: u8 = 2;

/// The hash of the leaf node of `key` holding `value`.
#[must_use]
pub fn leaf_hash(key: &MapKey, value: &Hash) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([LEAF_DOMAIN])
            .chain_update(key)
            .chain_update(value.0)
            .finalize()
            .into(),
    )
}

/// The hash of an inner node.
#[must_use]
pub fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([INNER_DOMAIN])
            .chain_update(left.0)
            .chain_update(right.0)
            .finalize()
            .into(),
    )
}

/// Bit `depth` of `key` (most significant first): `true` goes right.
#[must_use]
pub fn bit(key: &MapKey, depth: usize) -> bool {
    key.get(depth / 8)
        .is_some_and(|byte| (byte >> (7 - depth % 8)) & 1 == 1)
}

/// Whether `a` and `b` agree on their first `depth` bits.
fn shares_prefix(a: &MapKey, b: &MapKey, depth: usize) -> bool {
    (0..depth).all(|d| bit(a, d) == bit(b, d))
}

/// Where a key's path ends in a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// An empty subtree: the key is absent.
    Empty,
    /// A leaf: the key's own (present, with `value`) or another key's sharing the path (absent).
    Leaf {
        /// The leaf's key.
        key: MapKey,
        /// The leaf's value hash.
        value: Hash,
    },
}

/// A proof of a key's value, or of its absence, against a map root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapProof {
    /// Sibling hashes from the root's children down to the terminal's level (index `d` is the
    /// sibling at depth `d + 1`).
    pub siblings: Vec<Hash>,
    /// What the path ends at.
    pub terminal: Terminal,
}

/// Why a proof or a stored node was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError<E> {
    /// The proof is longer than a key has bits.
    #[error("the map proof has {got} levels, more than {KEY_BITS}")]
    TooDeep {
        /// Levels in the proof.
        got: usize,
    },
    /// The proof's shape is one no compact tree has: a terminal leaf of another key that leaves
    /// the path, or a single key hanging below an empty sibling.
    #[error("the map proof is malformed: {0}")]
    Malformed(&'static str),
    /// The proof does not lead to the root.
    #[error("the map proof does not lead to the trusted map root")]
    RootMismatch,
    /// A stored node does not decode, or the stored nodes do not form a compact tree.
    #[error("the stored map is corrupt: {0}")]
    Corrupt(&'static str),
    /// The store failed.
    #[error("the map's store failed")]
    Store(#[source] E),
}

impl MapProof {
    /// The root this proof leads to for `key`, after checking its shape.
    ///
    /// # Errors
    ///
    /// [`MapError::TooDeep`] or [`MapError::Malformed`].
    pub fn root_for(&self, key: &MapKey) -> Result<Hash, MapError<Infallible>> {
        let depth = self.siblings.len();
        if depth > KEY_BITS {
            return Err(MapError::TooDeep { got: depth });
        }
        let mut hash = match &self.terminal {
            Terminal::Empty => EMPTY,
            Terminal::Leaf { key: other, value } => {
                if other != key && !shares_prefix(other, key, depth) {
                    return Err(MapError::Malformed(
                        "the terminal leaf is off the key's path",
                    ));
                }
                leaf_hash(other, value)
            }
        };
        // In a compact tree a lone key or an empty subtree never hangs below an empty sibling:
        // the key would sit higher, and an inner node has keys on both sides.
        if self.siblings.last() == Some(&EMPTY) {
            return Err(MapError::Malformed("the path ends below an empty sibling"));
        }
        for (d, sibling) in self.siblings.iter().enumerate().rev() {
            hash = if bit(key, d) {
                inner_hash(sibling, &hash)
            } else {
                inner_hash(&hash, sibling)
            };
        }
        Ok(hash)
    }

    /// Checks the proof against `root`: `Some(value)` when `key` is in the map, `None` when it
    /// is proven absent.
    ///
    /// # Errors
    ///
    /// [`MapError::RootMismatch`] when it does not lead to `root`; shape errors as
    /// [`MapProof::root_for`].
    pub fn verify(&self, root: &Hash, key: &MapKey) -> Result<Option<Hash>, MapError<Infallible>> {
        if self.root_for(key)? != *root {
            return Err(MapError::RootMismatch);
        }
        Ok(match &self.terminal {
            Terminal::Leaf { key: other, value } if other == key => Some(*value),
            _ => None,
        })
    }
}

/// The root of the map holding `entries` (keys unique), computed in memory.
#[must_use]
pub fn root_of(entries: &[(MapKey, Hash)]) -> Hash {
    let mut sorted: Vec<&(MapKey, Hash)> = entries.iter().collect();
    sorted.sort_unstable_by_key(|entry| entry.0);
    subtree_root(&sorted, 0)
}

fn subtree_root(entries: &[&(MapKey, Hash)], depth: usize) -> Hash {
    match entries {
        [] => EMPTY,
        [(key, value)] => leaf_hash(key, value),
        _ if depth >= KEY_BITS => EMPTY,
        _ => {
            // Sorted: the left half is a prefix of the slice.
            let split = entries.partition_point(|(key, _)| !bit(key, depth));
            let (left, right) = entries.split_at(split);
            inner_hash(
                &subtree_root(left, depth + 1),
                &subtree_root(right, depth + 1),
            )
        }
    }
}

/// Reads stored map nodes.
pub trait NodeRead {
    /// Why a read failed.
    type Error;
    /// The value stored under `key`.
    ///
    /// # Errors
    ///
    /// The store's error.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
}

/// Writes stored map nodes.
pub trait NodeWrite: NodeRead {
    /// Stores `value` under `key`.
    ///
    /// # Errors
    ///
    /// The store's error.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Self::Error>;
}

/// A stored node.
enum Node {
    Inner { left: Hash, right: Hash },
    Leaf { key: MapKey, value: Hash },
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Self::Inner { left, right } => inner_hash(left, right),
            Self::Leaf { key, value } => leaf_hash(key, value),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 * HASH_LEN);
        match self {
            Self::Inner { left, right } => {
                out.push(INNER_TAG);
                out.extend_from_slice(&left.0);
                out.extend_from_slice(&right.0);
            }
            Self::Leaf { key, value } => {
                out.push(LEAF_TAG);
                out.extend_from_slice(key);
                out.extend_from_slice(&value.0);
            }
        }
        out
    }

    fn decode<E>(bytes: &[u8]) -> Result<Self, MapError<E>> {
        let corrupt = || MapError::Corrupt("a node record does not decode");
        let (&tag, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if rest.len() != 2 * HASH_LEN {
            return Err(corrupt());
        }
        let (a, b) = rest.split_at(HASH_LEN);
        let a: [u8; HASH_LEN] = a.try_into().map_err(|_| corrupt())?;
        let b: [u8; HASH_LEN] = b.try_into().map_err(|_| corrupt())?;
        match tag {
            INNER_TAG => Ok(Self::Inner {
                left: Hash(a),
                right: Hash(b),
            }),
            LEAF_TAG => Ok(Self::Leaf {
                key: a,
                value: Hash(b),
            }),
            _ => Err(corrupt()),
        }
    }
}

/// The store key of the node at `depth` on `key`'s path: `prefix`, depth (2 bytes, big-endian),
/// then the path's first `depth` bits packed (unused trailing bits zero).
fn node_key(prefix: &[u8], key: &MapKey, depth: usize) -> Vec<u8> {
    let bytes = depth.div_ceil(8);
    let mut out = Vec::with_capacity(prefix.len() + 2 + bytes);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&u16::try_from(depth).unwrap_or(u16::MAX).to_be_bytes());
    for (i, byte) in key.iter().take(bytes).enumerate() {
        let used = depth - i * 8;
        out.push(if used >= 8 {
            *byte
        } else {
            byte & !(0xff >> used)
        });
    }
    out
}

fn read_node<S: NodeRead>(
    store: &S,
    prefix: &[u8],
    key: &MapKey,
    depth: usize,
) -> Result<Option<Node>, MapError<S::Error>> {
    match store
        .get(&node_key(prefix, key, depth))
        .map_err(MapError::Store)?
    {
        Some(bytes) => Node::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

fn write_node<S: NodeWrite>(
    store: &mut S,
    prefix: &[u8],
    key: &MapKey,
    depth: usize,
    node: &Node,
) -> Result<(), MapError<S::Error>> {
    store
        .put(&node_key(prefix, key, depth), &node.encode())
        .map_err(MapError::Store)
}

/// Sets `key` to `value` in the map stored under `prefix` and returns the new root. Reads and
/// writes the nodes on `key`'s path only.
///
/// # Errors
///
/// [`MapError::Store`] when the store fails; [`MapError::Corrupt`] when the stored nodes are
/// not a compact tree.
pub fn update<S: NodeWrite>(
    store: &mut S,
    prefix: &[u8],
    key: &MapKey,
    value: &Hash,
) -> Result<Hash, MapError<S::Error>> {
    // Down: the inner nodes on the path, until an empty spot or a leaf.
    let mut path: Vec<(Hash, Hash)> = Vec::new();
    let mut hash = loop {
        let depth = path.len();
        match read_node(store, prefix, key, depth)? {
            Some(Node::Inner { left, right }) => {
                if depth >= KEY_BITS {
                    return Err(MapError::Corrupt("an inner node below the last key bit"));
                }
                path.push((left, right));
            }
            None => {
                // An empty spot (the empty map's root, or an empty child): the key goes here.
                let leaf = Node::Leaf {
                    key: *key,
                    value: *value,
                };
                write_node(store, prefix, key, depth, &leaf)?;
                break leaf.hash();
            }
            Some(Node::Leaf { key: other, .. }) if other == *key => {
                let leaf = Node::Leaf {
                    key: *key,
                    value: *value,
                };
                write_node(store, prefix, key, depth, &leaf)?;
                break leaf.hash();
            }
            Some(Node::Leaf {
                key: other,
                value: other_value,
            }) => {
                // Another key sits here: push both down to where their paths part.
                if !shares_prefix(&other, key, depth) {
                    return Err(MapError::Corrupt("a leaf is off its key's path"));
                }
                let split = (depth..KEY_BITS)
                    .find(|&d| bit(&other, d) != bit(key, d))
                    .ok_or(MapError::Corrupt("two leaves with one key"))?;
                let mine = Node::Leaf {
                    key: *key,
                    value: *value,
                };
                let theirs = Node::Leaf {
                    key: other,
                    value: other_value,
                };
                write_node(store, prefix, key, split + 1, &mine)?;
                write_node(store, prefix, &other, split + 1, &theirs)?;
                let (left, right) = if bit(key, split) {
                    (theirs.hash(), mine.hash())
                } else {
                    (mine.hash(), theirs.hash())
                };
                let mut node = Node::Inner { left, right };
                write_node(store, prefix, key, split, &node)?;
                for d in (depth..split).rev() {
                    let below = node.hash();
                    node = if bit(key, d) {
                        Node::Inner {
                            left: EMPTY,
                            right: below,
                        }
                    } else {
                        Node::Inner {
                            left: below,
                            right: EMPTY,
                        }
                    };
                    write_node(store, prefix, key, d, &node)?;
                }
                break node.hash();
            }
        }
    };
    // Up: each inner node on the path takes the new hash of the side the key went down.
    for (depth, (left, right)) in path.into_iter().enumerate().rev() {
        let node = if bit(key, depth) {
            Node::Inner { left, right: hash }
        } else {
            Node::Inner { left: hash, right }
        };
        write_node(store, prefix, key, depth, &node)?;
        hash = node.hash();
    }
    Ok(hash)
}

/// The proof for `key` in the map stored under `prefix`, and the root it leads to (the stored
/// root as read along the way; compare it with the root you expect, since a concurrent writer
/// may have moved it).
///
/// # Errors
///
/// As [`update`].
pub fn prove<S: NodeRead>(
    store: &S,
    prefix: &[u8],
    key: &MapKey,
) -> Result<(MapProof, Hash), MapError<S::Error>> {
    let mut siblings = Vec::new();
    let terminal = loop {
        let depth = siblings.len();
        match read_node(store, prefix, key, depth)? {
            Some(Node::Inner { left, right }) => {
                if depth >= KEY_BITS {
                    return Err(MapError::Corrupt("an inner node below the last key bit"));
                }
                siblings.push(if bit(key, depth) { left } else { right });
            }
            Some(Node::Leaf { key, value }) => break Terminal::Leaf { key, value },
            None => break Terminal::Empty,
        }
    };
    let proof = MapProof { siblings, terminal };
    let root = proof
        .root_for(key)
        .map_err(|_| MapError::Corrupt("the stored path does not form a proof"))?;
    Ok((proof, root))
}

/// Map nodes in memory: for tests, examples and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct MemoryNodes(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl NodeRead for MemoryNodes {
    type Error = Infallible;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.0.get(key).cloned())
    }
}

impl NodeWrite for MemoryNodes {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Infallible> {
        self.0.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests;

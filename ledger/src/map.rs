//! A sparse Merkle map from 32-byte keys to 32-byte value hashes, kept tile by tile in a
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
//! **Storage** ([`Batch`], [`update`], [`prove`]): the tree is cut into *tiles* of
//! [`TILE_LEVELS`] levels, one stored record per tile, keyed by its top depth and path under a
//! caller-chosen prefix. An update reads and writes the tiles on one path (O(log n) hashes, and
//! `log2(n) / TILE_LEVELS` store records rather than one per level), a proof reads them; a
//! [`Batch`] of updates reads and writes each tile it touches once. Nothing beyond a batch's
//! paths is ever held or rebuilt in memory, so memory does not grow with the number of keys. The
//! store is any [`NodeRead`] / [`NodeWrite`]: the server passes its state transaction.
//! [`root_of`] computes a root from a whole set in memory, for tests and for checking a stored
//! map against the set it should hold.
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

use std::collections::{BTreeMap, HashMap, hash_map::Entry};
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
    /// An earlier update of this [`Batch`] failed, so its tiles may be half-changed: the batch
    /// writes nothing.
    #[error("an earlier update of this map batch failed; the batch is void")]
    BatchFailed,
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

/// A node of the compact tree.
#[derive(Clone, Copy)]
enum Node {
    Inner { left: Hash, right: Hash },
    Leaf { key: MapKey, value: Hash },
}

/// Bytes of an encoded node: a tag, then two 32-byte fields.
const NODE_LEN: usize = 1 + 2 * HASH_LEN;

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Self::Inner { left, right } => inner_hash(left, right),
            Self::Leaf { key, value } => leaf_hash(key, value),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
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

/// Levels of the tree one stored record (a *tile*) holds.
pub const TILE_LEVELS: usize = 4;

/// Node slots in a tile: `2^TILE_LEVELS - 1`, the nodes of a subtree `TILE_LEVELS` levels high.
const TILE_SLOTS: usize = (1 << TILE_LEVELS) - 1;

/// The nodes of the tree at depths `top .. top + TILE_LEVELS` under one path of `top` bits
/// (`top` a multiple of [`TILE_LEVELS`]), in heap order: slot 0 is the node at `top`, slots 1
/// and 2 its children, and so on. Stored as a 2-byte big-endian bitmap of the present slots
/// (bit `i` for slot `i`) followed by the present nodes in slot order.
#[derive(Clone)]
struct Tile {
    slots: [Option<Node>; TILE_SLOTS],
}

impl Tile {
    const EMPTY: Self = Self {
        slots: [None; TILE_SLOTS],
    };

    /// The node in `slot` ([`tile_slot`] gives slots below [`TILE_SLOTS`]).
    fn node(&self, slot: usize) -> Option<Node> {
        self.slots.get(slot).copied().flatten()
    }

    fn set(&mut self, slot: usize, node: Node) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(node);
        }
    }

    fn encode(&self) -> Vec<u8> {
        let present = self.slots.iter().filter(|s| s.is_some()).count();
        let mut out = Vec::with_capacity(2 + present * NODE_LEN);
        let bitmap = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .fold(0u16, |bits, (i, _)| bits | (1 << i));
        out.extend_from_slice(&bitmap.to_be_bytes());
        for node in self.slots.iter().flatten() {
            node.encode_into(&mut out);
        }
        out
    }

    fn decode<E>(bytes: &[u8]) -> Result<Self, MapError<E>> {
        let corrupt = || MapError::Corrupt("a tile record does not decode");
        let (bitmap, mut rest) = bytes.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let bitmap = u16::from_be_bytes(*bitmap);
        if bitmap >> TILE_SLOTS != 0 || rest.len() != bitmap.count_ones() as usize * NODE_LEN {
            return Err(corrupt());
        }
        let mut tile = Self::EMPTY;
        for i in 0..TILE_SLOTS {
            if bitmap & (1 << i) != 0 {
                let (node, tail) = rest.split_at_checked(NODE_LEN).ok_or_else(corrupt)?;
                // A compact tree has a node below only an inner node: slot 0 is the tile's top
                // (its parent is in the tile above), every other slot's parent is in this tile.
                if i > 0 && !matches!(tile.node((i - 1) / 2), Some(Node::Inner { .. })) {
                    return Err(MapError::Corrupt("a tile has a node below a leaf or a gap"));
                }
                tile.set(i, Node::decode(node)?);
                rest = tail;
            }
        }
        if bitmap & 1 == 0 {
            // Nothing is stored for an empty subtree.
            return Err(MapError::Corrupt("a stored tile is empty"));
        }
        Ok(tile)
    }
}

/// The top depth of the tile holding depth `depth`.
fn tile_top(depth: usize) -> usize {
    depth - depth % TILE_LEVELS
}

/// The slot of the node at `depth` on `key`'s path in its tile.
fn tile_slot(key: &MapKey, depth: usize) -> usize {
    let top = tile_top(depth);
    (top..depth).fold(1, |slot, d| slot * 2 + usize::from(bit(key, d))) - 1
}

/// The store key of the tile at `top` on `key`'s path: `prefix`, `top` (2 bytes, big-endian),
/// then the path's first `top` bits packed (unused trailing bits zero).
fn tile_key(prefix: &[u8], key: &MapKey, top: usize) -> Vec<u8> {
    let bytes = top.div_ceil(8);
    let mut out = Vec::with_capacity(prefix.len() + 2 + bytes);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&u16::try_from(top).unwrap_or(u16::MAX).to_be_bytes());
    for (i, byte) in key.iter().take(bytes).enumerate() {
        let used = top - i * 8;
        out.push(if used >= 8 {
            *byte
        } else {
            byte & !(0xff >> used)
        });
    }
    out
}

fn read_tile<S: NodeRead>(
    store: &S,
    prefix: &[u8],
    key: &MapKey,
    top: usize,
) -> Result<Tile, MapError<S::Error>> {
    match store
        .get(&tile_key(prefix, key, top))
        .map_err(MapError::Store)?
    {
        Some(bytes) => Tile::decode(&bytes),
        None => Ok(Tile::EMPTY),
    }
}

/// A tile read for a [`Batch`], and whether the batch changed it.
struct CachedTile {
    tile: Tile,
    dirty: bool,
}

/// Updates to the map stored under one prefix, gathered in memory and written when the batch
/// [`finish`](Batch::finish)es: each tile the batch touches is read once and written once,
/// however many of the batch's keys pass through it (the upper tiles are shared by every key).
/// Memory is bounded by the tiles on the batch's paths, never the map.
///
/// An update that fails (the store, or a corrupt tile) may leave the batch's tiles half-changed:
/// the batch is then void, and [`finish`](Batch::finish) writes nothing and says so.
pub struct Batch<'s, S: NodeWrite> {
    store: &'s mut S,
    prefix: Vec<u8>,
    tiles: HashMap<Vec<u8>, CachedTile>,
    failed: bool,
}

impl<'s, S: NodeWrite> Batch<'s, S> {
    /// A batch of updates to the map under `prefix` in `store`.
    pub fn new(store: &'s mut S, prefix: &[u8]) -> Self {
        Self {
            store,
            prefix: prefix.to_vec(),
            tiles: HashMap::new(),
            failed: false,
        }
    }

    /// The store the batch reads from (and will write to when it finishes). Its map tiles are
    /// as they were before the batch until it finishes; other keys are the caller's.
    pub fn store(&self) -> &S {
        self.store
    }

    fn tile(&mut self, key: &MapKey, depth: usize) -> Result<&mut CachedTile, MapError<S::Error>> {
        let top = tile_top(depth);
        let id = tile_key(&self.prefix, key, top);
        Ok(match self.tiles.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let tile = read_tile(&*self.store, &self.prefix, key, top)?;
                entry.insert(CachedTile { tile, dirty: false })
            }
        })
    }

    fn read(&mut self, key: &MapKey, depth: usize) -> Result<Option<Node>, MapError<S::Error>> {
        let slot = tile_slot(key, depth);
        Ok(self.tile(key, depth)?.tile.node(slot))
    }

    fn write(&mut self, key: &MapKey, depth: usize, node: Node) -> Result<(), MapError<S::Error>> {
        let slot = tile_slot(key, depth);
        let cached = self.tile(key, depth)?;
        cached.tile.set(slot, node);
        cached.dirty = true;
        Ok(())
    }

    /// Sets `key` to `value` and returns the map's new root (as of this batch so far). Touches
    /// the tiles on `key`'s path only: O(log n) hashes.
    ///
    /// # Errors
    ///
    /// [`MapError::Store`] when the store fails; [`MapError::Corrupt`] when the stored tiles are
    /// not a compact tree.
    /// A failed update voids the batch ([`MapError::BatchFailed`] from then on).
    pub fn update(&mut self, key: &MapKey, value: &Hash) -> Result<Hash, MapError<S::Error>> {
        if self.failed {
            return Err(MapError::BatchFailed);
        }
        let result = self.update_path(key, value);
        self.failed = result.is_err();
        result
    }

    fn update_path(&mut self, key: &MapKey, value: &Hash) -> Result<Hash, MapError<S::Error>> {
        let mine = Node::Leaf {
            key: *key,
            value: *value,
        };
        // Down: the inner nodes on the path, until an empty spot or a leaf.
        let mut path: Vec<(Hash, Hash)> = Vec::new();
        let mut hash = loop {
            let depth = path.len();
            match self.read(key, depth)? {
                Some(Node::Inner { left, right }) => {
                    if depth >= KEY_BITS {
                        return Err(MapError::Corrupt("an inner node below the last key bit"));
                    }
                    path.push((left, right));
                }
                // An empty spot (the empty map's root, or an empty child), or the key's own
                // leaf: the key goes here.
                None => {
                    self.write(key, depth, mine)?;
                    break mine.hash();
                }
                Some(Node::Leaf { key: other, .. }) if other == *key => {
                    self.write(key, depth, mine)?;
                    break mine.hash();
                }
                Some(theirs @ Node::Leaf { key: other, .. }) => {
                    // Another key sits here: push both down to where their paths part.
                    if !shares_prefix(&other, key, depth) {
                        return Err(MapError::Corrupt("a leaf is off its key's path"));
                    }
                    let split = (depth..KEY_BITS)
                        .find(|&d| bit(&other, d) != bit(key, d))
                        .ok_or(MapError::Corrupt("two leaves with one key"))?;
                    self.write(key, split + 1, mine)?;
                    self.write(&other, split + 1, theirs)?;
                    let (left, right) = if bit(key, split) {
                        (theirs.hash(), mine.hash())
                    } else {
                        (mine.hash(), theirs.hash())
                    };
                    let mut node = Node::Inner { left, right };
                    self.write(key, split, node)?;
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
                        self.write(key, d, node)?;
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
            self.write(key, depth, node)?;
            hash = node.hash();
        }
        Ok(hash)
    }

    /// Writes the tiles the batch changed, in key order, and returns how many.
    ///
    /// # Errors
    ///
    /// [`MapError::Store`] when the store fails; [`MapError::BatchFailed`] (nothing written) when
    /// an update of the batch failed.
    pub fn finish(self) -> Result<usize, MapError<S::Error>> {
        if self.failed {
            return Err(MapError::BatchFailed);
        }
        let mut dirty: Vec<(Vec<u8>, Tile)> = self
            .tiles
            .into_iter()
            .filter(|(_, cached)| cached.dirty)
            .map(|(id, cached)| (id, cached.tile))
            .collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (id, tile) in &dirty {
            self.store
                .put(id, &tile.encode())
                .map_err(MapError::Store)?;
        }
        Ok(dirty.len())
    }
}

/// Sets `key` to `value` in the map stored under `prefix` and returns the new root: a
/// [`Batch`] of one. Reads and writes the tiles on `key`'s path only.
///
/// # Errors
///
/// As [`Batch::update`].
pub fn update<S: NodeWrite>(
    store: &mut S,
    prefix: &[u8],
    key: &MapKey,
    value: &Hash,
) -> Result<Hash, MapError<S::Error>> {
    let mut batch = Batch::new(store, prefix);
    let root = batch.update(key, value)?;
    batch.finish()?;
    Ok(root)
}

/// The proof for `key` in the map stored under `prefix`, and the root it leads to (the stored
/// root as read along the way; compare it with the root you expect, since a concurrent writer
/// may have moved it). Reads one tile per [`TILE_LEVELS`] levels of the path.
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
    let mut tile = Tile::EMPTY;
    let terminal = loop {
        let depth = siblings.len();
        if depth % TILE_LEVELS == 0 {
            tile = read_tile(store, prefix, key, depth)?;
        }
        match tile.node(tile_slot(key, depth)) {
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

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

/// Which tile: its top depth and the path of `top` bits leading to it (later bits zero).
/// Ordered as the store keys of [`TileId::store_key`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileId {
    top: u16,
    path: MapKey,
}

impl TileId {
    /// The tile at `top` on `key`'s path.
    fn on_path(key: &MapKey, top: usize) -> Self {
        let mut path = [0u8; 32];
        let full = top / 8;
        for (i, (out, byte)) in path.iter_mut().zip(key).enumerate() {
            if i < full {
                *out = *byte;
            } else if i == full && !top.is_multiple_of(8) {
                *out = byte & !(0xff >> (top % 8));
            }
        }
        Self {
            top: u16::try_from(top).unwrap_or(u16::MAX),
            path,
        }
    }

    /// The tile below bottom-row slot `slot` of this one, on side `right`.
    fn child(&self, slot: usize, right: bool) -> Self {
        let top = usize::from(self.top);
        let mut path = self.path;
        // The slot's position in the bottom row: its bits are the three levels above.
        let position = slot + 1 - (1 << (TILE_LEVELS - 1));
        for level in 0..TILE_LEVELS {
            let on = if level + 1 == TILE_LEVELS {
                right
            } else {
                (position >> (TILE_LEVELS - 2 - level)) & 1 == 1
            };
            let depth = top + level;
            if on && let Some(byte) = path.get_mut(depth / 8) {
                *byte |= 0x80 >> (depth % 8);
            }
        }
        Self {
            top: u16::try_from(top + TILE_LEVELS).unwrap_or(u16::MAX),
            path,
        }
    }

    /// The key the tile is stored under: `prefix`, `top` (2 bytes, big-endian), then the path's
    /// first `top` bits packed.
    #[must_use]
    pub fn store_key(&self, prefix: &[u8]) -> Vec<u8> {
        let bytes = usize::from(self.top).div_ceil(8);
        let mut out = Vec::with_capacity(prefix.len() + 2 + bytes);
        out.extend_from_slice(prefix);
        out.extend_from_slice(&self.top.to_be_bytes());
        out.extend_from_slice(self.path.get(..bytes).unwrap_or(&self.path));
        out
    }
}

fn read_tile<S: NodeRead>(
    store: &S,
    prefix: &[u8],
    id: &TileId,
) -> Result<Tile, MapError<S::Error>> {
    match store.get(&id.store_key(prefix)).map_err(MapError::Store)? {
        Some(bytes) => Tile::decode(&bytes),
        None => Ok(Tile::EMPTY),
    }
}

/// Tiles held in memory in front of the store: the map's newest tiles where they differ from
/// the stored ones (a writer that writes tiles behind, [`Sealed::into_cache`]), read before the
/// store by [`Batch::over`] and [`prove_over`]. Bounded by its holder: it grows by the tiles the
/// batches change until the holder writes them out ([`TileCache::encoded`]) and clears it.
#[derive(Clone, Default)]
pub struct TileCache {
    /// Boxed: a tile is ≈ 1 KB, and a table of tiles held inline would move every one of them
    /// (and fault in a table twice the size) each time it grows — tens of milliseconds at the
    /// writer's bound, in one batch.
    tiles: HashMap<TileId, Box<Tile>>,
}

impl std::fmt::Debug for TileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileCache")
            .field("tiles", &self.tiles.len())
            .finish()
    }
}

impl TileCache {
    /// Tiles held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// Whether it holds no tile.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Bytes of memory a tile takes here, about (for sizing a bound).
    pub const TILE_BYTES: usize = std::mem::size_of::<Tile>()
        + std::mem::size_of::<TileId>()
        + std::mem::size_of::<Box<Tile>>()
        + 16;

    /// The held tiles as `(store key, record)` under `prefix`, in key order: what writing them
    /// to the store means.
    #[must_use]
    pub fn encoded(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut ids: Vec<&TileId> = self.tiles.keys().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let tile = self.tiles.get(id)?;
                Some((id.store_key(prefix), tile.encode()))
            })
            .collect()
    }

    /// The held tiles on `key`'s path: everything a proof of `key` reads from the cache, so that
    /// a prover can copy them out and read the store without holding the cache.
    #[must_use]
    pub fn on_path(&self, key: &MapKey) -> TileCache {
        let tiles = (0..=KEY_BITS)
            .step_by(TILE_LEVELS)
            .filter_map(|top| {
                let id = TileId::on_path(key, top);
                self.tiles.get(&id).map(|tile| (id, tile.clone()))
            })
            .collect();
        TileCache { tiles }
    }

    /// Forgets every tile.
    pub fn clear(&mut self) {
        self.tiles.clear();
    }

    /// Puts `top`'s tiles over these: where both hold a tile, `top`'s is kept.
    pub fn overlay(&mut self, top: TileCache) {
        self.tiles.extend(top.tiles);
    }

    /// The held tiles' ids, in store-key order: a writer that writes them out a few at a time
    /// ([`encoded_tile`](TileCache::encoded_tile)) walks this list.
    #[must_use]
    pub fn ids(&self) -> Vec<TileId> {
        let mut ids: Vec<TileId> = self.tiles.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Tile `id` as `(store key under prefix, record)`, if held.
    #[must_use]
    pub fn encoded_tile(&self, id: &TileId, prefix: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        self.tiles
            .get(id)
            .map(|tile| (id.store_key(prefix), tile.encode()))
    }
}

/// A tile a [`Batch`] read, the slots it changed (bit `i` for slot `i`) and, once
/// [`Batch::finish`] hashed it, the hash of its top node.
struct CachedTile {
    tile: Tile,
    dirty: u16,
}

/// Updates to the map stored under one prefix, gathered in memory and hashed once when the
/// batch [`finish`](Batch::finish)es: each tile the batch touches is read once (from the
/// [`TileCache`] in front of the store, if any, else the store), and every node on the
/// batch's paths is hashed once however many of its keys pass through it — the upper levels,
/// shared by every key, are not rehashed per key. Memory is bounded by the tiles on the batch's
/// paths, never the map. The batch writes nothing itself: [`Sealed`] says what changed.
///
/// An update that fails (the store, or a corrupt tile) may leave the batch's tiles half-changed:
/// the batch is then void, and [`finish`](Batch::finish) says so.
pub struct Batch<'s, S: NodeRead> {
    store: &'s S,
    prefix: Vec<u8>,
    /// Tiles held in front of the store, newest first.
    fronts: Vec<&'s TileCache>,
    tiles: HashMap<TileId, CachedTile>,
    failed: bool,
}

/// What a finished [`Batch`] changed: the map's new root and the changed tiles, to be written
/// to the store ([`Sealed::write`]) or kept in front of it ([`Sealed::into_cache`]).
pub struct Sealed {
    root: Hash,
    tiles: Vec<(TileId, Tile)>,
}

impl Sealed {
    /// The map's root after the batch.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.root
    }

    /// How many tiles the batch changed.
    #[must_use]
    pub fn changed(&self) -> usize {
        self.tiles.len()
    }

    /// Writes the changed tiles into `store` under `prefix`, in key order, and returns the root.
    ///
    /// # Errors
    ///
    /// [`MapError::Store`] when the store fails.
    pub fn write<W: NodeWrite>(
        self,
        store: &mut W,
        prefix: &[u8],
    ) -> Result<Hash, MapError<W::Error>> {
        for (id, tile) in &self.tiles {
            store
                .put(&id.store_key(prefix), &tile.encode())
                .map_err(MapError::Store)?;
        }
        Ok(self.root)
    }

    /// The changed tiles as `(store key, record)` under `prefix`, in key order: what
    /// [`write`](Sealed::write) stores.
    #[must_use]
    pub fn encoded(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.tiles
            .iter()
            .map(|(id, tile)| (id.store_key(prefix), tile.encode()))
            .collect()
    }

    /// Keeps the changed tiles in `cache` (replacing what it held for them) and returns the
    /// root.
    pub fn into_cache(self, cache: &mut TileCache) -> Hash {
        cache.tiles.extend(
            self.tiles
                .into_iter()
                .map(|(id, tile)| (id, Box::new(tile))),
        );
        self.root
    }
}

impl<'s, S: NodeRead> Batch<'s, S> {
    /// A batch of updates to the map under `prefix` in `store`.
    pub fn new(store: &'s S, prefix: &[u8]) -> Self {
        Self {
            store,
            prefix: prefix.to_vec(),
            fronts: Vec::new(),
            tiles: HashMap::new(),
            failed: false,
        }
    }

    /// A batch of updates to the map whose newest tiles are `front`'s where it holds them, the
    /// store's otherwise.
    pub fn over(store: &'s S, prefix: &[u8], front: &'s TileCache) -> Self {
        Self::over_layers(store, prefix, &[front])
    }

    /// A batch of updates to the map whose newest tiles are those of the first of `fronts` that
    /// holds them (newest layer first), the store's where none does.
    pub fn over_layers(store: &'s S, prefix: &[u8], fronts: &[&'s TileCache]) -> Self {
        Self {
            fronts: fronts.to_vec(),
            ..Self::new(store, prefix)
        }
    }

    /// The tile `id` as the batch starts from it: the newest front's, else the store's.
    fn load(&self, id: &TileId) -> Result<Tile, MapError<S::Error>> {
        match self.fronts.iter().find_map(|front| front.tiles.get(id)) {
            Some(tile) => Ok(Tile::clone(tile)),
            None => read_tile(self.store, &self.prefix, id),
        }
    }

    fn tile(&mut self, key: &MapKey, depth: usize) -> Result<&mut CachedTile, MapError<S::Error>> {
        let id = TileId::on_path(key, tile_top(depth));
        Ok(match self.tiles.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let tile = match self.fronts.iter().find_map(|front| front.tiles.get(&id)) {
                    Some(tile) => Tile::clone(tile),
                    None => read_tile(self.store, &self.prefix, &id)?,
                };
                entry.insert(CachedTile { tile, dirty: 0 })
            }
        })
    }

    fn read(&mut self, key: &MapKey, depth: usize) -> Result<Option<Node>, MapError<S::Error>> {
        let slot = tile_slot(key, depth);
        Ok(self.tile(key, depth)?.tile.node(slot))
    }

    /// Puts `node` at `depth` on `key`'s path; its hashes are fixed when the batch finishes.
    fn write(&mut self, key: &MapKey, depth: usize, node: Node) -> Result<(), MapError<S::Error>> {
        let slot = tile_slot(key, depth);
        let cached = self.tile(key, depth)?;
        cached.tile.set(slot, node);
        cached.dirty |= 1 << slot;
        Ok(())
    }

    /// Marks the node at `depth` on `key`'s path as changed below: its hash is recomputed when
    /// the batch finishes.
    fn touch(&mut self, key: &MapKey, depth: usize) -> Result<(), MapError<S::Error>> {
        let slot = tile_slot(key, depth);
        self.tile(key, depth)?.dirty |= 1 << slot;
        Ok(())
    }

    /// Sets `key` to `value`. Reads the tiles on `key`'s path only; the hashing is left to
    /// [`finish`](Batch::finish), once per changed node.
    ///
    /// # Errors
    ///
    /// [`MapError::Store`] when the store fails; [`MapError::Corrupt`] when the stored tiles are
    /// not a compact tree.
    /// A failed update voids the batch ([`MapError::BatchFailed`] from then on).
    pub fn update(&mut self, key: &MapKey, value: &Hash) -> Result<(), MapError<S::Error>> {
        if self.failed {
            return Err(MapError::BatchFailed);
        }
        let result = self.update_path(key, value);
        self.failed = result.is_err();
        result
    }

    fn update_path(&mut self, key: &MapKey, value: &Hash) -> Result<(), MapError<S::Error>> {
        let mine = Node::Leaf {
            key: *key,
            value: *value,
        };
        // Down: the inner nodes on the path, until an empty spot or a leaf.
        let mut depth = 0;
        loop {
            match self.read(key, depth)? {
                Some(Node::Inner { .. }) => {
                    if depth >= KEY_BITS {
                        return Err(MapError::Corrupt("an inner node below the last key bit"));
                    }
                    depth += 1;
                }
                // An empty spot (the empty map's root, or an empty child), or the key's own
                // leaf: the key goes here.
                None => break self.write(key, depth, mine)?,
                Some(Node::Leaf { key: other, .. }) if other == *key => {
                    break self.write(key, depth, mine)?;
                }
                Some(theirs @ Node::Leaf { key: other, .. }) => {
                    // Another key sits here: push both down to where their paths part, over a
                    // chain of inner nodes whose other sides are empty (their hashes on the
                    // path are filled in when the batch finishes).
                    if !shares_prefix(&other, key, depth) {
                        return Err(MapError::Corrupt("a leaf is off its key's path"));
                    }
                    let split = (depth..KEY_BITS)
                        .find(|&d| bit(&other, d) != bit(key, d))
                        .ok_or(MapError::Corrupt("two leaves with one key"))?;
                    self.write(key, split + 1, mine)?;
                    self.write(&other, split + 1, theirs)?;
                    let chain = Node::Inner {
                        left: EMPTY,
                        right: EMPTY,
                    };
                    for d in depth..=split {
                        self.write(key, d, chain)?;
                    }
                    break;
                }
            }
        }
        // Up: every inner node above changes.
        for d in (0..depth).rev() {
            self.touch(key, d)?;
        }
        Ok(())
    }

    /// Hashes every changed node once, bottom up, and returns the new root with the changed
    /// tiles.
    ///
    /// # Errors
    ///
    /// [`MapError::Store`] when the store fails reading the root of an untouched map;
    /// [`MapError::BatchFailed`] when an update of the batch failed; [`MapError::Corrupt`] when
    /// a changed node's slot is empty.
    pub fn finish(mut self) -> Result<Sealed, MapError<S::Error>> {
        if self.failed {
            return Err(MapError::BatchFailed);
        }
        let mut changed: Vec<TileId> = self
            .tiles
            .iter()
            .filter(|(_, cached)| cached.dirty != 0)
            .map(|(id, _)| *id)
            .collect();
        // Deepest first, so that a tile's children are hashed before it.
        changed.sort_unstable_by(|a, b| b.top.cmp(&a.top).then(a.path.cmp(&b.path)));
        let mut tops: HashMap<TileId, Hash> = HashMap::with_capacity(changed.len());
        let mut out = Vec::with_capacity(changed.len());
        for id in changed {
            let Some(cached) = self.tiles.remove(&id) else {
                continue;
            };
            let CachedTile { mut tile, dirty } = cached;
            let mut hashes = [EMPTY; TILE_SLOTS];
            for slot in (0..TILE_SLOTS).rev() {
                if dirty & (1 << slot) == 0 {
                    continue;
                }
                let node = match tile.node(slot) {
                    Some(Node::Inner { left, right }) => {
                        let side = |right_side: bool, stored: Hash| -> Hash {
                            if slot < TILE_SLOTS / 2 {
                                let child = 2 * slot + 1 + usize::from(right_side);
                                if dirty & (1 << child) != 0 {
                                    return hashes.get(child).copied().unwrap_or(stored);
                                }
                            } else if let Some(hash) = tops.get(&id.child(slot, right_side)) {
                                return *hash;
                            }
                            stored
                        };
                        Node::Inner {
                            left: side(false, left),
                            right: side(true, right),
                        }
                    }
                    Some(leaf @ Node::Leaf { .. }) => leaf,
                    None => return Err(MapError::Corrupt("a changed map node is missing")),
                };
                tile.set(slot, node);
                if let Some(hash) = hashes.get_mut(slot) {
                    *hash = node.hash();
                }
            }
            if dirty & 1 != 0 {
                tops.insert(id, hashes[0]);
            }
            out.push((id, tile));
        }
        let root_id = TileId::on_path(&[0; 32], 0);
        let root = match tops.get(&root_id) {
            Some(root) => *root,
            None => self
                .load(&root_id)?
                .node(0)
                .map_or(EMPTY, |node| node.hash()),
        };
        out.sort_unstable_by_key(|a| a.0);
        Ok(Sealed { root, tiles: out })
    }
}

/// Sets `key` to `value` in the map stored under `prefix` and returns the new root: a
/// [`Batch`] of one, written at once. Reads and writes the tiles on `key`'s path only.
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
    let sealed = {
        let mut batch = Batch::new(&*store, prefix);
        batch.update(key, value)?;
        batch.finish()?
    };
    sealed.write(store, prefix)
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
    prove_over(store, prefix, None, key)
}

/// [`prove`] for a map whose newest tiles are `front`'s where it holds them, the store's
/// otherwise.
///
/// # Errors
///
/// As [`update`].
pub fn prove_over<S: NodeRead>(
    store: &S,
    prefix: &[u8],
    front: Option<&TileCache>,
    key: &MapKey,
) -> Result<(MapProof, Hash), MapError<S::Error>> {
    let mut siblings = Vec::new();
    let mut tile = Tile::EMPTY;
    let terminal = loop {
        let depth = siblings.len();
        if depth % TILE_LEVELS == 0 {
            let id = TileId::on_path(key, depth);
            tile = match front.and_then(|front| front.tiles.get(&id)) {
                Some(held) => Tile::clone(held),
                None => read_tile(store, prefix, &id)?,
            };
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

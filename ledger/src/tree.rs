//! The Merkle tree's stored hashes: full tiles in the store, partial tiles in memory.
//!
//! Hashes are grouped as in c2sp.org/tlog-tiles: tile `(L, N)` covers the tree nodes at level
//! `8L` with indexes `256N .. 256N+256`. A *full* tile is written once, when its 256th bottom
//! hash appears, and never changes; with it we store the seven rows of nodes above its bottom row
//! inside the tile (510 hashes, 16,320 bytes), so that any complete node is one read and one
//! copy of 32 bytes away, and proofs need no hashing to read a node.
//!
//! The rightmost, still incomplete tile of every tile level lives only in memory in the
//! [`Frontier`] (at most four tiles of at most 510 hashes for a log of 2^32 entries), and is
//! rebuilt on open from the stored entries and full tiles. So an append costs O(1) amortised
//! hashes and writes, a node read is O(1), and the tree is never held or rebuilt in memory.

use crate::{
    hash::{HASH_LEN, Hash, hash_children, hash_leaf},
    layout,
    proof::NodeSource,
    store::{Store, StoreError},
};

/// Height of a tile in levels (c2sp.org/tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;
/// Number of bottom hashes in a full tile.
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;
/// Hashes stored for a full tile: its bottom row and the seven rows above it.
pub const STORED_TILE_HASHES: usize = 2 * TILE_WIDTH - 2;

/// A failure to read a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node that should exist is missing from the store or the frontier.
    #[error("missing tree node at level {level} index {index}")]
    MissingNode {
        /// Tree level of the node.
        level: u8,
        /// Index of the node in its level.
        index: u64,
    },
    /// A stored tile has the wrong length.
    #[error("stored tile ({level}, {index}) has {got} bytes, want {want}")]
    BadTile {
        /// Tile level.
        level: u8,
        /// Tile index.
        index: u64,
        /// Stored length.
        got: usize,
        /// Expected length.
        want: usize,
    },
}

/// The rows of one tile: `rows[r]` holds the complete nodes at height `r` inside the tile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TileRows {
    rows: [Vec<Hash>; TILE_HEIGHT as usize],
}

impl TileRows {
    /// Adds a bottom hash and every node it completes. Returns the tile's top hash when the tile
    /// became full.
    fn push(&mut self, hash: Hash) -> Option<Hash> {
        let mut carry = hash;
        for r in 0..TILE_HEIGHT as usize {
            let Some(row) = self.rows.get_mut(r) else {
                break;
            };
            row.push(carry);
            if row.len() % 2 == 1 {
                return None;
            }
            let (Some(left), Some(right)) = (row.get(row.len() - 2), row.last()) else {
                return None;
            };
            carry = hash_children(left, right);
        }
        // Reaching here means the top row (two nodes) completed: carry is the tile's top.
        Some(carry)
    }

    fn width(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }

    fn node(&self, row: u8, pos: u64) -> Option<Hash> {
        let pos = usize::try_from(pos).ok()?;
        self.rows.get(usize::from(row))?.get(pos).copied()
    }

    /// Bottom hashes `..width` (for serving partial tiles).
    pub(crate) fn bottom(&self) -> &[Hash] {
        self.rows.first().map_or(&[], Vec::as_slice)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_TILE_HASHES * HASH_LEN);
        for row in &self.rows {
            for hash in row {
                out.extend_from_slice(hash.as_bytes());
            }
        }
        out
    }
}

/// Offset, in hashes, of row `r` inside a stored full tile.
fn row_offset(row: u8) -> usize {
    (2 * TILE_WIDTH) - ((2 * TILE_WIDTH) >> row)
}

/// Reads the hash at `(row, pos)` of a stored full tile.
pub(crate) fn stored_tile_node(tile: &[u8], row: u8, pos: u64) -> Option<Hash> {
    let pos = usize::try_from(pos).ok()?;
    if pos >= TILE_WIDTH >> row {
        return None;
    }
    let start = (row_offset(row) + pos) * HASH_LEN;
    let bytes = tile.get(start..start + HASH_LEN)?;
    Hash::from_slice(bytes).ok()
}

/// Checks that a stored full tile is internally consistent and returns its top hash.
pub(crate) fn check_stored_tile(tile: &[u8]) -> Option<Hash> {
    if tile.len() != STORED_TILE_HASHES * HASH_LEN {
        return None;
    }
    let mut rows = TileRows::default();
    let mut top = None;
    for pos in 0..TILE_WIDTH as u64 {
        top = rows.push(stored_tile_node(tile, 0, pos)?);
    }
    (rows.encode() == tile).then_some(top).flatten()
}

/// The top hash of a stored full tile (its two highest stored nodes, hashed).
fn stored_tile_top(tile: &[u8]) -> Option<Hash> {
    let left = stored_tile_node(tile, TILE_HEIGHT - 1, 0)?;
    let right = stored_tile_node(tile, TILE_HEIGHT - 1, 1)?;
    Some(hash_children(&left, &right))
}

/// The incomplete rightmost tile of every tile level, plus the tree size they describe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `levels[L]` is the partial tile of tile level `L`, with its tile index.
    levels: Vec<(u64, TileRows)>,
}

/// A full tile produced by an append, to be written to the store.
pub(crate) struct FullTile {
    pub(crate) level: u8,
    pub(crate) index: u64,
    pub(crate) bytes: Vec<u8>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Rebuilds the frontier of a tree of `size` leaves from the stored full tiles and the leaves
    /// of the last, partial bottom tile (`partial_leaves` are those leaves' bytes, in order).
    pub(crate) fn rebuild(
        store: &dyn Store,
        size: u64,
        partial_leaves: &[Vec<u8>],
    ) -> Result<Self, TreeError> {
        let mut frontier = Self {
            size,
            levels: Vec::new(),
        };
        let mut level: u8 = 0;
        // Number of nodes at tree level 8L.
        let mut count = size;
        while count > 0 {
            let tile_index = count / TILE_WIDTH as u64;
            let first = tile_index * TILE_WIDTH as u64;
            let mut rows = TileRows::default();
            if level == 0 {
                for leaf in partial_leaves {
                    rows.push(hash_leaf(leaf));
                }
                if rows.width() as u64 != count - first {
                    return Err(TreeError::MissingNode {
                        level: 0,
                        index: first + rows.width() as u64,
                    });
                }
            } else {
                for index in first..count {
                    let below = read_full_tile(store, level - 1, index)?;
                    let top = stored_tile_top(&below).ok_or(TreeError::MissingNode {
                        level: level * TILE_HEIGHT,
                        index,
                    })?;
                    rows.push(top);
                }
            }
            frontier.levels.push((tile_index, rows));
            count /= TILE_WIDTH as u64;
            level += 1;
        }
        Ok(frontier)
    }

    /// Appends a leaf hash; full tiles that this completes are pushed to `full`.
    pub(crate) fn append(&mut self, leaf_hash: Hash, full: &mut Vec<FullTile>) {
        self.size += 1;
        let mut carry = leaf_hash;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push((0, TileRows::default()));
            }
            let Some((index, rows)) = self.levels.get_mut(level) else {
                return;
            };
            let Some(top) = rows.push(carry) else {
                return;
            };
            full.push(FullTile {
                level: level as u8,
                index: *index,
                bytes: rows.encode(),
            });
            *index += 1;
            *rows = TileRows::default();
            carry = top;
            level += 1;
        }
    }

    /// The partial tile of tile level `level`, if its index is `index`.
    pub(crate) fn partial(&self, level: u8, index: u64) -> Option<&TileRows> {
        match self.levels.get(usize::from(level)) {
            Some((i, rows)) if *i == index => Some(rows),
            _ => None,
        }
    }

    /// The index of the partial tile of tile level `level` (tiles below it are full).
    fn partial_index(&self, level: u8) -> Option<u64> {
        self.levels.get(usize::from(level)).map(|(i, _)| *i)
    }
}

/// Reads a full tile from the store.
pub(crate) fn read_full_tile(
    store: &dyn Store,
    level: u8,
    index: u64,
) -> Result<crate::store::Bytes, TreeError> {
    let bytes = store
        .get(&layout::tile(level, index))?
        .ok_or(TreeError::MissingNode {
            level: level * TILE_HEIGHT,
            index: index * TILE_WIDTH as u64,
        })?;
    if bytes.len() != STORED_TILE_HASHES * HASH_LEN {
        return Err(TreeError::BadTile {
            level,
            index,
            got: bytes.len(),
            want: STORED_TILE_HASHES * HASH_LEN,
        });
    }
    Ok(bytes)
}

/// Most full tiles above level 0 kept in memory (16 KiB each, 64 MiB in all). There is one such
/// tile per 65,536 entries, so a log of 268 million entries fits entirely.
pub const MAX_CACHED_TILES: usize = 4096;

/// Full tiles of levels 1 and up, kept in memory: every inclusion proof reads one per level,
/// they never change once written, and there are few of them. Level-0 tiles (one per 256
/// entries) are left to the store's own cache.
#[derive(Default)]
pub struct TileCache {
    tiles: std::sync::Mutex<std::collections::HashMap<(u8, u64), crate::store::Bytes>>,
}

impl TileCache {
    fn get(&self, level: u8, index: u64) -> Option<crate::store::Bytes> {
        self.tiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(level, index))
            .cloned()
    }

    fn insert(&self, level: u8, index: u64, bytes: crate::store::Bytes) {
        let mut tiles = self.tiles.lock().unwrap_or_else(|e| e.into_inner());
        if tiles.len() >= MAX_CACHED_TILES {
            // Bounded memory beats a perfect hit rate: start over.
            tiles.clear();
        }
        tiles.insert((level, index), bytes);
    }
}

/// Reads nodes from a frontier and the store's full tiles.
pub struct TreeReader<'a> {
    store: &'a dyn Store,
    frontier: &'a Frontier,
    tiles: Option<&'a TileCache>,
    /// The last full tile read, reused while a proof walks inside it.
    cache: std::cell::RefCell<Option<(u8, u64, crate::store::Bytes)>>,
}

impl<'a> TreeReader<'a> {
    /// A reader over `store` and `frontier`.
    pub fn new(store: &'a dyn Store, frontier: &'a Frontier) -> Self {
        Self {
            store,
            frontier,
            tiles: None,
            cache: std::cell::RefCell::new(None),
        }
    }

    /// A reader that keeps full tiles above level 0 in `tiles`.
    ///
    /// INVARIANT: only tiles below the frontier's partial tile are read from the store, and
    /// those are committed and immutable, so a cached tile is never stale.
    pub fn with_cache(store: &'a dyn Store, frontier: &'a Frontier, tiles: &'a TileCache) -> Self {
        Self {
            tiles: Some(tiles),
            ..Self::new(store, frontier)
        }
    }

    /// The bottom hashes of tile `(level, index)`, up to `width` of them, if they exist.
    pub fn tile_hashes(&self, level: u8, index: u64, width: usize) -> Result<Vec<u8>, TreeError> {
        let width = width.min(TILE_WIDTH);
        if let Some(rows) = self.frontier.partial(level, index) {
            let bottom = rows.bottom();
            let hashes = bottom.get(..width).ok_or(TreeError::MissingNode {
                level: level * TILE_HEIGHT,
                index: index * TILE_WIDTH as u64 + bottom.len() as u64,
            })?;
            return Ok(hashes.iter().flat_map(|h| h.0).collect());
        }
        let tile = read_full_tile(self.store, level, index)?;
        Ok(tile.get(..width * HASH_LEN).unwrap_or_default().to_vec())
    }

    fn full_tile(&self, level: u8, index: u64) -> Result<crate::store::Bytes, TreeError> {
        if let Some((l, i, bytes)) = self.cache.borrow().as_ref()
            && *l == level
            && *i == index
        {
            return Ok(bytes.clone());
        }
        let shared = self.tiles.filter(|_| level > 0);
        let cached = shared.and_then(|tiles| tiles.get(level, index));
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let bytes = read_full_tile(self.store, level, index)?;
                if let Some(tiles) = shared {
                    tiles.insert(level, index, bytes.clone());
                }
                bytes
            }
        };
        *self.cache.borrow_mut() = Some((level, index, bytes.clone()));
        Ok(bytes)
    }
}

impl NodeSource for TreeReader<'_> {
    type Error = TreeError;

    fn node(&self, level: u8, index: u64) -> Result<Hash, TreeError> {
        let missing = TreeError::MissingNode { level, index };
        let tile_level = level / TILE_HEIGHT;
        let row = level % TILE_HEIGHT;
        let shift = u32::from(TILE_HEIGHT - row);
        let tile_index = index >> shift;
        let pos = index - (tile_index << shift);
        let Some(partial_index) = self.frontier.partial_index(tile_level) else {
            return Err(missing);
        };
        if tile_index == partial_index {
            return self
                .frontier
                .partial(tile_level, tile_index)
                .and_then(|rows| rows.node(row, pos))
                .ok_or(missing);
        }
        if tile_index > partial_index {
            return Err(missing);
        }
        let tile = self.full_tile(tile_level, tile_index)?;
        stored_tile_node(&tile, row, pos).ok_or(missing)
    }
}

#[cfg(test)]
mod tests;

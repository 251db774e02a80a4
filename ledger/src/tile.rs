//! C2SP tiled transparency log addressing (c2sp.org/tlog-tiles): tile coordinates and their URL
//! paths, which tiles a tree size has, and the byte formats of hash tiles and entry bundles.
//!
//! A tile at level `L` holds up to 256 consecutive node hashes of tree level `8 * L`; a full tile
//! holds exactly 256, a partial one (the rightmost at its level) 1 to 255. Entry bundles hold the
//! leaves of the matching level-0 tile, each prefixed by its big-endian `u16` length.
//!
//! This module does no I/O and serves nothing: the HTTP server maps paths with [`parse_path`] and
//! reads hashes through [`read_tile`]; caching headers and pruning are its business.

use std::fmt;

use crate::hash::{HASH_LEN, Hash, TreeSize};
use crate::proof::NodeSource;

/// Tree levels per tile: a tile is a subtree of height 8.
pub const TILE_HEIGHT: u8 = 8;

/// Hashes in a full tile, and entries in a full bundle.
pub const TILE_WIDTH: u16 = 256;

/// The highest level a tile path may name (the spec's limit).
pub const MAX_TILE_LEVEL: u8 = 63;

/// The largest entry an entry bundle can hold (its length prefix is a `u16`).
pub const MAX_BUNDLE_ENTRY_SIZE: usize = u16::MAX as usize;

/// The longest tile path accepted by [`parse_path`].
pub const MAX_TILE_PATH_LEN: usize = 64;

/// The highest level at which a tree of at most 2^64 − 1 leaves has tiles.
const LAST_TREE_TILE_LEVEL: u8 = 7;

/// A hash tile: `width` hashes at tree level `8 * level`, starting with node `index * 256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileId {
    /// The tile level, 0 to [`MAX_TILE_LEVEL`]; level 0 holds leaf hashes.
    pub level: u8,
    /// The tile's index within its level.
    pub index: u64,
    /// How many hashes it holds, 1 to 256 (256 = a full tile).
    pub width: u16,
}

impl TileId {
    /// A validated tile id.
    ///
    /// # Errors
    ///
    /// [`TileError::InvalidTile`] when the level is above [`MAX_TILE_LEVEL`] or the width is not
    /// 1 to 256.
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        if level > MAX_TILE_LEVEL || !(1..=TILE_WIDTH).contains(&width) {
            return Err(TileError::InvalidTile {
                level,
                index,
                width,
            });
        }
        Ok(Self {
            level,
            index,
            width,
        })
    }

    /// The full tile at this position.
    pub fn full(level: u8, index: u64) -> Self {
        Self {
            level,
            index,
            width: TILE_WIDTH,
        }
    }

    /// The URL path, without a leading slash: `tile/<L>/<N>` or `tile/<L>/<N>.p/<W>`.
    pub fn path(&self) -> String {
        format!("tile/{}/{}", self.level, index_path(self.index, self.width))
    }

    /// Whether the tile holds 256 hashes.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The tree level of the tile's hashes, `8 * level`.
    pub fn node_level(&self) -> u32 {
        u32::from(self.level) * u32::from(TILE_HEIGHT)
    }

    /// Whether every hash of the tile is a complete node of the tree of `size` leaves, i.e. whether
    /// a log of that size can serve it.
    pub fn is_complete_in(&self, size: TreeSize) -> bool {
        let leaves_per_hash = 1u128.checked_shl(self.node_level());
        let hashes = u128::from(self.index) * u128::from(TILE_WIDTH) + u128::from(self.width);
        match leaves_per_hash.and_then(|l| l.checked_mul(hashes)) {
            Some(leaves) => {
                self.width >= 1 && self.width <= TILE_WIDTH && leaves <= u128::from(size.0)
            }
            None => false,
        }
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// An entry bundle: the `width` leaves starting at leaf `index * 256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundleId {
    /// The bundle's index (the index of the matching level-0 tile).
    pub index: u64,
    /// How many entries it holds, 1 to 256 (256 = a full bundle).
    pub width: u16,
}

impl BundleId {
    /// The URL path, without a leading slash: `tile/entries/<N>` or `tile/entries/<N>.p/<W>`.
    pub fn path(&self) -> String {
        format!("tile/entries/{}", index_path(self.index, self.width))
    }

    /// Whether the bundle holds 256 entries.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The index of its first leaf.
    pub fn first_leaf(&self) -> u64 {
        self.index.saturating_mul(u64::from(TILE_WIDTH))
    }

    /// Whether every entry of the bundle is in the tree of `size` leaves.
    pub fn is_complete_in(&self, size: TreeSize) -> bool {
        TileId {
            level: 0,
            index: self.index,
            width: self.width,
        }
        .is_complete_in(size)
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// What a tile path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TilePath {
    /// An entry bundle, `tile/entries/...`.
    Entries(BundleId),
    /// A hash tile, `tile/<L>/...`.
    Hash(TileId),
}

impl TilePath {
    /// The URL path, without a leading slash.
    pub fn path(&self) -> String {
        match self {
            Self::Entries(bundle) => bundle.path(),
            Self::Hash(tile) => tile.path(),
        }
    }
}

/// Parses a tile or entry-bundle path, given without the log prefix or a leading slash (e.g.
/// `tile/1/x001/234.p/7`). Only the exact spelling [`TileId::path`] and [`BundleId::path`] produce
/// is accepted: no leading zeros in the level or width, no `x000/` groups in front of the index,
/// no `.p/256` or `.p/0`, nothing before or after.
///
/// # Errors
///
/// [`TileError::MalformedPath`] saying which part is wrong.
pub fn parse_path(path: &str) -> Result<TilePath, TileError> {
    let bad = |part| TileError::MalformedPath { part };
    if path.len() > MAX_TILE_PATH_LEN {
        return Err(bad(PathPart::Length));
    }
    let rest = path.strip_prefix("tile/").ok_or(bad(PathPart::Prefix))?;
    let (level, rest) = rest.split_once('/').ok_or(bad(PathPart::Prefix))?;
    let level = match level {
        "entries" => None,
        _ => Some(
            parse_small_decimal(level)
                .and_then(|l| u8::try_from(l).ok())
                .filter(|l| *l <= MAX_TILE_LEVEL)
                .ok_or(bad(PathPart::Level))?,
        ),
    };
    let (index_text, width) = match rest.split_once(".p/") {
        None => (rest, TILE_WIDTH),
        Some((index_text, width)) => {
            let width = parse_small_decimal(width)
                .and_then(|w| u16::try_from(w).ok())
                .filter(|w| (1..TILE_WIDTH).contains(w))
                .ok_or(bad(PathPart::Width))?;
            (index_text, width)
        }
    };
    let index = parse_index(index_text).ok_or(bad(PathPart::Index))?;
    Ok(match level {
        None => TilePath::Entries(BundleId { index, width }),
        Some(level) => TilePath::Hash(TileId {
            level,
            index,
            width,
        }),
    })
}

/// The tiles that hold the root of the tree of `size` leaves: the rightmost, partial tile at each
/// level where there is one (the spec's "partial tile at level l has floor(size / 256^l) mod 256
/// hashes"), lowest level first. A client fetches these to recompute a checkpoint's root; a log
/// must serve them for every size it signed a checkpoint for. Full tiles are never needed for the
/// root: each is summarised by one hash in the tile above.
pub fn tiles_for_size(size: TreeSize) -> Vec<TileId> {
    (0..=LAST_TREE_TILE_LEVEL)
        .filter_map(|level| {
            let hashes = size.0 >> (u32::from(level) * u32::from(TILE_HEIGHT));
            let width = hashes % u64::from(TILE_WIDTH);
            (width > 0).then(|| TileId {
                level,
                index: hashes / u64::from(TILE_WIDTH),
                width: width_u16(width),
            })
        })
        .collect()
}

/// Every tile, full or partial, of the tree of `new` leaves that the tree of `old` leaves does not
/// already have with the same width: what a log writes, or a mirror fetches, when the tree grows
/// from `old` to `new`. Lowest level first, then by index. Empty when `new <= old`.
pub fn new_tiles(old: TreeSize, new: TreeSize) -> impl Iterator<Item = TileId> {
    (0..=LAST_TREE_TILE_LEVEL).flat_map(move |level| {
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        let (have, want) = (old.0 >> shift, new.0 >> shift);
        let first = have / u64::from(TILE_WIDTH);
        let end = match want.checked_sub(1) {
            Some(last) if want > have => last / u64::from(TILE_WIDTH) + 1,
            _ => first,
        };
        (first..end).filter_map(move |index| {
            // INVARIANT: index <= (want - 1) / 256, so start <= want - 1 and nothing overflows.
            let start = index * u64::from(TILE_WIDTH);
            let new_width = (want - start).min(u64::from(TILE_WIDTH));
            let old_width = have.saturating_sub(start).min(u64::from(TILE_WIDTH));
            (new_width > old_width).then(|| TileId {
                level,
                index,
                width: width_u16(new_width),
            })
        })
    })
}

/// Every entry bundle of the tree of `new` leaves that the tree of `old` leaves does not already
/// have with the same width (the level-0 part of [`new_tiles`]).
pub fn new_bundles(old: TreeSize, new: TreeSize) -> impl Iterator<Item = BundleId> {
    new_tiles(old, new)
        .take_while(|tile| tile.level == 0)
        .map(|tile| BundleId {
            index: tile.index,
            width: tile.width,
        })
}

/// Reads a hash tile's bytes (its hashes concatenated) from a node source holding a tree of
/// `size` leaves.
///
/// # Errors
///
/// [`ReadTileError::OutsideTree`] when the tile is not complete in that tree, and
/// [`ReadTileError::Source`] when a node cannot be read.
pub fn read_tile<S: NodeSource>(
    src: &S,
    tile: TileId,
    size: TreeSize,
) -> Result<Vec<u8>, ReadTileError<S::Error>> {
    let level = u8::try_from(tile.node_level())
        .ok()
        .filter(|_| tile.is_complete_in(size))
        .ok_or(ReadTileError::OutsideTree { tile, size })?;
    let first = tile.index * u64::from(TILE_WIDTH);
    let mut out = Vec::with_capacity(usize::from(tile.width) * HASH_LEN);
    for i in 0..u64::from(tile.width) {
        let hash = src.node(level, first + i).map_err(ReadTileError::Source)?;
        out.extend_from_slice(&hash.0);
    }
    Ok(out)
}

/// Concatenates hashes into tile bytes.
pub fn encode_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Splits tile bytes into exactly `width` hashes.
///
/// # Errors
///
/// [`TileError::WrongTileSize`] unless `bytes` is `width * 32` bytes, for a width of 1 to 256.
pub fn decode_tile(bytes: &[u8], width: u16) -> Result<Vec<Hash>, TileError> {
    if !(1..=TILE_WIDTH).contains(&width) || bytes.len() != usize::from(width) * HASH_LEN {
        return Err(TileError::WrongTileSize {
            size: bytes.len(),
            width,
        });
    }
    Ok(bytes
        .chunks_exact(HASH_LEN)
        .filter_map(|chunk| Hash::from_slice(chunk).ok())
        .collect())
}

/// Encodes an entry bundle: each entry prefixed by its big-endian `u16` length.
///
/// # Errors
///
/// [`TileError::EmptyBundle`] for no entries, [`TileError::TooManyEntries`] for more than 256,
/// and [`TileError::EntryTooLarge`] for an entry over [`MAX_BUNDLE_ENTRY_SIZE`] bytes.
pub fn encode_entry_bundle<I>(entries: I) -> Result<Vec<u8>, TileError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut out = Vec::new();
    let mut count = 0usize;
    for entry in entries {
        let entry = entry.as_ref();
        if count == usize::from(TILE_WIDTH) {
            return Err(TileError::TooManyEntries {
                max: usize::from(TILE_WIDTH),
            });
        }
        let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLarge {
            entry: count,
            size: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
        count += 1;
    }
    if count == 0 {
        return Err(TileError::EmptyBundle);
    }
    Ok(out)
}

/// Decodes an entry bundle into its 1 to 256 entries.
///
/// # Errors
///
/// [`TileError::EmptyBundle`], [`TileError::TooManyEntries`], and [`TileError::TruncatedBundle`]
/// when a length prefix or entry runs past the end.
pub fn decode_entry_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut entries = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if entries.len() == usize::from(TILE_WIDTH) {
            return Err(TileError::TooManyEntries {
                max: usize::from(TILE_WIDTH),
            });
        }
        let offset = bytes.len() - rest.len();
        let truncated = TileError::TruncatedBundle { offset };
        let (len, after) = rest.split_first_chunk::<2>().ok_or(truncated.clone())?;
        let (entry, after) = after
            .split_at_checked(usize::from(u16::from_be_bytes(*len)))
            .ok_or(truncated)?;
        entries.push(entry);
        rest = after;
    }
    if entries.is_empty() {
        return Err(TileError::EmptyBundle);
    }
    Ok(entries)
}

/// Why a tile path, tile or bundle was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// A bundle with no entries (empty tiles are never served).
    #[error("entry bundle is empty")]
    EmptyBundle,
    /// An entry is too large for its `u16` length prefix.
    #[error("entry {entry} is {size} bytes, more than a bundle can hold")]
    EntryTooLarge {
        /// The entry's position in the bundle.
        entry: usize,
        /// Its size.
        size: usize,
    },
    /// A tile id with an impossible level or width.
    #[error("no tile has level {level} and width {width} (index {index})")]
    InvalidTile {
        /// The level.
        level: u8,
        /// The index.
        index: u64,
        /// The width.
        width: u16,
    },
    /// A path that is not a tile or entry-bundle path.
    #[error("malformed tile path: bad {part}")]
    MalformedPath {
        /// Which part is wrong.
        part: PathPart,
    },
    /// More than 256 entries.
    #[error("entry bundle has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// A length prefix or entry runs past the end of the bundle.
    #[error("entry bundle is truncated at byte {offset}")]
    TruncatedBundle {
        /// Where the last, incomplete entry starts.
        offset: usize,
    },
    /// Tile bytes of the wrong length.
    #[error("tile of {size} bytes does not hold {width} hashes")]
    WrongTileSize {
        /// The bytes' length.
        size: usize,
        /// The expected width.
        width: u16,
    },
}

/// The part of a tile path that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathPart {
    /// The index (`x001/234`).
    Index,
    /// The path as a whole is too long.
    Length,
    /// The level (`0` to `63`, or `entries`).
    Level,
    /// The `tile/<level>/` start.
    Prefix,
    /// The `.p/<width>` suffix.
    Width,
}

impl fmt::Display for PathPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Index => "index",
            Self::Length => "length",
            Self::Level => "level",
            Self::Prefix => "prefix",
            Self::Width => "width",
        })
    }
}

/// Why [`read_tile`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadTileError<E> {
    /// The tile is not complete in the tree.
    #[error("tile `{tile}` is not in the tree of size {size}")]
    OutsideTree {
        /// The requested tile.
        tile: TileId,
        /// The tree's size.
        size: TreeSize,
    },
    /// The node source failed.
    #[error("reading a tree node failed")]
    Source(#[source] E),
}

/// `<N>[.p/<W>]`: the index in 3-digit groups, all but the last prefixed with `x`.
fn index_path(index: u64, width: u16) -> String {
    let mut groups = Vec::new();
    let mut rest = index;
    loop {
        groups.push(rest % 1000);
        rest /= 1000;
        if rest == 0 {
            break;
        }
    }
    let mut out = String::with_capacity(groups.len() * 5 + 6);
    for (i, group) in groups.iter().rev().enumerate() {
        if i + 1 < groups.len() {
            out.push_str(&format!("x{group:03}/"));
        } else {
            out.push_str(&format!("{group:03}"));
        }
    }
    if width != TILE_WIDTH {
        out.push_str(&format!(".p/{width}"));
    }
    out
}

/// Parses the index part of a tile path, accepting only its canonical spelling.
fn parse_index(text: &str) -> Option<u64> {
    let groups: Vec<&str> = text.split('/').collect();
    // u64::MAX has 20 digits: 7 groups.
    if groups.len() > 7 {
        return None;
    }
    let (last, leading) = groups.split_last()?;
    let mut index: u64 = 0;
    for group in leading
        .iter()
        .map(|g| g.strip_prefix('x'))
        .chain([Some(*last)])
    {
        let group = group.filter(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))?;
        index = index
            .checked_mul(1000)?
            .checked_add(group.parse::<u64>().ok()?)?;
    }
    // No `x000/` groups in front: the canonical spelling is the only one.
    (index_path(index, TILE_WIDTH) == text).then_some(index)
}

/// A decimal of at most three digits with no leading zeros.
fn parse_small_decimal(text: &str) -> Option<u64> {
    let canonical = (1..=3).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

fn width_u16(width: u64) -> u16 {
    // INVARIANT: callers pass widths of at most 256.
    u16::try_from(width).unwrap_or(TILE_WIDTH)
}

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::hash::{hash_children, hash_leaf};
use crate::proof::{MemoryTree, tree_root};

#[test]
fn paths_follow_the_spec() {
    let cases = [
        (TileId::full(0, 0), "tile/0/000"),
        (TileId::full(0, 7), "tile/0/007"),
        (TileId::full(1, 999), "tile/1/999"),
        (TileId::full(1, 1000), "tile/1/x001/000"),
        (TileId::full(2, 1_234_067), "tile/2/x001/x234/067"),
        (TileId::new(0, 273, 112).unwrap(), "tile/0/273.p/112"),
        (TileId::new(63, 5, 1).unwrap(), "tile/63/005.p/1"),
        (
            TileId::full(0, u64::MAX),
            "tile/0/x018/x446/x744/x073/x709/x551/615",
        ),
    ];
    for (tile, path) in cases {
        assert_eq!(tile.path(), path);
        assert_eq!(parse_path(path), Ok(TilePath::Hash(tile)), "{path}");
    }
    let bundle = BundleId {
        index: 1_234_067,
        width: 5,
    };
    assert_eq!(bundle.path(), "tile/entries/x001/x234/067.p/5");
    assert_eq!(parse_path(&bundle.path()), Ok(TilePath::Entries(bundle)));
    assert_eq!(
        parse_path("tile/entries/000"),
        Ok(TilePath::Entries(BundleId {
            index: 0,
            width: 256
        }))
    );
}

#[test]
fn malformed_paths_are_rejected() {
    let cases = [
        ("", PathPart::Prefix),
        ("/tile/0/000", PathPart::Prefix),
        ("tiles/0/000", PathPart::Prefix),
        ("tile/0", PathPart::Prefix),
        ("tile/entries", PathPart::Prefix),
        ("tile//000", PathPart::Level),
        ("tile/00/000", PathPart::Level),
        ("tile/01/000", PathPart::Level),
        ("tile/64/000", PathPart::Level),
        ("tile/256/000", PathPart::Level),
        ("tile/+1/000", PathPart::Level),
        ("tile/x/000", PathPart::Level),
        ("tile/data/000", PathPart::Level),
        ("tile/0/", PathPart::Index),
        ("tile/0/0", PathPart::Index),
        ("tile/0/00", PathPart::Index),
        ("tile/0/0000", PathPart::Index),
        ("tile/0/x001", PathPart::Index),
        ("tile/0/001/002", PathPart::Index),
        ("tile/0/x000/001", PathPart::Index),
        ("tile/0/x000/x001/002", PathPart::Index),
        ("tile/0/X001/002", PathPart::Index),
        ("tile/0/x01/002", PathPart::Index),
        ("tile/0/x001/02", PathPart::Index),
        ("tile/0/x001//002", PathPart::Index),
        ("tile/0/000/", PathPart::Index),
        ("tile/0/-01", PathPart::Index),
        ("tile/0/1e2", PathPart::Index),
        ("tile/0/x018/x446/x744/x073/x709/x551/616", PathPart::Index),
        ("tile/0/x999/x999/x999/x999/x999/x999/999", PathPart::Index),
        (
            "tile/0/x001/x001/x001/x001/x001/x001/x001/001",
            PathPart::Index,
        ),
        ("tile/0/000.p/0", PathPart::Width),
        ("tile/0/000.p/256", PathPart::Width),
        ("tile/0/000.p/007", PathPart::Width),
        ("tile/0/000.p/", PathPart::Width),
        ("tile/0/000.p/5/", PathPart::Width),
        ("tile/0/000.p/5/6", PathPart::Width),
        ("tile/0/000.p/+5", PathPart::Width),
        ("tile/0/000.p/1000", PathPart::Width),
        ("tile/0/000.p/5.p/5", PathPart::Width),
        ("tile/0/.p/5", PathPart::Index),
        ("tile/entries/0", PathPart::Index),
        ("tile/entries/000.p/0", PathPart::Width),
    ];
    for (path, part) in cases {
        assert_eq!(
            parse_path(path),
            Err(TileError::MalformedPath { part }),
            "{path}"
        );
    }
    let long = format!("tile/0/{}", "x001/".repeat(20));
    assert_eq!(
        parse_path(&long),
        Err(TileError::MalformedPath {
            part: PathPart::Length
        })
    );
}

#[test]
fn tile_ids_are_validated() {
    assert!(TileId::new(0, 0, 1).is_ok());
    assert!(TileId::new(63, u64::MAX, 256).is_ok());
    for (level, width) in [(0, 0), (0, 257), (64, 1)] {
        assert_eq!(
            TileId::new(level, 3, width),
            Err(TileError::InvalidTile {
                level,
                index: 3,
                width
            })
        );
    }
}

#[test]
fn tiles_for_size_matches_the_spec_examples() {
    // "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    // tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    // partial level 2 tile of width 1."
    assert_eq!(
        tiles_for_size(TreeSize(70_000)),
        vec![
            TileId::new(0, 273, 112).unwrap(),
            TileId::new(1, 1, 17).unwrap(),
            TileId::new(2, 0, 1).unwrap(),
        ]
    );
    // "a tree of size 256 will be represented by a full level 0 tile and a partial level 1 tile
    // of width 1."
    assert_eq!(
        tiles_for_size(TreeSize(256)),
        vec![TileId::new(1, 0, 1).unwrap()]
    );
    assert_eq!(tiles_for_size(TreeSize(0)), vec![]);
    assert_eq!(
        tiles_for_size(TreeSize(1)),
        vec![TileId::new(0, 0, 1).unwrap()]
    );
    let all = tiles_for_size(TreeSize(u64::MAX));
    assert_eq!(all.len(), 8);
    assert!(all.iter().all(|t| t.width == 255));
    assert!(all.iter().all(|t| t.is_complete_in(TreeSize(u64::MAX))));

    let tree_70k: Vec<TileId> = new_tiles(TreeSize(0), TreeSize(70_000)).collect();
    let level0 = tree_70k.iter().filter(|t| t.level == 0).count();
    let full0 = tree_70k
        .iter()
        .filter(|t| t.level == 0 && t.is_full())
        .count();
    assert_eq!((level0, full0), (274, 273));
    let level1: Vec<_> = tree_70k.iter().filter(|t| t.level == 1).collect();
    assert_eq!(level1.len(), 2);
    assert!(level1[0].is_full());
    assert_eq!(level1[1].width, 17);
    assert_eq!(tree_70k.last(), Some(&TileId::new(2, 0, 1).unwrap()));
}

/// Recomputes a tree's root from the tiles [`tiles_for_size`] names, as a client would.
fn root_from_tiles(tree: &MemoryTree, size: TreeSize) -> Hash {
    // Complete subtrees of the tree, largest first: from the highest tile down, each tile's
    // hashes split into perfect groups by the binary digits of its width.
    let mut pieces = Vec::new();
    for tile in tiles_for_size(size).into_iter().rev() {
        let bytes = read_tile(tree, tile, size).unwrap();
        let hashes = decode_tile(&bytes, tile.width).unwrap();
        let mut at = 0usize;
        for bit in (0..8).rev() {
            let group = 1usize << bit;
            if usize::from(tile.width) & group != 0 {
                pieces.push(perfect_root(&hashes[at..at + group]));
                at += group;
            }
        }
    }
    let mut acc = pieces.pop().unwrap();
    while let Some(left) = pieces.pop() {
        acc = hash_children(&left, &acc);
    }
    acc
}

fn perfect_root(hashes: &[Hash]) -> Hash {
    if hashes.len() == 1 {
        return hashes[0];
    }
    let (l, r) = hashes.split_at(hashes.len() / 2);
    hash_children(&perfect_root(l), &perfect_root(r))
}

#[test]
fn tiles_for_size_are_enough_for_the_root() {
    let leaves: Vec<Hash> = (0..70_100u64)
        .map(|i| hash_leaf(&i.to_be_bytes()))
        .collect();
    let tree = MemoryTree::from_leaf_hashes(leaves);
    for size in [
        1u64, 2, 3, 255, 256, 257, 511, 512, 513, 65_535, 65_536, 65_537, 70_000, 70_100,
    ] {
        let size = TreeSize(size);
        assert_eq!(
            root_from_tiles(&tree, size),
            tree_root(&tree, size).unwrap(),
            "size {size}"
        );
    }
}

#[test]
fn read_tile_reads_the_right_nodes() {
    let leaves: Vec<Hash> = (0..600u64).map(|i| hash_leaf(&i.to_be_bytes())).collect();
    let tree = MemoryTree::from_leaf_hashes(leaves.clone());
    let size = TreeSize(600);

    let t = TileId::full(0, 1);
    let hashes = decode_tile(&read_tile(&tree, t, size).unwrap(), 256).unwrap();
    assert_eq!(hashes, leaves[256..512]);
    let t = TileId::new(0, 2, 88).unwrap();
    assert!(t.is_complete_in(size));
    let hashes = decode_tile(&read_tile(&tree, t, size).unwrap(), 88).unwrap();
    assert_eq!(hashes, leaves[512..600]);
    let t = TileId::new(1, 0, 2).unwrap();
    let hashes = decode_tile(&read_tile(&tree, t, size).unwrap(), 2).unwrap();
    assert_eq!(
        hashes[1],
        tree_root(
            &MemoryTree::from_leaf_hashes(leaves[256..512].to_vec()),
            TreeSize(256)
        )
        .unwrap()
    );

    for outside in [
        TileId::new(0, 2, 89).unwrap(),
        TileId::full(0, 2),
        TileId::new(1, 0, 3).unwrap(),
        TileId::full(8, 0),
        TileId::new(63, 0, 1).unwrap(),
        TileId::full(0, u64::MAX),
    ] {
        assert!(!outside.is_complete_in(size));
        assert_eq!(
            read_tile(&tree, outside, size),
            Err(ReadTileError::OutsideTree {
                tile: outside,
                size
            })
        );
    }
    assert!(
        !TileId {
            level: 0,
            index: 0,
            width: 0
        }
        .is_complete_in(size)
    );
}

/// Every tile of a tree, full and partial, computed the slow way.
fn all_tiles(size: u64) -> BTreeSet<TileId> {
    let mut out = BTreeSet::new();
    for level in 0..8u8 {
        let hashes = size >> (8 * u32::from(level));
        let mut index = 0;
        while index * 256 < hashes {
            let width = (hashes - index * 256).min(256) as u16;
            out.insert(TileId::new(level, index, width).unwrap());
            index += 1;
        }
    }
    out
}

proptest! {
    #[test]
    fn parse_path_inverts_path(level in 0u8..=63, index in any::<u64>(), width in 1u16..=256) {
        let tile = TileId::new(level, index, width).unwrap();
        prop_assert_eq!(parse_path(&tile.path()), Ok(TilePath::Hash(tile)));
        let bundle = BundleId { index, width };
        prop_assert_eq!(parse_path(&bundle.path()), Ok(TilePath::Entries(bundle)));
    }

    #[test]
    fn parse_path_accepts_only_canonical_paths(path in "tile/(entries|[0-9x]{1,3})/[0-9x/]{1,12}(\\.p/[0-9]{1,4})?") {
        if let Ok(parsed) = parse_path(&path) {
            prop_assert_eq!(parsed.path(), path);
        }
    }

    #[test]
    fn new_tiles_are_the_difference(old in 0u64..80_000, grow in 0u64..80_000) {
        let new = old + grow;
        let want: BTreeSet<TileId> = all_tiles(new).difference(&all_tiles(old)).copied().collect();
        let got: Vec<TileId> = new_tiles(TreeSize(old), TreeSize(new)).collect();
        let got_set: BTreeSet<TileId> = got.iter().copied().collect();
        prop_assert_eq!(got.len(), got_set.len());
        prop_assert_eq!(&got_set, &want);
        prop_assert!(got.iter().all(|t| t.is_complete_in(TreeSize(new))));
        prop_assert!(got.iter().all(|t| !t.is_complete_in(TreeSize(old))));
        let bundles: Vec<BundleId> = new_bundles(TreeSize(old), TreeSize(new)).collect();
        prop_assert_eq!(bundles.len(), got.iter().filter(|t| t.level == 0).count());
        // Nothing is new when the tree does not grow.
        prop_assert_eq!(new_tiles(TreeSize(new), TreeSize(old)).count(), 0);
    }
}

#[test]
fn new_tiles_for_huge_trees_is_lazy() {
    let mut tiles = new_tiles(TreeSize(u64::MAX - 1000), TreeSize(u64::MAX));
    let first = tiles.next().unwrap();
    assert_eq!(first.level, 0);
    assert!(first.is_complete_in(TreeSize(u64::MAX)));
    assert!(
        tiles
            .take(100)
            .all(|t| t.is_complete_in(TreeSize(u64::MAX)))
    );
}

#[test]
fn entry_bundles_round_trip() {
    let entries: Vec<Vec<u8>> = vec![b"first".to_vec(), Vec::new(), vec![7u8; 300]];
    let bytes = encode_entry_bundle(&entries).unwrap();
    assert_eq!(&bytes[..7], b"\x00\x05first");
    assert_eq!(&bytes[7..9], b"\x00\x00");
    assert_eq!(&bytes[9..11], &300u16.to_be_bytes());
    assert_eq!(bytes.len(), 2 + 5 + 2 + 2 + 300);
    let decoded = decode_entry_bundle(&bytes).unwrap();
    assert_eq!(
        decoded,
        entries.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );

    let full: Vec<Vec<u8>> = (0..256u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let bytes = encode_entry_bundle(&full).unwrap();
    assert_eq!(decode_entry_bundle(&bytes).unwrap().len(), 256);

    let max = vec![1u8; MAX_BUNDLE_ENTRY_SIZE];
    let bytes = encode_entry_bundle([&max]).unwrap();
    assert_eq!(decode_entry_bundle(&bytes).unwrap(), vec![max.as_slice()]);
}

#[test]
fn malformed_bundles_are_rejected() {
    let no_entries: [&[u8]; 0] = [];
    assert_eq!(encode_entry_bundle(no_entries), Err(TileError::EmptyBundle));
    assert_eq!(decode_entry_bundle(&[]), Err(TileError::EmptyBundle));
    let too_many: Vec<Vec<u8>> = (0..257).map(|_| vec![1]).collect();
    assert_eq!(
        encode_entry_bundle(&too_many),
        Err(TileError::TooManyEntries { max: 256 })
    );
    let raw: Vec<u8> = (0..257).flat_map(|_| [0u8, 1, 9]).collect();
    assert_eq!(
        decode_entry_bundle(&raw),
        Err(TileError::TooManyEntries { max: 256 })
    );
    let big = vec![0u8; MAX_BUNDLE_ENTRY_SIZE + 1];
    assert_eq!(
        encode_entry_bundle([b"ok".as_slice(), &big]),
        Err(TileError::EntryTooLarge {
            entry: 1,
            size: MAX_BUNDLE_ENTRY_SIZE + 1
        })
    );
    let good = encode_entry_bundle([b"abc".as_slice(), b"de"]).unwrap();
    for cut in 1..good.len() {
        let got = decode_entry_bundle(&good[..cut]);
        if cut == 5 {
            // Exactly the first entry: a valid, shorter bundle.
            assert_eq!(got, Ok(vec![b"abc".as_slice()]));
        } else {
            assert!(
                matches!(got, Err(TileError::TruncatedBundle { .. })),
                "cut {cut}"
            );
        }
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        decode_entry_bundle(&trailing),
        Err(TileError::TruncatedBundle { offset: 9 })
    );
}

#[test]
fn hash_tiles_round_trip() {
    let hashes: Vec<Hash> = (0..5u8).map(|i| hash_leaf(&[i])).collect();
    let bytes = encode_tile(&hashes);
    assert_eq!(bytes.len(), 5 * 32);
    assert_eq!(decode_tile(&bytes, 5).unwrap(), hashes);
    for width in [0, 4, 6, 257] {
        assert_eq!(
            decode_tile(&bytes, width),
            Err(TileError::WrongTileSize {
                size: bytes.len(),
                width
            })
        );
    }
    assert!(decode_tile(&bytes[..159], 5).is_err());
}

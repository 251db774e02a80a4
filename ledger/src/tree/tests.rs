use super::*;
use crate::{
    hash::hash_leaf,
    proof::{MemoryTree, NodeSource},
    store::MemoryStore,
};

fn leaf(i: u64) -> Vec<u8> {
    format!("leaf {i}").into_bytes()
}

/// Appends `n` leaves, writing full tiles to `store`; returns the frontier and a reference tree.
fn build(store: &MemoryStore, n: u64) -> (Frontier, MemoryTree) {
    let mut frontier = Frontier::empty();
    let mut reference = MemoryTree::new();
    let mut full = Vec::new();
    for i in 0..n {
        frontier.append(hash_leaf(&leaf(i)), &mut full);
        reference.push_leaf(&leaf(i));
    }
    for tile in full {
        store
            .put(&layout::tile(tile.level, tile.index), &tile.bytes)
            .unwrap();
    }
    (frontier, reference)
}

/// Every complete node of a tree of `n` leaves, read through the tiles, equals the reference.
fn assert_all_nodes(store: &MemoryStore, frontier: &Frontier, reference: &MemoryTree, n: u64) {
    let reader = TreeReader::new(store, frontier);
    let mut level = 0u8;
    while (n >> level) > 0 {
        for index in 0..(n >> level) {
            assert_eq!(
                reader.node(level, index).unwrap(),
                reference.node(level, index).unwrap(),
                "node ({level}, {index}) of a tree of {n}"
            );
        }
        // The first incomplete node is not available.
        assert!(reader.node(level, n >> level).is_err());
        level += 1;
    }
}

#[test]
fn nodes_match_reference_across_tile_boundaries() {
    for n in [
        0, 1, 2, 3, 7, 255, 256, 257, 511, 512, 513, 1000, 65535, 65536, 65537,
    ] {
        let store = MemoryStore::new();
        let (frontier, reference) = build(&store, n);
        assert_eq!(frontier.size(), n);
        if n <= 1000 || n.is_power_of_two() || n % 256 != 0 {
            assert_all_nodes(&store, &frontier, &reference, n.min(70_000));
        }
        assert_eq!(
            crate::proof::tree_root(
                &TreeReader::new(&store, &frontier),
                crate::hash::TreeSize(n)
            )
            .unwrap(),
            reference.root()
        );
    }
}

#[test]
fn rebuild_reproduces_the_appended_frontier() {
    for n in [0, 1, 255, 256, 257, 300, 65535, 65536, 65537, 70_000] {
        let store = MemoryStore::new();
        let (frontier, _) = build(&store, n);
        let partial_start = n - n % 256;
        let leaves: Vec<Vec<u8>> = (partial_start..n).map(leaf).collect();
        let rebuilt = Frontier::rebuild(&store, n, &leaves).unwrap();
        assert_eq!(rebuilt, frontier, "size {n}");
    }
}

#[test]
fn rebuild_fails_when_a_full_tile_is_missing() {
    let store = MemoryStore::new();
    let (_, _) = build(&store, 600);
    store.delete(&layout::tile(0, 1)).unwrap();
    let leaves: Vec<Vec<u8>> = (512..600).map(leaf).collect();
    // Level 1's partial tile needs the tops of tiles (0,0) and (0,1).
    assert!(matches!(
        Frontier::rebuild(&store, 600, &leaves),
        Err(TreeError::MissingNode { .. })
    ));
}

#[test]
fn stored_tiles_check_and_detect_a_flipped_bit() {
    let store = MemoryStore::new();
    let (_, reference) = build(&store, 256);
    let tile = store.get(&layout::tile(0, 0)).unwrap().unwrap();
    assert_eq!(
        check_stored_tile(&tile),
        reference.root_at(crate::hash::TreeSize(256)).ok()
    );
    for byte in [0usize, 31, 8192, 16319] {
        let mut bad = tile.to_vec();
        bad[byte] ^= 1;
        assert_eq!(check_stored_tile(&bad), None, "flip in byte {byte}");
    }
    assert_eq!(check_stored_tile(&tile[..100]), None);
}

#[test]
fn tile_hashes_serve_full_and_partial_tiles() {
    let store = MemoryStore::new();
    let (frontier, reference) = build(&store, 300);
    let reader = TreeReader::new(&store, &frontier);
    let full = reader.tile_hashes(0, 0, 256).unwrap();
    let want: Vec<u8> = reference.leaf_hashes()[..256]
        .iter()
        .flat_map(|h| h.0)
        .collect();
    assert_eq!(full, want);
    let partial = reader.tile_hashes(0, 1, 44).unwrap();
    let want: Vec<u8> = reference.leaf_hashes()[256..300]
        .iter()
        .flat_map(|h| h.0)
        .collect();
    assert_eq!(partial, want);
    assert!(reader.tile_hashes(0, 1, 45).is_err());
    // Level 1 tile 0 holds one level-8 node (the root of the first 256 leaves).
    let level1 = reader.tile_hashes(1, 0, 1).unwrap();
    assert_eq!(level1, reference.node(8, 0).unwrap().0.to_vec());
}

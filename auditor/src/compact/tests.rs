use ledger::{
    hash::{TreeSize, empty_root, hash_leaf},
    proof::MemoryTree,
};

use super::CompactRange;

#[test]
fn empty_range_has_the_empty_root() {
    let range = CompactRange::new();
    assert_eq!(range.size(), TreeSize(0));
    assert_eq!(range.root(), empty_root());
}

#[test]
fn roots_match_the_reference_tree_at_every_size() {
    let mut range = CompactRange::new();
    let mut tree = MemoryTree::new();
    for i in 0..600u32 {
        range.push(hash_leaf(&i.to_be_bytes()));
        tree.push_leaf(&i.to_be_bytes());
        assert_eq!(range.size(), tree.size());
        assert_eq!(range.root(), tree.root(), "size {}", i + 1);
        // One node per set bit: memory stays logarithmic.
        assert_eq!(range.nodes.len() as u32, (i + 1).count_ones());
    }
}

#[test]
fn a_changed_leaf_changes_every_later_root() {
    let mut honest = CompactRange::new();
    let mut other = CompactRange::new();
    for i in 0..40u32 {
        honest.push(hash_leaf(&i.to_be_bytes()));
        let leaf = if i == 17 { 999u32 } else { i };
        other.push(hash_leaf(&leaf.to_be_bytes()));
        assert_eq!(honest.root() == other.root(), i < 17, "size {}", i + 1);
    }
}

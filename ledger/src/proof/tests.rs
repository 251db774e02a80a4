use std::cell::Cell;

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------------------------
// An independent reference: RFC 9162 §2.1 written out as its recursive definitions over slices.

fn largest_pow2_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = largest_pow2_below(n);
            hash_children(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
        }
    }
}

/// `PATH(m, D[n])` (RFC 9162 §2.1.3.1).
fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = largest_pow2_below(n);
    let mut path;
    if m < k {
        path = ref_path(m, &d[..k]);
        path.push(ref_mth(&d[k..]));
    } else {
        path = ref_path(m - k, &d[k..]);
        path.push(ref_mth(&d[..k]));
    }
    path
}

/// `SUBPROOF(m, D[n], b)` (RFC 9162 §2.1.4.1).
fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![ref_mth(d)] };
    }
    let k = largest_pow2_below(n);
    let mut proof;
    if m <= k {
        proof = ref_subproof(m, &d[..k], b);
        proof.push(ref_mth(&d[k..]));
    } else {
        proof = ref_subproof(m - k, &d[k..], false);
        proof.push(ref_mth(&d[..k]));
    }
    proof
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| hash_leaf(&i.to_be_bytes())).collect()
}

// ---------------------------------------------------------------------------------------------
// Agreement with the reference.

#[test]
fn roots_match_reference_for_every_size_up_to_130() {
    let d = leaves(130);
    let tree = MemoryTree::from_leaf_hashes(d.clone());
    for n in 0..=130 {
        let want = ref_mth(&d[..n]);
        assert_eq!(
            tree_root(&tree, TreeSize(n as u64)).unwrap(),
            want,
            "size {n}"
        );
        assert_eq!(tree.root_at(TreeSize(n as u64)).unwrap(), want, "size {n}");
    }
    assert_eq!(
        tree_root(&MemoryTree::new(), TreeSize(0)).unwrap(),
        empty_root()
    );
}

#[test]
fn inclusion_proofs_match_reference_and_verify() {
    for n in 1..=70usize {
        let d = leaves(n);
        let tree = MemoryTree::from_leaf_hashes(d.clone());
        let root = ref_mth(&d);
        for m in 0..n {
            let proof = prove_inclusion(&tree, LeafIndex(m as u64), TreeSize(n as u64)).unwrap();
            assert_eq!(proof.path, ref_path(m, &d), "leaf {m} of {n}");
            proof.verify(&d[m], &root).unwrap();
            assert_eq!(proof.root_from_leaf(&d[m]).unwrap(), root);
        }
    }
}

#[test]
fn consistency_proofs_match_reference_and_verify() {
    for n in 1..=70usize {
        let d = leaves(n);
        let tree = MemoryTree::from_leaf_hashes(d.clone());
        let new_root = ref_mth(&d);
        for m in 1..=n {
            let proof = prove_consistency(&tree, TreeSize(m as u64), TreeSize(n as u64)).unwrap();
            assert_eq!(proof.path, ref_subproof(m, &d, true), "{m} -> {n}");
            proof.verify(&ref_mth(&d[..m]), &new_root).unwrap();
        }
    }
}

#[test]
fn subtree_root_accepts_subtrees_and_rejects_other_ranges() {
    let d = leaves(40);
    let tree = MemoryTree::from_leaf_hashes(d.clone());
    for start in 0..40u64 {
        for end in start..=40u64 {
            let len = end - start;
            let block = len.next_power_of_two();
            let is_subtree = len > 0 && start % block == 0;
            let got = subtree_root(&tree, start, end);
            if is_subtree {
                assert_eq!(got.unwrap(), ref_mth(&d[start as usize..end as usize]));
            } else {
                assert_eq!(got, Err(ProveError::NotASubtree { start, end }));
            }
        }
    }
    assert_eq!(
        subtree_root(&tree, 5, 3),
        Err(ProveError::NotASubtree { start: 5, end: 3 })
    );
}

// ---------------------------------------------------------------------------------------------
// Cost: O(log n) node reads, even for huge trees.

/// Returns a made-up hash for every node and counts the calls. Good enough to count reads and to
/// check that only complete nodes are asked for; the hashes mean nothing.
struct CountingSource {
    size: u64,
    calls: Cell<usize>,
}

impl NodeSource for CountingSource {
    type Error = (u8, u64);

    fn node(&self, level: u8, index: u64) -> Result<Hash, (u8, u64)> {
        self.calls.set(self.calls.get() + 1);
        let end = (u128::from(index) + 1) << level;
        if level >= 64 || end > u128::from(self.size) {
            return Err((level, index));
        }
        let mut bytes = [0u8; 32];
        bytes[0] = level;
        bytes[8..16].copy_from_slice(&index.to_be_bytes());
        Ok(Hash(bytes))
    }
}

#[test]
fn proofs_read_logarithmically_many_complete_nodes() {
    let sizes = [
        1u64,
        2,
        3,
        1000,
        1 << 20,
        (1 << 20) + 1,
        10_000_000,
        (1 << 40) + 12_345,
        u64::MAX / 3,
        u64::MAX,
    ];
    for &size in &sizes {
        let src = CountingSource {
            size,
            calls: Cell::new(0),
        };
        let log = u64::from(64 - (size - 1).leading_zeros()) as usize;
        for index in [0, size / 2, size.saturating_sub(2), size - 1] {
            src.calls.set(0);
            let proof = prove_inclusion(&src, LeafIndex(index), TreeSize(size)).unwrap();
            assert!(proof.path.len() <= log);
            assert!(src.calls.get() <= 2 * log + 1, "size {size} index {index}");
        }
        for old in [1, 2, 3, size / 3, size / 2 + 1, size - 1] {
            if old == 0 || old > size {
                continue;
            }
            src.calls.set(0);
            let proof = prove_consistency(&src, TreeSize(old), TreeSize(size)).unwrap();
            assert!(proof.path.len() <= log + 1);
            assert!(src.calls.get() <= 2 * log + 2, "{old} -> {size}");
        }
        src.calls.set(0);
        tree_root(&src, TreeSize(size)).unwrap();
        assert_eq!(src.calls.get(), size.count_ones() as usize);
    }
}

// ---------------------------------------------------------------------------------------------
// Argument and shape errors.

#[test]
fn prove_rejects_bad_arguments() {
    let tree = MemoryTree::from_leaf_hashes(leaves(5));
    assert_eq!(
        prove_inclusion(&tree, LeafIndex(5), TreeSize(5)),
        Err(ProveError::IndexOutOfRange {
            index: LeafIndex(5),
            size: TreeSize(5)
        })
    );
    assert!(matches!(
        prove_inclusion(&tree, LeafIndex(0), TreeSize(0)),
        Err(ProveError::IndexOutOfRange { .. })
    ));
    assert_eq!(
        prove_consistency(&tree, TreeSize(0), TreeSize(3)),
        Err(ProveError::OldSizeZero)
    );
    assert_eq!(
        prove_consistency(&tree, TreeSize(4), TreeSize(3)),
        Err(ProveError::OldSizeLargerThanNew {
            old: TreeSize(4),
            new: TreeSize(3)
        })
    );
    // Sizes beyond the source surface as source errors, never as a panic or a bogus proof.
    assert!(matches!(
        prove_inclusion(&tree, LeafIndex(0), TreeSize(9)),
        Err(ProveError::Source(MemoryTreeError::NodeOutOfRange { .. }))
    ));
    assert!(matches!(
        prove_consistency(&tree, TreeSize(3), TreeSize(9)),
        Err(ProveError::Source(_))
    ));
    assert!(matches!(
        tree.root_at(TreeSize(6)),
        Err(MemoryTreeError::SizeOutOfRange { .. })
    ));
}

#[test]
fn same_size_consistency_is_empty_and_checks_roots() {
    let d = leaves(6);
    let tree = MemoryTree::from_leaf_hashes(d.clone());
    let proof = prove_consistency(&tree, TreeSize(6), TreeSize(6)).unwrap();
    assert!(proof.path.is_empty());
    let root = ref_mth(&d);
    proof.verify(&root, &root).unwrap();
    let other = ref_mth(&d[..5]);
    assert_eq!(
        proof.verify(&root, &other),
        Err(ProofError::NewRootMismatch)
    );
    let padded = ConsistencyProof {
        path: vec![root],
        ..proof
    };
    assert_eq!(
        padded.verify(&root, &root),
        Err(ProofError::WrongPathLength { got: 1, want: 0 })
    );
}

#[test]
fn verify_reports_typed_errors() {
    let d = leaves(8);
    let root = ref_mth(&d);
    let empty = InclusionProof {
        leaf_index: LeafIndex(0),
        tree_size: TreeSize(0),
        path: vec![],
    };
    assert_eq!(
        empty.verify(&d[0], &empty_root()),
        Err(ProofError::IndexOutOfRange {
            index: LeafIndex(0),
            size: TreeSize(0)
        })
    );
    let long = InclusionProof {
        leaf_index: LeafIndex(0),
        tree_size: TreeSize(8),
        path: vec![root; MAX_PROOF_LEN + 1],
    };
    assert_eq!(
        long.verify(&d[0], &root),
        Err(ProofError::PathTooLong {
            got: MAX_PROOF_LEN + 1,
            max: MAX_PROOF_LEN
        })
    );
    let short = InclusionProof {
        leaf_index: LeafIndex(0),
        tree_size: TreeSize(8),
        path: vec![root],
    };
    assert_eq!(
        short.verify(&d[0], &root),
        Err(ProofError::WrongPathLength { got: 1, want: 3 })
    );
    let zero = ConsistencyProof {
        old_size: TreeSize(0),
        new_size: TreeSize(8),
        path: vec![],
    };
    assert_eq!(
        zero.verify(&empty_root(), &root),
        Err(ProofError::OldSizeZero)
    );
    let backwards = ConsistencyProof {
        old_size: TreeSize(8),
        new_size: TreeSize(7),
        path: vec![],
    };
    assert_eq!(
        backwards.verify(&root, &root),
        Err(ProofError::OldSizeLargerThanNew {
            old: TreeSize(8),
            new: TreeSize(7)
        })
    );
    let missing_seed = ConsistencyProof {
        old_size: TreeSize(3),
        new_size: TreeSize(8),
        path: vec![],
    };
    assert!(matches!(
        missing_seed.verify(&ref_mth(&d[..3]), &root),
        Err(ProofError::WrongPathLength { got: 0, .. })
    ));
}

#[test]
fn huge_sizes_do_not_panic() {
    let h = hash_leaf(b"x");
    for (index, size) in [
        (0, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (1 << 63, u64::MAX),
        ((1 << 63) - 1, 1 << 63),
    ] {
        for len in [0, 1, 63, 64] {
            let proof = InclusionProof {
                leaf_index: LeafIndex(index),
                tree_size: TreeSize(size),
                path: vec![h; len],
            };
            assert!(proof.verify(&h, &h).is_err());
        }
    }
    for (old, new) in [
        (1, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (3, 1 << 63),
        ((1 << 63) + 1, u64::MAX),
    ] {
        for len in [0, 1, 64] {
            let proof = ConsistencyProof {
                old_size: TreeSize(old),
                new_size: TreeSize(new),
                path: vec![h; len],
            };
            assert!(proof.verify(&h, &h).is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corruption: every mutation of a valid proof is rejected.

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out.0[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Every path with one bit flipped, one hash dropped, or one hash added.
fn mutated_paths(path: &[Hash]) -> Vec<Vec<Hash>> {
    let mut out = Vec::new();
    for i in 0..path.len() {
        for bit in 0..256 {
            let mut p = path.to_vec();
            p[i] = flip(&p[i], bit);
            out.push(p);
        }
        let mut dropped = path.to_vec();
        dropped.remove(i);
        out.push(dropped);
    }
    for i in 0..=path.len() {
        let mut added = path.to_vec();
        added.insert(i, hash_leaf(b"extra"));
        out.push(added);
        // A copy of a neighbour, so the extra hash is not obviously foreign.
        if let Some(copy) = path.get(i).or(path.last()) {
            let mut dup = path.to_vec();
            dup.insert(i, *copy);
            out.push(dup);
        }
    }
    out
}

fn assert_inclusion_corruptions_rejected(d: &[Hash], index: usize) {
    let n = d.len();
    let tree = MemoryTree::from_leaf_hashes(d.to_vec());
    let root = ref_mth(d);
    let proof = prove_inclusion(&tree, LeafIndex(index as u64), TreeSize(n as u64)).unwrap();
    let leaf = d[index];
    proof.verify(&leaf, &root).unwrap();

    for path in mutated_paths(&proof.path) {
        let bad = InclusionProof {
            path,
            ..proof.clone()
        };
        assert!(bad.verify(&leaf, &root).is_err(), "{n}/{index}: {bad:?}");
    }
    for bit in 0..256 {
        assert!(proof.verify(&flip(&leaf, bit), &root).is_err());
        assert!(proof.verify(&leaf, &flip(&root, bit)).is_err());
    }
    for other in [index.wrapping_sub(1), index + 1] {
        let bad = InclusionProof {
            leaf_index: LeafIndex(other as u64),
            ..proof.clone()
        };
        assert!(bad.verify(&leaf, &root).is_err(), "index {other} of {n}");
    }
    // A size is bound to its root only by the checkpoint that carries both: check the proof
    // against the root of the tree of the changed size, which is what a verifier would hold.
    for other in [n - 1, n + 1] {
        let bad = InclusionProof {
            tree_size: TreeSize(other as u64),
            ..proof.clone()
        };
        let mut grown = d.to_vec();
        grown.push(hash_leaf(b"next"));
        let other_root = ref_mth(&grown[..other]);
        assert!(
            bad.verify(&leaf, &other_root).is_err(),
            "size {other} for {index} of {n}"
        );
    }
}

fn assert_consistency_corruptions_rejected(d: &[Hash], m: usize) {
    let n = d.len();
    let tree = MemoryTree::from_leaf_hashes(d.to_vec());
    let (old_root, new_root) = (ref_mth(&d[..m]), ref_mth(d));
    let proof = prove_consistency(&tree, TreeSize(m as u64), TreeSize(n as u64)).unwrap();
    proof.verify(&old_root, &new_root).unwrap();

    for path in mutated_paths(&proof.path) {
        let bad = ConsistencyProof {
            path,
            ..proof.clone()
        };
        assert!(
            bad.verify(&old_root, &new_root).is_err(),
            "{m} -> {n}: {bad:?}"
        );
    }
    for bit in 0..256 {
        assert!(proof.verify(&flip(&old_root, bit), &new_root).is_err());
        assert!(proof.verify(&old_root, &flip(&new_root, bit)).is_err());
    }
    if old_root != new_root {
        assert!(proof.verify(&new_root, &old_root).is_err(), "swapped roots");
    }
    let mut grown = d.to_vec();
    grown.push(hash_leaf(b"next"));
    for other in [m - 1, m + 1] {
        let bad = ConsistencyProof {
            old_size: TreeSize(other as u64),
            ..proof.clone()
        };
        assert!(bad.verify(&ref_mth(&grown[..other]), &new_root).is_err());
    }
    for other in [n - 1, n + 1] {
        let bad = ConsistencyProof {
            new_size: TreeSize(other as u64),
            ..proof.clone()
        };
        assert!(bad.verify(&old_root, &ref_mth(&grown[..other])).is_err());
    }
}

#[test]
fn every_corruption_of_small_proofs_is_rejected() {
    for n in 1..=17usize {
        let d = leaves(n);
        for index in 0..n {
            assert_inclusion_corruptions_rejected(&d, index);
        }
        for m in 1..=n {
            assert_consistency_corruptions_rejected(&d, m);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn random_leaves(n: usize, seed: u64) -> Vec<Hash> {
    (0..n as u64)
        .map(|i| hash_leaf(&[seed.to_be_bytes(), i.to_be_bytes()].concat()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_consistency_proof_up_to_n_verifies(n in 1usize..=300, seed in any::<u64>()) {
        let d = random_leaves(n, seed);
        let tree = MemoryTree::from_leaf_hashes(d.clone());
        let new_root = tree.root();
        prop_assert_eq!(new_root, ref_mth(&d));
        for m in 1..=n {
            let old_root = tree_root(&tree, TreeSize(m as u64)).unwrap();
            let proof = prove_consistency(&tree, TreeSize(m as u64), TreeSize(n as u64)).unwrap();
            prop_assert_eq!(proof.verify(&old_root, &new_root), Ok(()));
        }
    }

    #[test]
    fn random_inclusion_proofs_verify(
        n in 1usize..=300,
        seed in any::<u64>(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 8),
    ) {
        let d = random_leaves(n, seed);
        let tree = MemoryTree::from_leaf_hashes(d.clone());
        let root = tree.root();
        for pick in picks {
            let i = pick.index(n);
            let proof = prove_inclusion(&tree, LeafIndex(i as u64), TreeSize(n as u64)).unwrap();
            prop_assert_eq!(proof.verify(&d[i], &root), Ok(()));
        }
    }

    #[test]
    fn random_corruptions_are_rejected(
        n in 1usize..=300,
        seed in any::<u64>(),
        pick in any::<prop::sample::Index>(),
    ) {
        let d = random_leaves(n, seed);
        let i = pick.index(n);
        assert_inclusion_corruptions_rejected(&d, i);
        assert_consistency_corruptions_rejected(&d, i + 1);
    }

    #[test]
    fn roots_agree_with_rs_merkle(n in 1usize..=300, seed in any::<u64>()) {
        let d = random_leaves(n, seed);
        let tree = MemoryTree::from_leaf_hashes(d.clone());
        let theirs = rs_merkle::MerkleTree::<Rfc6962Node>::from_leaves(
            &d.iter().map(|h| h.0).collect::<Vec<_>>(),
        );
        prop_assert_eq!(theirs.root().map(Hash), Some(tree.root()));
    }
}

// ---------------------------------------------------------------------------------------------
// rs_merkle as a second opinion.
//
// rs_merkle builds the tree bottom-up, pairing nodes left to right and promoting an unpaired last
// node to the next level unchanged. With leaves hashed by us (`hash_leaf`) and a `Hasher` whose
// `hash` prepends 0x01 (so its default `concat_and_hash` is exactly RFC 9162's node hash), that
// bottom-up construction gives the same tree as RFC 9162's "split at the largest power of two"
// recursion for every size: the roots and single-leaf proofs agree for all n checked here. What
// does not agree: rs_merkle has no root for the empty tree (`None`, where RFC 9162 has
// SHA-256("")), and it hashes leaves with the same function as nodes, so it must be fed leaf hashes
// rather than leaves.

#[derive(Clone)]
struct Rfc6962Node;

impl rs_merkle::Hasher for Rfc6962Node {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        let mut prefixed = Vec::with_capacity(data.len() + 1);
        prefixed.push(0x01);
        prefixed.extend_from_slice(data);
        Hash::sha256(&prefixed).0
    }
}

#[test]
fn rs_merkle_agrees_on_roots_and_proofs_where_defined() {
    let empty = rs_merkle::MerkleTree::<Rfc6962Node>::from_leaves(&[]);
    assert_eq!(empty.root(), None, "rs_merkle has no empty-tree root");

    for n in 1..=160usize {
        let d = leaves(n);
        let raw: Vec<[u8; 32]> = d.iter().map(|h| h.0).collect();
        let theirs = rs_merkle::MerkleTree::<Rfc6962Node>::from_leaves(&raw);
        let tree = MemoryTree::from_leaf_hashes(d.clone());
        assert_eq!(theirs.root().map(Hash), Some(tree.root()), "root of {n}");
        for i in 0..n {
            let ours = prove_inclusion(&tree, LeafIndex(i as u64), TreeSize(n as u64)).unwrap();
            let their_path: Vec<Hash> = theirs
                .proof(&[i])
                .proof_hashes()
                .iter()
                .copied()
                .map(Hash)
                .collect();
            assert_eq!(ours.path, their_path, "path of {i} in {n}");
        }
    }
}

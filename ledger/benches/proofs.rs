//! Proof and checkpoint verification costs: what an auditor pays per receipt.
//!
//! Run with `cargo bench -p ledger --bench proofs` (add `-- --quick` for a short run). Every
//! iteration asserts its result, so a broken path cannot look fast.
//!
//! Proofs come from a tree whose leaves are all equal: its node hashes cost one hash per level to
//! compute, so proofs for 10 million leaves are cheap to build, while verifying them does exactly
//! the work a real proof of the same size does (path length and hashing are the same).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "bench code"
)]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    hash::{Hash, LeafIndex, TreeSize, hash_children, hash_leaf},
    note::{KeyName, NoteSigner},
    proof::{NodeSource, prove_consistency, prove_inclusion, tree_root},
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A tree of any size whose leaves are all the same.
struct UniformTree {
    levels: Vec<Hash>,
}

impl UniformTree {
    fn new() -> Self {
        let mut levels = vec![hash_leaf(b"entry")];
        for _ in 0..64 {
            let below = *levels.last().unwrap();
            levels.push(hash_children(&below, &below));
        }
        Self { levels }
    }
}

impl NodeSource for UniformTree {
    type Error = Infallible;

    fn node(&self, level: u8, _index: u64) -> Result<Hash, Infallible> {
        Ok(self.levels[usize::from(level)])
    }
}

const SIZES: [(u64, &str); 3] = [(1_000, "1k"), (1_000_000, "1M"), (10_000_000, "10M")];

fn inclusion(c: &mut Criterion) {
    let tree = UniformTree::new();
    let leaf = hash_leaf(b"entry");
    let mut group = c.benchmark_group("verify_inclusion");
    for (size, label) in SIZES {
        let size = TreeSize(size);
        let root = tree_root(&tree, size).unwrap();
        // The first leaf: in a tree whose size is not a power of two its path is the longest
        // there is, ceil(log2(size)) hashes.
        let proof = prove_inclusion(&tree, LeafIndex(0), size).unwrap();
        proof.verify(&leaf, &root).unwrap();
        group.bench_with_input(
            BenchmarkId::new(format!("{} hashes", proof.path.len()), label),
            &proof,
            |b, proof| b.iter(|| assert!(black_box(proof).verify(&leaf, &root).is_ok())),
        );
    }
    group.finish();
}

fn consistency(c: &mut Criterion) {
    let tree = UniformTree::new();
    let mut group = c.benchmark_group("verify_consistency");
    for (size, label) in SIZES {
        let (old, new) = (TreeSize(size / 2 + 3), TreeSize(size));
        let (old_root, new_root) = (
            tree_root(&tree, old).unwrap(),
            tree_root(&tree, new).unwrap(),
        );
        let proof = prove_consistency(&tree, old, new).unwrap();
        proof.verify(&old_root, &new_root).unwrap();
        group.bench_with_input(
            BenchmarkId::new(format!("{} hashes", proof.path.len()), label),
            &proof,
            |b, proof| {
                b.iter(|| assert!(black_box(proof).verify(&old_root, &new_root).is_ok()));
            },
        );
    }
    group.finish();
}

fn checkpoint(c: &mut Criterion) {
    let signer = NoteSigner::generate(
        KeyName::new("example.com/akashi").unwrap(),
        &mut StdRng::seed_from_u64(1),
    );
    let verifier = signer.verifier();
    let cp = Checkpoint::new(
        "example.com/akashi",
        TreeSize(10_000_000),
        hash_leaf(b"root"),
    );
    let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();

    let mut group = c.benchmark_group("checkpoint");
    group.bench_function("sign", |b| {
        b.iter(|| {
            let signed = SignedCheckpoint::sign(black_box(cp.clone()), &signer).unwrap();
            assert_eq!(signed.checkpoint().size, TreeSize(10_000_000));
        });
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            let verified = SignedCheckpoint::verify(black_box(signed.note()), &verifier).unwrap();
            assert_eq!(verified.checkpoint(), &cp);
        });
    });
    group.finish();
}

criterion_group!(benches, inclusion, consistency, checkpoint);
criterion_main!(benches);

//! Deterministic interoperability vectors from a real akashi log (in-memory store): a note
//! verifier key, signed checkpoints at several sizes, leaves, inclusion and consistency proofs,
//! and the checkpoints again with two witnesses' `cosignature/v1` lines, so that other people's
//! verifiers can check akashi's formats unchanged (`tools/interop/verify.go` does so with Go's
//! `golang.org/x/mod/sumdb/note` and `sumdb/tlog`, and with Go's `crypto/ed25519` for the
//! cosignatures). The key seeds, body nonces and cosignature times are fixed: every run gives
//! the same bytes.

use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use ledger::{
    checkpoint::SignedCheckpoint,
    cosignature::{WitnessSigner, append_signatures},
    entry::{AttrName, AttrValue, Body, Day, EntryKind, Leaf},
    hash::{LeafIndex, TreeSize},
    log::{Log, NewEntry},
    note::{KeyName, NoteSigner},
    store::MemoryStore,
};
use rand::{SeedableRng as _, rngs::StdRng};
use serde::Serialize;

/// The file's shape: struct fields serialise in declaration order whatever `serde_json`
/// features the build unifies (`json!` maps would not).
#[derive(Serialize)]
struct Vectors {
    generated: &'static str,
    vkey: String,
    checkpoints: Vec<String>,
    leaves_base64: Vec<String>,
    inclusion_proofs: Vec<Proof>,
    consistency_proofs: Vec<Proof>,
    witness_vkeys: Vec<String>,
    cosigned_checkpoints: Vec<String>,
}

#[derive(Serialize)]
struct Proof {
    #[serde(skip_serializing_if = "Option::is_none")]
    leaf_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tree_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_size: Option<u64>,
    path: Vec<String>,
}

const SIZES: [u64; 4] = [1, 7, 256, 300];

/// The vectors as JSON text, the `generated` marker first.
///
/// # Errors
///
/// When the log cannot be built (a bug).
pub fn generate() -> anyhow::Result<String> {
    let signer = NoteSigner::from_seed(KeyName::new("akashi.example/vectors")?, &[7u8; 32]);
    let log = Log::open(Arc::new(MemoryStore::new()), signer.clone()).context("while opening")?;
    let mut rng = StdRng::seed_from_u64(42);
    let mut leaves = Vec::new();
    let mut checkpoints = Vec::new();
    for &size in &SIZES {
        let mut batch = Vec::new();
        for i in log.size().get()..size {
            let body = Body::new(format!("vector body {i}").into_bytes(), &mut rng);
            let leaf = Leaf::new(
                EntryKind::new("test.vector")?,
                Day::parse("2026-11-24")?,
                vec![(AttrName::new("n")?, AttrValue::new(&i.to_string())?)],
                body.commitment(),
            )?;
            leaves.push(leaf.encode());
            batch.push(NewEntry {
                leaf,
                body,
                seal: None,
            });
        }
        let committed = log
            .append_batch(&batch, Vec::new())
            .context("while appending")?;
        checkpoints.push(SignedCheckpoint::clone(&committed.checkpoint));
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let size = TreeSize(*SIZES.last().unwrap_or(&0));
    let mut inclusion = Vec::new();
    for index in [0u64, 1, 6, 255, 256, 299] {
        let proof = log.inclusion_proof(LeafIndex(index), size)?;
        inclusion.push(Proof {
            leaf_index: Some(index),
            tree_size: Some(size.get()),
            old_size: None,
            new_size: None,
            path: proof.path.iter().map(|h| b64(&h.0)).collect(),
        });
    }
    let mut consistency = Vec::new();
    for &old in SIZES.iter().take(SIZES.len() - 1) {
        let proof = log.consistency_proof(TreeSize(old), size)?;
        consistency.push(Proof {
            leaf_index: None,
            tree_size: None,
            old_size: Some(old),
            new_size: Some(size.get()),
            path: proof.path.iter().map(|h| b64(&h.0)).collect(),
        });
    }
    let witnesses = [
        WitnessSigner::from_seed(KeyName::new("witness.example/w1")?, &[8u8; 32]),
        WitnessSigner::from_seed(KeyName::new("witness.example/w2")?, &[9u8; 32]),
    ];
    let mut cosigned = Vec::new();
    for (i, checkpoint) in checkpoints.iter().enumerate() {
        let time = 1_764_547_200 + 60 * i as u64;
        let lines = witnesses
            .iter()
            .map(|w| w.cosign(checkpoint, time))
            .collect::<Result<Vec<_>, _>>()?;
        cosigned.push(append_signatures(checkpoint.note(), &lines));
    }
    let out = Vectors {
        generated: GENERATED,
        vkey: signer.verifier().to_vkey(),
        checkpoints: checkpoints
            .iter()
            .map(SignedCheckpoint::note)
            .map(str::to_owned)
            .collect(),
        leaves_base64: leaves.iter().map(|l| b64(l)).collect(),
        inclusion_proofs: inclusion,
        consistency_proofs: consistency,
        witness_vkeys: witnesses.iter().map(|w| w.verifier().to_vkey()).collect(),
        cosigned_checkpoints: cosigned,
    };
    Ok(format!("{}\n", serde_json::to_string_pretty(&out)?))
}

/// The marker that starts the file.
pub const GENERATED: &str = "@generated by `cargo run -p tools --bin akashi-vectors`; do not edit";

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_vectors_are_what_the_generator_makes() {
        let fresh = super::generate().unwrap();
        let stored = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ledger/tests/vectors/akashi_vectors.json"
        ))
        .unwrap();
        assert_eq!(
            fresh, stored,
            "regenerate with `cargo run -p tools --bin akashi-vectors`"
        );
    }
}

//! Per-patient completeness: what a patient checks to know that the entries shown to them are
//! *all* the log holds about them, up to a signed checkpoint.
//!
//! Three pieces, each a small pure function here so the server, the auditor and replay compute
//! them the same way:
//!
//! - **The map key.** The log holds an ECVRF key pair ([`crate::vrf`]). A patient's VRF output
//!   `beta` (of their patient id, UTF-8) gives their map key `SHA-256("akashi subject-map key\0"
//!   || beta)` and their chain seed `SHA-256("akashi subject-map chain\0" || beta)`. With the
//!   VRF proof the patient checks that the key is theirs; without the secret key nobody can
//!   compute anyone's key, so the map says nothing about who is in it.
//! - **The chain.** Over the patient's entries in log order, starting from the seed:
//!   `head = SHA-256(0x10 || head || index (8 bytes, big-endian) || leaf hash)`, the leaf hash
//!   being RFC 9162's. Leaving out, adding or reordering any entry changes the head.
//! - **The record** ([`SubjectRecord`]): count, first and last leaf index, chain head, committed
//!   as the value `SHA-256(0x11 || count || first || last || head)` (8-byte big-endian
//!   integers) under the patient's key in a sparse Merkle map ([`crate::map`]). A patient with no
//!   entries is absent from the map. The seed makes the value of someone else's record, which an
//!   absence proof may show, unguessable even for a single entry.
//!
//! The map's root and the VRF public key are committed in every checkpoint the log signs, as the
//! extension line `akashi-subject-map <VRF key, base64> <root, base64>`
//! ([`MapCommitment`]); witnesses cosign it with the rest. [`SubjectProof::verify`] checks a
//! patient's VRF proof and map proof against it.

use std::convert::Infallible;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use sha2::{Digest as _, Sha256};

use crate::checkpoint::Checkpoint;
use crate::hash::{HASH_LEN, Hash};
use crate::map::{MapError, MapKey, MapProof};
use crate::vrf::{VrfError, VrfOutput, VrfProof, VrfPublicKey};

/// The first word of the checkpoint extension line.
pub const EXTENSION_WORD: &str = "akashi-subject-map";

const KEY_LABEL: &[u8] = b"akashi subject-map key\0";
const SEED_LABEL: &[u8] = b"akashi subject-map chain\0";
const CHAIN_DOMAIN: u8 = 0x10;
const RECORD_DOMAIN: u8 = 0x11;

/// The map key of the patient whose VRF output is `beta`.
#[must_use]
pub fn map_key(beta: &VrfOutput) -> MapKey {
    Sha256::new()
        .chain_update(KEY_LABEL)
        .chain_update(beta.0)
        .finalize()
        .into()
}

/// The chain's starting head for the patient whose VRF output is `beta`.
#[must_use]
pub fn chain_seed(beta: &VrfOutput) -> Hash {
    Hash(
        Sha256::new()
            .chain_update(SEED_LABEL)
            .chain_update(beta.0)
            .finalize()
            .into(),
    )
}

/// The chain head after the entry at `index` with RFC 9162 leaf hash `leaf_hash`.
#[must_use]
pub fn chain_step(head: &Hash, index: u64, leaf_hash: &Hash) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([CHAIN_DOMAIN])
            .chain_update(head.0)
            .chain_update(index.to_be_bytes())
            .chain_update(leaf_hash.0)
            .finalize()
            .into(),
    )
}

/// Where a patient's entries stand: what the map holds under their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectRecord {
    /// How many entries are about the patient.
    pub count: u64,
    /// Leaf index of the first.
    pub first: u64,
    /// Leaf index of the last.
    pub last: u64,
    /// The chain head after the last.
    pub head: Hash,
}

/// Bytes of an encoded [`SubjectRecord`].
pub const RECORD_LEN: usize = 24 + HASH_LEN;

impl SubjectRecord {
    /// The record of a patient's first entry.
    #[must_use]
    pub fn first(beta: &VrfOutput, index: u64, leaf_hash: &Hash) -> Self {
        Self {
            count: 1,
            first: index,
            last: index,
            head: chain_step(&chain_seed(beta), index, leaf_hash),
        }
    }

    /// The record after one more entry.
    #[must_use]
    pub fn then(&self, index: u64, leaf_hash: &Hash) -> Self {
        Self {
            count: self.count.saturating_add(1),
            first: self.first,
            last: index,
            head: chain_step(&self.head, index, leaf_hash),
        }
    }

    /// The value committed in the map.
    #[must_use]
    pub fn value_hash(&self) -> Hash {
        Hash(
            Sha256::new()
                .chain_update([RECORD_DOMAIN])
                .chain_update(self.count.to_be_bytes())
                .chain_update(self.first.to_be_bytes())
                .chain_update(self.last.to_be_bytes())
                .chain_update(self.head.0)
                .finalize()
                .into(),
        )
    }

    /// `count || first || last || head`, integers big-endian.
    #[must_use]
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let (count, rest) = out.split_at_mut(8);
        let (first, rest) = rest.split_at_mut(8);
        let (last, head) = rest.split_at_mut(8);
        count.copy_from_slice(&self.count.to_be_bytes());
        first.copy_from_slice(&self.first.to_be_bytes());
        last.copy_from_slice(&self.last.to_be_bytes());
        head.copy_from_slice(&self.head.0);
        out
    }

    /// Parses [`SubjectRecord::encode`]'s bytes.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
        let (count, rest) = bytes.split_at(8);
        let (first, rest) = rest.split_at(8);
        let (last, head) = rest.split_at(8);
        Some(Self {
            count: u64::from_be_bytes(count.try_into().ok()?),
            first: u64::from_be_bytes(first.try_into().ok()?),
            last: u64::from_be_bytes(last.try_into().ok()?),
            head: Hash(head.try_into().ok()?),
        })
    }

    /// The record of `entries` (leaf index and RFC 9162 leaf hash, in log order) for the
    /// patient with VRF output `beta`; `None` for no entries.
    #[must_use]
    pub fn of(beta: &VrfOutput, entries: &[(u64, Hash)]) -> Option<Self> {
        let ((first_index, first_hash), rest) = entries.split_first()?;
        let mut record = Self::first(beta, *first_index, first_hash);
        for (index, hash) in rest {
            record = record.then(*index, hash);
        }
        Some(record)
    }
}

/// What a checkpoint commits to about the subject map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapCommitment {
    /// The VRF public key map keys are derived with.
    pub vrf_key: [u8; 32],
    /// The map's root over every entry in the checkpoint's tree.
    pub root: Hash,
}

/// Why a checkpoint's map commitment or a patient's proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompletenessError {
    /// The extension line is not `akashi-subject-map <key> <root>` with base64 32-byte values.
    #[error("the checkpoint's subject-map line is malformed")]
    MalformedLine,
    /// The checkpoint has two subject-map lines.
    #[error("the checkpoint has more than one subject-map line")]
    Duplicate,
    /// The VRF key or proof does not verify.
    #[error("the map key is not proven to be derived from this patient id: {0}")]
    Vrf(#[from] VrfError),
    /// The map proof does not verify.
    #[error("{0}")]
    Map(#[from] MapError<Infallible>),
    /// The record shown is not the one the map holds (or the map holds one where none was
    /// shown, or the other way round).
    #[error("the subject record shown is not the one the map commits to")]
    RecordMismatch,
}

impl MapCommitment {
    /// The extension line.
    #[must_use]
    pub fn to_line(&self) -> String {
        format!(
            "{EXTENSION_WORD} {} {}",
            STANDARD.encode(self.vrf_key),
            STANDARD.encode(self.root.0)
        )
    }

    /// Parses an extension line: `None` when it is not a subject-map line at all.
    ///
    /// # Errors
    ///
    /// [`CompletenessError::MalformedLine`].
    pub fn parse_line(line: &str) -> Result<Option<Self>, CompletenessError> {
        let mut words = line.split(' ');
        if words.next() != Some(EXTENSION_WORD) {
            return Ok(None);
        }
        let mut value = || -> Result<[u8; 32], CompletenessError> {
            let word = words.next().ok_or(CompletenessError::MalformedLine)?;
            let bytes = STANDARD
                .decode(word)
                .map_err(|_| CompletenessError::MalformedLine)?;
            bytes
                .try_into()
                .map_err(|_| CompletenessError::MalformedLine)
        };
        let vrf_key = value()?;
        let root = Hash(value()?);
        if words.next().is_some() {
            return Err(CompletenessError::MalformedLine);
        }
        Ok(Some(Self { vrf_key, root }))
    }

    /// The commitment in `checkpoint`'s extension lines, if it carries one.
    ///
    /// # Errors
    ///
    /// A malformed or repeated line.
    pub fn of(checkpoint: &Checkpoint) -> Result<Option<Self>, CompletenessError> {
        let mut found = None;
        for line in &checkpoint.extensions {
            if let Some(commitment) = Self::parse_line(line)? {
                if found.is_some() {
                    return Err(CompletenessError::Duplicate);
                }
                found = Some(commitment);
            }
        }
        Ok(found)
    }
}

/// A patient's completeness proof: the VRF proof of their map key, the record the server claims
/// (none for a patient without entries) and the map proof of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectProof {
    /// ECVRF proof of the patient id under the committed VRF key.
    pub vrf_proof: VrfProof,
    /// The record claimed, or `None` when the patient is claimed absent.
    pub record: Option<SubjectRecord>,
    /// Proof of the record (or absence) under the patient's key.
    pub map_proof: MapProof,
}

impl SubjectProof {
    /// Verifies the proof for `patient_id` against `commitment`; returns the patient's VRF
    /// output (to recompute their chain) and the record the map holds for them.
    ///
    /// # Errors
    ///
    /// [`CompletenessError`] when any part fails.
    pub fn verify(
        &self,
        patient_id: &str,
        commitment: &MapCommitment,
    ) -> Result<(VrfOutput, Option<SubjectRecord>), CompletenessError> {
        let vrf_key = VrfPublicKey::from_bytes(&commitment.vrf_key)?;
        let beta = vrf_key.verify(patient_id.as_bytes(), &self.vrf_proof)?;
        let key = map_key(&beta);
        let held = self.map_proof.verify(&commitment.root, &key)?;
        match (held, &self.record) {
            (None, None) => Ok((beta, None)),
            (Some(value), Some(record)) if value == record.value_hash() => {
                Ok((beta, Some(*record)))
            }
            _ => Err(CompletenessError::RecordMismatch),
        }
    }
}

#[cfg(test)]
mod tests;

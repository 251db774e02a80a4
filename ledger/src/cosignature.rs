//! Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 `cosignature/v1`): a witness's
//! signed statement that, as of a time, the checkpoint is the largest consistent one it has
//! seen of that log.
//!
//! A cosignature is a note signature line on the checkpoint, of signature type 0x04: the key id
//! is `SHA-256(name || 0x0A || 0x04 || public key)[..4]`, and the signature bytes after it are a
//! big-endian `u64` POSIX timestamp followed by the Ed25519 signature of
//!
//! ```text
//! cosignature/v1
//! time <timestamp>
//! <the checkpoint's note text, with its final newline, without any signature line>
//! ```
//!
//! Witness keys use the note key texts with type byte 0x04: the verifier key (`vkey`) is
//! `<name>+<key id>+base64(0x04 || public key)` as the spec allows, and the signer key
//! (`skey`) `PRIVATE+KEY+<name>+<key id>+base64(0x04 || seed)`, the form Go's `sumdb/note` uses
//! for its own type.
//!
//! [`WitnessedCheckpoint::verify`] opens a checkpoint note that carries the log's signature and
//! any number of other signature lines: lines by the given witnesses must verify, lines by
//! unknown keys are ignored (c2sp.org/signed-note). It counts the valid cosignatures; whether
//! they are enough is the caller's quorum, checked with [`WitnessedCheckpoint::require_quorum`].
//!
//! This module does not talk to witnesses (the server and the auditor do, over
//! c2sp.org/tlog-witness), reads no clock (the signer takes the timestamp) and does not decide
//! whether a checkpoint is consistent with an earlier one (a witness does that with `proof`
//! before it cosigns). The ML-DSA-44 cosignature type (0x06) is not supported: its lines are
//! ignored like any unknown key's.
//!
//! ```
//! use ledger::checkpoint::{Checkpoint, SignedCheckpoint};
//! use ledger::cosignature::{WitnessSigner, WitnessedCheckpoint, append_signatures};
//! use ledger::hash::{TreeSize, empty_root};
//! use ledger::note::{KeyName, NoteSigner};
//!
//! let mut rng = rand::rngs::OsRng;
//! let log = NoteSigner::generate(KeyName::new("example.com/log")?, &mut rng);
//! let witness = WitnessSigner::generate(KeyName::new("witness.example/w1")?, &mut rng);
//! let signed = SignedCheckpoint::sign(
//!     Checkpoint::new("example.com/log", TreeSize(0), empty_root()),
//!     &log,
//! )?;
//! let line = witness.cosign(&signed, 1_679_315_147)?;
//! let note = append_signatures(signed.note(), &[line]);
//! let witnessed = WitnessedCheckpoint::verify(&note, &log.verifier(), &[witness.verifier()])?;
//! witnessed.require_quorum(1)?;
//! assert_eq!(witnessed.cosignatures()[0].timestamp(), 1_679_315_147);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};

use crate::checkpoint::{CheckpointError, SignedCheckpoint};
use crate::note::{
    KeyName, KeyProblem, NoteError, NoteSignature, NoteVerifier, SKEY_PREFIX, decode_key_data,
    key_data, key_id, parse_note, split_key_text,
};

/// The signature type byte of Ed25519 `cosignature/v1` keys (c2sp.org/tlog-cosignature).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The largest timestamp a cosignature may carry (2^63 - 1, c2sp.org/tlog-cosignature).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The header line of the signed message, for domain separation.
const HEADER: &str = "cosignature/v1\n";

/// Bytes after the key id: an 8-byte timestamp and a 64-byte Ed25519 signature.
const TIMESTAMPED_SIGNATURE_LEN: usize = 8 + 64;

/// An Ed25519 witness signing key (signature type 0x04) with its name.
///
/// Its `Debug` output shows the name and key id only, never the key.
#[derive(Clone)]
pub struct WitnessSigner {
    name: KeyName,
    key_id: u32,
    key: SigningKey,
}

impl WitnessSigner {
    /// A new random key named `name`.
    pub fn generate(name: KeyName, rng: &mut (impl CryptoRng + RngCore)) -> Self {
        Self::from_seed(name, &SigningKey::generate(rng).to_bytes())
    }

    /// A signer from its name and 32-byte Ed25519 seed.
    pub fn from_seed(name: KeyName, seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&name, ALG_COSIGNATURE_V1, key.verifying_key().as_bytes());
        Self { name, key_id, key }
    }

    /// Parses a witness signer key: `PRIVATE+KEY+<name>+<key id>+base64(0x04 || 32-byte seed)`.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidSignerKey`] when the text is not in that format, names another
    /// signature type, or its key id does not match; [`NoteError::InvalidKeyName`] for a bad
    /// name. Errors never include the key text.
    pub fn from_skey(text: &str) -> Result<Self, NoteError> {
        let bad = |problem| NoteError::InvalidSignerKey { problem };
        let rest = text
            .strip_prefix(SKEY_PREFIX)
            .ok_or(bad(KeyProblem::Format))?;
        let (name, id, key) = split_key_text(rest).ok_or(bad(KeyProblem::Format))?;
        let name = KeyName::new(name)?;
        let seed = decode_key_data(key, ALG_COSIGNATURE_V1).map_err(bad)?;
        let signer = Self::from_seed(name, &seed);
        if signer.key_id != id {
            return Err(bad(KeyProblem::KeyIdMismatch {
                got: id,
                want: signer.key_id,
            }));
        }
        Ok(signer)
    }

    /// The key as signer key text (see [`WitnessSigner::from_skey`]). It holds the secret key:
    /// store it only where its owner alone can read it.
    pub fn to_skey(&self) -> String {
        let mut data = key_data(ALG_COSIGNATURE_V1, self.key.as_bytes());
        let text = format!(
            "{SKEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(data)
        );
        data.fill(0);
        text
    }

    /// The matching verifier.
    pub fn verifier(&self) -> WitnessVerifier {
        WitnessVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The witness's name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// Cosigns a checkpoint the caller has verified (and found consistent with what it cosigned
    /// before) at `timestamp` (POSIX seconds): the signature line to add to the note.
    ///
    /// # Errors
    ///
    /// [`CosignatureError::TimestampTooLarge`] above [`MAX_TIMESTAMP`].
    pub fn cosign(
        &self,
        checkpoint: &SignedCheckpoint,
        timestamp: u64,
    ) -> Result<NoteSignature, CosignatureError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampTooLarge { timestamp });
        }
        let msg = signed_message(&checkpoint.checkpoint().to_text(), timestamp);
        let mut sig = Vec::with_capacity(TIMESTAMPED_SIGNATURE_LEN);
        sig.extend_from_slice(&timestamp.to_be_bytes());
        sig.extend_from_slice(&self.key.sign(msg.as_bytes()).to_bytes());
        Ok(NoteSignature {
            name: self.name.to_string(),
            key_id: self.key_id,
            sig,
        })
    }
}

impl fmt::Debug for WitnessSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WitnessSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// An Ed25519 witness verifier key (signature type 0x04) with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessVerifier {
    name: KeyName,
    key_id: u32,
    key: VerifyingKey,
}

impl WitnessVerifier {
    /// Parses a witness verifier key: `<name>+<key id>+base64(0x04 || 32-byte public key)`.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidVerifierKey`] when the text is not in that format, names another
    /// signature type (a log's 0x01 key, say), holds an invalid public key, or its key id does
    /// not match; [`NoteError::InvalidKeyName`] for a bad name.
    pub fn from_vkey(text: &str) -> Result<Self, NoteError> {
        let bad = |problem| NoteError::InvalidVerifierKey { problem };
        let (name, id, key) = split_key_text(text).ok_or(bad(KeyProblem::Format))?;
        let name = KeyName::new(name)?;
        let key = decode_key_data(key, ALG_COSIGNATURE_V1).map_err(bad)?;
        let verifier = Self::from_public_key(name, &key)?;
        if verifier.key_id != id {
            return Err(bad(KeyProblem::KeyIdMismatch {
                got: id,
                want: verifier.key_id,
            }));
        }
        Ok(verifier)
    }

    /// A verifier from its name and 32-byte Ed25519 public key.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidVerifierKey`] when the bytes are not a valid Ed25519 public key.
    pub fn from_public_key(name: KeyName, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        let key =
            VerifyingKey::from_bytes(public_key).map_err(|_| NoteError::InvalidVerifierKey {
                problem: KeyProblem::InvalidPublicKey,
            })?;
        let key_id = key_id(&name, ALG_COSIGNATURE_V1, key.as_bytes());
        Ok(Self { name, key_id, key })
    }

    /// The key as verifier key text (see [`WitnessVerifier::from_vkey`]).
    pub fn to_vkey(&self) -> String {
        let data = key_data(ALG_COSIGNATURE_V1, self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(data))
    }

    /// The witness's name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// The key id: the first four bytes, big-endian, of
    /// `SHA-256(name || 0x0A || 0x04 || public key)`.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Whether `sig` is a line by this key (same name and key id); it may still not verify.
    pub fn signed(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name.as_str() && sig.key_id == self.key_id
    }

    /// Verifies one cosignature line of this witness on `checkpoint`; returns its timestamp.
    ///
    /// # Errors
    ///
    /// [`CosignatureError::OtherKey`] when the line is not by this key,
    /// [`CosignatureError::MalformedCosignature`] when it is not 72 bytes after the key id,
    /// [`CosignatureError::TimestampTooLarge`], and [`CosignatureError::InvalidCosignature`]
    /// when the signature does not verify (strict Ed25519).
    pub fn verify(
        &self,
        checkpoint: &SignedCheckpoint,
        sig: &NoteSignature,
    ) -> Result<u64, CosignatureError> {
        if !self.signed(sig) {
            return Err(CosignatureError::OtherKey {
                name: sig.name.clone(),
                key_id: sig.key_id,
            });
        }
        self.verify_text(&checkpoint.checkpoint().to_text(), sig)
    }

    fn verify_text(&self, text: &str, sig: &NoteSignature) -> Result<u64, CosignatureError> {
        let malformed = || CosignatureError::MalformedCosignature {
            name: sig.name.clone(),
            len: sig.sig.len(),
        };
        let (timestamp, ed25519) = sig.sig.split_first_chunk::<8>().ok_or_else(malformed)?;
        if ed25519.len() != 64 {
            return Err(malformed());
        }
        let timestamp = u64::from_be_bytes(*timestamp);
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampTooLarge { timestamp });
        }
        let invalid = || CosignatureError::InvalidCosignature {
            name: sig.name.clone(),
            key_id: sig.key_id,
        };
        let ed25519 = ed25519_dalek::Signature::from_slice(ed25519).map_err(|_| invalid())?;
        self.key
            .verify_strict(signed_message(text, timestamp).as_bytes(), &ed25519)
            .map_err(|_| invalid())?;
        Ok(timestamp)
    }
}

/// One valid cosignature of a [`WitnessedCheckpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    witness: KeyName,
    key_id: u32,
    timestamp: u64,
}

impl Cosignature {
    /// The witness's name.
    pub fn witness(&self) -> &KeyName {
        &self.witness
    }

    /// The witness key's id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// When the witness cosigned, in POSIX seconds (the witness's own clock).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

/// A checkpoint signed by the log's key, with the cosignatures of the given witnesses that it
/// carries, every one of them valid. Only [`WitnessedCheckpoint::verify`] builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    signed: SignedCheckpoint,
    cosignatures: Vec<Cosignature>,
}

impl WitnessedCheckpoint {
    /// Verifies the log's signature on a checkpoint note and every cosignature on it by one of
    /// `witnesses`; lines by other keys are ignored.
    ///
    /// # Errors
    ///
    /// [`CosignatureError::Checkpoint`] when the note is not a checkpoint signed by `log` (see
    /// [`SignedCheckpoint::verify`]), [`CosignatureError::AmbiguousWitness`] when two different
    /// witness keys share a name and key id, [`CosignatureError::DuplicateCosignature`] when a
    /// witness cosigned twice, and any error of [`WitnessVerifier::verify`] for a line by one of
    /// `witnesses` that does not verify.
    pub fn verify(
        note: &str,
        log: &NoteVerifier,
        witnesses: &[WitnessVerifier],
    ) -> Result<Self, CosignatureError> {
        for (i, a) in witnesses.iter().enumerate() {
            let clash = witnesses
                .iter()
                .skip(i + 1)
                .any(|b| a.name == b.name && a.key_id == b.key_id && a.key != b.key);
            if clash {
                return Err(CosignatureError::AmbiguousWitness {
                    name: a.name.to_string(),
                    key_id: a.key_id,
                });
            }
        }
        let signed = SignedCheckpoint::verify(note, log)?;
        let parsed = parse_note(note).map_err(CheckpointError::from)?;
        let text = signed.checkpoint().to_text();
        let mut cosignatures: Vec<Cosignature> = Vec::new();
        for sig in &parsed.signatures {
            let Some(witness) = witnesses.iter().find(|w| w.signed(sig)) else {
                continue;
            };
            if cosignatures
                .iter()
                .any(|c| c.witness == witness.name && c.key_id == witness.key_id)
            {
                return Err(CosignatureError::DuplicateCosignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            let timestamp = witness.verify_text(&text, sig)?;
            cosignatures.push(Cosignature {
                witness: witness.name.clone(),
                key_id: witness.key_id,
                timestamp,
            });
        }
        Ok(Self {
            signed,
            cosignatures,
        })
    }

    /// The log-signed checkpoint; its note is the whole note, cosignature lines included.
    pub fn signed(&self) -> &SignedCheckpoint {
        &self.signed
    }

    /// The whole note text: checkpoint, the log's signature and every other signature line.
    pub fn note(&self) -> &str {
        self.signed.note()
    }

    /// The valid cosignatures by the given witnesses, in the order of the note.
    pub fn cosignatures(&self) -> &[Cosignature] {
        &self.cosignatures
    }

    /// Checks that at least `quorum` of the given witnesses cosigned.
    ///
    /// # Errors
    ///
    /// [`CosignatureError::NoQuorum`] with how many did.
    pub fn require_quorum(&self, quorum: usize) -> Result<(), CosignatureError> {
        let got = self.cosignatures.len();
        if got < quorum {
            return Err(CosignatureError::NoQuorum { got, want: quorum });
        }
        Ok(())
    }
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <timestamp>\n` then the
/// checkpoint's note text (c2sp.org/tlog-cosignature §Ed25519 signed message).
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("{HEADER}time {timestamp}\n{checkpoint_text}")
}

/// `note` (ending in a newline) with `sigs` appended as signature lines: how a log adds the
/// cosignatures a witness returned to its own checkpoint note (c2sp.org/tlog-witness).
pub fn append_signatures(note: &str, sigs: &[NoteSignature]) -> String {
    let mut out = String::with_capacity(note.len() + sigs.len() * 160);
    out.push_str(note);
    for sig in sigs {
        out.push_str(&sig.to_line());
        out.push('\n');
    }
    out
}

/// Why a cosignature or a witnessed checkpoint was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignatureError {
    /// Two different witness keys share a name and key id.
    #[error("two different witness keys are named `{name}+{key_id:08x}`")]
    AmbiguousWitness {
        /// The shared name.
        name: String,
        /// The shared key id.
        key_id: u32,
    },
    /// The note is not a checkpoint signed by the log's key.
    #[error("checkpoint does not verify")]
    Checkpoint(#[from] CheckpointError),
    /// A witness cosigned the checkpoint more than once.
    #[error("witness `{name}+{key_id:08x}` cosigned the checkpoint more than once")]
    DuplicateCosignature {
        /// The witness's name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// A cosignature by a known witness does not verify.
    #[error("cosignature by `{name}+{key_id:08x}` does not verify")]
    InvalidCosignature {
        /// The witness's name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// A cosignature is not a timestamp and an Ed25519 signature (72 bytes).
    #[error("cosignature by `{name}` is {len} bytes, expected 72")]
    MalformedCosignature {
        /// The witness's name.
        name: String,
        /// Bytes after the key id.
        len: usize,
    },
    /// Fewer of the given witnesses cosigned than the quorum asks.
    #[error("{got} of the required {want} witness cosignatures")]
    NoQuorum {
        /// Valid cosignatures by the given witnesses.
        got: usize,
        /// The quorum.
        want: usize,
    },
    /// The line is not by the witness key it was checked with.
    #[error("signature line by `{name}+{key_id:08x}` is not from this witness")]
    OtherKey {
        /// The line's key name.
        name: String,
        /// The line's key id.
        key_id: u32,
    },
    /// The timestamp exceeds [`MAX_TIMESTAMP`].
    #[error("cosignature timestamp {timestamp} is larger than 2^63 - 1")]
    TimestampTooLarge {
        /// The timestamp.
        timestamp: u64,
    },
}

#[cfg(test)]
mod tests;

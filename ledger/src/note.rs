//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, compatible with Go's
//! `golang.org/x/mod/sumdb/note`: the same `vkey`/`skey` text formats, key ids and signature lines,
//! so notes signed here verify there and the other way round.
//!
//! Signing is deterministic (Ed25519), so the same text and key always give the same note.
//!
//! This module only signs and verifies text. It does not know what the text means (see
//! `checkpoint`), keeps no key files (the caller stores the `skey` text), and verifies only the
//! Ed25519 signature type (0x01): signatures of other types are carried as unverified (witness
//! cosignatures, type 0x04, are checked by `cosignature`).
//!
//! Where it is stricter than Go: a note with two signatures by the same known key is rejected
//! (Go keeps the first and ignores the second without checking it), key names are capped at
//! [`MAX_KEY_NAME_LEN`] bytes, notes at [`MAX_NOTE_SIZE`] bytes, and signatures are checked with
//! Ed25519's strict verification (no malleable or small-order encodings).
//!
//! ```
//! use ledger::note::{KeyName, NoteSigner, NoteVerifier, open_note, sign_note};
//!
//! let signer = NoteSigner::generate(KeyName::new("example.com/log")?, &mut rand::rngs::OsRng);
//! let vkey = signer.verifier().to_vkey(); // what verifiers are configured with
//! let note = sign_note("hello\n", &[&signer])?;
//! let opened = open_note(&note, &[NoteVerifier::from_vkey(&vkey)?])?;
//! assert_eq!(opened.text(), "hello\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

/// The largest note accepted or produced, in bytes.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// The most signature lines a note may carry (the spec asks verifiers to accept at least 16).
pub const MAX_NOTE_SIGNATURES: usize = 100;

/// The longest key name accepted, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 256;

/// The signature type byte of Ed25519 note signatures.
pub(crate) const ALG_ED25519: u8 = 0x01;

/// What starts every signature line: an em dash and a space.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

/// The prefix of a signer key (`skey`) text.
pub(crate) const SKEY_PREFIX: &str = "PRIVATE+KEY+";

/// A key name: non-empty, at most [`MAX_KEY_NAME_LEN`] bytes, with no `+`, no Unicode whitespace
/// and no control characters (c2sp.org/signed-note). For a log's key it is the checkpoint origin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// Validates a key name.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidKeyName`] saying which rule the name breaks.
    pub fn new(name: &str) -> Result<Self, NoteError> {
        let problem = if name.is_empty() {
            Some(KeyNameProblem::Empty)
        } else if name.len() > MAX_KEY_NAME_LEN {
            Some(KeyNameProblem::TooLong)
        } else if name.contains('+') {
            Some(KeyNameProblem::Plus)
        } else if name.chars().any(char::is_whitespace) {
            Some(KeyNameProblem::Whitespace)
        } else if name.chars().any(char::is_control) {
            Some(KeyNameProblem::Control)
        } else {
            None
        };
        match problem {
            Some(problem) => Err(NoteError::InvalidKeyName { problem }),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An Ed25519 note signing key (signature type 0x01) with its name.
///
/// Its `Debug` output shows the name and key id only, never the key.
#[derive(Clone)]
pub struct NoteSigner {
    name: KeyName,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// A new random key named `name`.
    pub fn generate(name: KeyName, rng: &mut (impl CryptoRng + RngCore)) -> Self {
        Self::from_signing_key(name, SigningKey::generate(rng))
    }

    /// A signer from its name and 32-byte Ed25519 seed.
    pub fn from_seed(name: KeyName, seed: &[u8; 32]) -> Self {
        Self::from_signing_key(name, SigningKey::from_bytes(seed))
    }

    /// Parses a signer key in Go's `skey` format:
    /// `PRIVATE+KEY+<name>+<8 hex digits key id>+<base64(0x01 || 32-byte seed)>`.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidSignerKey`] when the text is not in that format, names another
    /// algorithm, or its key id does not match the name and key; [`NoteError::InvalidKeyName`]
    /// for a bad name. Errors never include the key text.
    pub fn from_skey(text: &str) -> Result<Self, NoteError> {
        let bad = |problem| NoteError::InvalidSignerKey { problem };
        let rest = text
            .strip_prefix(SKEY_PREFIX)
            .ok_or(bad(KeyProblem::Format))?;
        let (name, key_id, key) = split_key_text(rest).ok_or(bad(KeyProblem::Format))?;
        let name = KeyName::new(name)?;
        let seed: [u8; 32] = decode_key_data(key, ALG_ED25519).map_err(bad)?;
        let signer = Self::from_seed(name, &seed);
        if signer.key_id != key_id {
            return Err(bad(KeyProblem::KeyIdMismatch {
                got: key_id,
                want: signer.key_id,
            }));
        }
        Ok(signer)
    }

    /// The key in Go's `skey` format (see [`NoteSigner::from_skey`]). The text holds the secret
    /// key: store it only where its owner alone can read it.
    pub fn to_skey(&self) -> String {
        let mut data = key_data(ALG_ED25519, self.key.as_bytes());
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
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The key name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// The key id: the first four bytes, big-endian, of
    /// `SHA-256(name || 0x0A || 0x01 || public key)`.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 signature of `msg` (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    fn from_signing_key(name: KeyName, key: SigningKey) -> Self {
        let key_id = key_id(&name, ALG_ED25519, key.verifying_key().as_bytes());
        Self { name, key_id, key }
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// An Ed25519 note verifier key (signature type 0x01) with its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: KeyName,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key in the note `vkey` format:
    /// `<name>+<8 hex digits key id>+<base64(0x01 || 32-byte public key)>`.
    ///
    /// # Errors
    ///
    /// [`NoteError::InvalidVerifierKey`] when the text is not in that format, names another
    /// algorithm, holds an invalid public key, or its key id does not match the name and key;
    /// [`NoteError::InvalidKeyName`] for a bad name.
    pub fn from_vkey(text: &str) -> Result<Self, NoteError> {
        let bad = |problem| NoteError::InvalidVerifierKey { problem };
        let (name, key_id, key) = split_key_text(text).ok_or(bad(KeyProblem::Format))?;
        let name = KeyName::new(name)?;
        let key: [u8; 32] = decode_key_data(key, ALG_ED25519).map_err(bad)?;
        let verifier = Self::from_public_key(name, &key)?;
        if verifier.key_id != key_id {
            return Err(bad(KeyProblem::KeyIdMismatch {
                got: key_id,
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
        let key_id = key_id(&name, ALG_ED25519, key.as_bytes());
        Ok(Self { name, key_id, key })
    }

    /// The key in the note `vkey` format (see [`NoteVerifier::from_vkey`]).
    pub fn to_vkey(&self) -> String {
        let data = key_data(ALG_ED25519, self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(data))
    }

    /// The key name.
    pub fn name(&self) -> &KeyName {
        &self.name
    }

    /// The key id: the first four bytes, big-endian, of
    /// `SHA-256(name || 0x0A || 0x01 || public key)`.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Whether `sig` is a valid signature of `msg` by this key (strict Ed25519 verification).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    /// The key name on the line (a valid [`KeyName`]).
    pub name: String,
    /// The key id: the first four bytes of the decoded signature, big-endian.
    pub key_id: u32,
    /// The signature bytes after the key id.
    pub sig: Vec<u8>,
}

impl NoteSignature {
    /// Parses one signature line, without its final newline:
    /// `— <name> <base64(key id || signature)>`.
    ///
    /// # Errors
    ///
    /// [`NoteError::MalformedSignatureLine`] (line 1) when the line is not in that form, its name
    /// is not a valid key name, or the signature is empty.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        if line.len() > MAX_NOTE_SIZE {
            return Err(NoteError::NoteTooLarge {
                size: line.len(),
                max: MAX_NOTE_SIZE,
            });
        }
        parse_signature_line(line).ok_or(NoteError::MalformedSignatureLine { line: 1 })
    }

    /// The signature line, without its final newline: `— <name> <base64(key id || sig)>`.
    pub fn to_line(&self) -> String {
        let mut data = Vec::with_capacity(4 + self.sig.len());
        data.extend_from_slice(&self.key_id.to_be_bytes());
        data.extend_from_slice(&self.sig);
        format!("{SIG_PREFIX}{} {}", self.name, BASE64.encode(data))
    }
}

/// A parsed note whose signatures have not been checked. Do not act on its text: use
/// [`open_note`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The note text, including its final newline.
    pub text: String,
    /// The signatures, in the order of the note.
    pub signatures: Vec<NoteSignature>,
}

/// A note with at least one valid signature by a known key. Only [`open_note`] builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    text: String,
    verified_by: Vec<KeyName>,
    unverified: Vec<NoteSignature>,
}

impl VerifiedNote {
    /// The note text, including its final newline.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The known keys whose signatures verified, in the order of the note.
    #[must_use]
    pub fn verified_by(&self) -> &[KeyName] {
        &self.verified_by
    }

    /// Signatures by keys that were not given (ignored, as the spec requires), without exact
    /// duplicates.
    #[must_use]
    pub fn unverified(&self) -> &[NoteSignature] {
        &self.unverified
    }
}

/// Signs `text` with every signer and returns the signed note: the text, a blank line, then one
/// signature line per signer in the order given.
///
/// # Errors
///
/// [`NoteError::MissingFinalNewline`] unless the text ends with a newline,
/// [`NoteError::InvalidCharacter`] for control characters other than newline,
/// [`NoteError::NoSigners`], [`NoteError::TooManySignatures`], [`NoteError::DuplicateSigner`] when
/// two signers share a name and key id, and [`NoteError::NoteTooLarge`] when the signed note would
/// exceed [`MAX_NOTE_SIZE`].
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    check_size(text.len())?;
    check_characters(text)?;
    if !text.ends_with('\n') {
        return Err(NoteError::MissingFinalNewline);
    }
    if signers.is_empty() {
        return Err(NoteError::NoSigners);
    }
    if signers.len() > MAX_NOTE_SIGNATURES {
        return Err(NoteError::TooManySignatures {
            max: MAX_NOTE_SIGNATURES,
        });
    }
    let mut seen = HashSet::new();
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 128);
    note.push_str(text);
    note.push('\n');
    for signer in signers {
        if !seen.insert((signer.name.as_str(), signer.key_id)) {
            return Err(NoteError::DuplicateSigner {
                name: signer.name.to_string(),
                key_id: signer.key_id,
            });
        }
        let sig = NoteSignature {
            name: signer.name.to_string(),
            key_id: signer.key_id,
            sig: signer.sign(text.as_bytes()).to_vec(),
        };
        note.push_str(&sig.to_line());
        note.push('\n');
    }
    check_size(note.len())?;
    Ok(note)
}

/// Parses a signed note without checking any signature.
///
/// # Errors
///
/// [`NoteError::NoteTooLarge`], [`NoteError::InvalidCharacter`], [`NoteError::MissingSignatures`]
/// when there is no blank line followed by signature lines ending in a newline,
/// [`NoteError::MalformedSignatureLine`], and [`NoteError::TooManySignatures`].
pub fn parse_note(msg: &str) -> Result<Note, NoteError> {
    check_size(msg.len())?;
    check_characters(msg)?;
    // The text ends at the last blank line: signature lines never contain one.
    let split = msg.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
    let (text, sigs) = (
        msg.get(..=split).ok_or(NoteError::MissingSignatures)?,
        msg.get(split + 2..).ok_or(NoteError::MissingSignatures)?,
    );
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::MissingSignatures);
    };
    let mut signatures = Vec::new();
    for (i, line) in sigs.split('\n').enumerate() {
        if i >= MAX_NOTE_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                max: MAX_NOTE_SIGNATURES,
            });
        }
        let line_no = i + 1;
        signatures.push(
            parse_signature_line(line)
                .ok_or(NoteError::MalformedSignatureLine { line: line_no })?,
        );
    }
    Ok(Note {
        text: text.to_owned(),
        signatures,
    })
}

/// Parses a signed note and verifies the signatures of the given keys (c2sp.org/signed-note
/// §Signatures): signatures whose (name, key id) matches no verifier are ignored and returned as
/// unverified; every signature by a known key must verify.
///
/// # Errors
///
/// Any error of [`parse_note`], plus [`NoteError::AmbiguousVerifier`] when two different
/// verifiers share a name and key id, [`NoteError::InvalidSignature`] when a signature by a known
/// key does not verify, [`NoteError::DuplicateSignature`] when a known key signed twice, and
/// [`NoteError::NoVerifiedSignature`] when no known key signed.
pub fn open_note(msg: &str, verifiers: &[NoteVerifier]) -> Result<VerifiedNote, NoteError> {
    let refs: Vec<&NoteVerifier> = verifiers.iter().collect();
    open_note_with(msg, &refs)
}

/// [`open_note`] over borrowed verifiers.
pub(crate) fn open_note_with(
    msg: &str,
    verifiers: &[&NoteVerifier],
) -> Result<VerifiedNote, NoteError> {
    for (i, a) in verifiers.iter().enumerate() {
        let clash = verifiers
            .iter()
            .skip(i + 1)
            .any(|b| a.name == b.name && a.key_id == b.key_id && a.key != b.key);
        if clash {
            return Err(NoteError::AmbiguousVerifier {
                name: a.name.to_string(),
                key_id: a.key_id,
            });
        }
    }
    let note = parse_note(msg)?;
    let mut verified_by: Vec<KeyName> = Vec::new();
    let mut verified_ids: Vec<(&str, u32)> = Vec::new();
    let mut unverified: Vec<NoteSignature> = Vec::new();
    for sig in note.signatures {
        let known = verifiers
            .iter()
            .find(|v| v.name.as_str() == sig.name && v.key_id == sig.key_id);
        let Some(verifier) = known else {
            if !unverified.contains(&sig) {
                unverified.push(sig);
            }
            continue;
        };
        if verified_ids.contains(&(verifier.name.as_str(), verifier.key_id)) {
            return Err(NoteError::DuplicateSignature {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        if !verifier.verify(note.text.as_bytes(), &sig.sig) {
            return Err(NoteError::InvalidSignature {
                name: sig.name,
                key_id: sig.key_id,
            });
        }
        verified_ids.push((verifier.name.as_str(), verifier.key_id));
        verified_by.push(verifier.name.clone());
    }
    if verified_by.is_empty() {
        return Err(NoteError::NoVerifiedSignature);
    }
    Ok(VerifiedNote {
        text: note.text,
        verified_by,
        unverified,
    })
}

/// Why a note, a key or a signature was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Two different verifiers share a name and key id.
    #[error("two different verifier keys are named `{name}+{key_id:08x}`")]
    AmbiguousVerifier {
        /// The shared name.
        name: String,
        /// The shared key id.
        key_id: u32,
    },
    /// A known key signed the note more than once.
    #[error("key `{name}+{key_id:08x}` signed the note more than once")]
    DuplicateSignature {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// Two signers share a name and key id.
    #[error("two signers are named `{name}+{key_id:08x}`")]
    DuplicateSigner {
        /// The shared name.
        name: String,
        /// The shared key id.
        key_id: u32,
    },
    /// The note holds a control character other than newline.
    #[error("control character at byte {offset}")]
    InvalidCharacter {
        /// Byte offset of the character.
        offset: usize,
    },
    /// A key name breaks the naming rules.
    #[error("invalid key name: {problem}")]
    InvalidKeyName {
        /// The rule it breaks.
        problem: KeyNameProblem,
    },
    /// A signature by a known key does not verify.
    #[error("signature by `{name}+{key_id:08x}` does not verify")]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// A signer key text is malformed.
    #[error("invalid signer key: {problem}")]
    InvalidSignerKey {
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// A verifier key text is malformed.
    #[error("invalid verifier key: {problem}")]
    InvalidVerifierKey {
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// A signature line is malformed.
    #[error("malformed signature line {line}")]
    MalformedSignatureLine {
        /// One-based line number within the signature block.
        line: usize,
    },
    /// The text to sign does not end with a newline.
    #[error("note text must end with a newline")]
    MissingFinalNewline,
    /// The note has no blank line followed by signature lines ending in a newline.
    #[error("note has no signature block")]
    MissingSignatures,
    /// No signers were given.
    #[error("no signers given")]
    NoSigners,
    /// No known key signed the note.
    #[error("note is not signed by any known key")]
    NoVerifiedSignature,
    /// The note is larger than [`MAX_NOTE_SIZE`].
    #[error("note is {size} bytes, more than the limit of {max}")]
    NoteTooLarge {
        /// The note's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The note has more than [`MAX_NOTE_SIGNATURES`] signatures.
    #[error("note has more than {max} signatures")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
}

/// Which key naming rule a name breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyNameProblem {
    /// It holds a control character.
    Control,
    /// It is empty.
    Empty,
    /// It holds a `+`.
    Plus,
    /// It is longer than [`MAX_KEY_NAME_LEN`] bytes.
    TooLong,
    /// It holds Unicode whitespace.
    Whitespace,
}

impl fmt::Display for KeyNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Control => "it contains a control character",
            Self::Empty => "it is empty",
            Self::Plus => "it contains `+`",
            Self::TooLong => "it is too long",
            Self::Whitespace => "it contains whitespace",
        })
    }
}

/// What is wrong with a key text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key data is not valid base64.
    Base64,
    /// The text is not `name+keyid+keydata` (with the `PRIVATE+KEY+` prefix for signer keys).
    Format,
    /// The public key is not a valid Ed25519 point.
    InvalidPublicKey,
    /// The key id does not match the name and key.
    KeyIdMismatch {
        /// The key id in the text.
        got: u32,
        /// The key id of the name and key.
        want: u32,
    },
    /// The key data has the wrong length for Ed25519.
    KeyLength {
        /// Bytes after the algorithm byte.
        got: usize,
    },
    /// The algorithm byte is not the one expected (0x01 for note keys, 0x04 for cosigner keys).
    UnknownAlgorithm {
        /// The algorithm byte.
        alg: u8,
    },
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base64 => f.write_str("key data is not base64"),
            Self::Format => f.write_str("expected `name+keyid+keydata`"),
            Self::InvalidPublicKey => f.write_str("not a valid ed25519 public key"),
            Self::KeyIdMismatch { got, want } => {
                write!(f, "key id {got:08x} does not match the key ({want:08x})")
            }
            Self::KeyLength { got } => write!(f, "key is {got} bytes, expected 32"),
            Self::UnknownAlgorithm { alg } => write!(f, "unsupported key algorithm {alg:#04x}"),
        }
    }
}

/// The key id of a key of signature type `alg`: `SHA-256(name || 0x0A || alg || public key)[..4]`,
/// big-endian (0x01 for note signatures, 0x04 for c2sp.org/tlog-cosignature).
pub(crate) fn key_id(name: &KeyName, alg: u8, public_key: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_str())
        .chain_update([b'\n', alg])
        .chain_update(public_key)
        .finalize();
    // INVARIANT: a SHA-256 digest has 32 bytes, so the first four always exist.
    digest
        .as_slice()
        .first_chunk::<4>()
        .map_or(0, |id| u32::from_be_bytes(*id))
}

/// `alg || key`: the key data of `vkey` and `skey` texts.
pub(crate) fn key_data(alg: u8, key: &[u8; 32]) -> [u8; 33] {
    let mut data = [0u8; 33];
    let (alg_byte, rest) = data.split_at_mut(1);
    alg_byte.fill(alg);
    rest.copy_from_slice(key);
    data
}

/// Splits `name+keyid+keydata` (the key data may itself hold `+`, a base64 character).
pub(crate) fn split_key_text(text: &str) -> Option<(&str, u32, &str)> {
    let mut parts = text.splitn(3, '+');
    let (name, id, data) = (parts.next()?, parts.next()?, parts.next()?);
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = u32::from_str_radix(id, 16).ok()?;
    Some((name, id, data))
}

/// Decodes `base64(alg || 32 bytes)`, requiring the signature type `want`.
pub(crate) fn decode_key_data(data: &str, want: u8) -> Result<[u8; 32], KeyProblem> {
    let bytes = BASE64.decode(data).map_err(|_| KeyProblem::Base64)?;
    let Some((&alg, key)) = bytes.split_first() else {
        return Err(KeyProblem::KeyLength { got: 0 });
    };
    if alg != want {
        return Err(KeyProblem::UnknownAlgorithm { alg });
    }
    key.try_into()
        .map_err(|_| KeyProblem::KeyLength { got: key.len() })
}

/// Parses `— <name> <base64(key id || signature)>`.
pub(crate) fn parse_signature_line(line: &str) -> Option<NoteSignature> {
    let (name, b64) = line.strip_prefix(SIG_PREFIX)?.split_once(' ')?;
    KeyName::new(name).ok()?;
    let data = BASE64.decode(b64).ok()?;
    let (id, sig) = data.split_first_chunk::<4>()?;
    if sig.is_empty() {
        return None;
    }
    Some(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes(*id),
        sig: sig.to_vec(),
    })
}

fn check_size(size: usize) -> Result<(), NoteError> {
    if size > MAX_NOTE_SIZE {
        return Err(NoteError::NoteTooLarge {
            size,
            max: MAX_NOTE_SIZE,
        });
    }
    Ok(())
}

/// Notes must not hold ASCII control characters other than newline.
fn check_characters(text: &str) -> Result<(), NoteError> {
    match text.bytes().position(|b| b < 0x20 && b != b'\n') {
        Some(offset) => Err(NoteError::InvalidCharacter { offset }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

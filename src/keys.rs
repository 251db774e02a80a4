//! Key material in the data directory, generated together with a new log and reused after:
//!
//! | file | holds |
//! |---|---|
//! | `checkpoint.skey` | the log's checkpoint signing key, note `skey` text (c2sp.org/signed-note) |
//! | `checkpoint.vkey` | its verifier key, note `vkey` text (public, rewritten on each start) |
//! | `token-issuer.key` | the Ed25519 seed that signs bearer tokens, hex |
//! | `subject-pseudonym.key` | the HMAC-SHA256 key of subject pseudonyms, hex |
//! | `subject-map-vrf.key` | the ECVRF seed that derives patients' subject-map keys, hex |
//!
//! Secret files are created with mode 0600 (data dir 0700), and a secret file that group or
//! others may read is refused with an error naming the file. Keys are created only for a data
//! dir that holds no log yet ([`Keys::load_or_generate`]); once it holds one, every key file
//! must be there ([`Keys::load`]): a regenerated pseudonym key would silently give every patient
//! a new pseudonym, dropping their opt-outs and exclusions. This module does not rotate keys or
//! fetch them from elsewhere (KMS, HSM); a lost checkpoint key cannot be recovered.

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac as _};
use ledger::note::{KeyName, NoteError, NoteSigner};
use rand::{RngCore as _, rngs::OsRng};
use sha2::Sha256;

use crate::auth::{AuthError, Role, TokenIssuer};

/// File name of the checkpoint signing key.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint.skey";
/// File name of the checkpoint verifier key (public).
pub const CHECKPOINT_VKEY_FILE: &str = "checkpoint.vkey";
/// File name of the token-issuer key.
pub const TOKEN_ISSUER_KEY_FILE: &str = "token-issuer.key";
/// File name of the subject-pseudonym key.
pub const SUBJECT_KEY_FILE: &str = "subject-pseudonym.key";
/// File name of the subject-map VRF key. A log created before the subject map existed has none,
/// and keeps no map (see `crate::subject_map`).
pub const SUBJECT_MAP_KEY_FILE: &str = "subject-map-vrf.key";
/// Largest key file read.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// The server's key material.
pub struct Keys {
    /// Signs checkpoints; its name is the log's origin.
    pub checkpoint_signer: NoteSigner,
    /// Signs bearer tokens.
    pub token_issuer: TokenIssuer,
    /// Keys subject pseudonyms.
    pub subject_key: SubjectKey,
    /// Derives patients' subject-map keys; `None` only for a log created without one.
    pub subject_map_key: Option<ledger::vrf::VrfSecretKey>,
}

/// The HMAC-SHA256 key that turns patient ids into subject pseudonyms (docs/design.md §3).
#[derive(Clone)]
pub struct SubjectKey([u8; 32]);

/// `HMAC-SHA256(subject_key, patient_id)`: identifies a subject in private bodies without
/// naming them. Never put it in a public leaf.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectPseudonym(pub [u8; 32]);

/// Why key material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The data directory could not be created, or closed to other users.
    #[error("cannot create or secure data directory `{path}`: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A key file could not be read.
    #[error("cannot read key file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A key file could not be written.
    #[error("cannot write key file `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A needed key file does not exist (and this caller does not create it).
    #[error("key file `{path}` does not exist: start the server once with this data dir")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A key file of a data dir that already holds a log does not exist. It is never
    /// regenerated: the log cannot be served without it.
    #[error(
        "key file `{path}` is missing but the data dir holds a log: the log cannot be served \
         without it (a new key would change every pseudonym, token or checkpoint signature); \
         restore the file"
    )]
    MissingForLog {
        /// The file.
        path: PathBuf,
    },
    /// A secret key file that group or others may access.
    #[error(
        "key file `{path}` is accessible by group or others (mode {mode:04o}); \
         restrict it with `chmod 600` and check who could have read it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file is not a regular file, too large, or not in its format.
    #[error("key file `{path}` is malformed: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
    /// The checkpoint key file does not hold a valid note signer key.
    #[error("invalid checkpoint key in `{path}`: {source}")]
    CheckpointKey {
        /// The file.
        path: PathBuf,
        /// The note error (never includes the key).
        #[source]
        source: NoteError,
    },
    /// The configured origin is not a valid note key name.
    #[error("origin `{origin}` is not a valid note key name: {source}")]
    Origin {
        /// The origin.
        origin: String,
        /// Why.
        #[source]
        source: NoteError,
    },
    /// The stored checkpoint key was made for another origin.
    #[error(
        "checkpoint key in `{path}` is named `{key_name}` but the configured origin is \
         `{origin}`: use the same origin or another data dir"
    )]
    OriginMismatch {
        /// The key file.
        path: PathBuf,
        /// The key's name.
        key_name: String,
        /// The configured origin.
        origin: String,
    },
}

impl Keys {
    /// Loads the keys from `data_dir`, creating the directory and any missing key on first
    /// start. The checkpoint key is named `origin`; an existing one must have that name.
    ///
    /// # Errors
    ///
    /// [`KeyError`] naming the file: unreadable, malformed, accessible by others, or for
    /// another origin.
    pub fn load_or_generate(data_dir: &Path, origin: &str) -> Result<Self, KeyError> {
        Self::load_with(data_dir, origin, Create::Missing)
    }

    /// Loads the keys of a data dir that holds a log: every key file must exist, none is
    /// created. The checkpoint key must be named `origin`.
    ///
    /// # Errors
    ///
    /// [`KeyError::MissingForLog`] naming the first missing file, otherwise as for
    /// [`Keys::load_or_generate`].
    pub fn load(data_dir: &Path, origin: &str) -> Result<Self, KeyError> {
        Self::load_with(data_dir, origin, Create::Nothing)
    }

    fn load_with(data_dir: &Path, origin: &str, create: Create) -> Result<Self, KeyError> {
        create_data_dir(data_dir)?;
        let checkpoint_signer = load_or_generate_checkpoint_key(data_dir, origin, create)?;
        let issuer_path = data_dir.join(TOKEN_ISSUER_KEY_FILE);
        let issuer_seed = load_or_generate_secret(&issuer_path, create)?;
        let subject_seed = load_or_generate_secret(&data_dir.join(SUBJECT_KEY_FILE), create)?;
        // A log older than the subject map has no VRF key; whether the log needs one is the
        // state's to say (`crate::subject_map::SubjectMap::open`), so a missing file is no error
        // here.
        let map_path = data_dir.join(SUBJECT_MAP_KEY_FILE);
        let subject_map_key = match create {
            Create::Missing => Some(load_or_generate_secret(&map_path, create)?),
            Create::Nothing => match read_secret(&map_path)? {
                Some(text) => Some(parse_hex32(&map_path, &text)?),
                None => None,
            },
        }
        .map(ledger::vrf::VrfSecretKey::from_seed);
        Ok(Self {
            checkpoint_signer,
            token_issuer: TokenIssuer::new(SigningKey::from_bytes(&issuer_seed)),
            subject_key: SubjectKey(subject_seed),
            subject_map_key,
        })
    }

    /// The checkpoint verifier key in note `vkey` format.
    pub fn verifier_key(&self) -> String {
        self.checkpoint_signer.verifier().to_vkey()
    }
}

/// Whether missing key files are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    /// Missing files are generated (a data dir without a log).
    Missing,
    /// Missing files are an error (a data dir with a log).
    Nothing,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("checkpoint_signer", &self.checkpoint_signer)
            .field("token_issuer", &self.token_issuer)
            .finish_non_exhaustive()
    }
}

/// Loads the token-issuer key of an existing data dir, without creating anything (what
/// `akashi token` uses).
///
/// # Errors
///
/// [`KeyError::Missing`] when the file does not exist, otherwise as for
/// [`Keys::load_or_generate`].
pub fn load_token_issuer(data_dir: &Path) -> Result<TokenIssuer, KeyError> {
    let path = data_dir.join(TOKEN_ISSUER_KEY_FILE);
    let seed = read_secret(&path)?
        .ok_or(KeyError::Missing { path: path.clone() })
        .and_then(|text| parse_hex32(&path, &text))?;
    Ok(TokenIssuer::new(SigningKey::from_bytes(&seed)))
}

/// Loads the checkpoint signing key of an existing data dir, whatever its name (what
/// `akashi fsck` uses).
///
/// # Errors
///
/// [`KeyError::Missing`] when the file does not exist, otherwise as for
/// [`Keys::load_or_generate`].
pub fn load_checkpoint_signer(data_dir: &Path) -> Result<NoteSigner, KeyError> {
    let path = data_dir.join(CHECKPOINT_KEY_FILE);
    let text = read_secret(&path)?.ok_or(KeyError::Missing { path: path.clone() })?;
    NoteSigner::from_skey(text.trim()).map_err(|source| KeyError::CheckpointKey { path, source })
}

impl SubjectKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// How `recipient` knows the patient whose pseudonym is `subject` in `WatchConsentChanges`:
    /// `HMAC-SHA256(HMAC-SHA256(key, 0x00 ‖ "akashi/recipient-reference/v1"), recipient ‖ 0x00 ‖
    /// subject)`, in hex (the leading zero byte, which no patient id holds, keeps the derived
    /// key apart from every pseudonym). Stable for one recipient, unrelated across recipients, and neither
    /// the patient id nor the log's pseudonym.
    pub fn recipient_reference(&self, recipient: &str, subject: &str) -> String {
        let derived = <Hmac<Sha256>>::new_from_slice(&self.0)
            .map(|mac| {
                mac.chain_update(b"\0akashi/recipient-reference/v1")
                    .finalize()
                    .into_bytes()
            })
            .ok();
        let reference = derived.and_then(|key| {
            <Hmac<Sha256>>::new_from_slice(&key)
                .map(|mac| {
                    mac.chain_update(recipient.as_bytes())
                        .chain_update([0u8])
                        .chain_update(subject.as_bytes())
                        .finalize()
                        .into_bytes()
                })
                .ok()
        });
        reference.map(hex::encode).unwrap_or_default()
    }

    /// The pseudonym of `patient_id`: `HMAC-SHA256(key, patient_id)`.
    pub fn pseudonym(&self, patient_id: &str) -> SubjectPseudonym {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail for 32 bytes.
        let mac = <Hmac<Sha256>>::new_from_slice(&self.0).map(|mac| {
            mac.chain_update(patient_id.as_bytes())
                .finalize()
                .into_bytes()
        });
        let mut out = [0u8; 32];
        if let Ok(bytes) = mac {
            out.copy_from_slice(&bytes);
        }
        SubjectPseudonym(out)
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(<redacted>)")
    }
}

impl SubjectPseudonym {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SubjectPseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectPseudonym({})", self.to_hex())
    }
}

/// Creates `data_dir` (mode 0700) if it does not exist, and closes an existing one to other
/// users: the ledger's files below it hold private bodies, and sled creates them with the
/// process umask (often world-readable), so the folder is what keeps them private. A folder
/// made by someone else's tooling (a container volume, `install -d`, a service manager) is
/// often 0755.
fn create_data_dir(data_dir: &Path) -> Result<(), KeyError> {
    let failed = |source| KeyError::CreateDir {
        path: data_dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(failed)?;
    let mode = fs::metadata(data_dir).map_err(failed)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %data_dir.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the data dir was open to other users; it is now 0700"
        );
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

fn load_or_generate_checkpoint_key(
    data_dir: &Path,
    origin: &str,
    create: Create,
) -> Result<NoteSigner, KeyError> {
    let path = data_dir.join(CHECKPOINT_KEY_FILE);
    let name = KeyName::new(origin).map_err(|source| KeyError::Origin {
        origin: origin.to_owned(),
        source,
    })?;
    let signer = match read_secret(&path)? {
        Some(text) => {
            NoteSigner::from_skey(text.trim()).map_err(|source| KeyError::CheckpointKey {
                path: path.clone(),
                source,
            })?
        }
        None if create == Create::Nothing => return Err(KeyError::MissingForLog { path }),
        None => {
            let signer = NoteSigner::generate(name.clone(), &mut OsRng);
            write_new_file(&path, format!("{}\n", signer.to_skey()).as_bytes(), 0o600)?;
            signer
        }
    };
    if signer.name() != &name {
        return Err(KeyError::OriginMismatch {
            path,
            key_name: signer.name().to_string(),
            origin: origin.to_owned(),
        });
    }
    let vkey = format!("{}\n", signer.verifier().to_vkey());
    let vkey_path = data_dir.join(CHECKPOINT_VKEY_FILE);
    if fs::read_to_string(&vkey_path).ok().as_deref() != Some(vkey.as_str()) {
        write_file_replacing(&vkey_path, vkey.as_bytes(), 0o644)?;
    }
    Ok(signer)
}

/// Reads a 32-byte hex secret, generating and storing a random one if the file is missing and
/// `create` allows it.
fn load_or_generate_secret(path: &Path, create: Create) -> Result<[u8; 32], KeyError> {
    if let Some(text) = read_secret(path)? {
        return parse_hex32(path, &text);
    }
    if create == Create::Nothing {
        return Err(KeyError::MissingForLog {
            path: path.to_owned(),
        });
    }
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    write_new_file(path, format!("{}\n", hex::encode(secret)).as_bytes(), 0o600)?;
    Ok(secret)
}

/// Reads a secret file: `None` if it does not exist; refused if group or others may access it.
pub(crate) fn read_secret(path: &Path) -> Result<Option<String>, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    // Check the opened file itself (fstat), so that a swap between check and read is harmless.
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(malformed(path, "not a regular file"));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    if metadata.len() > MAX_KEY_FILE_LEN {
        return Err(malformed(path, "larger than 4096 bytes"));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    Ok(Some(text))
}

fn parse_hex32(path: &Path, text: &str) -> Result<[u8; 32], KeyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .map_err(|_| malformed(path, "expected 64 hex digits"))?;
    Ok(out)
}

/// Creates `path` with `mode`, failing if it exists, and makes it durable: write to a fresh
/// temporary file, fsync, rename, fsync the directory.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    if path.exists() {
        return Err(KeyError::Write {
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        });
    }
    write_file_replacing(path, contents, mode)
}

fn write_file_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let write_error = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    // A leftover from a crash may have other permissions: never reuse it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(write_error(err)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    fs::rename(&tmp, path).map_err(write_error)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_error)?;
    }
    Ok(())
}

fn malformed(path: &Path, problem: &'static str) -> KeyError {
    KeyError::Malformed {
        path: path.to_owned(),
        problem,
    }
}

/// Mints a token with the issuer key stored in `data_dir`, exactly as `akashi token` does.
/// `patient` must be given for [`Role::Patient`] and only for it.
///
/// # Errors
///
/// [`MintError::Keys`] when the data dir has no (usable) issuer key, [`MintError::Claims`] for
/// a role/patient/lifetime combination that cannot be issued.
pub fn mint_token(
    data_dir: &Path,
    role: Role,
    patient: Option<&str>,
    ttl: Duration,
) -> Result<String, MintError> {
    let issuer = load_token_issuer(data_dir)?;
    Ok(issuer.issue(role, patient, ttl, SystemTime::now())?)
}

/// Why [`mint_token`] could not mint a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The data dir's issuer key is missing or unusable.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The role, patient and lifetime do not make a token akashi issues.
    #[error(transparent)]
    Claims(#[from] AuthError),
}

#[cfg(test)]
mod tests;

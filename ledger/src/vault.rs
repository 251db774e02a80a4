//! The body key vault: crypto-shredding for lawful erasure.
//!
//! Every private body about a patient is stored *sealed*: encrypted with ChaCha20-Poly1305 under
//! that patient's own random [`BodyKey`] ([`seal_body`], [`open_body`]). The keys live in this
//! vault, a file of its own kept **outside** the main store (or, for a log kept in PostgreSQL, a
//! table of its own there, shared by every server of the log: the same rules over another
//! [`SlotStore`], `crate::store::postgres::vault`). Erasing a patient's bodies is then
//! [`KeyVault::shred`]: overwriting their key in place. Every copy of the sealed bodies (the live
//! store, its replicas, and backups of the store taken before the erasure) becomes unreadable at
//! once, without rewriting the append-only log or hunting down old backups.
//!
//! # File format
//!
//! The vault is the file `body-keys` in the folder given to [`KeyVault::open`] (created mode
//! 0600, its folder 0700 when missing):
//!
//! ```text
//! magic  b"akashi-keyvault1"                       16 bytes
//! slot 0 tag (8 random bytes, never zero) || key (32)  40 bytes
//! slot 1 ...                                           40 bytes
//! ```
//!
//! A [`KeyId`] is a slot number (u64, big-endian) followed by that slot's tag, so an id names
//! exactly one key: a stale id whose slot holds another tag finds nothing. A slot of all zeros
//! (tag zero) is shredded, or was never handed out.
//!
//! A sealed body is `key id (16) || nonce (12) || ciphertext and Poly1305 tag`, with the
//! associated data `b"akashi/sealed-body/v1" || leaf index (u64, big-endian) || key id`: a sealed
//! body opens only at the leaf index it was sealed for. Nonces are random (96 bits); a patient's
//! key seals far fewer than the 2^32 bodies where random nonces start to risk a collision.
//!
//! # Durability
//!
//! - Keys are generated ahead, [`BLOCK_SLOTS`] at a time, from the operating system's random
//!   number generator. [`KeyVault::allocate`] hands out the next slot of the region already
//!   synced; when that region is used up it appends a new block and `fsync`s the file before
//!   handing one out: one sync per [`BLOCK_SLOTS`] keys. The file is created whole (header
//!   written to a temporary file, synced, renamed into place, folder synced), so it is either
//!   absent or has its header.
//! - The vault does not remember which slots it handed out: the caller keeps that high-water
//!   mark in its own store, written atomically with the first entry sealed under the key, and
//!   after every open passes it to [`KeyVault::set_floor`] **before** allocating (the cursor
//!   starts at slot 0). A key handed out whose first entry never committed is handed out again,
//!   which is harmless: nothing durable was sealed under it.
//! - On open, a tail shorter than a slot (an append torn by a crash; none of its slots were handed
//!   out, since allocation returns only after the sync) is cut off and the file synced.
//! - [`KeyVault::shred`] overwrites the slot with zeros and `fdatasync`s before returning. It is
//!   idempotent, and shredding a slot that already reads as shredded writes and syncs the zeros
//!   again, so re-running an erasure whose acknowledgement was lost (a crash, or a failed sync)
//!   completes it. Callers re-run the shreds of erasures not known to be complete after a crash.
//! - A file vault never caches keys in memory (the PostgreSQL one keeps the lease holder's, see
//!   there): [`KeyVault::key`] reads the file every time (the page
//!   cache makes that cheap), so a shredded key is never served. A [`BodyKey`] is wiped when
//!   dropped.
//!
//! # Limits
//!
//! - Shredding overwrites the key in place. That destroys it only if the filesystem and device
//!   do not keep the old blocks: copy-on-write filesystems (btrfs, ZFS, some overlay and
//!   snapshotting layers), filesystem or volume snapshots, and SSD wear levelling can keep the
//!   old contents. Put the vault on a filesystem that overwrites in place, with no snapshots,
//!   preferably on an encrypted volume so that discarded blocks are unreadable too.
//! - The vault must **not** be copied into the store's backups, or those backups would carry
//!   the keys that make them readable. It is backed up on its own terms: restoring a vault
//!   backup brings back every key shredded after it was taken, so such backups need a retention
//!   short enough for erasure deadlines, and after a restore every erasure recorded since must be
//!   shredded again.
//! - Losing the vault loses every sealed body; losing a block of it loses the bodies of its keys.
//! - One process at a time: the file is locked while open ([`VaultError::Locked`]).
//! - Unix only (positioned reads and writes, file modes).

use std::{
    fmt,
    fs::{self, DirBuilder, File, OpenOptions, TryLockError},
    io,
    os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _,
    aead::{Aead as _, Payload},
};
use rand::{CryptoRng, RngCore, rngs::OsRng};
use zeroize::{Zeroize as _, Zeroizing};

/// The vault's file name inside the folder given to [`KeyVault::open`].
pub const FILE_NAME: &str = "body-keys";

/// The name a vault file takes while [`KeyVault::destroy_file`] destroys it.
pub const DESTROYING_NAME: &str = "body-keys.destroying";

/// Bytes per slot: tag (8) then key (32).
pub const SLOT_LEN: usize = TAG_LEN + BodyKey::LEN;

/// Slots generated and synced at a time when the vault grows.
pub const BLOCK_SLOTS: u64 = 1024;

/// The file's first bytes.
const MAGIC: &[u8; 16] = b"akashi-keyvault1";
/// [`MAGIC`]'s length, as a file offset.
const HEADER_LEN: u64 = 16;
const SLOT_LEN_U64: u64 = 40;
const TAG_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const AEAD_TAG_LEN: usize = 16;
/// The start of the associated data of a sealed body.
const SEALED_AAD_PREFIX: &[u8] = b"akashi/sealed-body/v1";
/// The first bytes of every sealed record's associated data.
const RECORD_AAD_PREFIX: &[u8] = b"akashi/sealed-record/v1";
/// The shortest sealed body: key id, nonce and Poly1305 tag around an empty body.
const SEALED_MIN_LEN: usize = KeyId::LEN + NONCE_LEN + AEAD_TAG_LEN;
/// The largest file offset a slot may end at (file offsets are signed 64-bit).
const MAX_OFFSET: u64 = i64::MAX as u64;

/// A key's id: its slot number (u64 big-endian) then an 8-byte random tag (never all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 16]);

impl KeyId {
    /// Bytes in an encoded id.
    pub const LEN: usize = 16;

    /// The id encoded as `bytes` (slot, big-endian, then tag).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's encoding: slot (u64, big-endian) then tag.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The slot of the vault holding the key.
    pub const fn slot(self) -> u64 {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        u64::from_be_bytes([a, b, c, d, e, f, g, h])
    }

    /// The id encoded in `bytes`, or `None` unless it is exactly [`KeyId::LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(Self)
    }

    /// The random tag that tells this key from any other that ever used its slot.
    const fn tag(self) -> [u8; TAG_LEN] {
        let [.., a, b, c, d, e, f, g, h] = self.0;
        [a, b, c, d, e, f, g, h]
    }

    fn new(slot: u64, tag: [u8; TAG_LEN]) -> Self {
        let mut bytes = [0u8; 16];
        let (slot_bytes, tag_bytes) = bytes.split_at_mut(8);
        slot_bytes.copy_from_slice(&slot.to_be_bytes());
        tag_bytes.copy_from_slice(&tag);
        Self(bytes)
    }
}

/// A 32-byte body key. Wiped from memory when dropped; never printed.
pub struct BodyKey([u8; 32]);

impl BodyKey {
    /// Bytes in a key.
    const LEN: usize = 32;
}

impl Drop for BodyKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyKey(<redacted>)")
    }
}

/// Why the vault, or a sealed body, could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A file operation failed.
    #[error("key vault `{path}`: i/o error while {context}: {source}")]
    Io {
        /// The vault file (or its folder).
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the vault header: not a key vault, or damaged.
    #[error("`{path}` is not a key vault: it does not start with the vault header")]
    Malformed {
        /// The vault file.
        path: PathBuf,
    },
    /// Another open vault (in this process or another) holds the file.
    #[error("the key vault `{path}` is already open elsewhere")]
    Locked {
        /// The vault file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(#[source] rand::Error),
    /// The slot to allocate lies beyond the largest file offset.
    #[error("key vault slot {slot} lies beyond the largest file offset")]
    Exhausted {
        /// The slot.
        slot: u64,
    },
    /// The database that keeps the vault failed or could not be reached.
    #[error("key vault in {location}: {context}: {message}")]
    Database {
        /// Where the vault is.
        location: String,
        /// What was being done.
        context: &'static str,
        /// The database's or client's message.
        message: String,
    },
    /// Another server took over the database the vault is kept in: this one may no longer add
    /// keys to it.
    #[error("the key vault's database was taken over by another server (epoch {epoch} lost)")]
    Fenced {
        /// The lease epoch this server held.
        epoch: i64,
    },
    /// A vault was to be copied into one that already holds keys.
    #[error(
        "the key vault in {location} already holds keys: a vault is copied only into an empty one"
    )]
    NotEmpty {
        /// Where the destination vault is.
        location: String,
    },
    /// A sealed record that is malformed, was moved to another leaf index, was tampered with,
    /// or was opened with the wrong key.
    #[error("a sealed body failed to open")]
    Sealed,
}

/// Where a vault keeps its slots: a file of its own ([`KeyVault::open`]) or a table of the
/// PostgreSQL database under the log (`crate::store::postgres::vault`). A slot is
/// [`SLOT_LEN`] bytes, tag then key; all zeros is shredded, or never handed out.
///
/// [`KeyVault`] keeps the rules (allocation cursor, tags, which slot may be shredded); a slot
/// store only keeps bytes, durably.
pub trait SlotStore: Send + Sync + fmt::Debug {
    /// Where the slots are, for messages.
    fn location(&self) -> String;
    /// The vault file, for a file vault.
    fn path(&self) -> Option<&Path> {
        None
    }
    /// How many whole slots are stored durably (handed out, free or shredded). Called when the
    /// vault opens; afterwards the vault counts the blocks it appends itself.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`].
    fn count(&self) -> Result<u64, VaultError>;
    /// Slot `slot`, which lies below the count.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`].
    fn read(&self, slot: u64) -> Result<Zeroizing<[u8; SLOT_LEN]>, VaultError>;
    /// Slots `first..first + count` (all below the count), one after another: in one read where
    /// the store can.
    ///
    /// # Errors
    ///
    /// As [`SlotStore::read`].
    fn read_range(&self, first: u64, count: u64) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut out = Zeroizing::new(Vec::new());
        for slot in first..first.saturating_add(count) {
            out.extend_from_slice(self.read(slot)?.as_slice());
        }
        Ok(out)
    }
    /// Stores `block` (whole slots) as slots `first..`, durably before returning; `stored` is the
    /// count before the call. On an error none of the block may ever be read back as handed out:
    /// the vault does not count it.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`], [`VaultError::Fenced`].
    fn append(&self, stored: u64, first: u64, block: &[u8]) -> Result<(), VaultError>;
    /// Overwrites slot `slot` with zeros, durably before returning.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`]; the slot may then be zeroed or not.
    fn zero(&self, slot: u64) -> Result<(), VaultError>;
}

/// The key vault: the body keys, outside the main store (see the [module docs](self)).
///
/// Many threads may read keys at once; allocations and shreds take turns.
pub struct KeyVault {
    slots_store: Box<dyn SlotStore>,
    /// Serialises writers (allocate, set_floor, shred), held across their syncs.
    writer: Mutex<()>,
    /// Whole slots stored durably; only writers change it.
    slots: AtomicU64,
    /// The slot the next allocation considers; only writers change it.
    next: AtomicU64,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVault")
            .field("slots_store", &self.slots_store)
            .field("slots", &self.slots.load(Ordering::Acquire))
            .field("next_slot", &self.next.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// Opens the vault file `dir/body-keys`, creating it (mode 0600, in a folder created mode
    /// 0700 if missing) when absent. A torn tail is cut off and synced. The file is locked
    /// while the vault is open. The allocation cursor starts at slot 0: call
    /// [`KeyVault::set_floor`] with the caller's high-water mark before allocating.
    ///
    /// # Errors
    ///
    /// [`VaultError::Malformed`] for a file without the vault header, [`VaultError::Locked`]
    /// when the vault is open elsewhere, [`VaultError::Io`].
    pub fn open(dir: &Path) -> Result<Self, VaultError> {
        Self::with_slots(Box::new(FileSlots::open(dir)?))
    }

    /// A vault over `slots_store`. The allocation cursor starts at slot 0, as for
    /// [`KeyVault::open`].
    ///
    /// # Errors
    ///
    /// As [`SlotStore::count`].
    pub fn with_slots(slots_store: Box<dyn SlotStore>) -> Result<Self, VaultError> {
        let slots = slots_store.count()?;
        Ok(Self {
            slots_store,
            writer: Mutex::new(()),
            slots: AtomicU64::new(slots),
            next: AtomicU64::new(0),
        })
    }

    /// The vault file's path, for a vault kept in a file.
    pub fn path(&self) -> Option<&Path> {
        self.slots_store.path()
    }

    /// Where the vault keeps its keys, for messages.
    pub fn location(&self) -> String {
        self.slots_store.location()
    }

    /// Allocation never hands out a slot below `next` (the caller keeps the durable
    /// high-water mark in its own store, written atomically with the first entry sealed under
    /// the key; after a crash the caller calls this with it). Never lowers the cursor.
    pub fn set_floor(&self, next: u64) {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.next.fetch_max(next, Ordering::AcqRel);
    }

    /// The slot the next [`KeyVault::allocate`] returns (or, if that slot reads as
    /// shredded, the first after it that does not).
    pub fn next_slot(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// A fresh key, durable before this returns. Appends a block of [`BLOCK_SLOTS`] new keys
    /// (made durable) when the stored ones are used up; skips slots that read as shredded.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`], [`VaultError::Fenced`],
    /// [`VaultError::Random`], [`VaultError::Exhausted`]; the cursor is then unchanged and
    /// nothing was handed out.
    pub fn allocate(&self) -> Result<KeyId, VaultError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let slot = self.next.load(Ordering::Acquire);
            let after = slot.checked_add(1).ok_or(VaultError::Exhausted { slot })?;
            if slot >= self.slots.load(Ordering::Acquire) {
                self.append_block(slot)?;
            }
            let bytes = self.slots_store.read(slot)?;
            self.next.store(after, Ordering::Release);
            let (tag, _) = split_slot(&bytes);
            if tag != [0; TAG_LEN] {
                return Ok(KeyId::new(slot, tag));
            }
        }
    }

    /// The key, or `None` when it was shredded, its tag does not match, or the slot was never
    /// written.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`].
    pub fn key(&self, id: KeyId) -> Result<Option<BodyKey>, VaultError> {
        let slot = id.slot();
        if slot >= self.slots.load(Ordering::Acquire) {
            return Ok(None);
        }
        let bytes = self.slots_store.read(slot)?;
        let (tag, key) = split_slot(&bytes);
        if tag == [0; TAG_LEN] || tag != id.tag() {
            return Ok(None);
        }
        Ok(Some(BodyKey(*key)))
    }

    /// Destroys the key: overwrites its slot with zeros, durably (`fdatasync` for a file)
    /// before returning. Returns whether the key was there. Idempotent: a slot that already
    /// reads as shredded is overwritten and made durable again (completing a shred interrupted
    /// by a crash or a failed sync) and `false` returned. A slot holding another key (another
    /// tag) is left alone.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`], [`VaultError::Database`]; the key may then be destroyed or not, and
    /// the shred must be retried.
    pub fn shred(&self, id: KeyId) -> Result<bool, VaultError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = id.slot();
        if slot >= self.slots.load(Ordering::Acquire) {
            return Ok(false);
        }
        let bytes = self.slots_store.read(slot)?;
        let (tag, _) = split_slot(&bytes);
        let shredded = tag == [0; TAG_LEN];
        if !shredded && tag != id.tag() {
            return Ok(false);
        }
        self.slots_store.zero(slot)?;
        Ok(!shredded)
    }

    /// Stores [`BLOCK_SLOTS`] fresh slots from `first` on (slots between the stored ones and
    /// `first` are left as zeros, never handed out). Called with the writer lock held.
    fn append_block(&self, first: u64) -> Result<(), VaultError> {
        let end = first
            .checked_add(BLOCK_SLOTS)
            .filter(|&end| slot_offset(end).is_some())
            .ok_or(VaultError::Exhausted { slot: first })?;
        let block = fresh_block(BLOCK_SLOTS)?;
        self.slots_store
            .append(self.slots.load(Ordering::Acquire), first, &block)?;
        self.slots.store(end, Ordering::Release);
        Ok(())
    }

    /// How many slots the vault holds (handed out, free or shredded).
    pub fn slots(&self) -> u64 {
        self.slots.load(Ordering::Acquire)
    }

    /// Copies every slot of this vault into `to`, which must hold none: a vault moved to
    /// another place (from a data dir's file into the database, or back). Shredded slots are
    /// copied as zeros. Returns the slots copied.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotEmpty`] when `to` holds slots; as [`SlotStore::read`] and
    /// [`SlotStore::append`].
    pub fn copy_into(&self, to: &KeyVault) -> Result<u64, VaultError> {
        if to.slots() != 0 {
            return Err(VaultError::NotEmpty {
                location: to.location(),
            });
        }
        self.copy_rest_into(to)
    }

    /// Copies the slots of this vault that `to` lacks (those from `to`'s count on) into `to`:
    /// finishes a copy that was cut off after some blocks. The caller has checked that what
    /// `to` holds matches ([`KeyVault::agrees_with`]). Returns the slots copied.
    ///
    /// # Errors
    ///
    /// As [`SlotStore::read`] and [`SlotStore::append`].
    pub fn copy_rest_into(&self, to: &KeyVault) -> Result<u64, VaultError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let _to_writer = to.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let total = self.slots.load(Ordering::Acquire);
        let start = to.slots.load(Ordering::Acquire);
        let mut first = start;
        while first < total {
            let count = (total - first).min(BLOCK_SLOTS);
            let block = self.slots_store.read_range(first, count)?;
            to.slots_store.append(first, first, &block)?;
            first += count;
            to.slots.store(first, Ordering::Release);
        }
        Ok(total.saturating_sub(start))
    }

    /// Calls `each(slot, mine, theirs)` for every slot below `below` that both vaults hold,
    /// reading a block at a time; stops at the first `false`. Returns whether none was.
    fn each_common_slot(
        &self,
        other: &KeyVault,
        below: u64,
        mut each: impl FnMut(u64, &[u8], &[u8]) -> Result<bool, VaultError>,
    ) -> Result<bool, VaultError> {
        let both = self.slots().min(other.slots()).min(below);
        let mut first = 0;
        while first < both {
            let count = (both - first).min(BLOCK_SLOTS);
            let mine = self.slots_store.read_range(first, count)?;
            let theirs = other.slots_store.read_range(first, count)?;
            for (i, (a, b)) in mine
                .chunks_exact(SLOT_LEN)
                .zip(theirs.chunks_exact(SLOT_LEN))
                .enumerate()
            {
                let slot = first + u64::try_from(i).unwrap_or(u64::MAX);
                if !each(slot, a, b)? {
                    return Ok(false);
                }
            }
            first += count;
        }
        Ok(true)
    }

    /// Whether the two vaults hold the same keys in the slots below `below` both have: each
    /// such slot reads the same, or is zeros on one side (shredded there). Slots only one of
    /// them has are not compared.
    ///
    /// # Errors
    ///
    /// As [`SlotStore::read`].
    pub fn agrees_with(&self, other: &KeyVault, below: u64) -> Result<bool, VaultError> {
        let zero = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
        self.each_common_slot(other, below, |_, mine, theirs| {
            Ok(mine == theirs || zero(mine) || zero(theirs))
        })
    }

    /// Shreds here every key that `other` holds shredded (zeros) in the slots below `below`
    /// both have: an erasure carried out in one copy of a vault reaches this one too. Returns
    /// how many keys were shredded.
    ///
    /// # Errors
    ///
    /// As [`SlotStore::read`] and [`SlotStore::zero`].
    pub fn adopt_shreds_from(&self, other: &KeyVault, below: u64) -> Result<u64, VaultError> {
        let zero = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
        let mut shredded = 0;
        let mut to_shred = Vec::new();
        self.each_common_slot(other, below, |slot, mine, theirs| {
            if zero(theirs) && !zero(mine) {
                to_shred.push(slot);
            }
            Ok(true)
        })?;
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        for slot in to_shred {
            self.slots_store.zero(slot)?;
            shredded += 1;
        }
        Ok(shredded)
    }

    /// Whether every slot of this vault reads the same in `other` (which may hold more).
    ///
    /// # Errors
    ///
    /// As [`SlotStore::read`].
    pub fn is_prefix_of(&self, other: &KeyVault) -> Result<bool, VaultError> {
        if other.slots() < self.slots() {
            return Ok(false);
        }
        self.each_common_slot(other, u64::MAX, |_, mine, theirs| Ok(mine == theirs))
    }

    /// Destroys the vault file `dir/body-keys` (one whose keys were moved elsewhere): renamed to
    /// `body-keys.destroying` (the folder synced), every slot overwritten with zeros and synced,
    /// then removed and the folder synced. The rename first means a `body-keys` file never holds
    /// the zeros of a destruction cut short: its zeros are shreds. The file must not be open.
    /// Does nothing when there is no file; finishes a destruction cut short.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`].
    pub fn destroy_file(dir: &Path) -> Result<(), VaultError> {
        let path = dir.join(FILE_NAME);
        let doomed = dir.join(DESTROYING_NAME);
        match fs::rename(&path, &doomed) {
            Ok(()) => sync_dir(dir)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(&path, "renaming it for destruction", source)),
        }
        Self::finish_destroying(dir)
    }

    /// Finishes destroying `dir/body-keys.destroying`, if a destruction left one: overwritten
    /// with zeros, synced, removed, the folder synced.
    ///
    /// # Errors
    ///
    /// [`VaultError::Io`].
    pub fn finish_destroying(dir: &Path) -> Result<(), VaultError> {
        let path = dir.join(DESTROYING_NAME);
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(io_error(&path, "opening it", source)),
        };
        let len = file
            .metadata()
            .map_err(|source| io_error(&path, "reading its length", source))?
            .len();
        let zeros = vec![0u8; 64 * 1024];
        let mut offset = 0;
        while offset < len {
            let n = usize::try_from((len - offset).min(64 * 1024)).unwrap_or(64 * 1024);
            file.write_all_at(zeros.get(..n).unwrap_or(&zeros), offset)
                .map_err(|source| io_error(&path, "overwriting its keys", source))?;
            offset += n as u64;
        }
        file.sync_all()
            .map_err(|source| io_error(&path, "syncing its overwritten keys", source))?;
        drop(file);
        fs::remove_file(&path).map_err(|source| io_error(&path, "removing it", source))?;
        sync_dir(dir)
    }
}

/// `count` fresh slots: random tags (never zero) and random keys.
fn fresh_block(count: u64) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let len = usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(SLOT_LEN))
        .ok_or(VaultError::Exhausted { slot: count })?;
    let mut block = Zeroizing::new(vec![0u8; len]);
    OsRng
        .try_fill_bytes(block.as_mut_slice())
        .map_err(VaultError::Random)?;
    for slot in block.chunks_exact_mut(SLOT_LEN) {
        let Some((tag, _)) = slot.split_first_chunk_mut::<TAG_LEN>() else {
            continue;
        };
        while *tag == [0; TAG_LEN] {
            OsRng.try_fill_bytes(tag).map_err(VaultError::Random)?;
        }
    }
    Ok(block)
}

/// The vault file of a data dir: slots at fixed offsets after the header.
struct FileSlots {
    path: PathBuf,
    file: File,
    /// Held shared while reading a slot and exclusively while writing one, so a read never sees
    /// a half-written slot; never held across a sync.
    io: RwLock<()>,
}

impl fmt::Debug for FileSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSlots")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileSlots {
    fn open(dir: &Path) -> Result<Self, VaultError> {
        let path = dir.join(FILE_NAME);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => create(dir, &path)?,
            Err(source) => return Err(io_error(&path, "opening it", source)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(VaultError::Locked { path }),
            Err(TryLockError::Error(source)) => {
                return Err(io_error(&path, "locking it", source));
            }
        }
        let len = file
            .metadata()
            .map_err(|source| io_error(&path, "reading its length", source))?
            .len();
        if len < HEADER_LEN {
            return Err(VaultError::Malformed { path });
        }
        let mut magic = [0u8; 16];
        file.read_exact_at(&mut magic, 0)
            .map_err(|source| io_error(&path, "reading its header", source))?;
        if &magic != MAGIC {
            return Err(VaultError::Malformed { path });
        }
        let torn = (len - HEADER_LEN) % SLOT_LEN_U64;
        if torn != 0 {
            file.set_len(len - torn)
                .map_err(|source| io_error(&path, "cutting off a torn tail", source))?;
        }
        // Keys a stopped process wrote but may not have synced (it died between writing a block
        // and syncing it, or the sync failed) are made durable before any is handed out: a
        // body is never sealed under a key the disk might forget.
        file.sync_all()
            .map_err(|source| io_error(&path, "syncing it on open", source))?;
        Ok(Self {
            path,
            file,
            io: RwLock::new(()),
        })
    }
}

impl SlotStore for FileSlots {
    fn location(&self) -> String {
        format!("`{}`", self.path.display())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn count(&self) -> Result<u64, VaultError> {
        let len = self
            .file
            .metadata()
            .map_err(|source| io_error(&self.path, "reading its length", source))?
            .len();
        Ok(len.saturating_sub(HEADER_LEN) / SLOT_LEN_U64)
    }

    fn read(&self, slot: u64) -> Result<Zeroizing<[u8; SLOT_LEN]>, VaultError> {
        let offset = slot_offset(slot).ok_or(VaultError::Exhausted { slot })?;
        let mut bytes = Zeroizing::new([0u8; SLOT_LEN]);
        let _io = self.io.read().unwrap_or_else(PoisonError::into_inner);
        self.file
            .read_exact_at(bytes.as_mut_slice(), offset)
            .map_err(|source| io_error(&self.path, "reading a key", source))?;
        Ok(bytes)
    }

    fn append(&self, stored: u64, first: u64, block: &[u8]) -> Result<(), VaultError> {
        let offset = slot_offset(first).ok_or(VaultError::Exhausted { slot: first })?;
        let written = {
            let _io = self.io.write().unwrap_or_else(PoisonError::into_inner);
            self.file
                .write_all_at(block, offset)
                .map_err(|source| io_error(&self.path, "appending keys", source))
        };
        if let Err(err) = written.and_then(|()| {
            self.file
                .sync_all()
                .map_err(|source| io_error(&self.path, "syncing new keys", source))
        }) {
            // None of the block is handed out; cut it off so that no later open counts it.
            let old = HEADER_LEN + stored * SLOT_LEN_U64;
            let _io = self.io.write().unwrap_or_else(PoisonError::into_inner);
            if let Err(cause) = self.file.set_len(old) {
                // The next open syncs whatever is left: a block never handed out is harmless.
                tracing::warn!(%cause, "an unsynced block of keys could not be cut off");
            }
            return Err(err);
        }
        Ok(())
    }

    fn zero(&self, slot: u64) -> Result<(), VaultError> {
        let offset = slot_offset(slot).ok_or(VaultError::Exhausted { slot })?;
        {
            let _io = self.io.write().unwrap_or_else(PoisonError::into_inner);
            self.file
                .write_all_at(&[0; SLOT_LEN], offset)
                .map_err(|source| io_error(&self.path, "overwriting a key", source))?;
        }
        self.file
            .sync_data()
            .map_err(|source| io_error(&self.path, "syncing a shred", source))
    }
}

/// Creates the vault file whole, holding only the header: written to a temporary file (mode
/// 0600), synced, renamed into place and the folder synced. Creates the folder (mode 0700)
/// first if it is missing, and then syncs its parent too.
fn create(dir: &Path, path: &Path) -> Result<File, VaultError> {
    let created_dir = match fs::metadata(dir) {
        Ok(_) => false,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| io_error(dir, "creating its folder", source))?;
            true
        }
        Err(source) => return Err(io_error(dir, "reading its folder", source)),
    };
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(&tmp, "removing a leftover temporary file", source)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| io_error(&tmp, "creating it", source))?;
    file.write_all_at(MAGIC, 0)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&tmp, "writing its header", source))?;
    fs::rename(&tmp, path).map_err(|source| io_error(path, "renaming it into place", source))?;
    sync_dir(dir)?;
    if created_dir && let Some(parent) = dir.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        sync_dir(parent)?;
    }
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| io_error(dir, "syncing its folder", source))
}

/// The file offset of slot `slot`, if the slot ends within the largest file offset.
fn slot_offset(slot: u64) -> Option<u64> {
    let offset = slot.checked_mul(SLOT_LEN_U64)?.checked_add(HEADER_LEN)?;
    (offset.checked_add(SLOT_LEN_U64)? <= MAX_OFFSET).then_some(offset)
}

/// A slot's tag and key.
fn split_slot(bytes: &[u8; SLOT_LEN]) -> ([u8; TAG_LEN], &[u8; BodyKey::LEN]) {
    let [a, b, c, d, e, f, g, h, key @ ..] = bytes;
    ([*a, *b, *c, *d, *e, *f, *g, *h], key)
}

fn io_error(path: &Path, context: &'static str, source: io::Error) -> VaultError {
    VaultError::Io {
        path: path.to_owned(),
        context,
        source,
    }
}

/// The associated data of a sealed body: prefix, leaf index, key id.
fn sealed_aad(index: u64, id: KeyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SEALED_AAD_PREFIX.len() + 8 + KeyId::LEN);
    aad.extend_from_slice(SEALED_AAD_PREFIX);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.extend_from_slice(&id.to_bytes());
    aad
}

/// Seals `body` (a private body) stored at leaf `index` under `key`, whose id is `id`:
/// returns `id (16) || nonce (12) || ChaCha20-Poly1305 ciphertext and tag`, with associated
/// data `b"akashi/sealed-body/v1" || index (u64, big-endian) || id`. The nonce is drawn from
/// `rng`.
///
/// # Panics
///
/// If `body` is longer than ChaCha20 can encrypt under one nonce (256 GiB).
pub fn seal_body(
    key: &BodyKey,
    id: KeyId,
    index: u64,
    body: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<u8> {
    seal_with(key, id, &sealed_aad(index, id), body, rng)
}

/// The associated data of a sealed record: prefix, the context's length and bytes, key id.
fn record_aad(context: &[u8], id: KeyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RECORD_AAD_PREFIX.len() + 8 + context.len() + KeyId::LEN);
    aad.extend_from_slice(RECORD_AAD_PREFIX);
    aad.extend_from_slice(&(context.len() as u64).to_be_bytes());
    aad.extend_from_slice(context);
    aad.extend_from_slice(&id.to_bytes());
    aad
}

/// Seals `data` — a record other than a body, such as a patient's consent state — under `key`,
/// bound to `context` (the record's name, so that it cannot be moved to another): the same
/// layout as [`seal_body`], with associated data
/// `b"akashi/sealed-record/v1" || len(context) (u64, big-endian) || context || id`.
///
/// # Panics
///
/// If `data` is longer than ChaCha20 can encrypt under one nonce (256 GiB).
pub fn seal_record(
    key: &BodyKey,
    id: KeyId,
    context: &[u8],
    data: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<u8> {
    seal_with(key, id, &record_aad(context, id), data, rng)
}

/// Opens a record sealed by [`seal_record`] for `context`.
///
/// # Errors
///
/// As [`open_body`].
pub fn open_record(key: &BodyKey, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let id = sealed_key_id(sealed).ok_or(VaultError::Sealed)?;
    open_with(key, &record_aad(context, id), sealed)
}

fn seal_with(
    key: &BodyKey,
    id: KeyId,
    aad: &[u8],
    body: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    #[expect(
        clippy::expect_used,
        reason = "ChaCha20-Poly1305 fails only for a message over 256 GiB, which no body is"
    )]
    let ciphertext = cipher
        .encrypt((&nonce).into(), Payload { msg: body, aad })
        .expect("a body shorter than 256 GiB seals");
    let mut sealed = Vec::with_capacity(KeyId::LEN + NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&id.to_bytes());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed
}

/// The key id a sealed record names (`None` when it is too short to hold one).
pub fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    sealed
        .first_chunk::<{ KeyId::LEN }>()
        .map(|id| KeyId::from_bytes(*id))
}

/// Opens a record sealed by [`seal_body`] for leaf `index`.
///
/// # Errors
///
/// [`VaultError::Sealed`] when the record is malformed, was sealed for another index, was
/// tampered with, or `key` is not the key it was sealed under.
pub fn open_body(key: &BodyKey, index: u64, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let id = sealed_key_id(sealed).ok_or(VaultError::Sealed)?;
    open_with(key, &sealed_aad(index, id), sealed)
}

fn open_with(key: &BodyKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < SEALED_MIN_LEN {
        return Err(VaultError::Sealed);
    }
    let (_, rest) = sealed
        .split_first_chunk::<{ KeyId::LEN }>()
        .ok_or(VaultError::Sealed)?;
    let (nonce, ciphertext) = rest
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(VaultError::Sealed)?;
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| VaultError::Sealed)
}

#[cfg(test)]
mod tests;

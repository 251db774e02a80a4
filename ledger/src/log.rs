//! The log: open and recover, append a batch durably, and read entries, bodies and proofs.
//!
//! # Life of a batch (see also the crate docs, "Life of an entry")
//!
//! 1. Leaf hashes extend a *copy* of the in-memory [`Frontier`]; tiles that fill up are
//!    collected.
//! 2. Entry chunks, body chunks and the new full tiles are written to the store. None of this is
//!    visible as log content yet: everything at or beyond the committed size is ignored by
//!    readers and removed by recovery.
//! 3. The new root is computed, a checkpoint for the new size is signed and stored.
//! 4. The **commit record** is written: new size, the signed checkpoint, and every state write of
//!    the batch. This single put is the commit point.
//! 5. The state writes are applied to the store.
//! 6. The store is synced (one flush and `fdatasync` for the whole batch), the checkpoint is
//!    written to the anchor (when the log has one, see [`crate::anchor`]) and synced, and only
//!    then the new frontier and checkpoint are published and callers answered.
//!
//! A crash before step 4 leaves the old commit record: recovery deletes the partial batch. A
//! crash after it re-applies the recorded state writes (they are idempotent). So the derived
//! state can never disagree with the log, without paying for the engine's multi-key batches.
//! A failure after the commit point poisons the log (it refuses writes until reopened), because
//! the process can no longer tell what is durable.
//!
//! This module does not decide what goes into entries or state: the sequencer's state machine
//! does.

use std::sync::{
    Arc, Mutex, OnceLock, RwLock,
    atomic::{AtomicBool, Ordering},
};

use crate::{
    anchor::{Anchor, AnchorError},
    checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint},
    chunk::{self, ChunkError, Raw, Record, Stored},
    codec::{self, Reader},
    entry::{Body, Leaf},
    hash::{Hash, LeafIndex, TreeSize, hash_leaf},
    layout,
    note::{NoteSigner, NoteVerifier},
    proof::{
        ConsistencyProof, InclusionProof, ProveError, prove_consistency, prove_inclusion, tree_root,
    },
    store::{Store, StoreError},
    tree::{self, Frontier, TILE_HEIGHT, TILE_WIDTH, TileCache, TreeError, TreeReader},
    vault::{self, KeyId, KeyVault, VaultError},
};

/// An entry as a batch writes it: the leaf's bytes, and the body's (sealed or not).
type EncodedEntry = (Vec<u8>, (bool, Vec<u8>));

/// The most leaves [`Log::leaves`] returns in one call.
pub const MAX_LEAVES_PER_READ: u64 = 1024;
/// The most entries one batch may hold.
pub const MAX_BATCH_ENTRIES: usize = 65_536;

const COMMIT_MAGIC: &[u8] = b"akashi-commit/v1";

/// A write to the derived state, made atomically with the entries of its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// Removes a key.
    Delete(Vec<u8>),
    /// Sets a key.
    Put(Vec<u8>, Vec<u8>),
}

/// A state key and its value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// One entry to append: its public leaf and private body.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The public leaf.
    pub leaf: Leaf,
    /// The private body the leaf commits to.
    pub body: Body,
    /// The key of the log's vault to store the body sealed under (crypto-shredding: see
    /// [`crate::vault`]), or `None` to store it in the clear. The commitment is to the body in
    /// the clear either way.
    pub seal: Option<KeyId>,
}

/// What a committed batch produced.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Index of the batch's first entry.
    pub first: LeafIndex,
    /// Leaf hashes of the batch's entries, in order.
    pub leaf_hashes: Vec<Hash>,
    /// The signed checkpoint of the tree that ends with this batch.
    pub checkpoint: Arc<SignedCheckpoint>,
}

/// A batch written by [`Log::stage_batch`] but not yet synced: nothing of it is acknowledged or
/// visible to readers of the tree until [`Log::finish_batch`] made it durable.
#[must_use = "a staged batch is not durable until finish_batch"]
pub struct Staged {
    committed: Committed,
    tip: Published,
}

/// A batch whose store sync finished ([`Log::sync_batch`]): durable, but not acknowledged until
/// [`Log::anchor_batch`] has advanced the checkpoint anchor past it.
#[must_use = "a synced batch is not acknowledged until anchor_batch"]
pub struct Synced {
    staged: Staged,
}

impl Synced {
    /// The tree size after this batch.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.staged.size()
    }
}

impl std::fmt::Debug for Synced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synced")
            .field("staged", &self.staged)
            .finish()
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl Staged {
    /// The tree size once this batch is in.
    pub fn size(&self) -> u64 {
        self.committed.checkpoint.checkpoint().size.get()
    }
}

/// A receipt: proof that an entry is in a signed tree (docs/design.md §4).
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Position of the entry.
    pub leaf_index: LeafIndex,
    /// `SHA-256(0x00 || leaf)`.
    pub leaf_hash: Hash,
    /// A signed checkpoint of a tree that contains the entry.
    pub checkpoint: Arc<SignedCheckpoint>,
    /// The inclusion proof of the entry against that checkpoint.
    pub inclusion_proof: InclusionProof,
}

/// Why the log could not be opened. The log refuses to serve until the cause is fixed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored chunks are damaged or missing.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Stored tree hashes are damaged or missing.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The commit record does not decode.
    #[error("the commit record is damaged")]
    BadCommitRecord,
    /// The store holds entries but no commit record.
    #[error("the store holds log data but no commit record")]
    DataWithoutCommit,
    /// The stored checkpoint does not verify with this log's key.
    #[error("the last signed checkpoint does not verify with this log's key")]
    CheckpointSignature(#[source] CheckpointError),
    /// The stored tree does not reproduce the last signed checkpoint.
    #[error(
        "the stored tree does not reproduce the last signed checkpoint: at size {size} it hashes \
         to {computed}, the checkpoint says {signed}"
    )]
    CheckpointMismatch {
        /// Tree size of the checkpoint.
        size: u64,
        /// Root recomputed from the store.
        computed: Hash,
        /// Root in the signed checkpoint.
        signed: Hash,
    },
    /// A stored full tile is internally inconsistent or disagrees with the level above.
    #[error("stored tile ({level}, {index}) is inconsistent")]
    TileMismatch {
        /// Tile level.
        level: u8,
        /// Tile index.
        index: u64,
    },
    /// The signing key could not sign the first checkpoint.
    #[error(transparent)]
    Sign(#[from] CheckpointError),
    /// The checkpoint anchor could not be read or written.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    /// The store holds no log, but this log has acknowledged a checkpoint: the store was lost,
    /// deleted or replaced.
    #[error(
        "the store holds no log, but this log has signed and acknowledged a checkpoint of size \
         {anchored_size}: the store was lost or replaced"
    )]
    StoreEmpty {
        /// Tree size of the newest acknowledged checkpoint.
        anchored_size: u64,
    },
    /// The store holds fewer entries than the newest checkpoint this log has acknowledged: a
    /// damaged store that lost its tail, or a rolled-back one.
    #[error(
        "the store holds {store_size} entries, but this log has signed and acknowledged a \
         checkpoint of size {anchored_size}: entries from {store_size} on are missing"
    )]
    StoreBehindAnchor {
        /// Tree size the store holds.
        store_size: u64,
        /// Tree size of the newest acknowledged checkpoint.
        anchored_size: u64,
    },
    /// The stored tree disagrees with the newest acknowledged checkpoint at its size.
    #[error(
        "the stored tree at size {size} hashes to {stored}, but the newest checkpoint this log \
         has acknowledged says {anchored}: the store is not the log that was served"
    )]
    AnchorMismatch {
        /// Tree size of the acknowledged checkpoint.
        size: u64,
        /// Root of the stored tree at that size.
        stored: Hash,
        /// Root in the acknowledged checkpoint.
        anchored: Hash,
    },
}

impl OpenError {
    /// The first entry known to be missing or damaged, when the error names one.
    pub fn first_bad_entry(&self) -> Option<u64> {
        match self {
            Self::StoreEmpty { .. } => Some(0),
            Self::StoreBehindAnchor { store_size, .. } => Some(*store_size),
            Self::Chunk(ChunkError::Missing { index }) => Some(*index),
            Self::Chunk(ChunkError::Malformed { start }) => Some(*start),
            _ => None,
        }
    }
}

/// Why a batch was not committed. Nothing of it is visible, and no caller may be told otherwise.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The store failed before the commit point; the log stays usable.
    #[error("storage failure before commit: {0}")]
    Store(#[from] StoreError),
    /// Tree hashes could not be read.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The checkpoint could not be signed.
    #[error("checkpoint signing failed: {0}")]
    Sign(#[from] CheckpointError),
    /// A failure after the commit point, or an earlier one, poisoned the log.
    #[error("the log is poisoned by an earlier storage failure and refuses writes until reopened")]
    Poisoned,
    /// An entry is malformed (a bug in the caller that built it).
    #[error("invalid entry at offset {offset} of the batch: {source}")]
    InvalidEntry {
        /// Position in the batch.
        offset: usize,
        /// What is wrong.
        source: crate::entry::EntryError,
    },
    /// The batch holds more entries than allowed.
    #[error("batch of {got} entries exceeds the limit of {max}")]
    TooLarge {
        /// Entries in the batch.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An entry is to be sealed under a key the log cannot use: it has no vault, the key was
    /// shredded, or the vault failed. Nothing of the batch is written.
    #[error("entry at offset {offset} of the batch cannot be sealed: {source}")]
    Seal {
        /// Position in the batch.
        offset: usize,
        /// Why.
        source: SealError,
    },
}

/// Why a body could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The log was opened without a vault.
    #[error("the log has no key vault")]
    NoVault,
    /// The key is not in the vault (shredded, or never allocated).
    #[error("key {0:?} is not in the vault")]
    NoKey(KeyId),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// The argument of a read that names a position in the tree. Exhaustive on purpose: the server
/// maps each to the request field it names, and a new one must be mapped too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Position {
    /// The size of the tree a proof or read is asked for.
    #[error("tree size")]
    TreeSize,
    /// The index of a leaf.
    #[error("leaf index")]
    LeafIndex,
    /// The newer size of a consistency proof.
    #[error("new size")]
    NewSize,
    /// The first leaf of a range.
    #[error("start")]
    Start,
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The request names positions beyond the tree.
    #[error("{what} {got} is beyond the tree size {size}")]
    OutOfRange {
        /// Which argument.
        what: Position,
        /// Its value.
        got: u64,
        /// The current tree size.
        size: u64,
    },
    /// The arguments do not form a valid proof request (an old size larger than the new one,
    /// a consistency proof from the empty tree, a range that is not a subtree).
    #[error("invalid proof request: {0}")]
    InvalidRequest(#[source] ProveError<std::convert::Infallible>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored chunks are damaged.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Stored tree hashes are damaged.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A stored leaf does not hash to the tree's leaf hash: the store was tampered with.
    #[error("stored leaf {index} does not match the tree")]
    LeafMismatch {
        /// The leaf's index.
        index: u64,
    },
    /// A sealed body cannot be opened: the log has no vault, the vault failed, or the sealed
    /// record is damaged or was moved.
    #[error("the sealed body of entry {index} cannot be opened: {source}")]
    Sealed {
        /// The entry's index.
        index: u64,
        /// Why.
        source: SealError,
    },
}

/// What is published to readers after each commit.
#[derive(Clone)]
struct Published {
    frontier: Arc<Frontier>,
    checkpoint: Arc<SignedCheckpoint>,
}

/// The log. Share it behind an `Arc`; reads are concurrent, appends are serialised.
pub struct Log {
    /// The vault of the keys bodies are sealed under, once set ([`Log::set_vault`]). Declared
    /// before `store`, so that it is dropped first: its file lock is let go before a PostgreSQL
    /// store's lease, and a standby that takes the lease finds the vault free.
    vault: OnceLock<Arc<KeyVault>>,
    store: Arc<dyn Store>,
    signer: NoteSigner,
    verifier: NoteVerifier,
    published: RwLock<Published>,
    /// The tip: the newest batch written, synced or not. Held while writing, so writes are
    /// serialised and each batch builds on the one before it.
    writer: Mutex<Published>,
    tiles: TileCache,
    poisoned: AtomicBool,
    /// A batch failed before its commit point and may have left data beyond the committed size.
    dirty: AtomicBool,
    /// The newest acknowledged checkpoint, kept beside the store (absent for logs opened
    /// without one, such as in-memory test logs).
    anchor: Option<Mutex<Anchor>>,
}

/// Whether `store` holds a log's commit record: a log was committed into it (what
/// [`Log::open`] recovers from), read without writing anything.
///
/// # Errors
///
/// [`StoreError`] when the store cannot be read.
pub fn holds_committed_log(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.get(layout::COMMIT)?.is_some())
}

impl Log {
    /// Opens the log in `store`, signing checkpoints with `signer` (whose key name is the
    /// checkpoint origin). A new store gets a signed checkpoint of the empty tree.
    ///
    /// Recovery: re-applies the last commit record's state writes, removes data of a batch that
    /// did not commit, rebuilds the frontier, and refuses to open unless the stored tree
    /// reproduces the last signed checkpoint and the newest full tiles are consistent.
    ///
    /// # Errors
    ///
    /// Returns [`OpenError`] saying what is damaged or differs.
    pub fn open(store: Arc<dyn Store>, signer: NoteSigner) -> Result<Self, OpenError> {
        Self::open_inner(store, signer, None)
    }

    /// Opens the log as [`Log::open`] does, and holds it to `anchor`: the newest checkpoint
    /// it ever acknowledged (see [`crate::anchor`]). Every finished batch advances the anchor
    /// before it is acknowledged.
    ///
    /// On open, a store at the anchor's size must have the anchor's root; a store ahead of it
    /// (a crash after the store's sync and before the anchor's: that batch was never
    /// acknowledged) must hold the anchor's tree as a prefix, and the anchor advances; a store
    /// behind it, or empty, is refused before anything is written. An anchor without a
    /// checkpoint next to a store that holds a log (a data dir from before anchors) adopts the
    /// store's checkpoint, with a warning.
    ///
    /// # Errors
    ///
    /// As [`Log::open`], plus [`OpenError::StoreEmpty`], [`OpenError::StoreBehindAnchor`],
    /// [`OpenError::AnchorMismatch`] and [`OpenError::Anchor`].
    pub fn open_anchored(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        anchor: Anchor,
    ) -> Result<Self, OpenError> {
        Self::open_inner(store, signer, Some(anchor))
    }

    fn open_inner(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        mut anchor: Option<Anchor>,
    ) -> Result<Self, OpenError> {
        let verifier = signer.verifier();
        let anchored = anchor
            .as_ref()
            .and_then(Anchor::checkpoint)
            .map(|c| (c.checkpoint().size.get(), c.checkpoint().root));
        let Some(record) = store.get(layout::COMMIT)? else {
            if let Some((anchored_size, _)) = anchored {
                return Err(OpenError::StoreEmpty { anchored_size });
            }
            return Self::create(store, signer, verifier, anchor);
        };
        let record = CommitRecord::decode(&record).ok_or(OpenError::BadCommitRecord)?;
        let checkpoint = SignedCheckpoint::verify(&record.checkpoint, &verifier)
            .map_err(OpenError::CheckpointSignature)?;
        if checkpoint.checkpoint().size.get() != record.size {
            return Err(OpenError::BadCommitRecord);
        }
        let size = record.size;
        if let Some((anchored_size, _)) = anchored
            && size < anchored_size
        {
            return Err(OpenError::StoreBehindAnchor {
                store_size: size,
                anchored_size,
            });
        }
        // Read-only until the anchor's checks pass: a refused store is left as it was found.
        let frontier = rebuild_frontier(store.as_ref(), size)?;
        if let Some((anchored_size, anchored_root)) = anchored {
            let stored = if anchored_size == size {
                checkpoint.checkpoint().root
            } else {
                let reader = TreeReader::new(store.as_ref(), &frontier);
                tree_root(&reader, TreeSize(anchored_size)).map_err(prove_to_tree)?
            };
            if stored != anchored_root {
                return Err(OpenError::AnchorMismatch {
                    size: anchored_size,
                    stored,
                    anchored: anchored_root,
                });
            }
        }
        apply_state_writes(store.as_ref(), &record.writes)?;
        remove_uncommitted(store.as_ref(), &frontier)?;
        let reader = TreeReader::new(store.as_ref(), &frontier);
        let computed = tree_root(&reader, TreeSize(size)).map_err(prove_to_tree)?;
        if computed != checkpoint.checkpoint().root {
            return Err(OpenError::CheckpointMismatch {
                size,
                computed,
                signed: checkpoint.checkpoint().root,
            });
        }
        check_newest_tiles(store.as_ref(), &frontier)?;
        if let Some((anchored_size, _)) = anchored
            && anchored_size < size
        {
            // INVARIANT: the anchor advances after every acknowledgement, so the entries past it
            // were made durable but their callers were never answered (they may have been told
            // UNAVAILABLE). Kept beside the log, durable before the anchor moves past them.
            store.put(
                &layout::indexed(layout::UNACKNOWLEDGED, anchored_size),
                &size.to_be_bytes(),
            )?;
        }
        store.sync()?;
        if let Some(anchor) = &mut anchor {
            match anchored {
                None => {
                    tracing::warn!(
                        size,
                        path = %anchor.path().display(),
                        "no checkpoint anchor beside this store (a store written by an older \
                         version, or a new server of a log kept in a database): adopting its \
                         last checkpoint as the anchor"
                    );
                    anchor.advance(&checkpoint)?;
                }
                Some((anchored_size, _)) if anchored_size < size => {
                    tracing::info!(
                        anchored_size,
                        size,
                        "the store is ahead of the checkpoint anchor (a batch synced but never \
                         acknowledged): advancing the anchor"
                    );
                    anchor.advance(&checkpoint)?;
                }
                Some(_) => {}
            }
        }
        Ok(Self::assemble(
            store, signer, verifier, frontier, checkpoint, anchor,
        ))
    }

    fn create(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        verifier: NoteVerifier,
        mut anchor: Option<Anchor>,
    ) -> Result<Self, OpenError> {
        // The empty tree's checkpoint alone is what a creation interrupted before its commit
        // record leaves behind: it is written again below, not mistaken for log data.
        let checkpoints_after_empty = layout::indexed(layout::CHECKPOINTS, 1);
        for (start, end) in [
            (&[layout::ENTRIES][..], &[layout::ENTRIES + 1][..]),
            (&[layout::TILES][..], &[layout::TILES + 1][..]),
            (&checkpoints_after_empty[..], &[layout::CHECKPOINTS + 1][..]),
        ] {
            if !store.scan(start, end, 1)?.is_empty() {
                return Err(OpenError::DataWithoutCommit);
            }
        }
        let frontier = Frontier::empty();
        let checkpoint = SignedCheckpoint::sign(
            Checkpoint {
                origin: signer.name().to_string(),
                size: TreeSize(0),
                root: crate::hash::empty_root(),
                extensions: Vec::new(),
            },
            &signer,
        )?;
        store.put(
            &layout::indexed(layout::CHECKPOINTS, 0),
            checkpoint.note().as_bytes(),
        )?;
        let record = CommitRecord {
            size: 0,
            checkpoint: checkpoint.note().to_owned(),
            writes: Vec::new(),
        };
        store.put(layout::COMMIT, &record.encode())?;
        store.sync()?;
        if let Some(anchor) = &mut anchor {
            anchor.advance(&checkpoint)?;
        }
        Ok(Self::assemble(
            store, signer, verifier, frontier, checkpoint, anchor,
        ))
    }

    fn assemble(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        verifier: NoteVerifier,
        frontier: Frontier,
        checkpoint: SignedCheckpoint,
        anchor: Option<Anchor>,
    ) -> Self {
        let published = Published {
            frontier: Arc::new(frontier),
            checkpoint: Arc::new(checkpoint),
        };
        Self {
            store,
            signer,
            verifier,
            published: RwLock::new(published.clone()),
            writer: Mutex::new(published),
            tiles: TileCache::default(),
            poisoned: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            anchor: anchor.map(Mutex::new),
            vault: OnceLock::new(),
        }
    }

    /// The runs of entries that recovery found durable but never acknowledged (`start..end`,
    /// in log order): a crash or a failed sync after their batch reached the disk and before
    /// the checkpoint anchor advanced. Their callers were never answered, or were told
    /// `UNAVAILABLE`; no allow among them was ever sent. Known only where the log is anchored.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub fn unacknowledged(&self) -> Result<Vec<std::ops::Range<u64>>, StoreError> {
        let start = [layout::UNACKNOWLEDGED];
        let end = [layout::UNACKNOWLEDGED + 1];
        let mut runs = Vec::new();
        for (key, value) in self.store.scan(&start, &end, usize::MAX)? {
            let first = layout::index_of(&key);
            let last = <[u8; 8]>::try_from(&value[..]).ok().map(u64::from_be_bytes);
            if let (Some(first), Some(last)) = (first, last) {
                runs.push(first..last);
            }
        }
        Ok(runs)
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The newest signed checkpoint.
    pub fn checkpoint(&self) -> Arc<SignedCheckpoint> {
        self.published().checkpoint
    }

    /// The committed tree size.
    pub fn size(&self) -> TreeSize {
        self.published().checkpoint.checkpoint().size
    }

    /// Whether an earlier storage failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// The signed checkpoint stored for exactly `size`, if one was issued.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError`] when the store fails.
    pub fn checkpoint_at(&self, size: TreeSize) -> Result<Option<String>, ReadError> {
        if size > self.size() {
            return Ok(None);
        }
        let note = self
            .store
            .get(&layout::indexed(layout::CHECKPOINTS, size.get()))?;
        Ok(note.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Every stored signed checkpoint with size in `[from, to)`, up to `limit`, in size order.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError`] when the store fails.
    pub fn checkpoints(
        &self,
        from: TreeSize,
        to: TreeSize,
        limit: usize,
    ) -> Result<Vec<String>, ReadError> {
        let to = TreeSize(to.get().min(self.size().get().saturating_add(1)));
        let found = self.store.scan(
            &layout::indexed(layout::CHECKPOINTS, from.get()),
            &layout::indexed(layout::CHECKPOINTS, to.get()),
            limit,
        )?;
        Ok(found
            .into_iter()
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect())
    }

    /// The RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] when `size` exceeds the committed size or `index` is
    /// not below `size`.
    pub fn inclusion_proof(
        &self,
        index: LeafIndex,
        size: TreeSize,
    ) -> Result<InclusionProof, ReadError> {
        let published = self.published();
        let current = published.checkpoint.checkpoint().size.get();
        if size.get() > current {
            return Err(out_of_range(Position::TreeSize, size.get(), current));
        }
        if index.get() >= size.get() {
            return Err(out_of_range(Position::LeafIndex, index.get(), size.get()));
        }
        let reader = self.reader(&published.frontier);
        prove_inclusion(&reader, index, size).map_err(prove_error)
    }

    /// The RFC 9162 consistency proof from the tree of `old` leaves to the tree of `new`.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] when `new` exceeds the committed size, and
    /// [`ReadError::InvalidRequest`] when `old > new`.
    pub fn consistency_proof(
        &self,
        old: TreeSize,
        new: TreeSize,
    ) -> Result<ConsistencyProof, ReadError> {
        let published = self.published();
        let current = published.checkpoint.checkpoint().size.get();
        if new.get() > current {
            return Err(out_of_range(Position::NewSize, new.get(), current));
        }
        if old > new {
            return Err(ReadError::InvalidRequest(
                ProveError::OldSizeLargerThanNew { old, new },
            ));
        }
        let reader = self.reader(&published.frontier);
        prove_consistency(&reader, old, new).map_err(prove_error)
    }

    /// The root hash of the tree of `size` leaves.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] when `size` exceeds the committed size.
    pub fn root(&self, size: TreeSize) -> Result<Hash, ReadError> {
        let published = self.published();
        let current = published.checkpoint.checkpoint().size.get();
        if size.get() > current {
            return Err(out_of_range(Position::TreeSize, size.get(), current));
        }
        let reader = TreeReader::new(self.store.as_ref(), &published.frontier);
        tree_root(&reader, size).map_err(prove_error)
    }

    /// The hash of leaf `index`, read from the tree.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] for an index at or beyond the committed size.
    pub fn leaf_hash(&self, index: LeafIndex) -> Result<Hash, ReadError> {
        let published = self.published();
        let current = published.checkpoint.checkpoint().size.get();
        if index.get() >= current {
            return Err(out_of_range(Position::LeafIndex, index.get(), current));
        }
        let reader = TreeReader::new(self.store.as_ref(), &published.frontier);
        Ok(crate::proof::NodeSource::node(&reader, 0, index.get())?)
    }

    /// Up to [`MAX_LEAVES_PER_READ`] public leaves starting at `start`, each checked against the
    /// tree's leaf hash before it is returned (a tampered store is reported, never served).
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] when `start` is at or beyond the committed size.
    pub fn leaves(&self, start: LeafIndex, count: u64) -> Result<Vec<Vec<u8>>, ReadError> {
        let published = self.published();
        let size = published.checkpoint.checkpoint().size.get();
        if start.get() >= size {
            return Err(out_of_range(Position::Start, start.get(), size));
        }
        let count = count.min(MAX_LEAVES_PER_READ).min(size - start.get());
        let records = chunk::read(self.store.as_ref(), layout::ENTRIES, start.get(), count)?;
        let reader = TreeReader::new(self.store.as_ref(), &published.frontier);
        let mut out = Vec::with_capacity(records.len());
        for (offset, record) in records.into_iter().enumerate() {
            let index = start.get() + offset as u64;
            let Record::Present(leaf) = record else {
                return Err(ReadError::LeafMismatch { index });
            };
            let stored = crate::proof::NodeSource::node(&reader, 0, index)?;
            if hash_leaf(&leaf) != stored {
                return Err(ReadError::LeafMismatch { index });
            }
            out.push(leaf);
        }
        Ok(out)
    }

    /// The private body of entry `index`, or [`Record::Redacted`].
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] when `index` is at or beyond the committed size.
    pub fn body(&self, index: LeafIndex) -> Result<Record, ReadError> {
        Ok(self
            .bodies(index, 1)?
            .into_iter()
            .next()
            .unwrap_or(Record::Redacted))
    }

    /// Up to [`MAX_LEAVES_PER_READ`] private bodies starting at `start`.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] when `start` is at or beyond the committed size.
    pub fn bodies(&self, start: LeafIndex, count: u64) -> Result<Vec<Record>, ReadError> {
        let size = self.size().get();
        if start.get() >= size {
            return Err(out_of_range(Position::LeafIndex, start.get(), size));
        }
        let count = count.min(MAX_LEAVES_PER_READ).min(size - start.get());
        let raw = chunk::read_raw(self.store.as_ref(), layout::BODIES, start.get(), count)?;
        raw.into_iter()
            .enumerate()
            .map(|(offset, raw)| self.open_raw(start.get() + offset as u64, raw))
            .collect()
    }

    /// A stored body as readers see it: a sealed one opened, or [`Record::Redacted`] when its
    /// key was shredded (a lawful erasure that reaches every copy of the store).
    fn open_raw(&self, index: u64, raw: Raw) -> Result<Record, ReadError> {
        let sealed = match raw {
            Raw::Present(bytes) => return Ok(Record::Present(bytes)),
            Raw::Redacted => return Ok(Record::Redacted),
            Raw::Sealed(sealed) => sealed,
        };
        let failed = |source: SealError| ReadError::Sealed { index, source };
        let vault = self.vault.get().ok_or_else(|| failed(SealError::NoVault))?;
        let id = vault::sealed_key_id(&sealed)
            .ok_or_else(|| failed(SealError::Vault(VaultError::Sealed)))?;
        match vault.key(id).map_err(|e| failed(e.into()))? {
            None => {
                // The key may have been destroyed just after this read, by an erasure that
                // re-sealed the body under the patient's new key first: read it once more.
                let again = chunk::read_raw(self.store.as_ref(), layout::BODIES, index, 1)?;
                match again.into_iter().next() {
                    Some(Raw::Sealed(now)) if vault::sealed_key_id(&now) != Some(id) => {
                        let id = vault::sealed_key_id(&now)
                            .ok_or_else(|| failed(SealError::Vault(VaultError::Sealed)))?;
                        match vault.key(id).map_err(|e| failed(e.into()))? {
                            None => Ok(Record::Redacted),
                            Some(key) => Ok(Record::Present(
                                vault::open_body(&key, index, &now)
                                    .map_err(|e| failed(e.into()))?,
                            )),
                        }
                    }
                    _ => Ok(Record::Redacted),
                }
            }
            Some(key) => Ok(Record::Present(
                vault::open_body(&key, index, &sealed).map_err(|e| failed(e.into()))?,
            )),
        }
    }

    /// `body` (encoded) sealed under key `id` of the vault, for leaf `index`.
    fn seal(&self, id: KeyId, index: u64, body: &[u8]) -> Result<Vec<u8>, SealError> {
        let vault = self.vault.get().ok_or(SealError::NoVault)?;
        let key = vault.key(id)?.ok_or(SealError::NoKey(id))?;
        Ok(vault::seal_body(
            &key,
            id,
            index,
            body,
            &mut rand::rngs::OsRng,
        ))
    }

    /// Sets the vault whose keys bodies are sealed under ([`NewEntry::seal`]) and opened with.
    /// A log has one vault for its lifetime: returns `false` (and keeps the first) when one is
    /// set already.
    pub fn set_vault(&self, vault: Arc<KeyVault>) -> bool {
        self.vault.set(vault).is_ok()
    }

    /// The vault, when set.
    pub fn vault(&self) -> Option<&Arc<KeyVault>> {
        self.vault.get()
    }

    /// Deletes the private bodies of `indices` (a lawful erasure), in the clear or sealed, with
    /// one sync at the end. Leaves, commitments and proofs stay valid. Returns how many bodies
    /// were there. The caller destroys the keys of sealed copies elsewhere (backups) with
    /// [`KeyVault::shred`].
    ///
    /// # Errors
    ///
    /// As [`Log::redact_body`]; indices before a failure may already be deleted.
    pub fn redact_bodies(&self, indices: &[LeafIndex]) -> Result<u64, ReadError> {
        self.rewrite_bodies(indices, "a redaction", |_, record| {
            Ok((!matches!(record, Raw::Redacted)).then_some(Raw::Redacted))
        })
    }

    /// Rewrites the bodies of `indices` with what `change` makes of each (`None`: leave it),
    /// one chunk at a time under the writer's lock (so that batches are not held up for the
    /// whole of it), each chunk read and written once, then syncs. Returns how many changed.
    fn rewrite_bodies(
        &self,
        indices: &[LeafIndex],
        what: &'static str,
        mut change: impl FnMut(u64, &Raw) -> Result<Option<Raw>, ReadError>,
    ) -> Result<u64, ReadError> {
        let size = self.size().get();
        if let Some(bad) = indices.iter().find(|i| i.get() >= size) {
            return Err(out_of_range(Position::LeafIndex, bad.get(), size));
        }
        let mut sorted: Vec<u64> = indices.iter().map(|i| i.get()).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut changed = 0;
        let mut rest = sorted.as_slice();
        while !rest.is_empty() {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let (done, in_chunk) = chunk::rewrite_chunk::<ReadError>(
                self.store.as_ref(),
                layout::BODIES,
                rest,
                &mut change,
            )?;
            changed += in_chunk;
            rest = rest.get(done.max(1)..).unwrap_or_default();
        }
        self.sync_maintenance(what)?;
        Ok(changed)
    }

    /// Seals the bodies of `indices` under `to` (opening each under the key it is sealed under,
    /// or taking it as it is when stored in the clear), with one sync at the end, so that the
    /// key they were under can be shredded without losing them. Bodies already under `to`,
    /// redacted, or under a key no longer in the vault are left as they are. Returns how many
    /// were sealed anew.
    ///
    /// # Errors
    ///
    /// [`ReadError::Sealed`] when the log has no vault or `to` is not in it, or a body fails to
    /// open; a storage error as [`Log::redact_body`].
    pub fn reseal_bodies(&self, indices: &[LeafIndex], to: KeyId) -> Result<u64, ReadError> {
        let Some(vault) = self.vault.get() else {
            return Ok(0);
        };
        let failed = |index: u64, source: SealError| ReadError::Sealed { index, source };
        let key = vault
            .key(to)
            .map_err(|e| failed(0, e.into()))?
            .ok_or_else(|| failed(0, SealError::NoKey(to)))?;
        self.rewrite_bodies(indices, "a re-sealing", |index, raw| {
            let body = match raw {
                Raw::Redacted => return Ok(None),
                Raw::Present(body) => body.clone(),
                Raw::Sealed(sealed) if vault::sealed_key_id(sealed) == Some(to) => {
                    return Ok(None);
                }
                Raw::Sealed(_) => match self.open_raw(index, raw.clone())? {
                    Record::Present(body) => body,
                    Record::Redacted => return Ok(None),
                },
            };
            let sealed = vault::seal_body(&key, to, index, &body, &mut rand::rngs::OsRng);
            Ok(Some(Raw::Sealed(sealed)))
        })
    }

    /// Syncs the store after maintenance outside batches; a failed sync poisons the log.
    fn sync_maintenance(&self, what: &'static str) -> Result<(), ReadError> {
        if let Err(err) = self.store.sync() {
            // The sync also covered every batch staged but not yet finished: after a failed
            // sync none of them can be trusted to be durable, so none may be acknowledged.
            self.poisoned.store(true, Ordering::SeqCst);
            tracing::error!(cause = %err, what, "a maintenance sync failed: the log is poisoned");
            return Err(err.into());
        }
        Ok(())
    }

    /// Deletes state `key` outside any batch, synced: only for keys that the state machine
    /// keeps for its own bookkeeping and no decision reads (e.g. work done after a batch that
    /// a restart must resume until it is done).
    ///
    /// # Errors
    ///
    /// A storage error; a failed sync poisons the log.
    pub fn delete_bookkeeping(&self, key: &[u8]) -> Result<(), ReadError> {
        {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            self.store.delete(&layout::state(key))?;
        }
        self.sync_maintenance("a bookkeeping deletion")
    }

    /// Deletes the private body of entry `index` (a lawful erasure). The leaf, its commitment
    /// and every proof stay valid. Returns whether a body was there.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError::OutOfRange`] for an index beyond the log, or a storage error; the
    /// redaction is durable when this returns `Ok`. A failed sync poisons the log, as in
    /// [`Log::finish_batch`].
    pub fn redact_body(&self, index: LeafIndex) -> Result<bool, ReadError> {
        let size = self.size().get();
        if index.get() >= size {
            return Err(out_of_range(Position::LeafIndex, index.get(), size));
        }
        let was_present = {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            chunk::redact(self.store.as_ref(), layout::BODIES, index.get())?
        };
        self.sync_maintenance("a redaction")?;
        Ok(was_present)
    }

    /// Reads a state key, as of the last commit.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the store fails.
    pub fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.store.get(&layout::state(key))?.map(|v| v.to_vec()))
    }

    /// Up to `limit` state entries with keys in `[start, end)` (`end` `None`: to the last state
    /// key), in key order.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the store fails.
    pub fn state_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError> {
        let end = end.map_or_else(layout::state_end, layout::state);
        Ok(self
            .store
            .scan(&layout::state(start), &end, limit)?
            .into_iter()
            .filter_map(|(k, v)| Some((k.get(1..)?.to_vec(), v.to_vec())))
            .collect())
    }

    /// The first `width` bottom hashes of tile `(level, index)` (c2sp.org/tlog-tiles), or
    /// `None` when the committed tree does not have that many.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError`] when the store fails.
    pub fn tile(&self, level: u8, index: u64, width: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let published = self.published();
        let size = published.checkpoint.checkpoint().size.get();
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        let available = size.checked_shr(shift).unwrap_or(0);
        let want = index
            .checked_mul(TILE_WIDTH as u64)
            .and_then(|start| start.checked_add(width as u64));
        match want {
            Some(want) if width > 0 && width <= TILE_WIDTH && want <= available => {}
            _ => return Ok(None),
        }
        let reader = TreeReader::new(self.store.as_ref(), &published.frontier);
        Ok(Some(reader.tile_hashes(level, index, width)?))
    }

    /// Appends a batch durably: when this returns `Ok`, every entry and state write survives a
    /// killed process and a power loss, and the returned checkpoint covers them.
    ///
    /// # Errors
    ///
    /// Returns [`CommitError`]; then nothing of the batch is visible or acknowledged.
    pub fn append_batch(
        &self,
        entries: &[NewEntry],
        writes: Vec<StateWrite>,
    ) -> Result<Committed, CommitError> {
        let staged = self.stage_batch(entries, writes)?;
        self.finish_batch(staged)
    }

    /// The first half of [`Log::append_batch`]: writes the batch (entries, bodies, tiles, the
    /// signed checkpoint, the commit record, then the state writes) on top of the previous
    /// batch, synced or not, without syncing. The next batch may be staged while this one is
    /// being synced by [`Log::finish_batch`]; batches must be finished in the order staged.
    ///
    /// State reads ([`Log::state_get`]) see a staged batch's writes at once; the tree, its
    /// checkpoints and proofs show it only once finished. Should the sync fail, the log is
    /// poisoned and nothing staged after the last finished batch is ever acknowledged.
    ///
    /// # Errors
    ///
    /// Returns [`CommitError`]; then nothing of the batch is visible or acknowledged.
    pub fn stage_batch(
        &self,
        entries: &[NewEntry],
        writes: Vec<StateWrite>,
    ) -> Result<Staged, CommitError> {
        self.stage_batch_with(entries, writes, Vec::new())
    }

    /// [`Log::stage_batch`], with extension lines for the batch's checkpoint (C2SP
    /// tlog-checkpoint): what the state machine commits to beside the tree, such as the root of
    /// a map derived from the entries.
    ///
    /// # Errors
    ///
    /// As [`Log::stage_batch`]; an extension line the checkpoint format refuses fails the batch
    /// before anything is committed.
    pub fn stage_batch_with(
        &self,
        entries: &[NewEntry],
        writes: Vec<StateWrite>,
        extensions: Vec<String>,
    ) -> Result<Staged, CommitError> {
        let mut tip = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_poisoned() {
            return Err(CommitError::Poisoned);
        }
        if entries.len() > MAX_BATCH_ENTRIES {
            return Err(CommitError::TooLarge {
                got: entries.len(),
                max: MAX_BATCH_ENTRIES,
            });
        }
        let first = tip.frontier.size();
        let mut encoded = Vec::with_capacity(entries.len());
        for (offset, entry) in entries.iter().enumerate() {
            let (leaf, body) = encode_entry(entry)
                .map_err(|source| CommitError::InvalidEntry { offset, source })?;
            let body = match entry.seal {
                None => (false, body),
                Some(id) => (
                    true,
                    self.seal(id, first + offset as u64, &body)
                        .map_err(|source| CommitError::Seal { offset, source })?,
                ),
            };
            encoded.push((leaf, body));
        }
        if self.dirty.load(Ordering::SeqCst) {
            // Remove what the failed batch wrote before writing over it, so stray chunks can
            // never be mistaken for log content. Readers never look beyond the committed size,
            // so until then the strays are harmless.
            remove_uncommitted(self.store.as_ref(), &tip.frontier)?;
            self.dirty.store(false, Ordering::SeqCst);
        }
        match self.write_batch(&tip, &encoded, writes, extensions) {
            Ok((committed, frontier)) => {
                *tip = Published {
                    frontier: Arc::new(frontier),
                    checkpoint: committed.checkpoint.clone(),
                };
                Ok(Staged {
                    committed,
                    tip: tip.clone(),
                })
            }
            Err(BatchFailure::BeforeCommit(err)) => {
                // Nothing was committed; the next batch first cleans up what this one wrote.
                self.dirty.store(true, Ordering::SeqCst);
                Err(err)
            }
            Err(BatchFailure::AfterCommit(err)) => {
                self.poisoned.store(true, Ordering::SeqCst);
                tracing_error(&err);
                Err(CommitError::Poisoned)
            }
        }
    }

    /// The second half of [`Log::append_batch`]: syncs the store (one sync covers every batch
    /// staged so far), advances the checkpoint anchor (when the log has one) and publishes
    /// `staged` to readers. When this returns `Ok`, the batch
    /// survives a killed process and a power loss.
    ///
    /// # Errors
    ///
    /// [`CommitError::Poisoned`] when the sync fails (then the log refuses every later batch) or
    /// failed before; the batch is then not acknowledged.
    pub fn finish_batch(&self, staged: Staged) -> Result<Committed, CommitError> {
        self.anchor_batch(self.sync_batch(staged)?)
    }

    /// The first half of [`Log::finish_batch`]: syncs the store, so the batch (and every batch
    /// staged before it) is durable. It is not yet acknowledged: [`Log::anchor_batch`] must
    /// follow, in the order the batches were staged. Splitting the two lets a caller sync the
    /// next batch's store writes while this batch's anchor is being synced.
    ///
    /// # Errors
    ///
    /// As [`Log::finish_batch`]; a failed sync poisons the log.
    pub fn sync_batch(&self, staged: Staged) -> Result<Synced, CommitError> {
        if self.is_poisoned() {
            return Err(CommitError::Poisoned);
        }
        if let Err(err) = self.store.sync() {
            // The commit record may or may not have reached the disk: nothing can be trusted
            // to be durable, so nothing more is acknowledged.
            self.poisoned.store(true, Ordering::SeqCst);
            tracing_error(&CommitError::from(err));
            return Err(CommitError::Poisoned);
        }
        Ok(Synced { staged })
    }

    /// The second half of [`Log::finish_batch`]: advances the checkpoint anchor (when the log
    /// has one) to the batch's checkpoint and publishes the batch to readers. Once this returns
    /// `Ok`, the batch may be acknowledged. Batches must be anchored in the order they were
    /// staged; anchoring a batch covers every batch before it.
    ///
    /// # Errors
    ///
    /// [`CommitError::Poisoned`] when the log is poisoned (by this anchor's failed write, or by
    /// the failure of any batch before it): the batch is durable but must not be acknowledged.
    pub fn anchor_batch(&self, synced: Synced) -> Result<Committed, CommitError> {
        let Synced { staged } = synced;
        if self.is_poisoned() {
            return Err(CommitError::Poisoned);
        }
        if let Some(anchor) = &self.anchor {
            let mut anchor = anchor.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(err) = anchor.advance(&staged.committed.checkpoint) {
                // The batch is durable in the store but not anchored: acknowledging it would let
                // a later rollback of it go unnoticed, so nothing more is acknowledged.
                self.poisoned.store(true, Ordering::SeqCst);
                tracing::error!(cause = %err, "the checkpoint anchor's write failed: the log is poisoned");
                return Err(CommitError::Poisoned);
            }
        }
        let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
        // INVARIANT: batches are anchored in the order staged, so the tree only grows.
        if staged.size() > published.checkpoint.checkpoint().size.get() {
            *published = staged.tip;
        }
        Ok(staged.committed)
    }

    /// Whether finishing a batch syncs a checkpoint anchor after the store (see
    /// [`Log::open_anchored`]); without one, [`Log::anchor_batch`] does no I/O.
    #[must_use]
    pub fn is_anchored(&self) -> bool {
        self.anchor.is_some()
    }

    fn write_batch(
        &self,
        old: &Published,
        entries: &[EncodedEntry],
        writes: Vec<StateWrite>,
        extensions: Vec<String>,
    ) -> Result<(Committed, Frontier), BatchFailure> {
        let first = old.frontier.size();
        let mut frontier = Frontier::clone(&old.frontier);
        let mut full = Vec::new();
        let mut leaf_hashes = Vec::with_capacity(entries.len());
        for (leaf, _) in entries {
            let hash = hash_leaf(leaf);
            frontier.append(hash, &mut full);
            leaf_hashes.push(hash);
        }
        let before = BatchFailure::BeforeCommit;
        let leaves = entries.iter().map(|(leaf, _)| Stored::Plain(leaf));
        for (start, bytes) in chunk::build_chunks(first, leaves) {
            self.store
                .put(&layout::indexed(layout::ENTRIES, start), &bytes)
                .map_err(|e| before(e.into()))?;
        }
        let bodies = entries.iter().map(|(_, (sealed, body))| match sealed {
            true => Stored::Sealed(body),
            false => Stored::Plain(body),
        });
        for (start, bytes) in chunk::build_chunks(first, bodies) {
            self.store
                .put(&layout::indexed(layout::BODIES, start), &bytes)
                .map_err(|e| before(e.into()))?;
        }
        for tile in &full {
            self.store
                .put(&layout::tile(tile.level, tile.index), &tile.bytes)
                .map_err(|e| before(e.into()))?;
        }
        let size = frontier.size();
        let root = {
            let reader = TreeReader::new(self.store.as_ref(), &frontier);
            tree_root(&reader, TreeSize(size))
                .map_err(|e| before(CommitError::Tree(prove_to_tree(e))))?
        };
        let checkpoint = SignedCheckpoint::sign(
            Checkpoint {
                origin: self.signer.name().to_string(),
                size: TreeSize(size),
                root,
                extensions,
            },
            &self.signer,
        )
        .map_err(|e| before(e.into()))?;
        self.store
            .put(
                &layout::indexed(layout::CHECKPOINTS, size),
                checkpoint.note().as_bytes(),
            )
            .map_err(|e| before(e.into()))?;
        let record = CommitRecord {
            size,
            checkpoint: checkpoint.note().to_owned(),
            writes,
        };
        self.store
            .put(layout::COMMIT, &record.encode())
            .map_err(|e| before(e.into()))?;
        // INVARIANT: from here on the batch is committed as far as recovery is concerned.
        apply_state_writes(self.store.as_ref(), &record.writes)
            .map_err(|e| BatchFailure::AfterCommit(e.into()))?;
        Ok((
            Committed {
                first: LeafIndex(first),
                leaf_hashes,
                checkpoint: Arc::new(checkpoint),
            },
            frontier,
        ))
    }

    /// Builds the receipt of entry `index` (with hash `leaf_hash`) against `checkpoint`.
    ///
    /// # Errors
    ///
    /// Returns [`ReadError`] when the proof cannot be read.
    pub fn receipt(
        &self,
        index: LeafIndex,
        leaf_hash: Hash,
        checkpoint: Arc<SignedCheckpoint>,
    ) -> Result<Receipt, ReadError> {
        let inclusion_proof = self.inclusion_proof(index, checkpoint.checkpoint().size)?;
        Ok(Receipt {
            leaf_index: index,
            leaf_hash,
            checkpoint,
            inclusion_proof,
        })
    }

    /// Checks the whole store: every leaf against its hash, every full tile internally and
    /// against the level above, the root against the last signed checkpoint, and (when the log
    /// has an anchor) the tree at the anchored size against the anchored checkpoint. Costs O(n).
    ///
    /// # Errors
    ///
    /// [`FsckError::Entry`] with the first entry that is missing, damaged or does not match the
    /// tree; [`FsckError::Tile`], [`FsckError::Root`], [`FsckError::Anchor`] for the tree;
    /// [`FsckError::Read`] when the store cannot be read.
    pub fn fsck(&self) -> Result<FsckReport, FsckError> {
        let published = self.published();
        let size = published.checkpoint.checkpoint().size.get();
        let mut start = 0;
        while start < size {
            match self.leaves(LeafIndex(start), MAX_LEAVES_PER_READ) {
                Ok(leaves) => start += leaves.len() as u64,
                Err(ReadError::LeafMismatch { index }) => return Err(FsckError::Entry { index }),
                Err(err) => return Err(self.first_unreadable(start, size, err)),
            }
        }
        let reader = TreeReader::new(self.store.as_ref(), &published.frontier);
        let mut tiles = 0u64;
        let mut level = 0u8;
        while let Some(count) = size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT)) {
            let full = count / TILE_WIDTH as u64;
            if full == 0 {
                break;
            }
            for index in 0..full {
                let bad = FsckError::Tile { level, index };
                let Ok(tile) = tree::read_full_tile(self.store.as_ref(), level, index) else {
                    return Err(bad);
                };
                let top = tree::check_stored_tile(&tile).ok_or(bad)?;
                let above =
                    crate::proof::NodeSource::node(&reader, (level + 1) * TILE_HEIGHT, index)
                        .map_err(ReadError::Tree)?;
                if above != top {
                    return Err(FsckError::Tile { level, index });
                }
                tiles += 1;
            }
            level += 1;
        }
        let root = tree_root(&reader, TreeSize(size)).map_err(prove_error)?;
        if root != published.checkpoint.checkpoint().root {
            return Err(FsckError::Root {
                size,
                computed: root,
                signed: published.checkpoint.checkpoint().root,
            });
        }
        let anchored = self.anchor.as_ref().and_then(|anchor| {
            let anchor = anchor.lock().unwrap_or_else(|e| e.into_inner());
            anchor
                .checkpoint()
                .map(|c| (c.checkpoint().size.get(), c.checkpoint().root))
        });
        if let Some((anchored_size, anchored_root)) = anchored {
            if anchored_size > size {
                return Err(FsckError::Entry { index: size });
            }
            let stored = tree_root(&reader, TreeSize(anchored_size)).map_err(prove_error)?;
            if stored != anchored_root {
                return Err(FsckError::Anchor {
                    size: anchored_size,
                    stored,
                    anchored: anchored_root,
                });
            }
        }
        Ok(FsckReport {
            leaves: size,
            full_tiles: tiles,
            root,
            anchored_size: anchored.map(|(size, _)| size),
        })
    }

    /// After a failed read of the window at `start`, the first entry of it that cannot be read
    /// on its own, or the read error itself when every entry reads alone.
    fn first_unreadable(&self, start: u64, size: u64, err: ReadError) -> FsckError {
        let end = start.saturating_add(MAX_LEAVES_PER_READ).min(size);
        for index in start..end {
            match self.leaves(LeafIndex(index), 1) {
                Ok(_) => {}
                Err(ReadError::Store(e)) => return FsckError::Read(ReadError::Store(e)),
                Err(_) => return FsckError::Entry { index },
            }
        }
        FsckError::Read(err)
    }

    fn reader<'a>(&'a self, frontier: &'a Frontier) -> TreeReader<'a> {
        TreeReader::with_cache(self.store.as_ref(), frontier, &self.tiles)
    }

    fn published(&self) -> Published {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What [`Log::fsck`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsckReport {
    /// Leaves rehashed and compared.
    pub leaves: u64,
    /// Full tiles rehashed and compared.
    pub full_tiles: u64,
    /// The root of the whole tree, equal to the last signed checkpoint's.
    pub root: Hash,
    /// The size of the anchored checkpoint the tree was checked against, if the log has one.
    pub anchored_size: Option<u64>,
}

/// What [`Log::fsck`] found wrong, the first problem only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsckError {
    /// The stored tree does not reproduce the newest acknowledged checkpoint.
    #[error(
        "the stored tree at size {size} hashes to {stored}, but the anchored checkpoint says \
         {anchored}"
    )]
    Anchor {
        /// Tree size of the anchored checkpoint.
        size: u64,
        /// Root of the stored tree at that size.
        stored: Hash,
        /// Root in the anchored checkpoint.
        anchored: Hash,
    },
    /// The first entry that is missing, damaged or does not match the tree's leaf hash.
    #[error("entry {index} is missing, damaged or does not match the tree")]
    Entry {
        /// The entry's index.
        index: u64,
    },
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The tree does not reproduce the last signed checkpoint.
    #[error(
        "the stored tree at size {size} hashes to {computed}, the last signed checkpoint says \
         {signed}"
    )]
    Root {
        /// Tree size of the checkpoint.
        size: u64,
        /// Root recomputed from the store.
        computed: Hash,
        /// Root in the checkpoint.
        signed: Hash,
    },
    /// A full tile is missing, internally inconsistent, or disagrees with the level above.
    #[error("stored tile ({level}, {index}) is missing or inconsistent")]
    Tile {
        /// Tile level.
        level: u8,
        /// Tile index.
        index: u64,
    },
}

enum BatchFailure {
    BeforeCommit(CommitError),
    AfterCommit(CommitError),
}

struct CommitRecord {
    size: u64,
    checkpoint: String,
    writes: Vec<StateWrite>,
}

impl CommitRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(COMMIT_MAGIC);
        codec::put_u64(&mut out, self.size);
        codec::put_bytes(&mut out, self.checkpoint.as_bytes());
        codec::put_u64(&mut out, self.writes.len() as u64);
        for write in &self.writes {
            match write {
                StateWrite::Delete(key) => {
                    out.push(0);
                    codec::put_bytes(&mut out, key);
                }
                StateWrite::Put(key, value) => {
                    out.push(1);
                    codec::put_bytes(&mut out, key);
                    codec::put_bytes(&mut out, value);
                }
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        if r.take(COMMIT_MAGIC.len())? != COMMIT_MAGIC {
            return None;
        }
        let size = r.u64()?;
        let checkpoint = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let count = r.u64()?;
        let mut writes = Vec::new();
        for _ in 0..count {
            let write = match r.u8()? {
                0 => StateWrite::Delete(r.bytes()?.to_vec()),
                1 => StateWrite::Put(r.bytes()?.to_vec(), r.bytes()?.to_vec()),
                _ => return None,
            };
            writes.push(write);
        }
        r.is_empty().then_some(Self {
            size,
            checkpoint,
            writes,
        })
    }
}

/// Encodes an entry's leaf and body after checking that the leaf is valid, the body fits and
/// the leaf commits to the body.
fn encode_entry(entry: &NewEntry) -> Result<(Vec<u8>, Vec<u8>), crate::entry::EntryError> {
    entry.leaf.validate()?;
    let body = entry.body.encode();
    crate::entry::verify_commitment(&entry.leaf, &body)?;
    Ok((entry.leaf.encode(), body))
}

/// The cheap checks of an entry (no hashing): the leaf is valid and the body fits.
pub(crate) fn precheck_entry(entry: &NewEntry) -> Result<(), crate::entry::EntryError> {
    entry.leaf.validate()?;
    let size = crate::entry::BODY_NONCE_LEN + entry.body.payload.len();
    let max = crate::entry::BODY_NONCE_LEN + crate::entry::MAX_BODY_SIZE;
    if size > max {
        return Err(crate::entry::EntryError::BodyTooLarge { size, max });
    }
    Ok(())
}

fn apply_state_writes(store: &dyn Store, writes: &[StateWrite]) -> Result<(), StoreError> {
    for write in writes {
        match write {
            StateWrite::Delete(key) => store.delete(&layout::state(key))?,
            StateWrite::Put(key, value) => store.put(&layout::state(key), value)?,
        }
    }
    Ok(())
}

/// Rebuilds the frontier for `size` from the stored leaves of the last bottom tile.
fn rebuild_frontier(store: &dyn Store, size: u64) -> Result<Frontier, OpenError> {
    let partial_start = size - size % TILE_WIDTH as u64;
    let records = chunk::read(store, layout::ENTRIES, partial_start, size - partial_start)?;
    let mut leaves = Vec::with_capacity(records.len());
    for (offset, record) in records.into_iter().enumerate() {
        match record {
            Record::Present(leaf) => leaves.push(leaf),
            Record::Redacted => {
                return Err(ChunkError::Missing {
                    index: partial_start + offset as u64,
                }
                .into());
            }
        }
    }
    Ok(Frontier::rebuild(store, size, &leaves)?)
}

/// Deletes everything a batch that did not commit may have written beyond the frontier.
fn remove_uncommitted(store: &dyn Store, frontier: &Frontier) -> Result<(), StoreError> {
    let size = frontier.size();
    let mut doomed = Vec::new();
    for prefix in [layout::ENTRIES, layout::BODIES] {
        doomed.extend(
            store
                .scan(&layout::indexed(prefix, size), &[prefix + 1], usize::MAX)?
                .into_iter()
                .map(|(k, _)| k),
        );
    }
    doomed.extend(
        store
            .scan(
                &layout::indexed(layout::CHECKPOINTS, size.saturating_add(1)),
                &[layout::CHECKPOINTS + 1],
                usize::MAX,
            )?
            .into_iter()
            .map(|(k, _)| k),
    );
    let mut level = 0u8;
    loop {
        let full = size
            .checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
            .unwrap_or(0)
            / TILE_WIDTH as u64;
        let start = layout::tile(level, full);
        let end = layout::tile(level.saturating_add(1), 0);
        let found = store.scan(&start, &end, usize::MAX)?;
        if found.is_empty() && full == 0 {
            break;
        }
        doomed.extend(found.into_iter().map(|(k, _)| k));
        if level == u8::MAX {
            break;
        }
        level += 1;
    }
    for key in doomed {
        store.delete(&key)?;
    }
    Ok(())
}

/// Checks the newest full tile of every level: internally consistent, and its top equal to the
/// node the level above holds for it.
fn check_newest_tiles(store: &dyn Store, frontier: &Frontier) -> Result<(), OpenError> {
    let size = frontier.size();
    let reader = TreeReader::new(store, frontier);
    let mut level = 0u8;
    while let Some(count) = size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT)) {
        let full = count / TILE_WIDTH as u64;
        if full == 0 {
            break;
        }
        let index = full - 1;
        let tile = tree::read_full_tile(store, level, index)?;
        let top = tree::check_stored_tile(&tile).ok_or(OpenError::TileMismatch { level, index })?;
        let above = crate::proof::NodeSource::node(&reader, (level + 1) * TILE_HEIGHT, index)?;
        if above != top {
            return Err(OpenError::TileMismatch { level, index });
        }
        level += 1;
    }
    Ok(())
}

/// The smallest byte string greater than every string starting with `prefix`.
fn out_of_range(what: Position, got: u64, size: u64) -> ReadError {
    ReadError::OutOfRange { what, got, size }
}

fn prove_error(err: ProveError<TreeError>) -> ReadError {
    match err {
        ProveError::Source(e) => ReadError::Tree(e),
        ProveError::IndexOutOfRange { index, size } => {
            ReadError::InvalidRequest(ProveError::IndexOutOfRange { index, size })
        }
        ProveError::NotASubtree { start, end } => {
            ReadError::InvalidRequest(ProveError::NotASubtree { start, end })
        }
        ProveError::OldSizeLargerThanNew { old, new } => {
            ReadError::InvalidRequest(ProveError::OldSizeLargerThanNew { old, new })
        }
        ProveError::OldSizeZero => ReadError::InvalidRequest(ProveError::OldSizeZero),
    }
}

fn prove_to_tree(err: ProveError<TreeError>) -> TreeError {
    match err {
        ProveError::Source(e) => e,
        _ => TreeError::MissingNode { level: 0, index: 0 },
    }
}

fn tracing_error(err: &CommitError) {
    tracing::error!(cause = %err, "storage failure after the commit point: the log is poisoned");
}

#[cfg(test)]
mod tests;

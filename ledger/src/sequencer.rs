//! The sequencer: many concurrent submitters, one writer thread, group commit.
//!
//! Submitters send commands over a bounded channel. The writer thread takes whatever is queued
//! (up to `max_batch`, optionally waiting `max_wait` for more), runs each command through the
//! [`StateMachine`] **in sequence order** against the state as of the entries before it, and
//! writes the accepted entries with one [`Log::stage_batch`] (one commit record, one signature).
//! A second thread, the syncer, then makes the batch durable with [`Log::sync_batch`] (one
//! store sync); on an anchored log a third thread, the anchorer, advances the checkpoint anchor
//! past it with [`Log::anchor_batch`] (one more sync) while the syncer already syncs the next
//! batch (when the writer is idle there is no next batch to overlap, and the syncer anchors the
//! batch itself). Only then are the batch's submitters answered. Meanwhile the writer already applies
//! and stages the next batch, so the disk's sync latency and the writer's CPU work overlap
//! instead of adding up. Batches are synced and anchored in the order written, and a failed
//! sync poisons the log, so no later batch is ever acknowledged. Each submitter then builds its own inclusion proof against
//! the batch's checkpoint on its own task, so proof work runs in parallel, off both threads.
//!
//! Because commands are applied in order, a command sees every write sequenced before it, in
//! earlier batches and earlier in its own batch: a revocation that was acknowledged affects the
//! next decision. A rejected command appends nothing and its state writes are dropped; if the
//! batch fails to commit, every submitter in it gets [`SubmitError::Unavailable`] and the state
//! machine is told to forget in-memory caches ([`StateMachine::rollback`]).
//!
//! **Groups.** [`Sequencer::submit_group`] logs several commands all or nothing (a cohort's
//! decisions, one entry per patient): they are applied one after another at consecutive
//! positions of one batch, whose single commit record writes all of them or none, and are
//! answered together. The state machine may refuse a group as a whole before any of it is applied
//! ([`StateMachine::check_group`]).
//!
//! **Optimistic preparation.** Work that only reads state (an access decision) may be prepared
//! off the writer thread against the committed state, remembering the tree size it read at and
//! the keys it read. The writer keeps a short history of which keys recent batches wrote, so
//! [`Tx::unchanged_since`] tells the state machine in a map lookup whether a key could have
//! changed since; if none did, the prepared result is the one the writer would have computed,
//! and only the cheap part (framing, writes) runs on the serial path. Otherwise the state
//! machine redoes the work itself, so correctness never depends on the preparation.
//!
//! The sequencer does not know what commands mean; the server's state machine does.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    checkpoint::SignedCheckpoint,
    hash::{Hash, LeafIndex},
    log::{CommitError, Log, NewEntry, Receipt, Staged, StateWrite, Synced},
    store::StoreError,
};

/// The application logic run for every command, in sequence order, on the writer thread.
pub trait StateMachine: Send + 'static {
    /// What submitters send.
    type Command: Send + 'static;
    /// What a submitter gets back with its receipt.
    type Output: Send + 'static;
    /// Why a command was refused (nothing is appended for it).
    type Rejection: Send + 'static;

    /// Validates `command` against the state seen through `tx`, writes its state changes to
    /// `tx`, and returns the entry to append. Must be deterministic given the state, the
    /// command, `tx.index()` and `tx.time_millis()`, apart from the body's random nonce.
    ///
    /// # Errors
    ///
    /// Returns the rejection to send back to the submitter; `tx`'s writes are then discarded.
    fn apply(
        &mut self,
        command: Self::Command,
        tx: &mut Tx<'_>,
    ) -> Result<Applied<Self::Output>, Self::Rejection>;

    /// Called once per batch, after its last command and before it is written: writes the
    /// batch's derived state that depends on the whole batch (`tx.index()` is the tree size after
    /// it) and returns extension lines for its checkpoint. The default writes and returns nothing.
    ///
    /// # Errors
    ///
    /// Why the batch cannot be sealed: then the whole batch fails, every submitter of it gets
    /// `Unavailable` with this message, and [`StateMachine::rollback`] is called.
    fn seal(&mut self, tx: &mut Tx<'_>) -> Result<Vec<String>, String> {
        let _ = tx;
        Ok(Vec::new())
    }

    /// Called before the commands of a group ([`Sequencer::submit_group`]) are applied, with the
    /// view the first of them will be applied through: refuses the whole group before any of it
    /// changes anything. The default accepts every group.
    ///
    /// A group is applied command by command like any other commands, and a command of it
    /// refused after earlier ones of the group were applied fails the whole batch (the machine's
    /// in-memory state may already hold the earlier ones), so a machine refuses here what it can.
    ///
    /// # Errors
    ///
    /// The rejection every command of the group is answered with.
    fn check_group(
        &mut self,
        commands: &[Self::Command],
        tx: &Tx<'_>,
    ) -> Result<(), Self::Rejection> {
        let _ = (commands, tx);
        Ok(())
    }

    /// Called after a batch failed to commit: drop any in-memory state derived from it.
    fn rollback(&mut self) {}

    /// Called once a batch was written (its state writes are visible to [`Log::state_get`];
    /// its sync may still be running): publish in-memory state derived from it, if others read
    /// it. Should that sync fail, the log is poisoned and nothing more is acknowledged.
    fn committed(&mut self) {}
}

/// An accepted command: its log entry and the submitter's output.
#[derive(Debug)]
pub struct Applied<O> {
    /// The entry to append.
    pub entry: NewEntry,
    /// Returned to the submitter once the entry is durable.
    pub output: O,
}

/// The state writes of a batch's commands applied so far (a key's `None`: deleted). A hash map:
/// a batch of 10,000 decisions writes tens of thousands of keys, each looked up several times.
/// The writer's `process` sorts them by key before they reach the store.
type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// The view of state a command is applied against, and where it records its writes.
pub struct Tx<'a> {
    log: &'a Log,
    batch: &'a Overlay,
    /// Committed values read so far in this batch, or offered by [`Tx::prime`]. INVARIANT: the
    /// writer thread is the only writer of the store and writes only after the whole batch was
    /// applied, so a committed value read once stays valid until the batch ends.
    reads: &'a std::cell::RefCell<std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>>,
    local: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    recent: &'a RecentWrites,
    index: LeafIndex,
    time_millis: i64,
}

impl<'a> Tx<'a> {
    /// The view a command (or the batch's seal) at `index` is applied through: nothing of its
    /// own written yet.
    fn new(
        log: &'a Log,
        batch: &'a Overlay,
        reads: &'a std::cell::RefCell<std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>>,
        recent: &'a RecentWrites,
        index: LeafIndex,
        time_millis: i64,
    ) -> Self {
        Self {
            log,
            batch,
            reads,
            local: BTreeMap::new(),
            recent,
            index,
            time_millis,
        }
    }

    /// The index the command's entry will get.
    pub fn index(&self) -> LeafIndex {
        self.index
    }

    /// The sequencing time in Unix milliseconds: non-decreasing within a run, and never before
    /// the day of the newest entry when the sequencer started (see [`Sequencer::start`]).
    pub fn time_millis(&self) -> i64 {
        self.time_millis
    }

    /// Reads a state key: this command's writes, then the batch's, then the committed state.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the store fails.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.local.get(key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.batch.get(key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.reads.borrow().get(key) {
            return Ok(value.clone());
        }
        let value = self.log.state_get(key)?;
        self.reads.borrow_mut().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    /// Whether `key` still holds the committed value it held when the log had `size` entries:
    /// no batch committed since then wrote it, and no command before this one in its batch did.
    /// `false` also when the writer no longer remembers that far back (then the caller must
    /// read the key again). Costs a map lookup; reads nothing from the store.
    pub fn unchanged_since(&self, key: &[u8], size: u64) -> bool {
        size >= self.recent.horizon
            && size <= self.recent.tip
            && !self.local.contains_key(key)
            && !self.batch.contains_key(key)
            && !self.recent.written_after(key, size)
    }

    /// Offers `value` as the committed value of `key`, read (off the writer thread) after the
    /// log had `size` entries, so as of `size` or a later batch: kept for this batch's reads,
    /// sparing the store a read, when no batch committed after `size` wrote the key (then the
    /// value read is the value now: a newer one could only come from such a batch) and the
    /// batch has not read it yet; otherwise ignored. Values this batch or this command wrote are
    /// read before it anyway. Costs a map lookup.
    pub fn prime(&self, key: Vec<u8>, value: Option<Vec<u8>>, size: u64) {
        let unchanged = size >= self.recent.horizon
            && size <= self.recent.tip
            && !self.recent.written_after(&key, size);
        if unchanged {
            self.reads.borrow_mut().entry(key).or_insert(value);
        }
    }

    /// Sets a state key.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.local.insert(key.to_vec(), Some(value.to_vec()));
    }

    /// Removes a state key.
    pub fn delete(&mut self, key: &[u8]) {
        self.local.insert(key.to_vec(), None);
    }
}

/// What a committed batch reports to a [`CommitHook`].
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    /// Entries committed.
    pub entries: u64,
    /// The tree size after the batch.
    pub tree_size: u64,
    /// Time from taking the batch to its durable commit.
    pub elapsed: Duration,
    /// Of that, the time spent making it durable and anchoring it ([`Log::sync_batch`] and
    /// [`Log::anchor_batch`]: the store's flush and device syncs, then the anchor's). A slow
    /// disk shows here first.
    pub sync: Duration,
    /// Of that, the writer thread's own time on the batch: applying its commands, the state
    /// machine's [`seal`](StateMachine::seal), staging the batch in the store
    /// ([`Log::stage_batch_with`], with the writer's own bookkeeping of the batch's writes) and
    /// the state machine's [`committed`](StateMachine::committed). What is left of `elapsed`
    /// beyond `write` and `sync` is waiting behind the batches before it.
    pub write: Duration,
}

/// Batches slower than this from taking to durable are reported: a `debug` event `slow batch`
/// with where the time went, under a target of its own ([`SLOW_BATCH_TARGET`]) so that it can
/// be turned on without the per-batch events of this module.
const SLOW_BATCH: Duration = Duration::from_millis(25);

/// The tracing target of the `slow batch` event (`AKASHI_LOG=info,ledger::slow_batch=debug`).
pub const SLOW_BATCH_TARGET: &str = "ledger::slow_batch";

/// Where a batch's time on the writer thread went, for [`BatchReport::write`] and the report of
/// a slow batch.
#[derive(Clone, Copy, Debug, Default)]
struct WriterTimes {
    /// Applying the batch's commands.
    apply: Duration,
    /// [`StateMachine::seal`].
    seal: Duration,
    /// [`Log::stage_batch_with`], with the writer's bookkeeping of the batch's writes.
    stage: Duration,
    /// [`StateMachine::committed`].
    commit: Duration,
}

impl WriterTimes {
    fn total(&self) -> Duration {
        self.apply + self.seal + self.stage + self.commit
    }
}

/// A callback run on the writer thread after every committed batch (for metrics). It must be
/// quick and must not block.
#[derive(Clone)]
pub struct CommitHook(pub Arc<dyn Fn(&BatchReport) + Send + Sync>);

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

/// Tuning for group commit.
#[derive(Debug, Clone)]
pub struct SequencerOptions {
    /// Most commands in one batch.
    pub max_batch: usize,
    /// How long to wait for more commands once one arrived (zero: take what is queued).
    pub max_wait: Duration,
    /// Commands that may wait in the queue before submitters are slowed down.
    pub queue: usize,
    /// Called after every committed batch.
    pub on_commit: Option<CommitHook>,
}

impl Default for SequencerOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            max_wait: Duration::ZERO,
            queue: 8192,
            on_commit: None,
        }
    }
}

/// Why a submission did not produce a receipt.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError<R> {
    /// The state machine refused the command; nothing was appended.
    #[error("command rejected")]
    Rejected(R),
    /// The batch could not be made durable; nothing was appended.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// The sequencer is shut down.
    #[error("the sequencer is shut down")]
    Closed,
}

/// Counters describing the sequencer's work so far.
#[derive(Debug, Default)]
pub struct SequencerStats {
    /// Commands accepted into the queue.
    pub submitted: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Entries committed.
    pub entries: AtomicU64,
    /// Commands rejected by the state machine.
    pub rejected: AtomicU64,
    /// Batches that failed to commit.
    pub failed_batches: AtomicU64,
    /// Total time spent committing batches, in microseconds.
    pub commit_micros: AtomicU64,
}

type Reply<M> = oneshot::Sender<
    Result<Ack<<M as StateMachine>::Output>, SubmitError<<M as StateMachine>::Rejection>>,
>;

type GroupReply<M> = oneshot::Sender<
    Result<GroupReceipt<<M as StateMachine>::Output>, SubmitError<<M as StateMachine>::Rejection>>,
>;

/// What a submitter queued: one command, or a group logged all or nothing.
enum Job<M: StateMachine> {
    One(M::Command, Reply<M>),
    Group(Vec<M::Command>, GroupReply<M>),
}

impl<M: StateMachine> Job<M> {
    /// Entries the job appends if it is accepted.
    fn entries(&self) -> usize {
        match self {
            Self::One(..) => 1,
            Self::Group(commands, _) => commands.len(),
        }
    }

    /// Answers a job that was never applied: its batch failed first.
    fn fail(self, message: &str) {
        match self {
            Self::One(_, reply) => {
                let _ = reply.send(Err(SubmitError::Unavailable(message.to_owned())));
            }
            Self::Group(_, reply) => {
                let _ = reply.send(Err(SubmitError::Unavailable(message.to_owned())));
            }
        }
    }
}

/// An accepted job waiting for its batch to be durable: the submitter and the output(s).
enum Answer<M: StateMachine> {
    One(Reply<M>, M::Output),
    Group(GroupReply<M>, Vec<M::Output>),
}

impl<M: StateMachine> Answer<M> {
    fn fail(self, message: &str) {
        match self {
            Self::One(reply, _) => {
                let _ = reply.send(Err(SubmitError::Unavailable(message.to_owned())));
            }
            Self::Group(reply, _) => {
                let _ = reply.send(Err(SubmitError::Unavailable(message.to_owned())));
            }
        }
    }
}

/// Why a group was not accepted.
struct GroupRefused<R> {
    /// The answer to its submitter.
    error: SubmitError<R>,
    /// Whether commands of it were applied before (then the batch must fail).
    partly_applied: bool,
}

/// What a group of commands committed ([`Sequencer::submit_group`]): one entry per command, at
/// consecutive indices from `first`, in the order given, all covered by `checkpoint`.
#[derive(Debug)]
pub struct GroupReceipt<O> {
    /// The first command's leaf index.
    pub first: LeafIndex,
    /// Each entry's leaf hash, in order.
    pub leaf_hashes: Vec<Hash>,
    /// A signed checkpoint covering all of them.
    pub checkpoint: Arc<SignedCheckpoint>,
    /// Each command's output, in order.
    pub outputs: Vec<O>,
}

enum Msg<M: StateMachine> {
    Job(Job<M>),
    Close,
}

struct Ack<O> {
    index: LeafIndex,
    leaf_hash: Hash,
    checkpoint: Arc<SignedCheckpoint>,
    output: O,
}

/// A handle to the sequencer. Cheap to clone; every clone submits to the same writer thread.
pub struct Sequencer<M: StateMachine> {
    sender: mpsc::Sender<Msg<M>>,
    log: Arc<Log>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    stats: Arc<SequencerStats>,
}

impl<M: StateMachine> Clone for Sequencer<M> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            log: self.log.clone(),
            thread: self.thread.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<M: StateMachine> Sequencer<M> {
    /// Starts the writer thread for `log`, applying commands with `machine`.
    ///
    /// # Errors
    ///
    /// Returns an error when the thread cannot be spawned.
    pub fn start(log: Arc<Log>, machine: M, options: SequencerOptions) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(SequencerStats::default());
        let writer = Writer {
            log: log.clone(),
            machine,
            options,
            stats: stats.clone(),
            last_time: clock_floor(&log),
            recent: RecentWrites::new(log.size().get()),
            next_size: log.size().get(),
        };
        let thread = std::thread::Builder::new()
            .name("akashi-sequencer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Self {
            sender,
            log,
            thread: Arc::new(Mutex::new(Some(thread))),
            stats,
        })
    }

    /// The log this sequencer appends to.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> &SequencerStats {
        &self.stats
    }

    /// Submits a command and waits until its entry is durable and covered by a signed
    /// checkpoint; returns the entry's receipt and the state machine's output.
    ///
    /// # Errors
    ///
    /// Returns [`SubmitError`]; in every error case nothing was appended for this command.
    pub async fn submit(
        &self,
        command: impl Into<M::Command>,
    ) -> Result<(Receipt, M::Output), SubmitError<M::Rejection>> {
        let command = command.into();
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Msg::Job(Job::One(command, reply)))
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let ack = answer.await.map_err(|_| SubmitError::Closed)??;
        let receipt = self
            .log
            .receipt(ack.index, ack.leaf_hash, ack.checkpoint)
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        Ok((receipt, ack.output))
    }

    /// Submits commands to be logged **all or nothing**: applied in the order given, at
    /// consecutive positions of one batch (so one commit record writes all of them or none), and
    /// answered together once that batch is durable. The state machine may refuse the group as a
    /// whole ([`StateMachine::check_group`]); a command of it refused later fails its batch.
    /// Inclusion proofs are left to the caller ([`Log::receipt`]): a group may be large.
    ///
    /// # Errors
    ///
    /// Returns [`SubmitError`]; in every error case nothing was appended for any command of it.
    /// An empty group is [`SubmitError::Unavailable`]: it has no entry a checkpoint could cover;
    /// so is one larger than a batch may be ([`crate::log::MAX_BATCH_ENTRIES`]).
    pub async fn submit_group(
        &self,
        commands: Vec<M::Command>,
    ) -> Result<GroupReceipt<M::Output>, SubmitError<M::Rejection>> {
        if commands.is_empty() {
            return Err(SubmitError::Unavailable(
                "an empty group logs nothing".into(),
            ));
        }
        if commands.len() > crate::log::MAX_BATCH_ENTRIES {
            return Err(SubmitError::Unavailable(format!(
                "a group of {} commands is more than one batch holds ({})",
                commands.len(),
                crate::log::MAX_BATCH_ENTRIES
            )));
        }
        let count = commands.len() as u64;
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Msg::Job(Job::Group(commands, reply)))
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.stats.submitted.fetch_add(count, Ordering::Relaxed);
        answer.await.map_err(|_| SubmitError::Closed)?
    }

    /// Stops accepting commands, finishes every queued one, and waits for the writer thread.
    pub async fn shutdown(&self) {
        // A full queue only delays the close message; a closed channel means it is done.
        let _ = self.sender.send(Msg::Close).await;
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Which state keys the most recent committed batches wrote, for [`Tx::unchanged_since`].
///
/// Keys are remembered by a 64-bit fingerprint (a keyed hash, seeded per process), not copied:
/// two keys sharing one can only make a key look written when it was not, and then its reader
/// reads the store again; a key written is never missed.
struct RecentWrites {
    /// Key fingerprint → the tree size after the last remembered batch that wrote the key.
    by_key: HashMap<u64, u64>,
    /// The remembered batches, oldest first: the tree size after each and the fingerprints of
    /// the keys it wrote.
    batches: VecDeque<(u64, Vec<u64>)>,
    /// Keys held in `batches`.
    keys: usize,
    /// The fingerprints' key.
    seed: std::hash::RandomState,
    /// Every batch that ended after this size is remembered.
    horizon: u64,
    /// The size after the last batch recorded: the base of the batch being applied. INVARIANT:
    /// every batch whose state writes reached the store is recorded here before the next batch
    /// is applied (a batch that failed after writing some of them poisons the log, so no later
    /// batch is written at all).
    tip: u64,
}

impl RecentWrites {
    /// Keys remembered before the oldest batches are forgotten (a few hundred batches of
    /// decisions: far longer than a command waits in the queue).
    const MAX_KEYS: usize = 1 << 16;

    fn new(size: u64) -> Self {
        Self {
            seed: std::hash::RandomState::new(),
            by_key: HashMap::new(),
            batches: VecDeque::new(),
            keys: 0,
            horizon: size,
            tip: size,
        }
    }

    fn fingerprint(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.seed, key)
    }

    /// Whether a remembered batch that ended after `size` wrote `key`.
    fn written_after(&self, key: &[u8], size: u64) -> bool {
        self.by_key
            .get(&self.fingerprint(key))
            .is_some_and(|&written| written > size)
    }

    /// Remembers the batch that ended at `size` and wrote the keys with fingerprints `keys`.
    fn record(&mut self, size: u64, keys: Vec<u64>) {
        self.tip = size;
        for &key in &keys {
            self.by_key.insert(key, size);
        }
        self.keys += keys.len();
        self.batches.push_back((size, keys));
        while self.keys > Self::MAX_KEYS && self.batches.len() > 1 {
            let Some((old, keys)) = self.batches.pop_front() else {
                break;
            };
            for key in &keys {
                if self.by_key.get(key) == Some(&old) {
                    self.by_key.remove(key);
                }
            }
            self.keys -= keys.len();
            self.horizon = old;
        }
    }
}

struct Writer<M: StateMachine> {
    log: Arc<Log>,
    machine: M,
    options: SequencerOptions,
    stats: Arc<SequencerStats>,
    last_time: i64,
    recent: RecentWrites,
    /// The tree size after the last batch written (synced or not): the next entry's index.
    next_size: u64,
}

/// A written batch on its way to the syncer, with the submitters to answer once it is durable.
struct Pending<M: StateMachine> {
    staged: Staged,
    replies: Vec<Answer<M>>,
    started: Instant,
    writer: WriterTimes,
}

/// A synced batch on its way to the anchorer, which advances the checkpoint anchor and then
/// answers its submitters.
struct Durable<M: StateMachine> {
    synced: Synced,
    replies: Vec<Answer<M>>,
    started: Instant,
    writer: WriterTimes,
    /// Time the store's sync took.
    sync: Duration,
}

/// The syncer thread: makes written batches durable in order. On an anchored log it hands each
/// synced batch to the anchorer thread (a rendezvous), so batch k's anchor sync runs while batch
/// k+1's store sync does, unless the writer is idle and the anchorer holds nothing ([`Idle`]);
/// otherwise, and on a log without an anchor, it anchors and answers the batch itself.
struct Syncer<M: StateMachine> {
    log: Arc<Log>,
    acknowledger: Acknowledger,
    to_anchorer: Option<std::sync::mpsc::SyncSender<Durable<M>>>,
    idle: Arc<Idle>,
}

/// When the sync thread anchors a batch itself instead of handing it to the anchorer. The
/// anchorer exists so that batch k's anchor sync overlaps batch k+1's store sync; when the writer
/// holds no batch there is nothing to overlap, and the hand-off (one more thread woken and put
/// to sleep per batch) is all it would add. The anchors stay in order: the syncer anchors only
/// when every batch it handed over has been anchored.
#[derive(Default)]
struct Idle {
    /// The writer is waiting for commands with none queued.
    writer: AtomicBool,
    /// Batches handed to the anchorer and not yet anchored (or failed).
    anchoring: AtomicUsize,
}

impl<M: StateMachine> Syncer<M> {
    fn run(self, pending: std::sync::mpsc::Receiver<Pending<M>>) {
        for batch in pending {
            self.sync(batch);
        }
    }

    fn sync(&self, batch: Pending<M>) {
        let Pending {
            staged,
            replies,
            started,
            writer,
        } = batch;
        let sync_started = Instant::now();
        let synced = match self.log.sync_batch(staged) {
            Ok(synced) => synced,
            Err(err) => return self.acknowledger.fail::<M>(&err, replies),
        };
        let durable = Durable {
            synced,
            replies,
            started,
            writer,
            sync: sync_started.elapsed(),
        };
        let inline = self.idle.anchoring.load(Ordering::Acquire) == 0
            && self.idle.writer.load(Ordering::Relaxed);
        match &self.to_anchorer {
            Some(to_anchorer) if !inline => {
                self.idle.anchoring.fetch_add(1, Ordering::AcqRel);
                if let Err(std::sync::mpsc::SendError(durable)) = to_anchorer.send(durable) {
                    // The anchorer is gone (it never exits while this sender lives, short of a
                    // panic): the batch cannot be anchored, so it is not acknowledged.
                    self.idle.anchoring.fetch_sub(1, Ordering::AcqRel);
                    self.acknowledger
                        .fail::<M>(&CommitError::Poisoned, durable.replies);
                }
            }
            _ => self.acknowledger.anchor(durable),
        }
    }
}

/// Advances the checkpoint anchor past durable batches, in order, and answers their submitters.
/// Runs on its own thread on an anchored log while the writer is busy, else inline on the
/// syncer.
#[derive(Clone)]
struct Acknowledger {
    log: Arc<Log>,
    stats: Arc<SequencerStats>,
    on_commit: Option<CommitHook>,
}

impl Acknowledger {
    fn run<M: StateMachine>(self, durable: std::sync::mpsc::Receiver<Durable<M>>, idle: &Idle) {
        for batch in durable {
            self.anchor(batch);
            idle.anchoring.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn anchor<M: StateMachine>(&self, batch: Durable<M>) {
        let Durable {
            synced,
            replies,
            started,
            writer,
            sync,
        } = batch;
        let anchor_started = Instant::now();
        let committed = match self.log.anchor_batch(synced) {
            Ok(committed) => committed,
            Err(err) => return self.fail::<M>(&err, replies),
        };
        let anchor = anchor_started.elapsed();
        let elapsed = started.elapsed();
        if elapsed > SLOW_BATCH {
            let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(
                target: SLOW_BATCH_TARGET,
                entries = committed.leaf_hashes.len(),
                micros = micros(elapsed),
                apply = micros(writer.apply),
                seal = micros(writer.seal),
                stage = micros(writer.stage),
                commit = micros(writer.commit),
                sync = micros(sync),
                anchor = micros(anchor),
                waited = micros(elapsed.saturating_sub(writer.total() + sync + anchor)),
                "slow batch"
            );
        }
        let sync = sync + anchor;
        let entries = committed.leaf_hashes.len() as u64;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.entries.fetch_add(entries, Ordering::Relaxed);
        self.stats.commit_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(hook) = &self.on_commit {
            (hook.0)(&BatchReport {
                entries,
                tree_size: committed.checkpoint.checkpoint().size.get(),
                elapsed,
                sync,
                write: writer.total(),
            });
        }
        tracing::debug!(
            entries,
            size = committed.checkpoint.checkpoint().size.get(),
            micros = elapsed.as_micros() as u64,
            "batch committed"
        );
        // INVARIANT: the batch holds one entry per accepted command, in the order of `replies`.
        let mut offset = 0;
        for answer in replies {
            let first = LeafIndex(committed.first.get() + offset as u64);
            match answer {
                Answer::One(reply, output) => {
                    let Some(leaf_hash) = committed.leaf_hashes.get(offset) else {
                        let _ = reply.send(Err(SubmitError::Unavailable(
                            "the batch committed fewer entries than it was given".into(),
                        )));
                        continue;
                    };
                    offset += 1;
                    let _ = reply.send(Ok(Ack {
                        index: first,
                        leaf_hash: *leaf_hash,
                        checkpoint: committed.checkpoint.clone(),
                        output,
                    }));
                }
                Answer::Group(reply, outputs) => {
                    let end = offset + outputs.len();
                    let Some(leaf_hashes) = committed.leaf_hashes.get(offset..end) else {
                        let _ = reply.send(Err(SubmitError::Unavailable(
                            "the batch committed fewer entries than it was given".into(),
                        )));
                        continue;
                    };
                    offset = end;
                    let _ = reply.send(Ok(GroupReceipt {
                        first,
                        leaf_hashes: leaf_hashes.to_vec(),
                        checkpoint: committed.checkpoint.clone(),
                        outputs,
                    }));
                }
            }
        }
    }

    fn fail<M: StateMachine>(&self, err: &CommitError, replies: Vec<Answer<M>>) {
        self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        tracing::error!(cause = %err, answers = replies.len(), "batch failed to sync");
        let message = err.to_string();
        for answer in replies {
            answer.fail(&message);
        }
    }
}

/// The earliest sequencing time a sequencer over `log` may use: the start of its newest
/// entry's day (Unix milliseconds), or 0 for an empty log. The writer's clock only moves
/// forward while it runs; seeding it here keeps entry days from going backwards across a
/// restart when the wall clock has been set back, which an auditor can then rely on.
fn clock_floor(log: &Log) -> i64 {
    let size = log.size().get();
    let Some(last) = size.checked_sub(1) else {
        return 0;
    };
    log.leaves(LeafIndex(last), 1)
        .ok()
        .and_then(|mut leaves| leaves.pop())
        .and_then(|bytes| crate::entry::Leaf::decode(&bytes).ok())
        .map_or(0, |leaf| leaf.day.to_unix_seconds().saturating_mul(1000))
}

impl<M: StateMachine> Writer<M> {
    fn run(mut self, mut receiver: mpsc::Receiver<Msg<M>>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(cause = %err, "sequencer could not start its runtime");
                return;
            }
        };
        // The writer stages the next batch while one syncs and hands it over (a rendezvous) when
        // that sync ends; commands that arrive meanwhile wait in the queue for the batch after.
        // A submitter's wait is at most about two syncs long. A one-slot buffer here (the writer
        // one batch further ahead) measured worse: p99 6.2-7.4 ms instead of 5.8-6.2 ms at 10,000
        // req/s open loop, and 8-11% fewer req/s at 1 x 8 in flight (BENCHMARKS.md, “A paged
        // patient listing”).
        let (to_syncer, pending) = std::sync::mpsc::sync_channel::<Pending<M>>(0);
        let acknowledger = Acknowledger {
            log: self.log.clone(),
            stats: self.stats.clone(),
            on_commit: self.options.on_commit.clone(),
        };
        // On an anchored log each batch needs two syncs in series (the store's, then the
        // anchor's). A third thread anchors batch k while the syncer syncs batch k+1, so the
        // pipeline moves at the pace of the slower sync rather than their sum (an idle writer
        // has no batch k+1: then the syncer anchors batch k itself, see `Idle`).
        let idle = Arc::new(Idle::default());
        let (to_anchorer, anchorer) = if self.log.is_anchored() {
            let (to_anchorer, durable) = std::sync::mpsc::sync_channel::<Durable<M>>(0);
            let anchoring = acknowledger.clone();
            match std::thread::Builder::new()
                .name("akashi-anchor".into())
                .spawn({
                    let idle = idle.clone();
                    move || anchoring.run(durable, &idle)
                }) {
                Ok(thread) => (Some(to_anchorer), Some(thread)),
                Err(err) => {
                    tracing::error!(cause = %err, "sequencer could not start its anchor thread");
                    return;
                }
            }
        } else {
            (None, None)
        };
        let syncer = Syncer {
            log: self.log.clone(),
            acknowledger,
            to_anchorer,
            idle: idle.clone(),
        };
        let syncer = match std::thread::Builder::new()
            .name("akashi-sync".into())
            .spawn(move || syncer.run(pending))
        {
            Ok(thread) => thread,
            Err(err) => {
                tracing::error!(cause = %err, "sequencer could not start its sync thread");
                return;
            }
        };
        let max_batch = self.options.max_batch.max(1);
        let mut closing = false;
        // A job taken from the queue that would have made its batch larger than a batch may be:
        // it opens the next batch.
        let mut carried: Option<Job<M>> = None;
        while !closing {
            let first = match carried.take() {
                Some(job) => Msg::Job(job),
                None => match receiver.try_recv() {
                    Ok(msg) => msg,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        idle.writer.store(true, Ordering::Relaxed);
                        let msg = receiver.blocking_recv();
                        idle.writer.store(false, Ordering::Relaxed);
                        match msg {
                            Some(msg) => msg,
                            None => break,
                        }
                    }
                },
            };
            let mut jobs = Vec::new();
            // Entries the jobs taken will append: a group counts as many as it holds, so a batch
            // ends up at most one group larger than `max_batch`.
            let mut planned = 0;
            match first {
                Msg::Job(job) => {
                    planned += job.entries();
                    jobs.push(job);
                }
                Msg::Close => closing = true,
            }
            if closing {
                // Finish everything already queued, accept nothing new.
                receiver.close();
            }
            let deadline = Instant::now() + self.options.max_wait;
            while planned < max_batch {
                let next = match receiver.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() || closing {
                            None
                        } else {
                            runtime
                                .block_on(async {
                                    tokio::time::timeout(left, receiver.recv()).await
                                })
                                .ok()
                                .flatten()
                        }
                    }
                };
                match next {
                    Some(Msg::Job(job))
                        if planned + job.entries() > crate::log::MAX_BATCH_ENTRIES =>
                    {
                        carried = Some(job);
                        break;
                    }
                    Some(Msg::Job(job)) => {
                        planned += job.entries();
                        jobs.push(job);
                    }
                    Some(Msg::Close) => {
                        closing = true;
                        receiver.close();
                    }
                    None => break,
                }
            }
            if !jobs.is_empty() {
                self.process(jobs, &to_syncer);
            }
            if closing {
                // Drain what was queued before the close.
                if let Some(job) = carried.take() {
                    self.process(vec![job], &to_syncer);
                }
                while let Ok(msg) = receiver.try_recv() {
                    if let Msg::Job(job) = msg {
                        self.process(vec![job], &to_syncer);
                    }
                }
            }
        }
        // Let the syncer finish every written batch and answer its submitters.
        drop(to_syncer);
        let _ = syncer.join();
        // The syncer dropped its sender to the anchorer when it ended: the anchorer drains
        // what it holds and ends too.
        if let Some(anchorer) = anchorer {
            let _ = anchorer.join();
        }
        tracing::info!("sequencer stopped");
    }

    fn now_millis(&mut self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.last_time = self.last_time.max(now);
        self.last_time
    }

    #[tracing::instrument(name = "sequencer.batch", skip_all, fields(commands = jobs.len()))]
    fn process(&mut self, jobs: Vec<Job<M>>, to_syncer: &std::sync::mpsc::SyncSender<Pending<M>>) {
        let started = Instant::now();
        let time = self.now_millis();
        let base = self.next_size;
        let mut overlay = Overlay::new();
        let reads = std::cell::RefCell::new(std::collections::HashMap::new());
        let mut entries = Vec::with_capacity(jobs.iter().map(Job::entries).sum());
        let mut accepted = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let (command, reply) = match job {
                Job::One(command, reply) => (command, reply),
                Job::Group(commands, reply) => {
                    match self.apply_group(commands, base, time, &mut overlay, &reads, &mut entries)
                    {
                        Ok(outputs) => accepted.push(Answer::Group(reply, outputs)),
                        Err(refused) if !refused.partly_applied => {
                            let _ = reply.send(Err(refused.error));
                        }
                        Err(refused) => {
                            // The machine may hold in-memory state of the group's applied
                            // commands: nothing of this batch can be written.
                            let _ = reply.send(Err(refused.error));
                            let message = "a command of a group was refused after others of \
                                           it were applied; the batch is not written";
                            self.fail_batch("batch abandoned", message, accepted);
                            for job in jobs {
                                job.fail(message);
                            }
                            return;
                        }
                    }
                    continue;
                }
            };
            let mut tx = Tx::new(
                &self.log,
                &overlay,
                &reads,
                &self.recent,
                LeafIndex(base + entries.len() as u64),
                time,
            );
            match self.machine.apply(command, &mut tx) {
                Ok(applied) if crate::log::precheck_entry(&applied.entry).is_err() => {
                    // A state machine bug: refuse this command alone, keep none of its writes.
                    tracing::error!(
                        index = tx.index.get(),
                        "state machine produced an invalid entry"
                    );
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(SubmitError::Unavailable("invalid entry".into())));
                }
                Ok(applied) => {
                    let local = tx.local;
                    overlay.extend(local);
                    entries.push(applied.entry);
                    accepted.push(Answer::One(reply, applied.output));
                }
                Err(rejection) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(SubmitError::Rejected(rejection)));
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let mut times = WriterTimes {
            apply: started.elapsed(),
            ..WriterTimes::default()
        };
        let mut tx = Tx::new(
            &self.log,
            &overlay,
            &reads,
            &self.recent,
            LeafIndex(base + entries.len() as u64),
            time,
        );
        let extensions = match self.machine.seal(&mut tx) {
            Ok(extensions) => {
                let local = tx.local;
                overlay.extend(local);
                extensions
            }
            Err(message) => {
                self.fail_batch("batch could not be sealed", &message, accepted);
                return;
            }
        };
        times.seal = started.elapsed().saturating_sub(times.apply);
        let mut overlay: Vec<_> = overlay.into_iter().collect();
        // In key order: neighbouring keys share the store's pages, so sorted writes reach each
        // page in one run (hash order measured slower than the B-tree this replaced).
        overlay.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let written: Vec<u64> = overlay
            .iter()
            .map(|(key, _)| self.recent.fingerprint(key))
            .collect();
        let writes = overlay
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => StateWrite::Put(key, value),
                None => StateWrite::Delete(key),
            })
            .collect();
        match self.log.stage_batch_with(&entries, writes, extensions) {
            Ok(staged) => {
                self.next_size = staged.size();
                self.recent.record(staged.size(), written);
                times.stage = started.elapsed().saturating_sub(times.apply + times.seal);
                self.machine.committed();
                times.commit = started
                    .elapsed()
                    .saturating_sub(times.apply + times.seal + times.stage);
                let pending = Pending {
                    staged,
                    replies: accepted,
                    started,
                    writer: times,
                };
                if let Err(std::sync::mpsc::SendError(pending)) = to_syncer.send(pending) {
                    // The sync thread is gone: nothing more can be made durable.
                    tracing::error!("the sync thread stopped; the batch is not acknowledged");
                    self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                    for answer in pending.replies {
                        answer.fail("the log's sync thread stopped");
                    }
                }
            }
            Err(err) => self.fail_batch("batch failed to commit", &err.to_string(), accepted),
        }
    }

    /// Applies a group's commands at consecutive positions after `entries`, all or none: on
    /// success their writes are in `overlay` and their entries in `entries`; when one is refused,
    /// both are as they were before the group.
    fn apply_group(
        &mut self,
        commands: Vec<M::Command>,
        base: u64,
        time: i64,
        overlay: &mut Overlay,
        reads: &std::cell::RefCell<std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>>,
        entries: &mut Vec<NewEntry>,
    ) -> Result<Vec<M::Output>, GroupRefused<M::Rejection>> {
        let start = entries.len();
        let refuse = |stats: &SequencerStats, error, partly_applied| {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            GroupRefused {
                error,
                partly_applied,
            }
        };
        let checked = {
            let tx = Tx::new(
                &self.log,
                overlay,
                reads,
                &self.recent,
                LeafIndex(base + start as u64),
                time,
            );
            self.machine.check_group(&commands, &tx)
        };
        if let Err(rejection) = checked {
            return Err(refuse(&self.stats, SubmitError::Rejected(rejection), false));
        }
        // Each key's value in `overlay` before the group first wrote it (none: it had none).
        let mut undo: HashMap<Vec<u8>, Option<Option<Vec<u8>>>> = HashMap::new();
        let mut outputs = Vec::with_capacity(commands.len());
        for (position, command) in commands.into_iter().enumerate() {
            let mut tx = Tx::new(
                &self.log,
                overlay,
                reads,
                &self.recent,
                LeafIndex(base + entries.len() as u64),
                time,
            );
            let error = match self.machine.apply(command, &mut tx) {
                Ok(applied) if crate::log::precheck_entry(&applied.entry).is_ok() => {
                    let local = tx.local;
                    for (key, value) in local {
                        if !undo.contains_key(&key) {
                            undo.insert(key.clone(), overlay.get(&key).cloned());
                        }
                        overlay.insert(key, value);
                    }
                    entries.push(applied.entry);
                    outputs.push(applied.output);
                    continue;
                }
                Ok(_) => {
                    tracing::error!(
                        index = tx.index.get(),
                        "state machine produced an invalid entry"
                    );
                    SubmitError::Unavailable("invalid entry".into())
                }
                Err(rejection) => SubmitError::Rejected(rejection),
            };
            for (key, previous) in undo {
                match previous {
                    Some(value) => overlay.insert(key, value),
                    None => overlay.remove(&key),
                };
            }
            entries.truncate(start);
            return Err(refuse(&self.stats, error, position > 0));
        }
        Ok(outputs)
    }

    /// A batch that was applied but never written: the state machine forgets it and every
    /// accepted caller gets `UNAVAILABLE` with `message`.
    fn fail_batch(&mut self, what: &'static str, message: &str, accepted: Vec<Answer<M>>) {
        self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        tracing::error!(cause = %message, answers = accepted.len(), "{what}");
        self.machine.rollback();
        for answer in accepted {
            answer.fail(message);
        }
    }
}

#[cfg(test)]
mod tests;

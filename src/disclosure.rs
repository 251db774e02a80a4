//! The public disclosure platform's server side: `policy::disclosure` statistics kept up to date
//! with the log and published as of a signed checkpoint — as JSON, CSV per table and an HTML page
//! in Japanese and English ([`page`]).
//!
//! A [`Disclosure`] keeps one [`Tally`] and folds into it only the leaves appended since its last
//! fold (O(new entries)), up to the size of the newest published checkpoint — the newest one
//! with the quorum of witness cosignatures when witnesses are required — so every number is a
//! statement about that checkpoint's tree. A refresh happens at most once per
//! [`REFRESH_INTERVAL`] (a request in between gets the last snapshot, still pinned to its own
//! checkpoint) and in the background every [`BACKGROUND_INTERVAL`], so a page load never folds a
//! long backlog itself. Rendered bytes are cached per snapshot, language and month: serving a
//! page is a hash-map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use ledger::checkpoint::Checkpoint;
use ledger::{
    chunk::Record,
    entry::{Body, Leaf},
    hash::LeafIndex,
    log::{Log, MAX_LEAVES_PER_READ},
};
use policy::disclosure::{Document, FORMAT, Header, PinnedCheckpoint, Tally};
use policy::event::Event;
use policy::policy_set::hash_text;

use crate::witness::Witnessed;

pub mod page;

/// The shortest time between two refreshes started by requests.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the background task folds new entries.
pub const BACKGROUND_INTERVAL: Duration = Duration::from_secs(5);

/// A language the page is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    /// 日本語 (the default).
    Ja,
    /// English.
    En,
}

impl Lang {
    /// The BCP 47 tag.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }

    /// `ja` or `en`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ja" => Some(Self::Ja),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The language an `Accept-Language` header prefers among ours: the one with the highest
    /// weight (`ja` on a tie, and when neither is named).
    pub fn negotiate(accept_language: &str) -> Self {
        let mut best: (u16, Self) = (0, Self::Ja);
        for item in accept_language.split(',').take(32) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let lang = match tag.split('-').next() {
                Some("ja") => Self::Ja,
                Some("en") => Self::En,
                _ => continue,
            };
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(1000, parse_weight);
            if weight > best.0 || (weight == best.0 && weight > 0 && lang == Self::Ja) {
                best = (weight, lang);
            }
        }
        best.1
    }
}

/// An HTTP `q` value in thousandths (`0` to `1000`); anything malformed is 0.
fn parse_weight(text: &str) -> u16 {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match whole {
        "1" if thousandths == 0 => 1000,
        "0" => thousandths,
        _ => 0,
    }
}

/// The statistics as of one checkpoint, with its rendered forms.
#[derive(Debug)]
pub struct Snapshot {
    document: Document,
    json: Bytes,
    csv: HashMap<String, Bytes>,
    pages: Mutex<HashMap<(Lang, String), Bytes>>,
    made: Instant,
}

/// Most distinct pages cached per snapshot (two languages × months; more months are rendered
/// on every request rather than kept).
const MAX_CACHED_PAGES: usize = 256;

impl Snapshot {
    fn new(document: Document) -> Result<Self, RefreshError> {
        let json = serde_json::to_vec_pretty(&document).map_err(|_| RefreshError::Encode)?;
        let csv = document
            .statistics
            .tables
            .iter()
            .map(|table| (table.name.clone(), Bytes::from(table.to_csv())))
            .collect();
        Ok(Self {
            document,
            json: Bytes::from(json),
            csv,
            pages: Mutex::new(HashMap::new()),
            made: Instant::now(),
        })
    }

    /// The published document.
    pub fn document(&self) -> &Document {
        &self.document
    }

    /// The document as JSON.
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// One table as CSV.
    pub fn csv(&self, table: &str) -> Option<Bytes> {
        self.csv.get(table).cloned()
    }

    /// The tree size the statistics are pinned to (an entity tag for caches).
    pub fn size(&self) -> u64 {
        self.document.checkpoint.size
    }

    /// The HTML page in `lang` for `month` (`None`: the latest month), rendered once per
    /// snapshot. `None` when the month has no statistics.
    pub fn page(&self, lang: Lang, month: Option<&str>) -> Option<Bytes> {
        let months = &self.document.statistics.months;
        let month = match month {
            Some(month) => months.iter().find(|m| *m == month)?.clone(),
            None => months.last().cloned().unwrap_or_default(),
        };
        let key = (lang, month);
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(page) = pages.get(&key) {
            return Some(page.clone());
        }
        let page = Bytes::from(page::render(&self.document, lang, &key.1));
        if pages.len() < MAX_CACHED_PAGES {
            pages.insert(key, page.clone());
        }
        Some(page)
    }
}

/// Why the statistics could not be brought up to date.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Read(#[from] ledger::log::ReadError),
    /// A stored leaf does not decode (a damaged store; `akashi fsck` names it).
    #[error("leaf {index} does not decode")]
    Leaf {
        /// The leaf.
        index: u64,
    },
    /// The tally refused a leaf.
    #[error("leaf {index}: {source}")]
    Tally {
        /// The leaf.
        index: u64,
        /// Why.
        #[source]
        source: policy::disclosure::DisclosureError,
    },
    /// A policy set's activation entry has no readable body of that set.
    #[error("entry {index} is not the policy set it should be")]
    Body {
        /// The entry.
        index: u64,
    },
    /// Witnesses are required and no checkpoint has their quorum yet.
    #[error("no checkpoint has a quorum of witness cosignatures yet")]
    NotWitnessed,
    /// The statistics do not serialise (a bug).
    #[error("the statistics do not serialise")]
    Encode,
}

/// The statistics of one log, kept up to date.
pub struct Disclosure {
    log: Arc<Log>,
    witnessed: Witnessed,
    threshold: u64,
    tally: Mutex<Tally>,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
}

impl std::fmt::Debug for Disclosure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disclosure")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl Disclosure {
    /// Statistics of `log` with cells below `threshold` hidden (the config has checked it),
    /// pinned to the newest witnessed checkpoint when `witnessed` asks for a quorum, else to the
    /// log's newest checkpoint.
    pub fn new(log: Arc<Log>, witnessed: Witnessed, threshold: u64) -> Self {
        Self {
            log,
            witnessed,
            threshold,
            tally: Mutex::new(Tally::new()),
            snapshot: RwLock::new(None),
        }
    }

    /// The newest snapshot, refreshing it first when it is older than [`REFRESH_INTERVAL`] and
    /// the log has grown. Blocking: it reads the store.
    ///
    /// # Errors
    ///
    /// [`RefreshError`] when there is no snapshot yet and none can be made.
    pub fn current(&self) -> Result<Arc<Snapshot>, RefreshError> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let existing = self.last();
        match self.refresh() {
            Ok(snapshot) => Ok(snapshot),
            Err(err) => match existing {
                // The last statement still holds for its own checkpoint.
                Some(snapshot) => {
                    tracing::warn!(cause = %err, "disclosure statistics not refreshed");
                    Ok(snapshot)
                }
                None => Err(err),
            },
        }
    }

    /// The newest snapshot if it needs no refresh (made less than [`REFRESH_INTERVAL`] ago, or
    /// the log has not grown since). Never blocks on the store: the serving fast path.
    pub fn fresh(&self) -> Option<Arc<Snapshot>> {
        let snapshot = self.last()?;
        let fresh = snapshot.made.elapsed() < REFRESH_INTERVAL
            || self
                .pin()
                .is_none_or(|(_, checkpoint)| snapshot.size() == checkpoint.size.get());
        fresh.then_some(snapshot)
    }

    /// The signed note and checkpoint to pin the statistics to: the newest one with the quorum
    /// of witness cosignatures when witnesses are required (none until one exists), else the
    /// log's newest.
    fn pin(&self) -> Option<(String, Checkpoint)> {
        if self.witnessed.quorum() > 0 {
            let witnessed = self.witnessed.newest()?;
            return Some((
                witnessed.note().to_owned(),
                witnessed.signed().checkpoint().clone(),
            ));
        }
        let signed = self.log.checkpoint();
        Some((signed.note().to_owned(), signed.checkpoint().clone()))
    }

    fn last(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Folds every leaf up to the newest published checkpoint and makes a new snapshot (or
    /// returns the current one when nothing was added). Blocking: it reads the store.
    ///
    /// # Errors
    ///
    /// [`RefreshError`]; the tally keeps what it had folded, so the next refresh resumes there.
    pub fn refresh(&self) -> Result<Arc<Snapshot>, RefreshError> {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let (note, checkpoint) = self.pin().ok_or(RefreshError::NotWitnessed)?;
        let size = checkpoint.size.get();
        if let Some(snapshot) = self.last()
            && snapshot.size() == size
        {
            return Ok(snapshot);
        }
        while tally.size() < size {
            let start = tally.size();
            let count = (size - start).min(MAX_LEAVES_PER_READ);
            let leaves = self.log.leaves(LeafIndex(start), count)?;
            for (offset, bytes) in leaves.iter().enumerate() {
                let index = start + offset as u64;
                let leaf = Leaf::decode(bytes).map_err(|_| RefreshError::Leaf { index })?;
                let day = leaf.day.to_string();
                let attributes = leaf.attribute_texts();
                let header = Header {
                    kind: leaf.kind.as_str(),
                    day: &day,
                    attributes: &attributes,
                };
                tally
                    .add(index, &header)
                    .map_err(|source| RefreshError::Tally { index, source })?;
            }
        }
        let statistics =
            tally
                .statistics(self.threshold)
                .map_err(|source| RefreshError::Tally {
                    index: size,
                    source,
                })?;
        let document = Document {
            format: FORMAT.to_owned(),
            checkpoint: PinnedCheckpoint {
                origin: checkpoint.origin.clone(),
                size,
                root_hash: base64::engine::general_purpose::STANDARD
                    .encode(checkpoint.root.as_bytes()),
                note,
            },
            statistics,
        };
        let snapshot = Arc::new(Snapshot::new(document)?);
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The canonical text of the policy set with hash `hash` (64 lowercase hex), read from the
    /// body of the entry that activated it (activations are public, docs/design.md §3). `None`
    /// when no activation in the snapshot has that hash. Blocking: it reads the store.
    ///
    /// # Errors
    ///
    /// [`RefreshError`] when the store cannot be read or the body is not that policy set.
    pub fn policy_text(
        &self,
        snapshot: &Snapshot,
        hash: &str,
    ) -> Result<Option<String>, RefreshError> {
        let Some(set) = snapshot
            .document
            .statistics
            .policy_sets
            .iter()
            .find(|set| set.hash == hash)
        else {
            return Ok(None);
        };
        let index = set.from_index;
        let Record::Present(bytes) = self.log.body(LeafIndex(index))? else {
            return Err(RefreshError::Body { index });
        };
        let body = Body::decode(&bytes).map_err(|_| RefreshError::Body { index })?;
        match Event::from_json(&body.payload) {
            Ok(
                Event::ActivatePolicySet {
                    policies,
                    hash: logged,
                }
                | Event::ApprovePolicySet {
                    policies,
                    hash: logged,
                    ..
                },
            ) if logged.to_hex() == hash && hash_text(&policies) == logged => Ok(Some(policies)),
            _ => Err(RefreshError::Body { index }),
        }
    }
}

#[cfg(test)]
mod tests;

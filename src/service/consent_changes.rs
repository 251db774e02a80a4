//! `ConsentService/WatchConsentChanges`: a recipient of data hears, in log order, of every
//! consent change that concerns what it may have received — so it can stop using data when a
//! patient revokes, opts out, or a consent ends — resumable from any leaf index with no gap and
//! no duplicate.
//!
//! A subscription walks the committed log from its `after_index`: leaves first (their kind is
//! public), private bodies only for consent entries. What concerns recipient `R` (of class `C`):
//! a grant whose consent names `R` or `C`; a revocation of such a consent (the grant is read
//! through the state's consent record); an opt-out by a patient about whom an `ALLOW` naming `R`
//! as recipient was logged before it (the patient's own entry listing, read leaf by leaf). With
//! no recipient, every consent change concerns the subscriber. An expiry is not an entry: a
//! grant states its `valid_until`, after which the consent no longer covers anything with no
//! further change. An entry whose body was erased is skipped, except that a revocation of a
//! grant whose body was erased is still told, from the grant's public leaf, and so is every
//! consent an erasure ended (as a revocation at the erasure's entry). Patients appear as
//! [`SubjectKey::recipient_reference`](crate::keys::SubjectKey::recipient_reference)s, stable for
//! one recipient and unrelated across recipients.
//!
//! Each message carries the checkpoint the walk read up to, so every change sent is in a signed
//! tree; once the walk catches up the task waits for the next commit (or the server stopping).
//! Messages go through a small bounded channel: a slow client holds the walk, never the server's
//! memory.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use ledger::{
    chunk::Record,
    entry::{Body, Leaf},
    hash::LeafIndex,
    log::{Log, MAX_LEAVES_PER_READ},
};
use policy::{
    domain::{Consent, OrgId, RecipientClass, SubjectId},
    event::Event,
    state,
};
use proto::pb;
use tokio::sync::{mpsc, watch};

use super::Core;
use crate::error::{Error, FieldProblem};
use crate::keys::SubjectKey;
use crate::state_machine::LogKv;

/// Messages a subscription keeps ready ahead of its client.
const AHEAD: usize = 4;
/// Most subscriptions open at once; another is `RESOURCE_EXHAUSTED`.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Pages scanned at once over all subscriptions (the store reads run on blocking threads, and
/// catching up from entry 0 must not take both cores from decisions).
const PARALLEL_SCANS: usize = 1;

/// The scan gate, shared by every subscription.
static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARALLEL_SCANS);
/// Open subscriptions.
static OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Most changes in one message.
pub const MAX_CHANGES_PER_MESSAGE: usize = 256;
/// How often a caught-up subscription says how far it has scanned when nothing concerned it.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long a subscription waits for a commit before looking again (commits normally wake it).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The answer stream.
pub type ChangeStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchConsentChangesResponse, tonic::Status>> + Send>>;

/// Whom a subscription is for.
#[derive(Debug, Clone)]
struct Subscriber {
    /// The recipient and its class; none: every change.
    recipient: Option<(OrgId, RecipientClass)>,
    /// The name references are made for (the recipient id, or empty).
    name: String,
}

/// Starts a subscription for `request` over `core`.
///
/// # Errors
///
/// `INVALID_ARGUMENT` for a malformed recipient id, `NOT_FOUND` for an unknown one,
/// `OUT_OF_RANGE` for an `after_index` beyond the log, `UNAVAILABLE` when the state cannot be
/// read.
pub fn subscribe(
    core: &Core,
    request: &pb::WatchConsentChangesRequest,
) -> Result<ChangeStream, Error> {
    let subscriber = if request.recipient.is_empty() {
        Subscriber {
            recipient: None,
            name: String::new(),
        }
    } else {
        let id: OrgId = super::parse(&request.recipient).map_err(|e| {
            Error::invalid(
                "recipient",
                FieldProblem::Invalid {
                    reason: e.to_string(),
                },
            )
        })?;
        let org = state::organization(&LogKv(core.log()), &id)
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .ok_or_else(|| Error::NotFound {
                kind: "organisation",
                id: id.to_string(),
            })?;
        Subscriber {
            name: id.to_string(),
            recipient: Some((id, org.recipient_class)),
        }
    };
    let start = match request.after_index {
        None => 0,
        Some(after) => {
            let size = core.log().size().get();
            if after >= size {
                return Err(Error::OutOfRange {
                    field: "after_index",
                    value: after,
                    limit: size,
                });
            }
            after + 1
        }
    };
    let open = OpenSubscription::new()?;
    let (core_commits, core_stopping) = (core.commits(), core.stopping());
    let (tx, rx) = mpsc::channel(AHEAD);
    let walk = Walk {
        log: core.log().clone(),
        key: core.subject_key(),
        subscriber,
        next: start,
    };
    tokio::spawn(async move {
        let _open = open;
        walk.run(tx, core_commits, core_stopping).await;
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })))
}

/// One of [`MAX_SUBSCRIPTIONS`], held while its walk runs.
struct OpenSubscription;

impl OpenSubscription {
    fn new() -> Result<Self, Error> {
        use std::sync::atomic::Ordering;
        let taken = OPEN.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_SUBSCRIPTIONS {
            OPEN.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Busy(
                "too many consent-change subscriptions are open",
            ));
        }
        Ok(Self)
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One subscription's walk through the log.
struct Walk {
    log: Arc<Log>,
    key: Arc<SubjectKey>,
    subscriber: Subscriber,
    /// The next leaf index to look at.
    next: u64,
}

impl Walk {
    async fn run(
        mut self,
        tx: mpsc::Sender<Result<pb::WatchConsentChangesResponse, tonic::Status>>,
        mut commits: watch::Receiver<u64>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut last_sent = Instant::now();
        let mut sent_to = self.next;
        loop {
            if *stopping.borrow() {
                return;
            }
            // Everything committed now, in pages, each sent with the checkpoint it was read at.
            let checkpoint = self.log.checkpoint();
            let size = checkpoint.checkpoint().size.get();
            while self.next < size {
                // A client gone, or a server stopping, ends the walk between pages too (a
                // catch-up that finds nothing sends nothing that would notice).
                if *stopping.borrow() || tx.is_closed() {
                    return;
                }
                let walk_to = size.min(self.next + MAX_LEAVES_PER_READ);
                let (log, key, subscriber, from) = (
                    self.log.clone(),
                    self.key.clone(),
                    self.subscriber.clone(),
                    self.next,
                );
                let permit = SCANS.acquire().await;
                let scanned = tokio::task::spawn_blocking(move || {
                    changes(&log, &key, &subscriber, from, walk_to)
                })
                .await;
                drop(permit);
                let changes = match scanned {
                    Ok(Ok(changes)) => changes,
                    Ok(Err(err)) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                    Err(_) => {
                        let _ = tx
                            .send(Err(Error::Internal("the consent walk failed").into()))
                            .await;
                        return;
                    }
                };
                self.next = walk_to;
                let chunks: Vec<_> = changes.chunks(MAX_CHANGES_PER_MESSAGE).collect();
                let last = chunks.len().saturating_sub(1);
                for (n, chunk) in chunks.into_iter().enumerate() {
                    // A message's `scanned_to` must not pass a change a later message carries.
                    let scanned_to = if n == last {
                        walk_to
                    } else {
                        chunk.last().map_or(walk_to, |c| c.leaf_index + 1)
                    };
                    let message = pb::WatchConsentChangesResponse {
                        changes: chunk.to_vec(),
                        checkpoint: checkpoint.note().to_owned(),
                        scanned_to,
                    };
                    if !send(&tx, &mut stopping, Ok(message)).await {
                        return;
                    }
                    sent_to = scanned_to;
                    last_sent = Instant::now();
                }
            }
            // Caught up: say how far, now and then, so that a client resumes from here.
            if self.next > sent_to && last_sent.elapsed() >= PROGRESS_EVERY {
                let message = pb::WatchConsentChangesResponse {
                    changes: Vec::new(),
                    checkpoint: checkpoint.note().to_owned(),
                    scanned_to: self.next,
                };
                if !send(&tx, &mut stopping, Ok(message)).await {
                    return;
                }
                sent_to = self.next;
                last_sent = Instant::now();
            }
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        // No commit notices (a log without a sequencer's hook): look again soon.
                        tokio::time::sleep(IDLE_CHECK).await;
                    }
                }
                _ = stopping.changed() => return,
                () = tokio::time::sleep(IDLE_CHECK) => {}
                () = tx.closed() => return,
            }
        }
    }
}

/// Sends `message`, unless the client is gone or the server begins to stop first (a client that
/// does not read must not hold the server's graceful stop). Returns whether it was sent.
async fn send(
    tx: &mpsc::Sender<Result<pb::WatchConsentChangesResponse, tonic::Status>>,
    stopping: &mut watch::Receiver<bool>,
    message: Result<pb::WatchConsentChangesResponse, tonic::Status>,
) -> bool {
    if *stopping.borrow() {
        return false;
    }
    tokio::select! {
        sent = tx.send(message) => sent.is_ok(),
        _ = stopping.changed() => false,
    }
}

/// The changes concerning `subscriber` among entries `from..to`. Blocking: it reads the store.
fn changes(
    log: &Log,
    key: &SubjectKey,
    subscriber: &Subscriber,
    from: u64,
    to: u64,
) -> Result<Vec<pb::ConsentChange>, Error> {
    let leaves = log.leaves(LeafIndex(from), to - from)?;
    let mut out = Vec::new();
    for (index, leaf) in (from..).zip(&leaves) {
        let leaf = Leaf::decode(leaf).map_err(|_| Error::Internal("a stored leaf is bad"))?;
        if !matches!(
            leaf.kind.as_str(),
            "consent.grant" | "consent.revoke" | "consent.opt_out" | "consent.erase"
        ) {
            continue;
        }
        let Some(event) = event_at(log, index)? else {
            continue;
        };
        if let Event::EraseEntries {
            subject,
            dropped_consents,
            time,
            ..
        } = &event
        {
            // The consents an erasure ended are told as revocations: the recipient must stop
            // using what they covered, as for a revocation.
            let reference = key.recipient_reference(&subscriber.name, subject.as_str());
            for consent_id in dropped_consents {
                if let Some(covered) = ended(log, subscriber, consent_id)? {
                    out.push(pb::ConsentChange {
                        leaf_index: index,
                        kind: "revoke".into(),
                        patient_ref: reference.clone(),
                        time: time.to_rfc3339(),
                        ..covered
                    });
                }
            }
            continue;
        }
        if let Some(change) = change(log, key, subscriber, index, &event)? {
            out.push(change);
        }
    }
    Ok(out)
}

/// The event of entry `index`, or none when its body was erased.
fn event_at(log: &Log, index: u64) -> Result<Option<Event>, Error> {
    let Record::Present(bytes) = log.body(LeafIndex(index))? else {
        return Ok(None);
    };
    let body = Body::decode(&bytes).map_err(|_| Error::Internal("a stored body is bad"))?;
    Event::from_json(&body.payload)
        .map(Some)
        .map_err(|_| Error::Internal("a stored event does not decode"))
}

/// `event` (at `index`) as `subscriber` sees it, if it concerns them.
fn change(
    log: &Log,
    key: &SubjectKey,
    subscriber: &Subscriber,
    index: u64,
    event: &Event,
) -> Result<Option<pb::ConsentChange>, Error> {
    let reference =
        |subject: &SubjectId| key.recipient_reference(&subscriber.name, subject.as_str());
    Ok(match event {
        Event::GrantConsent(consent) => names(subscriber, consent).then(|| pb::ConsentChange {
            leaf_index: index,
            kind: "grant".into(),
            patient_ref: reference(&consent.subject),
            time: consent.granted_at.to_rfc3339(),
            ..covered(consent)
        }),
        Event::RevokeConsent {
            subject,
            consent_id,
            revoked_at,
        } => ended(log, subscriber, consent_id)?.map(|covered| pb::ConsentChange {
            leaf_index: index,
            kind: "revoke".into(),
            patient_ref: reference(subject),
            time: revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            ..covered
        }),
        Event::RecordOptOut { subject, purposes } => {
            let concerns = match &subscriber.recipient {
                None => true,
                Some((recipient, _)) => allowed_before(log, subject, recipient, index)?,
            };
            concerns.then(|| pb::ConsentChange {
                leaf_index: index,
                kind: "opt_out".into(),
                patient_ref: reference(subject),
                purposes: purposes.iter().map(ToString::to_string).collect(),
                ..pb::ConsentChange::default()
            })
        }
        _ => None,
    })
}

/// What the consent `consent_id`, now ended, covered, if it names the subscriber or its class:
/// from its grant's body, or (erased) the grant's public leaf, which names its recipients,
/// classes, purposes and level.
fn ended(
    log: &Log,
    subscriber: &Subscriber,
    consent_id: &policy::domain::ConsentId,
) -> Result<Option<pb::ConsentChange>, Error> {
    let record = state::consent_record(&LogKv(log), consent_id)
        .map_err(|e| Error::Unavailable(Box::new(e)))?;
    Ok(match record {
        Some(record) => match event_at(log, record.granted)? {
            Some(Event::GrantConsent(consent)) => {
                names(subscriber, &consent).then(|| covered(&consent))
            }
            _ => grant_leaf(log, subscriber, record.granted)?.map(|mut change| {
                change.consent_id = consent_id.to_string();
                change
            }),
        },
        None => None,
    })
}

/// What the grant at `index` covered, from its public leaf (its body was erased), if it names
/// the subscriber or its class.
fn grant_leaf(
    log: &Log,
    subscriber: &Subscriber,
    index: u64,
) -> Result<Option<pb::ConsentChange>, Error> {
    let Some(leaf) = log.leaves(LeafIndex(index), 1)?.into_iter().next() else {
        return Ok(None);
    };
    let leaf = Leaf::decode(&leaf).map_err(|_| Error::Internal("a stored leaf is bad"))?;
    let list = |name: &str| -> Vec<String> {
        leaf.attribute(name)
            .filter(|v| *v != "none")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let concerns = match &subscriber.recipient {
        None => true,
        Some((id, class)) => {
            list("recipients").iter().any(|r| r == id.as_str())
                || list("recipient_classes")
                    .iter()
                    .any(|c| c == class.as_str())
        }
    };
    Ok(concerns.then(|| pb::ConsentChange {
        purposes: list("purposes"),
        max_level: leaf.attribute("max_level").unwrap_or_default().to_owned(),
        ..pb::ConsentChange::default()
    }))
}

/// Whether `consent` names the subscriber or its class (every consent, for no recipient).
fn names(subscriber: &Subscriber, consent: &Consent) -> bool {
    match &subscriber.recipient {
        None => true,
        Some((id, class)) => {
            consent.recipients.contains(id) || consent.recipient_classes.contains(class)
        }
    }
}

/// A change's description of what `consent` covers.
fn covered(consent: &Consent) -> pb::ConsentChange {
    pb::ConsentChange {
        consent_id: consent.id.to_string(),
        purposes: consent.purposes.iter().map(ToString::to_string).collect(),
        data_categories: consent
            .data_categories
            .iter()
            .map(ToString::to_string)
            .collect(),
        max_level: consent.max_level.to_string(),
        valid_from: consent
            .valid_from
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        valid_until: consent
            .valid_until
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        ..pb::ConsentChange::default()
    }
}

/// Whether an `ALLOW` naming `recipient` was logged about `subject` before entry `before`: the
/// patient's entries, read from their listing, leaf by leaf (decisions' leaves are public).
fn allowed_before(
    log: &Log,
    subject: &SubjectId,
    recipient: &OrgId,
    before: u64,
) -> Result<bool, Error> {
    let entries = state::subject_entries(&LogKv(log), subject)
        .map_err(|e| Error::Unavailable(Box::new(e)))?;
    // Newest first: a recipient that received data about the patient usually did recently.
    for index in entries.into_iter().rev().filter(|i| *i < before) {
        let leaves = log.leaves(LeafIndex(index), 1)?;
        let Some(leaf) = leaves.first() else {
            continue;
        };
        let leaf = Leaf::decode(leaf).map_err(|_| Error::Internal("a stored leaf is bad"))?;
        if leaf.kind.as_str() == "access.decision"
            && leaf.attribute("decision") == Some("ALLOW")
            && leaf.attribute("recipient") == Some(recipient.as_str())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

//! A patient's own history (HistoryService/GetSubjectHistory), verified: the checkpoint's
//! signature, each entry's inclusion proof against it, each body against its leaf's commitment,
//! each leaf header against its event, and the per-subject chain (docs/design.md §3, §8): a decision
//! names the subject's previous entry (`subject_prev`), which must be the entry shown just before
//! it, so an entry about the patient left out between two shown ones is caught.
//!
//! What this cannot catch yet: entries left out after the last decision shown, or before the
//! first one (that needs the per-subject map root of docs/design.md §8), and consent events, which do
//! not carry `subject_prev`.
//!
//! A history may come in pages, each with the checkpoint its proofs are against (the log may grow
//! between pages); the chain runs across pages. Whether those checkpoints are consistent with
//! each other and with what a witness saw is `trust`'s business, not this module's.
//!
//! This module does not fetch anything and prints nothing; [`History`] holds the rows and
//! findings for the CLI to show.

use ledger::{
    checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint},
    entry::{Leaf, verify_commitment},
    hash::{Hash, LeafIndex, hash_leaf},
    note::NoteVerifier,
    proof::InclusionProof,
};
use policy::{domain::SubjectId, event::Event};
use serde::Serialize;

use crate::replay::header_mismatch;
use crate::report::{Finding, error_chain};

/// The most entries one history may hold.
pub const MAX_HISTORY_ENTRIES: usize = 1 << 20;

/// One page of a history: entries and the signed checkpoint their proofs are against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The signed checkpoint note.
    pub checkpoint: String,
    /// The entries, oldest first.
    pub entries: Vec<HistoryEntry>,
}

/// One entry as the history service returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its position in the log.
    pub leaf_index: LeafIndex,
    /// The public leaf bytes.
    pub leaf: Vec<u8>,
    /// The private body bytes; none when erased.
    pub body: Option<Vec<u8>>,
    /// Its inclusion proof against the history's checkpoint.
    pub inclusion_proof: Vec<Hash>,
}

/// A verified history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct History {
    /// The size of the newest signed checkpoint an entry was proven against.
    pub tree_size: u64,
    /// Its root, hex.
    pub root: String,
    /// One row per entry, in the order given.
    pub rows: Vec<HistoryRow>,
    /// What failed verification; empty when everything holds.
    pub findings: Vec<Finding>,
}

/// One entry, readable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// Leaf index.
    pub index: u64,
    /// The day of the entry (UTC).
    pub day: String,
    /// Entry kind, e.g. `access.decision`.
    pub kind: String,
    /// What was asked for (decisions).
    pub action: Option<String>,
    /// Who receives the data (decisions) or who may (consents).
    pub recipient: Option<String>,
    /// For what purpose(s).
    pub purpose: Option<String>,
    /// `ALLOW` or `DENY` (decisions), with ` review` when flagged for review.
    pub decision: Option<String>,
    /// Whether the entry passed every check.
    pub verified: bool,
    /// Whether its body was erased.
    pub erased: bool,
}

impl History {
    /// True when every entry verified and the chain holds.
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verifies a history, given in pages (oldest first).
///
/// # Errors
///
/// [`HistoryError::Checkpoint`] when a page's checkpoint does not verify (its entries cannot be
/// checked then), [`HistoryError::TooManyEntries`].
pub fn verify_history(
    verifier: &NoteVerifier,
    pages: &[HistoryPage],
) -> Result<History, HistoryError> {
    let total: usize = pages.iter().map(|p| p.entries.len()).sum();
    if total > MAX_HISTORY_ENTRIES {
        return Err(HistoryError::TooManyEntries {
            got: total,
            max: MAX_HISTORY_ENTRIES,
        });
    }
    let mut check = Check {
        checkpoint: Checkpoint::new("", ledger::hash::TreeSize(0), ledger::hash::empty_root()),
        findings: Vec::new(),
        previous: None,
        subject: None,
    };
    let mut newest: Option<Checkpoint> = None;
    let mut rows = Vec::with_capacity(total);
    for page in pages {
        let signed = SignedCheckpoint::verify(&page.checkpoint, verifier)
            .map_err(HistoryError::Checkpoint)?;
        check.checkpoint = signed.into_checkpoint();
        if newest
            .as_ref()
            .is_none_or(|n| n.size <= check.checkpoint.size)
        {
            newest = Some(check.checkpoint.clone());
        }
        rows.extend(page.entries.iter().map(|entry| check.entry(entry)));
    }
    let newest = newest.unwrap_or_else(|| check.checkpoint.clone());
    Ok(History {
        tree_size: newest.size.get(),
        root: newest.root.to_hex(),
        rows,
        findings: check.findings,
    })
}

/// Why a history could not be checked at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A page's checkpoint is malformed or not signed by the log key.
    #[error("history checkpoint does not verify")]
    Checkpoint(#[source] CheckpointError),
    /// More entries than [`MAX_HISTORY_ENTRIES`].
    #[error("history has {got} entries, more than the limit of {max}")]
    TooManyEntries {
        /// How many.
        got: usize,
        /// The limit.
        max: usize,
    },
}

impl HistoryError {
    /// The exit code: a checkpoint that does not verify is invalid, too much input an error.
    pub fn exit_code(&self) -> crate::exit::AuditExitCode {
        match self {
            Self::Checkpoint(_) => crate::exit::AuditExitCode::Invalid,
            Self::TooManyEntries { .. } => crate::exit::AuditExitCode::Error,
        }
    }
}

/// The state of checking one history.
struct Check {
    checkpoint: Checkpoint,
    findings: Vec<Finding>,
    /// The index of the entry shown before the current one.
    previous: Option<u64>,
    /// The subject of the first event read; every other must be the same.
    subject: Option<SubjectId>,
}

impl Check {
    fn entry(&mut self, entry: &HistoryEntry) -> HistoryRow {
        let index = entry.leaf_index.get();
        let before = self.findings.len();
        let previous = self.previous.replace(index);
        if let Some(previous) = previous
            && index <= previous
        {
            self.findings
                .push(Finding::HistoryNotAscending { index, previous });
        }
        let proof = InclusionProof {
            leaf_index: entry.leaf_index,
            tree_size: self.checkpoint.size,
            path: entry.inclusion_proof.clone(),
        };
        if let Err(err) = proof.verify(&hash_leaf(&entry.leaf), &self.checkpoint.root) {
            self.findings.push(Finding::BadInclusionProof {
                index,
                error: error_chain(&err),
            });
        }
        let leaf = match Leaf::decode(&entry.leaf) {
            Ok(leaf) => leaf,
            Err(err) => {
                self.findings.push(Finding::BadLeaf {
                    index,
                    error: error_chain(&err),
                });
                return HistoryRow::unreadable(index, entry.body.is_none());
            }
        };
        let mut row = HistoryRow::from_leaf(index, &leaf, entry.body.is_none());
        if let Some(event) = self.event(index, &leaf, entry.body.as_deref()) {
            self.chain(index, previous, &event);
            row.fill_from(&event);
        }
        row.verified = self.findings.len() == before;
        row
    }

    /// The entry's event, when its body is there, matches the commitment and decodes.
    fn event(&mut self, index: u64, leaf: &Leaf, body: Option<&[u8]>) -> Option<Event> {
        let body = body?;
        if verify_commitment(leaf, body).is_err() {
            self.findings.push(Finding::BadCommitment { index });
            return None;
        }
        let payload = body
            .get(ledger::entry::BODY_NONCE_LEN..)
            .unwrap_or_default();
        let event = match Event::from_json(payload) {
            Ok(event) => event,
            Err(_) => {
                self.findings.push(Finding::BadEvent {
                    index,
                    error: "body is not a valid event".to_owned(),
                });
                return None;
            }
        };
        if let Some(finding) = header_mismatch(index, leaf, &event) {
            self.findings.push(finding);
        }
        Some(event)
    }

    /// Checks that the event is about the same subject as the others and, for a decision, that
    /// it names the entry shown before it as the subject's previous entry.
    fn chain(&mut self, index: u64, previous: Option<u64>, event: &Event) {
        match (event.subject(), &self.subject) {
            (None, _) => self.findings.push(Finding::NotAboutSubject { index }),
            (Some(subject), None) => self.subject = Some(subject.clone()),
            (Some(subject), Some(first)) if subject != first => {
                self.findings.push(Finding::NotAboutSubject { index });
            }
            (Some(_), Some(_)) => {}
        }
        if let Event::Decision { subject_prev, .. } = event
            && *subject_prev != previous
        {
            self.findings.push(Finding::SubjectChainBroken {
                index,
                names_previous: *subject_prev,
                shown_previous: previous,
            });
        }
    }
}

impl HistoryRow {
    fn unreadable(index: u64, erased: bool) -> Self {
        Self {
            index,
            day: String::new(),
            kind: String::new(),
            action: None,
            recipient: None,
            purpose: None,
            decision: None,
            verified: false,
            erased,
        }
    }

    /// The row from the public header alone (all there is when the body was erased).
    fn from_leaf(index: u64, leaf: &Leaf, erased: bool) -> Self {
        let attribute = |name: &str| leaf.attribute(name).map(str::to_owned);
        Self {
            index,
            day: leaf.day.to_string(),
            kind: leaf.kind.to_string(),
            action: attribute("action"),
            recipient: attribute("recipient"),
            purpose: attribute("purpose").or_else(|| attribute("purposes")),
            decision: attribute("decision"),
            verified: false,
            erased,
        }
    }

    /// Details only the private body has.
    fn fill_from(&mut self, event: &Event) {
        match event {
            Event::Decision {
                request,
                decision,
                recipient,
                ..
            } => {
                self.action = Some(request.action.to_string());
                self.recipient = recipient.as_ref().map(|r| r.id.to_string());
                self.purpose = Some(request.purpose.to_string());
                let review = if decision.review_required {
                    " review"
                } else {
                    ""
                };
                self.decision = Some(format!("{}{review}", decision.effect));
            }
            Event::GrantConsent(consent) => {
                let recipients: Vec<String> = consent
                    .recipients
                    .iter()
                    .map(ToString::to_string)
                    .chain(consent.recipient_classes.iter().map(ToString::to_string))
                    .collect();
                self.recipient = Some(recipients.join(","));
                self.purpose = Some(readable_list(&consent.purposes));
            }
            Event::RecordOptOut { purposes, .. } => self.purpose = Some(readable_list(purposes)),
            _ => {}
        }
    }
}

/// A list from a private body, for a person to read: items as written, joined by commas, or
/// `none`. Not the public leaf's form (items percent-encoded where they leave ASCII): that one is
/// the log's own (`policy::event::Event::public_attributes`), which the replay compares
/// against, so the two cannot drift apart.
fn readable_list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

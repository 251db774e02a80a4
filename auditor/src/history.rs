//! A patient's own history (HistoryService/GetSubjectHistory), verified: the checkpoint's
//! signature, each entry's inclusion proof against it, each body against its leaf's commitment,
//! each leaf header against its event, the per-subject chain (docs/design.md §3, §8), and that
//! the entries shown are *all* the log holds about the patient ([`Completeness`]).
//!
//! **Chain.** A decision names the subject's previous entry (`subject_prev`), which must be the
//! entry shown just before it, so an entry about the patient left out between two shown ones is
//! caught there and placed.
//!
//! **Completeness** (`ledger::completeness`). The last page's checkpoint (already verified)
//! commits in its `akashi-subject-map` line to a map from every patient's VRF-derived key to
//! their record: how many entries are about them, the first and last index, and a chain head
//! over their leaf hashes. The last page carries the patient's proof: the VRF proof that the
//! key is theirs, the record, and its map proof. This module checks that proof for the patient
//! id, recomputes the record from every entry shown (across pages) below that checkpoint's size,
//! and compares: an entry left out anywhere (first, last, between, a consent without
//! `subject_prev`), an entry added or replaced, or a record older than the checkpoint each make
//! them differ, and the finding says where in words a patient reads. A log whose checkpoint has
//! no subject map cannot prove completeness: the history is then [`Completeness::Uncommitted`],
//! which is not valid (a patient must not be told "complete" without proof).
//!
//! A history may come in pages, each with the checkpoint its proofs are against (the log may grow
//! between pages); the chain runs across pages, and completeness is judged at the last page's
//! checkpoint. Whether those checkpoints are consistent with each other and with what a witness
//! saw is `trust`'s business, not this module's.
//!
//! This module does not fetch anything and prints nothing; [`History`] holds the rows, findings
//! and completeness verdict for the CLI to show. [`pages_from_json`] reads saved responses as
//! grpcurl prints them.

use ledger::{
    checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint},
    completeness::{MapCommitment, SubjectProof, SubjectRecord, map_key},
    entry::{Leaf, verify_commitment},
    hash::{Hash, LeafIndex, hash_leaf},
    map::{KEY_BITS, MapProof, Terminal},
    note::NoteVerifier,
    proof::{InclusionProof, MAX_PROOF_LEN},
    vrf::VrfProof,
};
use policy::{domain::SubjectId, event::Event};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::proto_json;
use crate::replay::header_mismatch;
use crate::report::{Finding, error_chain};

/// The most entries one history may hold.
pub const MAX_HISTORY_ENTRIES: usize = 1 << 20;

/// The largest saved history ([`pages_from_json`]) read, in bytes: the size the CLI accepts for
/// one gRPC response, for the whole file.
pub const MAX_HISTORY_JSON: usize = 64 << 20;

/// One page of a history: entries and the signed checkpoint their proofs are against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The signed checkpoint note.
    pub checkpoint: String,
    /// The entries, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// The completeness proof against the checkpoint, when the server sent one (only the last
    /// page's is used).
    pub completeness: Option<CompletenessProof>,
}

/// A patient's completeness proof as received (the `SubjectCompleteness` message, field by
/// field), not yet checked: lengths are checked by [`CompletenessProof::subject_proof`], the
/// rest by verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompletenessProof {
    /// ECVRF proof of the patient id (80 bytes).
    pub vrf_proof: Vec<u8>,
    /// Entries about the patient; 0 claims there are none.
    pub count: u64,
    /// Leaf index of the first of them.
    pub first_index: u64,
    /// Leaf index of the last of them.
    pub last_index: u64,
    /// The chain head over them (32 bytes; empty when `count` is 0).
    pub chain_head: Vec<u8>,
    /// Map proof siblings, from the root's children down (32 bytes each).
    pub map_siblings: Vec<Vec<u8>>,
    /// The key of the leaf the map path ends at (32 bytes): the patient's own when `count` is
    /// above 0 (not trusted: recomputed from the VRF output and the record), another patient's
    /// when the path of an absent patient ends there; empty at an empty subtree.
    pub leaf_key: Vec<u8>,
    /// And that leaf's value hash (32 bytes).
    pub leaf_value: Vec<u8>,
}

impl CompletenessProof {
    /// The typed proof: the record (none when `count` is 0) and the map proof's terminal,
    /// the patient's own leaf for a record (recomputed; the sent `leaf_key` and `leaf_value`
    /// are not used), else the sent leaf or the empty subtree.
    ///
    /// # Errors
    ///
    /// [`CompletenessProofError`] when a field has the wrong length or there are more siblings
    /// than a map key has bits.
    pub fn subject_proof(&self) -> Result<SubjectProof, CompletenessProofError> {
        let vrf_proof =
            VrfProof::from_bytes(&self.vrf_proof).map_err(|_| CompletenessProofError::VrfProof)?;
        if self.map_siblings.len() > KEY_BITS {
            return Err(CompletenessProofError::TooManySiblings {
                got: self.map_siblings.len(),
            });
        }
        let siblings = self
            .map_siblings
            .iter()
            .map(|s| Hash::from_slice(s).map_err(|_| CompletenessProofError::Sibling))
            .collect::<Result<Vec<_>, _>>()?;
        let record = if self.count == 0 {
            None
        } else {
            Some(SubjectRecord {
                count: self.count,
                first: self.first_index,
                last: self.last_index,
                head: Hash::from_slice(&self.chain_head)
                    .map_err(|_| CompletenessProofError::ChainHead)?,
            })
        };
        let terminal = match (&record, self.leaf_key.is_empty()) {
            // The patient's own leaf, under the key of the output the VRF proof states
            // (`SubjectProof::verify` checks that output against the patient id).
            (Some(record), _) => Terminal::Leaf {
                key: map_key(
                    &vrf_proof
                        .output()
                        .map_err(|_| CompletenessProofError::VrfProof)?,
                ),
                value: record.value_hash(),
            },
            (None, true) => Terminal::Empty,
            (None, false) => Terminal::Leaf {
                key: self
                    .leaf_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| CompletenessProofError::LeafKey)?,
                value: Hash::from_slice(&self.leaf_value)
                    .map_err(|_| CompletenessProofError::LeafValue)?,
            },
        };
        Ok(SubjectProof {
            vrf_proof,
            record,
            map_proof: MapProof { siblings, terminal },
        })
    }
}

/// Why a completeness proof's fields do not make a proof.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompletenessProofError {
    /// The chain head is not 32 bytes.
    #[error("the chain head is not 32 bytes")]
    ChainHead,
    /// The other key is not 32 bytes.
    #[error("the leaf key is not 32 bytes")]
    LeafKey,
    /// The other value is not 32 bytes.
    #[error("the leaf value is not 32 bytes")]
    LeafValue,
    /// A map sibling is not 32 bytes.
    #[error("a map sibling is not 32 bytes")]
    Sibling,
    /// More siblings than a key has bits.
    #[error("the map proof has {got} siblings, more than {KEY_BITS}")]
    TooManySiblings {
        /// How many.
        got: usize,
    },
    /// The VRF proof is not 80 bytes or states no output.
    #[error("the VRF proof is malformed")]
    VrfProof,
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
    /// Whether the entries shown are all the log holds about the patient.
    pub completeness: Completeness,
    /// What the trusted witnesses vouch for, when the verifier asked for witnesses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witnessed: Option<Witnessed>,
}

/// How a history's checkpoint is vouched for by witnesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Witnessed {
    /// The size of the checkpoint the witnesses cosigned: the history's own, or a later one
    /// proven to contain it.
    pub tree_size: u64,
    /// How many of the trusted witnesses cosigned it.
    pub cosignatures: usize,
    /// Whether the history's own checkpoint carries the cosignatures (so its subject-map line is
    /// witnessed too); otherwise a later witnessed checkpoint was proven to extend it.
    pub direct: bool,
}

/// Whether a history is complete, judged at the last page's checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Completeness {
    /// The log proves that it holds exactly `entries` entries about the patient in the tree of
    /// `tree_size` (0: none), and they are the ones shown.
    Complete {
        /// How many.
        entries: u64,
        /// The checkpoint's size.
        tree_size: u64,
    },
    /// Something is missing, added, or does not verify: the findings say what.
    Failed {
        /// The checkpoint's size.
        tree_size: u64,
    },
    /// The checkpoint commits to no subject map: completeness cannot be checked.
    Uncommitted {
        /// The checkpoint's size.
        tree_size: u64,
    },
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
    /// The kind(s) of data asked for (decisions) or consented to (grants), from the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_category: Option<String>,
    /// The level of identifiability asked for (decisions) or the most a consent allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Whether the entry passed every check.
    pub verified: bool,
    /// Whether its body was erased.
    pub erased: bool,
}

impl History {
    /// True when every entry verified, the chain holds, and the log proved the history complete.
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty() && matches!(self.completeness, Completeness::Complete { .. })
    }

    /// The exit code: valid only when [`History::is_valid`]; a history whose completeness cannot
    /// be checked is not valid either.
    pub fn exit_code(&self) -> crate::exit::AuditExitCode {
        if self.is_valid() {
            crate::exit::AuditExitCode::Valid
        } else {
            crate::exit::AuditExitCode::Invalid
        }
    }
}

/// Verifies the history of the patient `patient_id`, given in pages (oldest first).
///
/// # Errors
///
/// [`HistoryError::Checkpoint`] when a page's checkpoint does not verify (its entries cannot be
/// checked then), [`HistoryError::NoPages`], [`HistoryError::TooManyEntries`].
pub fn verify_history(
    verifier: &NoteVerifier,
    patient_id: &str,
    pages: &[HistoryPage],
) -> Result<History, HistoryError> {
    if pages.is_empty() {
        return Err(HistoryError::NoPages);
    }
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
        shown: Vec::with_capacity(total),
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
    let proof = pages.last().and_then(|page| page.completeness.as_ref());
    let completeness = check.completeness(patient_id, proof);
    Ok(History {
        tree_size: newest.size.get(),
        root: newest.root.to_hex(),
        rows,
        findings: check.findings,
        completeness,
        witnessed: None,
    })
}

/// Reads saved `GetSubjectHistory` responses in proto3 JSON as grpcurl prints them: one
/// response object, or an array of them (the pages, oldest first). Unknown fields are ignored.
///
/// # Errors
///
/// [`HistoryJsonError`] when the text is too large, not JSON, not of that shape, or a field
/// has the wrong type.
pub fn pages_from_json(text: &str) -> Result<Vec<HistoryPage>, HistoryJsonError> {
    if text.len() > MAX_HISTORY_JSON {
        return Err(HistoryJsonError::TooLarge {
            size: text.len(),
            max: MAX_HISTORY_JSON,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|_| HistoryJsonError::Json)?;
    let pages = match value {
        Value::Array(items) if items.is_empty() => return Err(HistoryJsonError::NotAResponse),
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(HistoryJsonError::NotAResponse),
    };
    let mut total = 0usize;
    pages
        .iter()
        .map(|page| {
            let Value::Object(object) = page else {
                return Err(HistoryJsonError::NotAResponse);
            };
            let page = page_from_json(object)?;
            total = total.saturating_add(page.entries.len());
            if total > MAX_HISTORY_ENTRIES {
                return Err(HistoryJsonError::TooManyEntries {
                    max: MAX_HISTORY_ENTRIES,
                });
            }
            Ok(page)
        })
        .collect()
}

/// Why a saved history could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryJsonError {
    /// A field has the wrong type or is not canonical base64 or decimal.
    #[error("field `{field}` is not valid")]
    InvalidField {
        /// The field's JSON name.
        field: &'static str,
    },
    /// Not JSON.
    #[error("the history is not JSON")]
    Json,
    /// JSON, but not a response object or a non-empty array of them.
    #[error("the history is not a `GetSubjectHistory` response or an array of them")]
    NotAResponse,
    /// Too many bytes.
    #[error("the history is {size} bytes, more than {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More entries than [`MAX_HISTORY_ENTRIES`].
    #[error("the history has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
}

/// Why a history could not be checked at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A page's checkpoint is malformed or not signed by the log key.
    #[error("history checkpoint does not verify")]
    Checkpoint(#[source] CheckpointError),
    /// No page was given, so there is no checkpoint to check anything against.
    #[error("the history has no page")]
    NoPages,
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
            Self::NoPages | Self::TooManyEntries { .. } => crate::exit::AuditExitCode::Error,
        }
    }
}

fn page_from_json(object: &Map<String, Value>) -> Result<HistoryPage, HistoryJsonError> {
    let invalid = |field| HistoryJsonError::InvalidField { field };
    // A response has a checkpoint; anything without one is not a response.
    let checkpoint = match object.get("checkpoint") {
        Some(Value::String(note)) => note.clone(),
        Some(_) => return Err(invalid("checkpoint")),
        None => return Err(HistoryJsonError::NotAResponse),
    };
    let entries = match object.get("entries") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_HISTORY_ENTRIES => items
            .iter()
            .map(entry_from_json)
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("entries")),
    };
    let completeness = match object.get("completeness") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(completeness_from_json(c)?),
        Some(_) => return Err(invalid("completeness")),
    };
    Ok(HistoryPage {
        checkpoint,
        entries,
        completeness,
    })
}

fn entry_from_json(value: &Value) -> Result<HistoryEntry, HistoryJsonError> {
    let invalid = |field| HistoryJsonError::InvalidField { field };
    let Value::Object(object) = value else {
        return Err(invalid("entries"));
    };
    let get = |camel, snake| proto_json::field(object, camel, snake);
    let leaf_index =
        proto_json::uint64(get("leafIndex", "leaf_index")).ok_or(invalid("leafIndex"))?;
    let leaf = proto_json::bytes_field(get("leaf", "leaf")).ok_or(invalid("leaf"))?;
    let body = proto_json::bytes_field(get("body", "body")).ok_or(invalid("body"))?;
    let redacted = proto_json::boolean(get("redacted", "redacted")).ok_or(invalid("redacted"))?;
    let inclusion_proof =
        proto_json::repeated_bytes(get("inclusionProof", "inclusion_proof"), MAX_PROOF_LEN)
            .and_then(|items| {
                items
                    .iter()
                    .map(|h| Hash::from_slice(h).ok())
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or(invalid("inclusionProof"))?;
    Ok(HistoryEntry {
        leaf_index: LeafIndex(leaf_index),
        leaf,
        // As over gRPC: an empty body the server does not call erased is checked (and fails).
        body: (!redacted).then_some(body),
        inclusion_proof,
    })
}

fn completeness_from_json(
    object: &Map<String, Value>,
) -> Result<CompletenessProof, HistoryJsonError> {
    let invalid = |field| HistoryJsonError::InvalidField { field };
    let get = |camel, snake| proto_json::field(object, camel, snake);
    let bytes = |camel, snake| proto_json::bytes_field(get(camel, snake)).ok_or(invalid(camel));
    let uint64 = |camel, snake| proto_json::uint64(get(camel, snake)).ok_or(invalid(camel));
    Ok(CompletenessProof {
        vrf_proof: bytes("vrfProof", "vrf_proof")?,
        count: uint64("count", "count")?,
        first_index: uint64("firstIndex", "first_index")?,
        last_index: uint64("lastIndex", "last_index")?,
        chain_head: bytes("chainHead", "chain_head")?,
        map_siblings: proto_json::repeated_bytes(get("mapSiblings", "map_siblings"), KEY_BITS)
            .ok_or(invalid("mapSiblings"))?,
        leaf_key: bytes("leafKey", "leaf_key")?,
        leaf_value: bytes("leafValue", "leaf_value")?,
    })
}

/// The state of checking one history.
struct Check {
    checkpoint: Checkpoint,
    findings: Vec<Finding>,
    /// The index of the entry shown before the current one.
    previous: Option<u64>,
    /// The subject of the first event read; every other must be the same.
    subject: Option<SubjectId>,
    /// Every entry shown: its index and RFC 9162 leaf hash.
    shown: Vec<(u64, Hash)>,
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
        let leaf_hash = hash_leaf(&entry.leaf);
        self.shown.push((index, leaf_hash));
        if let Err(err) = proof.verify(&leaf_hash, &self.checkpoint.root) {
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

    /// Judges completeness at the current (last page's) checkpoint with the last page's proof;
    /// what fails becomes findings.
    fn completeness(
        &mut self,
        patient_id: &str,
        proof: Option<&CompletenessProof>,
    ) -> Completeness {
        let tree_size = self.checkpoint.size.get();
        let failed = Completeness::Failed { tree_size };
        let commitment = match MapCommitment::of(&self.checkpoint) {
            Ok(Some(commitment)) => commitment,
            Ok(None) => return Completeness::Uncommitted { tree_size },
            Err(err) => {
                self.findings.push(Finding::BadSubjectMapLine {
                    size: tree_size,
                    error: error_chain(&err),
                });
                return failed;
            }
        };
        let Some(proof) = proof else {
            self.findings
                .push(Finding::CompletenessProofMissing { tree_size });
            return failed;
        };
        let bad_proof = |error: &dyn std::error::Error| Finding::BadCompletenessProof {
            tree_size,
            error: error_chain(error),
        };
        let verified = proof
            .subject_proof()
            .map_err(|err| bad_proof(&err))
            .and_then(|proof| {
                proof
                    .verify(patient_id, &commitment)
                    .map_err(|err| bad_proof(&err))
            });
        let (beta, recorded) = match verified {
            Ok(verified) => verified,
            Err(finding) => {
                self.findings.push(finding);
                return failed;
            }
        };
        // Every entry shown below the checkpoint's size, in index order, once.
        let mut shown: Vec<(u64, Hash)> = self
            .shown
            .iter()
            .copied()
            .filter(|(index, _)| *index < tree_size)
            .collect();
        shown.sort_by_key(|(index, _)| *index);
        shown.dedup_by_key(|(index, _)| *index);
        let recomputed = SubjectRecord::of(&beta, &shown);
        if recorded == recomputed {
            return Completeness::Complete {
                entries: recorded.map_or(0, |r| r.count),
                tree_size,
            };
        }
        let gaps = self.gaps(recorded.as_ref(), recomputed.as_ref());
        self.findings.extend(gaps);
        failed
    }

    /// Where the record the log holds and the one recomputed from the entries shown differ, in
    /// a patient's words.
    fn gaps(
        &self,
        recorded: Option<&SubjectRecord>,
        shown: Option<&SubjectRecord>,
    ) -> Vec<Finding> {
        let (recorded, shown) = match (recorded, shown) {
            (Some(recorded), None) => {
                return vec![Finding::NoEntriesShown {
                    recorded: recorded.count,
                }];
            }
            (None, Some(shown)) => {
                return vec![Finding::EntriesNotRecorded {
                    recorded: 0,
                    shown: shown.count,
                }];
            }
            (Some(recorded), Some(shown)) => (recorded, shown),
            (None, None) => return Vec::new(),
        };
        let mut gaps = Vec::new();
        if recorded.first < shown.first {
            gaps.push(Finding::EntriesMissingBefore {
                first_shown: shown.first,
            });
        }
        if recorded.last > shown.last {
            gaps.push(Finding::EntriesMissingAfter {
                last_shown: shown.last,
            });
        }
        // Entries left out between shown ones, where a decision's `subject_prev` places them.
        if recorded.count > shown.count {
            gaps.extend(self.findings.iter().filter_map(|finding| match finding {
                Finding::SubjectChainBroken {
                    index,
                    names_previous: Some(named),
                    shown_previous: Some(shown_previous),
                } if named > shown_previous && named < index => {
                    Some(Finding::EntriesMissingBetween {
                        after: *shown_previous,
                        before: *index,
                    })
                }
                _ => None,
            }));
        }
        if !gaps.is_empty() {
            return gaps;
        }
        if recorded.count > shown.count
            && recorded.first >= shown.first
            && recorded.last <= shown.last
        {
            return vec![Finding::EntriesMissing {
                recorded: recorded.count,
                shown: shown.count,
            }];
        }
        vec![Finding::EntriesNotRecorded {
            recorded: recorded.count,
            shown: shown.count,
        }]
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
            data_category: None,
            level: None,
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
            data_category: None,
            level: None,
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
                self.data_category = Some(request.data_category.to_string());
                self.level = Some(request.level.to_string());
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
                self.data_category = Some(readable_list(&consent.data_categories));
                self.level = Some(consent.max_level.to_string());
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

pub mod export;

#[cfg(test)]
mod tests;

//! What a whole-log audit found: counts of what was checked, and every [`Finding`] (something the
//! log or its operator got wrong), serialisable to JSON for `akashi-audit replay --json`.
//!
//! Findings name leaf indices, sizes, hashes and policy ids, never patient pseudonyms or body
//! contents, so a report can be shared beyond the regulator who made it.
//!
//! This module only holds and prints results; [`crate::scan`] and `replay` produce them.

use std::fmt;

use serde::Serialize;

/// The most findings a report lists; the rest are only counted in
/// [`Report::findings_omitted`], so that a thoroughly broken log cannot exhaust memory.
pub const MAX_FINDINGS: usize = 10_000;

/// The result of auditing a log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The size of the tree that was recomputed.
    pub tree_size: u64,
    /// Its root hash, hex.
    pub root: String,
    /// Entries read.
    pub entries: u64,
    /// Entries whose body was erased (their leaf and commitment were still checked).
    pub redacted: u64,
    /// Signed checkpoints compared with the recomputed tree.
    pub checkpoints_checked: u64,
    /// Of those, the ones whose subject-map root was compared with the recomputed map (with the
    /// `replay` feature).
    pub subject_maps_checked: u64,
    /// Events applied to the replayed state (with the `replay` feature).
    pub events_applied: u64,
    /// Erasure entries met (`consent.erase`), each accounting for the bodies it erased.
    pub erasures: u64,
    /// Findings about a patient's entries between the first entry an erasure erased and the
    /// erasure itself, withdrawn because they may rest on the erased bodies (a decision that
    /// relied on an erased consent cannot be re-decided), not because they were checked.
    pub withdrawn_after_erasure: u64,
    /// Signed checkpoints whose subject map was not compared because a lawful erasure (every
    /// erased body accounted for by an erasure entry) left the map without the erased entries'
    /// patients.
    pub subject_maps_unchecked_after_erasure: u64,
    /// Logged decisions re-decided.
    pub decisions_checked: u64,
    /// Of those, the ones the rules in force agree with.
    pub decisions_matching: u64,
    /// What was found wrong, in log order, at most [`MAX_FINDINGS`].
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], counted but not listed.
    pub findings_omitted: u64,
}

impl Report {
    /// True when nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.findings_omitted == 0
    }

    /// The exit code for this report: valid when clean, invalid otherwise.
    pub fn exit_code(&self) -> crate::exit::AuditExitCode {
        if self.is_clean() {
            crate::exit::AuditExitCode::Valid
        } else {
            crate::exit::AuditExitCode::Invalid
        }
    }

    /// Records a finding (or counts it, past [`MAX_FINDINGS`]).
    pub fn add(&mut self, finding: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(finding);
        } else {
            self.findings_omitted = self.findings_omitted.saturating_add(1);
        }
    }
}

/// One thing the log or its operator got wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Finding {
    /// A body does not hash to its leaf's commitment.
    BadCommitment {
        /// The entry.
        index: u64,
    },
    /// An inclusion proof does not lead from the entry's leaf to the checkpoint's root.
    BadInclusionProof {
        /// The entry.
        index: u64,
        /// Why.
        error: String,
    },
    /// A listed checkpoint is malformed or not signed by the log key.
    BadCheckpoint {
        /// Its position in the listing.
        position: u64,
        /// Why.
        error: String,
    },
    /// A body is gone, and no erasure entry is named as having erased it: erased outside the
    /// log's accountable path, or lost.
    ErasedWithoutErasure {
        /// The entry.
        index: u64,
    },
    /// A body is said to have been erased by an entry that is not an erasure naming it.
    ErasureDoesNotName {
        /// The entry whose body is gone.
        index: u64,
        /// The entry said to have erased it.
        erasure: u64,
    },
    /// An erasure entry read ahead of its turn is not the one the log holds at its index.
    ErasureServedTwice {
        /// The erasure entry.
        erasure: u64,
    },
    /// A body is said to have been erased by an entry the replay never reached.
    ErasureMissing {
        /// The entry whose body is gone.
        index: u64,
        /// The entry said to have erased it.
        erasure: u64,
    },
    /// A body matches its commitment but is not a valid event.
    BadEvent {
        /// The entry.
        index: u64,
        /// Why.
        error: String,
    },
    /// A leaf is not a well-formed akashi leaf.
    BadLeaf {
        /// The entry.
        index: u64,
        /// Why.
        error: String,
    },
    /// A signed checkpoint claims a tree larger than the entries the log handed out.
    CheckpointBeyondLog {
        /// The checkpoint's size.
        size: u64,
        /// How many entries there were.
        entries: u64,
    },
    /// A signed checkpoint's root is not the root recomputed from the entries: the log signed a
    /// tree other than the one it serves (a fork or rewritten history).
    CheckpointMismatch {
        /// The checkpoint's size.
        size: u64,
        /// The root it signed, hex.
        signed_root: String,
        /// The root of the entries, hex.
        recomputed_root: String,
    },
    /// A logged decision that the policy set and state in force at its position would not have
    /// made.
    DecisionMismatch {
        /// The entry.
        index: u64,
        /// What the log says.
        logged: DecisionSummary,
        /// What the rules decide.
        recomputed: DecisionSummary,
    },
    /// A logged decision names another recipient (organisation, class) than the directory in
    /// force gives for its principal: the public disclosure counts would be wrong.
    RecipientMismatch {
        /// The entry.
        index: u64,
        /// The recipient the log names (`org/class`), if any.
        logged: Option<String>,
        /// The recipient the directory gives, if any.
        recomputed: Option<String>,
    },
    /// An entry dated before an earlier entry: entries are dated by their sequencing time,
    /// which never goes backwards, so it was backdated (or the log reordered).
    DayNotAscending {
        /// The entry.
        index: u64,
        /// Its day.
        day: String,
        /// The earlier entry with the latest day before it.
        previous: u64,
        /// That entry's day.
        previous_day: String,
    },
    /// An event the state built so far refuses (out of order, a consent that does not exist,
    /// the wrong policy set, a broken per-subject chain, ...).
    EventRejected {
        /// The entry.
        index: u64,
        /// Why.
        error: String,
    },
    /// A history lists an entry at or before the one shown before it.
    HistoryNotAscending {
        /// The entry.
        index: u64,
        /// The entry shown before it.
        previous: u64,
    },
    /// A history shows an entry that is not about the same patient as the others.
    NotAboutSubject {
        /// The entry.
        index: u64,
    },
    /// A decision in a history names another previous entry of the subject than the one shown
    /// before it: an entry about the patient was left out (or one shown does not belong).
    SubjectChainBroken {
        /// The decision.
        index: u64,
        /// The previous entry the decision names.
        names_previous: Option<u64>,
        /// The entry shown before it.
        shown_previous: Option<u64>,
    },
    /// The public leaf header does not say what the private body says.
    HeaderMismatch {
        /// The entry.
        index: u64,
        /// The header field (`kind` or an attribute name).
        field: String,
        /// Its value in the leaf, if there.
        leaf: Option<String>,
        /// Its value derived from the body, if any.
        body: Option<String>,
    },
    /// A signed checkpoint's `akashi-subject-map` line is malformed or repeated.
    BadSubjectMapLine {
        /// The checkpoint's size.
        size: u64,
        /// Why.
        error: String,
    },
    /// A body about a patient has no `subject_vrf_output` (64 bytes, lowercase hex), while the
    /// log commits to a subject map.
    BadSubjectVrfOutput {
        /// The entry.
        index: u64,
    },
    /// A patient's completeness proof (VRF proof, record and map proof) does not verify
    /// against the checkpoint's subject map.
    BadCompletenessProof {
        /// The size of the checkpoint it is against.
        tree_size: u64,
        /// Why.
        error: String,
    },
    /// The checkpoint commits to a subject map but the history came without a completeness
    /// proof.
    CompletenessProofMissing {
        /// The checkpoint's size.
        tree_size: u64,
    },
    /// The log records more entries about the patient than the history shows, and the gap
    /// cannot be placed.
    EntriesMissing {
        /// Entries the log records about the patient.
        recorded: u64,
        /// Entries shown.
        shown: u64,
    },
    /// The log records an entry about the patient after the last one shown.
    EntriesMissingAfter {
        /// The last entry shown.
        last_shown: u64,
    },
    /// The log records an entry about the patient before the first one shown.
    EntriesMissingBefore {
        /// The first entry shown.
        first_shown: u64,
    },
    /// An entry about the patient was left out between two shown ones (located by the
    /// decision that names its previous entry).
    EntriesMissingBetween {
        /// The entry shown before the gap.
        after: u64,
        /// The entry shown after it.
        before: u64,
    },
    /// The entries shown are not those the log records about the patient: ones it does not
    /// count, or other entries in their place.
    EntriesNotRecorded {
        /// Entries the log records about the patient.
        recorded: u64,
        /// Entries shown.
        shown: u64,
    },
    /// The log records entries about the patient but the history shows none.
    NoEntriesShown {
        /// Entries the log records about the patient.
        recorded: u64,
    },
    /// A checkpoint carries no `akashi-subject-map` line although an earlier one did.
    SubjectMapDropped {
        /// The checkpoint's size.
        size: u64,
    },
    /// A checkpoint's subject map names another VRF key than the earlier checkpoints.
    SubjectMapKeyChanged {
        /// The checkpoint's size.
        size: u64,
    },
    /// A checkpoint's subject-map root is not the root recomputed from the entries.
    SubjectMapMismatch {
        /// The checkpoint's size.
        size: u64,
        /// The map root it signed, hex.
        signed_root: String,
        /// The map root of the entries, hex.
        recomputed_root: String,
    },
    /// The subject map cannot be recomputed up to a checkpoint that commits to one: an entry
    /// before it cannot be attributed to a patient. Not a mismatch: nothing was found wrong
    /// with the map, but it is not checked from there on.
    SubjectMapUnverifiable {
        /// The first checkpoint whose map is not checked.
        size: u64,
        /// The entry the recomputation stopped at.
        index: u64,
        /// Why that entry cannot be attributed.
        reason: Unattributable,
    },
    /// A body's `subject_vrf_output` differs from the one of an earlier entry about the same
    /// patient.
    SubjectVrfOutputChanged {
        /// The entry.
        index: u64,
        /// The patient's first entry.
        first: u64,
    },
    /// A body's `subject_vrf_output` is the one of another patient's entries.
    SubjectVrfOutputShared {
        /// The entry.
        index: u64,
        /// The other patient's first entry.
        other: u64,
    },
    /// A history's checkpoint is not vouched for by the witnesses the verifier trusts: not
    /// cosigned by enough of them, and (online) no witnessed checkpoint containing it was found.
    Unwitnessed {
        /// The history checkpoint's size.
        size: u64,
        /// Why.
        reason: String,
    },
}

impl Finding {
    /// Where in the log the finding is: the entry's index, or for a checkpoint the last entry it
    /// covers. Findings that are not about a position (a malformed listed checkpoint) come
    /// first, checkpoints beyond the log last.
    pub fn log_position(&self) -> u64 {
        match self {
            Self::BadCheckpoint { .. } => 0,
            Self::CheckpointBeyondLog { .. } => u64::MAX,
            Self::CheckpointMismatch { size, .. } => size.saturating_sub(1),
            Self::BadCommitment { index }
            | Self::BadInclusionProof { index, .. }
            | Self::BadEvent { index, .. }
            | Self::ErasedWithoutErasure { index }
            | Self::ErasureDoesNotName { index, .. }
            | Self::ErasureMissing { index, .. }
            | Self::ErasureServedTwice { erasure: index }
            | Self::BadLeaf { index, .. }
            | Self::DecisionMismatch { index, .. }
            | Self::RecipientMismatch { index, .. }
            | Self::DayNotAscending { index, .. }
            | Self::EventRejected { index, .. }
            | Self::HeaderMismatch { index, .. }
            | Self::HistoryNotAscending { index, .. }
            | Self::NotAboutSubject { index }
            | Self::SubjectChainBroken { index, .. }
            | Self::BadSubjectVrfOutput { index }
            | Self::SubjectVrfOutputChanged { index, .. }
            | Self::SubjectVrfOutputShared { index, .. } => *index,
            Self::BadSubjectMapLine { size, .. }
            | Self::SubjectMapDropped { size }
            | Self::SubjectMapKeyChanged { size }
            | Self::SubjectMapMismatch { size, .. }
            | Self::SubjectMapUnverifiable { size, .. } => size.saturating_sub(1),
            // Completeness is judged after every entry shown.
            Self::BadCompletenessProof { .. }
            | Self::CompletenessProofMissing { .. }
            | Self::EntriesMissing { .. }
            | Self::EntriesMissingAfter { .. }
            | Self::EntriesMissingBefore { .. }
            | Self::EntriesMissingBetween { .. }
            | Self::EntriesNotRecorded { .. }
            | Self::NoEntriesShown { .. }
            | Self::Unwitnessed { .. } => u64::MAX,
        }
    }
}

/// Why replay cannot tell which patient, if any, an entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unattributable {
    /// Its body was erased.
    Erased,
    /// Its body was erased by a logged erasure (`AuditEntry.erased_by`).
    LawfullyErased,
    /// Its body carries no `subject_vrf_output` (and the log's checkpoints so far committed to
    /// no subject map).
    NoVrfOutput,
    /// Its body was not read: it does not match its commitment or is not an event.
    Unreadable,
    /// Its `subject_vrf_output` is missing or malformed, or is another patient's.
    WrongVrfOutput,
}

impl fmt::Display for Unattributable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Erased => "its body was erased",
            Self::LawfullyErased => "its body was erased by a logged erasure",
            Self::NoVrfOutput => "its body carries no `subject_vrf_output`",
            Self::Unreadable => "its body could not be read",
            Self::WrongVrfOutput => "its `subject_vrf_output` is wrong",
        })
    }
}

/// The parts of a decision that replay compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionSummary {
    /// `ALLOW` or `DENY`.
    pub effect: String,
    /// The `@id`s of the determining policies.
    pub determining_policies: Vec<String>,
    /// Whether the decision was flagged for review.
    pub review_required: bool,
}

impl fmt::Display for DecisionSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}]",
            self.effect,
            self.determining_policies.join(", ")
        )?;
        if self.review_required {
            f.write_str(" review")?;
        }
        Ok(())
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCommitment { index } => {
                write!(
                    f,
                    "entry {index}: body does not match the leaf's commitment"
                )
            }
            Self::BadInclusionProof { index, error } => {
                write!(f, "entry {index}: inclusion proof does not verify: {error}")
            }
            Self::BadCheckpoint { position, error } => {
                write!(f, "listed checkpoint {position}: {error}")
            }
            Self::BadEvent { index, error } => write!(f, "entry {index}: {error}"),
            Self::ErasedWithoutErasure { index } => write!(
                f,
                "entry {index}: its body is gone, and no erasure entry erased it"
            ),
            Self::ErasureDoesNotName { index, erasure } => write!(
                f,
                "entry {index}: its body is said to be erased by entry {erasure}, which is not \
                 an erasure naming it"
            ),
            Self::ErasureServedTwice { erasure } => write!(
                f,
                "entry {erasure}: the erasure read ahead of its turn differs from the one in the log"
            ),
            Self::ErasureMissing { index, erasure } => write!(
                f,
                "entry {index}: its body is said to be erased by entry {erasure}, beyond the log \
                 replayed"
            ),
            Self::BadLeaf { index, error } => write!(f, "entry {index}: {error}"),
            Self::CheckpointBeyondLog { size, entries } => write!(
                f,
                "checkpoint at size {size} is beyond the {entries} entries the log served"
            ),
            Self::CheckpointMismatch {
                size,
                signed_root,
                recomputed_root,
            } => write!(
                f,
                "checkpoint at size {size} signs root {signed_root} but the entries give {recomputed_root}"
            ),
            Self::DecisionMismatch {
                index,
                logged,
                recomputed,
            } => write!(
                f,
                "entry {index}: logged decision {logged} but the rules in force decide {recomputed}"
            ),
            Self::RecipientMismatch {
                index,
                logged,
                recomputed,
            } => write!(
                f,
                "entry {index}: the log names recipient {} but the directory gives {}",
                logged.as_deref().unwrap_or("none"),
                recomputed.as_deref().unwrap_or("none")
            ),
            Self::DayNotAscending {
                index,
                day,
                previous,
                previous_day,
            } => write!(
                f,
                "entry {index} is dated {day}, before entry {previous} ({previous_day})"
            ),
            Self::EventRejected { index, error } => {
                write!(f, "entry {index}: event does not apply: {error}")
            }
            Self::HistoryNotAscending { index, previous } => {
                write!(f, "entry {index} is listed after entry {previous}")
            }
            Self::NotAboutSubject { index } => {
                write!(
                    f,
                    "entry {index} is not about the same patient as the others"
                )
            }
            Self::SubjectChainBroken {
                index,
                names_previous,
                shown_previous,
            } => write!(
                f,
                "entry {index}: names {} as the patient's previous entry, but the history shows {}",
                entry_name(*names_previous),
                entry_name(*shown_previous)
            ),
            Self::HeaderMismatch {
                index,
                field,
                leaf,
                body,
            } => write!(
                f,
                "entry {index}: leaf header `{field}` is {} but the body says {}",
                shown(leaf.as_deref()),
                shown(body.as_deref())
            ),
            Self::BadSubjectMapLine { size, error } => {
                write!(f, "checkpoint at size {size}: {error}")
            }
            Self::BadSubjectVrfOutput { index } => write!(
                f,
                "entry {index}: the body carries no valid `subject_vrf_output`"
            ),
            Self::BadCompletenessProof { tree_size, error } => write!(
                f,
                "the proof that these are all the entries about you does not verify at tree size {tree_size}: {error}"
            ),
            Self::CompletenessProofMissing { tree_size } => write!(
                f,
                "the log commits to every patient's entries at tree size {tree_size} but sent no proof for yours"
            ),
            Self::EntriesMissing { recorded, shown } => write!(
                f,
                "an entry about you is missing: {recorded} recorded, {shown} shown"
            ),
            Self::EntriesMissingAfter { last_shown } => {
                write!(f, "an entry about you is missing after entry {last_shown}")
            }
            Self::EntriesMissingBefore { first_shown } => write!(
                f,
                "an entry about you is missing before entry {first_shown}"
            ),
            Self::EntriesMissingBetween { after, before } => write!(
                f,
                "an entry about you is missing between entries {after} and {before}"
            ),
            Self::EntriesNotRecorded { recorded, shown } => write!(
                f,
                "the entries shown are not the ones the log records about you ({recorded} recorded, {shown} shown)"
            ),
            Self::NoEntriesShown { recorded } => write!(
                f,
                "no entries were shown but the log records {recorded} about you"
            ),
            Self::SubjectMapDropped { size } => write!(
                f,
                "checkpoint at size {size} carries no subject-map line, but an earlier one did"
            ),
            Self::SubjectMapKeyChanged { size } => write!(
                f,
                "checkpoint at size {size}: the subject map's VRF key is not the one earlier checkpoints name"
            ),
            Self::SubjectMapMismatch {
                size,
                signed_root,
                recomputed_root,
            } => write!(
                f,
                "checkpoint at size {size} signs subject-map root {signed_root} but the entries give {recomputed_root}"
            ),
            Self::Unwitnessed { size, reason } => write!(
                f,
                "the checkpoint at tree size {size} is not vouched for by the witnesses you trust: {reason}"
            ),
            Self::SubjectMapUnverifiable {
                size,
                index,
                reason,
            } => write!(
                f,
                "checkpoint at size {size}: the subject map cannot be recomputed past entry {index} ({reason}); it is not checked from there on"
            ),
            Self::SubjectVrfOutputChanged { index, first } => write!(
                f,
                "entry {index}: its `subject_vrf_output` differs from the one of the same patient's entry {first}"
            ),
            Self::SubjectVrfOutputShared { index, other } => write!(
                f,
                "entry {index}: its `subject_vrf_output` is the one of another patient's entry {other}"
            ),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tree size {} root {}", self.tree_size, self.root)?;
        writeln!(
            f,
            "entries {} (bodies erased {}), checkpoints checked {}, events applied {}",
            self.entries, self.redacted, self.checkpoints_checked, self.events_applied
        )?;
        writeln!(
            f,
            "decisions re-decided {}, matching {}",
            self.decisions_checked, self.decisions_matching
        )?;
        if self.subject_maps_checked > 0 {
            writeln!(f, "subject maps checked {}", self.subject_maps_checked)?;
        }
        for finding in &self.findings {
            writeln!(f, "finding: {finding}")?;
        }
        if self.findings_omitted > 0 {
            writeln!(f, "... and {} more findings", self.findings_omitted)?;
        }
        if self.is_clean() {
            writeln!(f, "valid: no findings")
        } else {
            writeln!(
                f,
                "invalid: {} findings",
                self.findings.len() as u64 + self.findings_omitted
            )
        }
    }
}

/// An error and its sources, joined with `: `, as one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn entry_name(index: Option<u64>) -> String {
    index.map_or_else(|| "none".to_owned(), |i| format!("entry {i}"))
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "missing".to_owned(), |v| format!("`{v}`"))
}

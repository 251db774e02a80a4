//! The subject map recomputed from the log (`ledger::completeness`), compared with every signed
//! checkpoint that commits to one in an `akashi-subject-map` line.
//!
//! Each entry about a patient carries, in its private body, the patient's VRF output as the
//! top-level JSON field `subject_vrf_output` (64 bytes, lowercase hex). The replay cannot check
//! that output against the patient id (it only sees pseudonyms), but it checks that every entry
//! of one pseudonym carries the same output and that no two pseudonyms share one, and it folds
//! each patient's record (`SubjectRecord::first` / `then` over RFC 9162 leaf hashes) into an
//! in-memory map. At each checkpoint's size the map's root must be the one the checkpoint signs,
//! under the same VRF key as every checkpoint before it.
//!
//! An entry whose body was erased (or could not be read) cannot be attributed to a patient, so
//! the map cannot be recomputed past it: the first checkpoint after it is reported once as
//! unverifiable, and maps are not compared from there on (the VRF outputs still are).
//!
//! Memory grows with the number of patients (one record and one map leaf each, about half a
//! kilobyte), not with the number of entries. Changed records are gathered (at most 4,096) and
//! written into the map in one batch when a checkpoint is compared or the bound is reached, so
//! each tile on their paths is decoded and encoded once per batch.

use std::collections::{BTreeMap, HashMap};

use ledger::{
    checkpoint::Checkpoint,
    completeness::{CompletenessError, MapCommitment, SubjectRecord, map_key},
    hash::Hash,
    map::{self, EMPTY, MapKey, MemoryNodes},
    vrf::{OUTPUT_LEN, VrfOutput},
};
use policy::domain::SubjectId;
use serde::Deserialize;

use crate::report::{Finding, Report, Unattributable, error_chain};

/// The store prefix of the in-memory map (any will do: the store holds nothing else).
const PREFIX: &[u8] = b"m/";

/// Changed records gathered before they are written into the map (bounds the batch's tiles).
const FLUSH_AT: usize = 4096;

/// What one checkpoint says about the subject map: nothing (no line), or its line, parsed.
type MapLine = Option<Result<MapCommitment, CompletenessError>>;

/// The subject map recomputed entry by entry, and the checkpoints waiting to be compared.
#[derive(Debug, Default)]
pub(super) struct SubjectMapCheck {
    nodes: MemoryNodes,
    /// The root of `nodes`, `None` while empty.
    root: Option<Hash>,
    /// Records changed since `nodes` was last brought up to date, with the last entry that
    /// changed one: written into the map in one [`map::Batch`] when a checkpoint is compared
    /// or [`FLUSH_AT`] have gathered, so that each tile is decoded and encoded once per batch.
    changed: HashMap<MapKey, Hash>,
    last_changed: u64,
    /// Each pseudonym's map key (from the first output its entries carried).
    keys: HashMap<SubjectId, MapKey>,
    /// Each map key's record.
    records: HashMap<MapKey, SubjectRecord>,
    /// The first entry the map could not take in, and why.
    blind: Option<(u64, Unattributable)>,
    /// Whether the unverifiable map was reported.
    blind_reported: bool,
    /// Whether any checkpoint handed in has a subject-map line: outputs are then required.
    committed: bool,
    /// The VRF key of the first subject-map checkpoint reached.
    vrf_key: Option<[u8; 32]>,
    /// Whether a checkpoint reached so far had a subject-map line.
    seen_line: bool,
    /// Checkpoints handed in ahead of the entries, by size, in the order handed in.
    pending: BTreeMap<u64, Vec<MapLine>>,
}

/// The one field of a body the map needs; the event's own fields are ignored.
#[derive(Deserialize)]
struct VrfField<'a> {
    #[serde(borrow, default)]
    subject_vrf_output: Option<&'a str>,
}

impl SubjectMapCheck {
    /// Takes a verified checkpoint the scan accepted when the scan was at `current` entries:
    /// compared now when it is at that size, else when the entries reach it.
    pub(super) fn add_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        current: u64,
        report: &mut Report,
    ) {
        let line = MapCommitment::of(checkpoint).transpose();
        self.committed |= line.is_some();
        let size = checkpoint.size.get();
        if size == current {
            self.compare(size, line, report);
        } else {
            self.pending.entry(size).or_default().push(line);
        }
    }

    /// Takes in the entry at `index`: `about` is what the replay learnt of it.
    pub(super) fn entry(&mut self, index: u64, leaf: &[u8], about: About<'_>, report: &mut Report) {
        let (subject, payload) = match about {
            About::NoPatient => return,
            About::Unattributable(reason) => return self.go_blind(index, reason),
            About::Patient { subject, payload } => (subject, payload),
        };
        let output = vrf_output(payload);
        let known = self.keys.get(subject).copied();
        let key = match (output, known) {
            (Some(beta), Some(known)) if map_key(&beta) == known => known,
            (Some(_), Some(known)) => {
                let first = self.records.get(&known).map_or(index, |r| r.first);
                report.add(Finding::SubjectVrfOutputChanged { index, first });
                known
            }
            (Some(beta), None) => {
                let key = map_key(&beta);
                if let Some(other) = self.records.get(&key) {
                    report.add(Finding::SubjectVrfOutputShared {
                        index,
                        other: other.first,
                    });
                    return self.go_blind(index, Unattributable::WrongVrfOutput);
                }
                self.keys.insert(subject.clone(), key);
                key
            }
            (None, known) => {
                if !self.committed {
                    // A log that committed to no map so far: no output is owed.
                    return self.go_blind(index, Unattributable::NoVrfOutput);
                }
                report.add(Finding::BadSubjectVrfOutput { index });
                match known {
                    Some(known) => known,
                    None => return self.go_blind(index, Unattributable::WrongVrfOutput),
                }
            }
        };
        let leaf_hash = ledger::hash::hash_leaf(leaf);
        let record = match (self.records.get(&key), output) {
            (Some(record), _) => record.then(index, &leaf_hash),
            // A patient's first entry: its output seeds their chain.
            (None, Some(beta)) => SubjectRecord::first(&beta, index, &leaf_hash),
            // INVARIANT: a known key has a record (both are inserted for a first entry), so
            // this is unreachable; were it not, the entry cannot be attributed.
            (None, None) => return self.go_blind(index, Unattributable::WrongVrfOutput),
        };
        self.records.insert(key, record);
        if self.blind.is_some() {
            // Not compared any more: the records are kept only for the output checks.
            return;
        }
        self.changed.insert(key, record.value_hash());
        self.last_changed = index;
        if self.changed.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes the gathered records into the map and updates its root.
    fn flush(&mut self) {
        if self.changed.is_empty() || self.blind.is_some() {
            return;
        }
        let written = (|| {
            let mut batch = map::Batch::new(&self.nodes, PREFIX);
            for (key, value) in self.changed.drain() {
                batch.update(&key, &value)?;
            }
            batch.finish()?.write(&mut self.nodes, PREFIX)
        })();
        match written {
            Ok(root) => self.root = Some(root),
            // INVARIANT: the store is ours and only `Batch` writes it, so it is always a
            // compact tree and an update cannot fail; were it to, the map is not compared.
            Err(_) => self.go_blind(self.last_changed, Unattributable::Unreadable),
        }
    }

    /// The entries have reached `size`: compares the checkpoints waiting at it.
    pub(super) fn reached(&mut self, size: u64, report: &mut Report) {
        if let Some(lines) = self.pending.remove(&size) {
            for line in lines {
                self.compare(size, line, report);
            }
        }
    }

    fn compare(&mut self, size: u64, line: MapLine, report: &mut Report) {
        let commitment = match line {
            None => {
                if self.seen_line {
                    report.add(Finding::SubjectMapDropped { size });
                }
                return;
            }
            Some(Err(err)) => {
                self.seen_line = true;
                report.add(Finding::BadSubjectMapLine {
                    size,
                    error: error_chain(&err),
                });
                return;
            }
            Some(Ok(commitment)) => commitment,
        };
        self.seen_line = true;
        match self.vrf_key {
            None => self.vrf_key = Some(commitment.vrf_key),
            Some(key) if key != commitment.vrf_key => {
                report.add(Finding::SubjectMapKeyChanged { size });
            }
            Some(_) => {}
        }
        self.flush();
        if let Some((index, reason)) = self.blind {
            if reason == Unattributable::LawfullyErased {
                // Not a fault: the erased entry's patient cannot be known from its body, and
                // the erasure that accounts for it is checked by the entry check.
                report.subject_maps_unchecked_after_erasure = report
                    .subject_maps_unchecked_after_erasure
                    .saturating_add(1);
            } else if !self.blind_reported {
                self.blind_reported = true;
                report.add(Finding::SubjectMapUnverifiable {
                    size,
                    index,
                    reason,
                });
            }
            return;
        }
        report.subject_maps_checked = report.subject_maps_checked.saturating_add(1);
        let recomputed = self.root.unwrap_or(EMPTY);
        if recomputed != commitment.root {
            report.add(Finding::SubjectMapMismatch {
                size,
                signed_root: commitment.root.to_hex(),
                recomputed_root: recomputed.to_hex(),
            });
        }
    }

    fn go_blind(&mut self, index: u64, reason: Unattributable) {
        if self.blind.is_none() {
            self.blind = Some((index, reason));
            // Nothing will be compared again: the map's nodes are not needed.
            self.nodes = MemoryNodes::default();
            self.changed = HashMap::new();
        }
    }
}

/// What replay knows about an entry, for the map.
#[derive(Debug)]
pub(super) enum About<'a> {
    /// Its event is about no patient (directory, policy set, a decision about a cohort).
    NoPatient,
    /// Its event is about the patient with this pseudonym; `payload` is the body's JSON.
    Patient {
        /// The pseudonym.
        subject: &'a SubjectId,
        /// The event JSON.
        payload: &'a [u8],
    },
    /// Replay cannot tell.
    Unattributable(Unattributable),
}

/// The body's `subject_vrf_output`: 64 bytes as 128 lowercase hex digits.
fn vrf_output(payload: &[u8]) -> Option<VrfOutput> {
    let text = serde_json::from_slice::<VrfField<'_>>(payload)
        .ok()?
        .subject_vrf_output?;
    let digits = text.as_bytes();
    if digits.len() != 2 * OUTPUT_LEN {
        return None;
    }
    let mut out = [0u8; OUTPUT_LEN];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (hex_digit(*high)? << 4) | hex_digit(*low)?;
    }
    Some(VrfOutput(out))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

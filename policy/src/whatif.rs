//! What-if analysis: which past decisions would a candidate policy set decide differently?
//!
//! Operators run this before activating a change. [`what_if`] takes past requests with the facts
//! they were decided on; [`what_if_log`] rebuilds those facts itself by replaying a log's events.
//! [`Analyzer`] is the summary a regulator approves a change on (the two-person rule): fed by
//! [`crate::replay::Replayer`] with every logged decision of a window and what the candidate
//! decides instead, it counts the changes by direction, rule and purpose, with a few example leaf
//! indices and nothing about any patient. Its [`Analysis`] is a pure function of the log's
//! entries, the window and the candidate, so the server and an independent auditor compute the
//! same [`AnalysisId`] from the same log. Nothing here writes to the live state or activates
//! anything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::decision::{Decision, PolicySetHash, Request};
use crate::directory::Directory;
use crate::domain::Timestamp;
use crate::engine::PolicyEngine;
use crate::event::Event;
use crate::facts::Facts;
use crate::replay::ReplayState;
use crate::state::{self, ApplyError};

/// A past decision to re-evaluate (against the directory given to [`what_if`]).
#[derive(Debug, Clone)]
pub struct WhatIfCase {
    /// What was asked.
    pub request: Request,
    /// What the decision read from the state.
    pub facts: Facts,
    /// When it was decided.
    pub time: Timestamp,
    /// What was decided.
    pub old: Decision,
}

/// A decision whose effect the candidate would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The case's position in the input (or, from [`what_if_log`], the entry's leaf index).
    pub position: u64,
    /// What was decided.
    pub old: Decision,
    /// What the candidate decides.
    pub new: Decision,
}

/// Re-decides every case with `candidate` against `directory` and returns those whose effect
/// changes, in input order. Each case keeps its own facts (consents, opt-outs, exclusions) and
/// time; the directory (facilities' settings, clinicians) is the one given, typically the current
/// one. [`what_if_log`] instead replays the directory as it was at each decision.
pub fn what_if(
    candidate: &PolicyEngine,
    directory: &Directory,
    cases: &[WhatIfCase],
) -> Vec<Change> {
    cases
        .iter()
        .zip(0u64..)
        .filter_map(|(case, position)| {
            let new = candidate.decide(&case.request, &case.facts, directory, case.time);
            (new.effect != case.old.effect).then(|| Change {
                position,
                old: case.old.clone(),
                new,
            })
        })
        .collect()
}

/// Replays `entries` (leaf index and event, in log order) into a fresh state and re-decides every
/// logged decision with `candidate` against the state in force just before it. Returns the
/// decisions whose effect changes, keyed by leaf index.
///
/// # Errors
///
/// [`ApplyError`] when an event does not apply (the log is not one this crate would have written).
pub fn what_if_log<'a>(
    candidate: &PolicyEngine,
    entries: impl IntoIterator<Item = (u64, &'a Event)>,
) -> Result<Vec<Change>, ApplyError> {
    let mut kv = BTreeMap::new();
    let mut directory = Directory::empty();
    let mut changes = Vec::new();
    for (index, event) in entries {
        if let Event::Decision {
            request,
            time,
            decision,
            ..
        } = event
        {
            directory.flush()?;
            let facts = Facts::gather(&directory, &kv, request)?;
            let new = candidate.decide(request, &facts, &directory, *time);
            if new.effect != decision.effect {
                changes.push(Change {
                    position: index,
                    old: decision.clone(),
                    new,
                });
            }
        }
        state::apply(&mut kv, event, index)?;
        directory.apply(event, index)?;
    }
    Ok(changes)
}

/// Most example leaf indices kept per group of an [`Analysis`].
pub const MAX_EXAMPLES: usize = 5;

/// Domain separation of [`Analysis::id`].
const ANALYSIS_ID_PREFIX: &[u8] = b"akashi/policy-analysis/v1\n";

/// The id of an [`Analysis`]: SHA-256 of its canonical JSON, written as 64 lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AnalysisId(pub [u8; 32]);

impl AnalysisId {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// An analysis id that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("analysis id must be 64 hex characters")]
pub struct BadAnalysisId;

impl FromStr for AnalysisId {
    type Err = BadAnalysisId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadAnalysisId)?;
        Ok(Self(out))
    }
}

impl fmt::Debug for AnalysisId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnalysisId({})", self.to_hex())
    }
}

impl fmt::Display for AnalysisId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for AnalysisId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for AnalysisId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// Which way a decision's effect would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Allowed then, denied by the candidate.
    AllowToDeny,
    /// Denied then, allowed by the candidate.
    DenyToAllow,
}

impl Direction {
    /// `allow_to_deny` or `deny_to_allow`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AllowToDeny => "allow_to_deny",
            Self::DenyToAllow => "deny_to_allow",
        }
    }
}

/// The changed decisions that share a direction, a rule and a purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeGroup {
    /// Which way they change.
    pub direction: Direction,
    /// The policy ids that determine the candidate's decision, comma separated; when the
    /// candidate's decision has none (a deny because nothing permits any more), those that
    /// determined the logged one; `none` when neither has any.
    pub rule: String,
    /// The purpose asked for.
    pub purpose: String,
    /// How many decisions.
    pub count: u64,
    /// The first few of their leaf indices (at most [`MAX_EXAMPLES`]), in log order.
    pub examples: Vec<u64>,
}

/// What a candidate policy set would have changed among the logged decisions of a window of
/// the log: counts only, grouped, with example leaf indices; nothing names a patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// The candidate set's hash.
    pub candidate: PolicySetHash,
    /// The first leaf index of the window.
    pub from_index: u64,
    /// The end of the window (exclusive): the tree size analysed.
    pub to_index: u64,
    /// Logged decisions in the window, all re-decided.
    pub decisions: u64,
    /// Of those, allowed then and denied by the candidate.
    pub allow_to_deny: u64,
    /// Of those, denied then and allowed by the candidate.
    pub deny_to_allow: u64,
    /// The changes, grouped; in direction, rule and purpose order.
    pub groups: Vec<ChangeGroup>,
}

impl Analysis {
    /// The analysis's id: SHA-256 over a fixed prefix and its JSON (field order as declared,
    /// groups sorted), so that two parties who analysed the same window of the same log with
    /// the same candidate get the same id.
    pub fn id(&self) -> AnalysisId {
        let mut hasher = Sha256::new();
        hasher.update(ANALYSIS_ID_PREFIX);
        // INVARIANT: plain strings, numbers and lists, which serde_json always serialises.
        hasher.update(serde_json::to_vec(self).unwrap_or_default());
        AnalysisId(hasher.finalize().into())
    }
}

/// Where an analysis window starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStart {
    /// At this leaf index.
    Index(u64),
    /// At the first logged decision made at or after this time; every later decision is in the
    /// window too (log order, not each decision's clock, bounds it).
    Since(Timestamp),
}

/// Replays a log into a fresh state, feeding `analyzer` every logged decision of its window
/// with what its candidate decides instead — without re-deciding the logged decisions with the
/// sets that made them (that check is [`crate::replay::Replayer`]'s, which can carry an
/// [`Analyzer`] too and computes the same [`Analysis`]). Decisions outside the window cost only
/// their state writes. Memory holds the state a replay holds: bounded by the patients and the
/// directory, not the entries.
#[derive(Debug)]
pub struct LogAnalysis {
    kv: ReplayState,
    directory: Directory,
    analyzer: Analyzer,
}

impl LogAnalysis {
    /// An analysis at the start of a log.
    pub fn new(analyzer: Analyzer) -> Self {
        Self {
            kv: ReplayState::default(),
            directory: Directory::empty(),
            analyzer,
        }
    }

    /// Replays the entry at leaf `index` (entries in log order, each once).
    ///
    /// # Errors
    ///
    /// [`ApplyError`] when the event does not apply to the state built so far.
    pub fn step(&mut self, index: u64, event: &Event) -> Result<(), ApplyError> {
        if matches!(event, Event::Decision { .. }) {
            // Directory changes take effect at the next decision, as in the server.
            self.directory.flush()?;
        }
        if let Event::Decision {
            request,
            time,
            decision,
            ..
        } = event
            && self.analyzer.wants(index, *time)
        {
            let facts = Facts::gather(&self.directory, &self.kv, request)?;
            let candidate = self
                .analyzer
                .candidate
                .decide(request, &facts, &self.directory, *time);
            self.analyzer.record(index, request, decision, &candidate);
        }
        match event {
            // As in a regulator's replay: the erased bodies are not here to check it against.
            Event::EraseEntries { .. } => state::adopt_erasure(&mut self.kv, event, index)?,
            _ => state::apply(&mut self.kv, event, index)?,
        }
        self.directory.apply(event, index)?;
        Ok(())
    }

    /// The analysis of a log replayed up to tree size `size`.
    pub fn finish(self, size: u64) -> Analysis {
        self.analyzer.finish(size)
    }
}

/// Collects an [`Analysis`] while a [`crate::replay::Replayer`] or a [`LogAnalysis`] replays a
/// log.
#[derive(Debug)]
pub struct Analyzer {
    candidate: PolicyEngine,
    start: WindowStart,
    end: Option<u64>,
    from_index: Option<u64>,
    decisions: u64,
    groups: BTreeMap<(Direction, String, String), (u64, Vec<u64>)>,
}

impl Analyzer {
    /// An analysis of `candidate` over the decisions from `start` to `end` (exclusive; none:
    /// the end of what is replayed).
    pub fn new(candidate: PolicyEngine, start: WindowStart, end: Option<u64>) -> Self {
        Self {
            candidate,
            start,
            end,
            from_index: None,
            decisions: 0,
            groups: BTreeMap::new(),
        }
    }

    /// The candidate set.
    pub fn candidate(&self) -> &PolicyEngine {
        &self.candidate
    }

    /// Whether the decision logged at `index` at `time` is in the window (decisions must be
    /// asked about in log order).
    pub(crate) fn wants(&mut self, index: u64, time: Timestamp) -> bool {
        if self.end.is_some_and(|end| index >= end) {
            return false;
        }
        if self.from_index.is_some() {
            return true;
        }
        let starts = match self.start {
            WindowStart::Index(from) => index >= from,
            WindowStart::Since(since) => time >= since,
        };
        if starts {
            self.from_index = Some(match self.start {
                WindowStart::Index(from) => from,
                WindowStart::Since(_) => index,
            });
        }
        starts
    }

    /// Records the decision logged at `index` (`logged`) and what the candidate decides for
    /// the same request (`candidate`).
    pub(crate) fn record(
        &mut self,
        index: u64,
        request: &Request,
        logged: &Decision,
        candidate: &Decision,
    ) {
        self.decisions += 1;
        let direction = match (logged.is_allow(), candidate.is_allow()) {
            (true, false) => Direction::AllowToDeny,
            (false, true) => Direction::DenyToAllow,
            _ => return,
        };
        let rules = if candidate.determining_policies.is_empty() {
            &logged.determining_policies
        } else {
            &candidate.determining_policies
        };
        let rule = if rules.is_empty() {
            "none".to_owned()
        } else {
            rules.join(",")
        };
        let group = self
            .groups
            .entry((direction, rule, request.purpose.as_str().to_owned()))
            .or_default();
        group.0 += 1;
        if group.1.len() < MAX_EXAMPLES {
            group.1.push(index);
        }
    }

    /// The analysis, for a replay that ended at tree size `size`.
    pub fn finish(self, size: u64) -> Analysis {
        let to_index = self.end.map_or(size, |end| end.min(size));
        let from_index = self
            .from_index
            .unwrap_or(match self.start {
                WindowStart::Index(from) => from,
                WindowStart::Since(_) => to_index,
            })
            .min(to_index);
        let mut allow_to_deny = 0;
        let mut deny_to_allow = 0;
        let groups = self
            .groups
            .into_iter()
            .map(|((direction, rule, purpose), (count, examples))| {
                match direction {
                    Direction::AllowToDeny => allow_to_deny += count,
                    Direction::DenyToAllow => deny_to_allow += count,
                }
                ChangeGroup {
                    direction,
                    rule,
                    purpose,
                    count,
                    examples,
                }
            })
            .collect();
        Analysis {
            candidate: self.candidate.hash(),
            from_index,
            to_index,
            decisions: self.decisions,
            allow_to_deny,
            deny_to_allow,
            groups,
        }
    }
}

//! What-if analysis: which past decisions would a candidate policy set decide differently?
//!
//! Operators run this before activating a change. [`what_if`] takes past requests with the facts
//! they were decided on; [`what_if_log`] rebuilds those facts itself by replaying a log's events.
//! Nothing here writes to the live state or activates anything.

use std::collections::BTreeMap;

use crate::decision::{Decision, Request};
use crate::directory::Directory;
use crate::domain::Timestamp;
use crate::engine::PolicyEngine;
use crate::event::Event;
use crate::facts::Facts;
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

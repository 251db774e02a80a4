//! Regulator replay (docs/design.md §2.3): on top of [`LogScan`] (tree, checkpoints, commitments),
//! decode every body's event, check that the public leaf header says what the event says, and
//! feed the events to `policy`'s [`Replayer`], which rebuilds the directory, consent state and
//! active policy set position by position and re-decides every logged decision.
//!
//! Erased bodies cannot be replayed: the entry's leaf and commitment are still checked, and the
//! erasure is counted. Given the server's `erased_by` ([`EntryCheck::check_erased`]), every
//! erased body must be accounted for by a later erasure entry (`consent.erase`) that names it.
//! An erasure is applied as logged when it leaves the patient no wider a consent state than the
//! replay shows (`policy::state::adopt_erasure`), and findings about the patient's entries
//! between the first erased entry and the erasure are withdrawn and counted: a decision that
//! relied on an erased consent cannot be re-decided. [`EntryCheck::look_ahead`] takes an erasure
//! entry before the entries it erased, so that the subject map can place them (the erasure's
//! body carries the patient's VRF output).
//!
//! [`EntryCheck`] also recomputes the per-patient subject map (`ledger::completeness`) from
//! each body's `subject_vrf_output` and compares it with every checkpoint that commits to one
//! (see the `subject_map` submodule). An erased body stops that recomputation: the next
//! checkpoint with a map is reported, once, as unverifiable (not as a mismatch).
//!
//! This module does not fetch entries (the CLI does) and does not decide anything itself: every
//! decision rule lives in `policy`, so replay and the server cannot drift apart.

use ledger::{
    entry::Leaf,
    hash::{LeafIndex, TreeSize},
    note::NoteVerifier,
};
use policy::event::Event;
use policy::event::EventCodecError;
use policy::replay::{Outcome, Replayer};
use policy::whatif::{Analysis, Analyzer};

use crate::report::{DecisionSummary, Finding, Report, Unattributable, error_chain};
use crate::scan::{LogScan, ScanError};

mod subject_map;

use subject_map::{About, SubjectMapCheck};

/// A log being replayed: [`EntryCheck`] then [`DecisionCheck`] on each entry, in one thread.
#[derive(Debug)]
pub struct Replay {
    entries: EntryCheck,
    decisions: DecisionCheck,
}

impl Replay {
    /// A replay at the start of the log whose checkpoints `verifier` signs.
    pub fn new(verifier: NoteVerifier) -> Self {
        Self {
            entries: EntryCheck::new(verifier),
            decisions: DecisionCheck::new(),
        }
    }

    /// How many entries have been pushed.
    pub fn size(&self) -> TreeSize {
        self.entries.size()
    }

    /// Hands in a signed checkpoint note, as [`LogScan::add_checkpoint`].
    ///
    /// # Errors
    ///
    /// As [`LogScan::add_checkpoint`].
    pub fn add_checkpoint(&mut self, note: &str) -> Result<(), ScanError> {
        self.entries.add_checkpoint(note)
    }

    /// Pushes the next entry (its body, or none when erased), checks it and replays its event.
    /// Everything found wrong becomes a finding.
    ///
    /// # Errors
    ///
    /// [`ScanError::OutOfOrder`] when `index` is not the next position.
    pub fn push(
        &mut self,
        index: LeafIndex,
        leaf: &[u8],
        body: Option<&[u8]>,
    ) -> Result<(), ScanError> {
        if let Some(event) = self.entries.check(index, leaf, body)? {
            self.decisions.replay(index.get(), &event);
        }
        Ok(())
    }

    /// Ends the replay: the scan's and the decisions' reports, merged.
    pub fn finish(self) -> Report {
        merge(self.entries.finish(), self.decisions.finish())
    }
}

/// The first half of replay, which needs no decision state: [`LogScan`], then each body decoded
/// as an event and its leaf header compared with it, and the subject map recomputed. It can run
/// on its own thread ahead of [`DecisionCheck`].
#[derive(Debug)]
pub struct EntryCheck {
    scan: LogScan,
    map: SubjectMapCheck,
    /// Erased entries by the erasure entry said to have erased them, until it is reached.
    awaiting: std::collections::BTreeMap<u64, Vec<u64>>,
    /// Erasure entries read ahead ([`EntryCheck::look_ahead`]), until reached.
    ahead: std::collections::BTreeMap<u64, Ahead>,
}

/// An erasure entry read ahead of the entries it erased: its leaf, its payload (which carries
/// the patient's `subject_vrf_output`) and the patient.
#[derive(Debug)]
struct Ahead {
    leaf: Vec<u8>,
    payload: Vec<u8>,
    subject: policy::domain::SubjectId,
}

impl EntryCheck {
    /// A check at the start of the log whose checkpoints `verifier` signs.
    pub fn new(verifier: NoteVerifier) -> Self {
        Self {
            scan: LogScan::new(verifier),
            map: SubjectMapCheck::default(),
            awaiting: std::collections::BTreeMap::new(),
            ahead: std::collections::BTreeMap::new(),
        }
    }

    /// How many entries have been checked.
    pub fn size(&self) -> TreeSize {
        self.scan.size()
    }

    /// Hands in a signed checkpoint note, as [`LogScan::add_checkpoint`]; its subject-map line,
    /// if any, is compared when the entries reach its size.
    ///
    /// # Errors
    ///
    /// As [`LogScan::add_checkpoint`].
    pub fn add_checkpoint(&mut self, note: &str) -> Result<(), ScanError> {
        let current = self.scan.size().get();
        if let Some(checkpoint) = self.scan.add_signed_checkpoint(note)? {
            self.map
                .add_checkpoint(&checkpoint, current, self.scan.report_mut());
        }
        Ok(())
    }

    /// Checks the next entry; returns its event when the entry passed the scan and its body is
    /// an event (whose header may still have disagreed: that is a finding, and the event is
    /// replayed all the same, since the body is what the commitment binds).
    ///
    /// # Errors
    ///
    /// [`ScanError::OutOfOrder`] when `index` is not the next position.
    pub fn check(
        &mut self,
        index: LeafIndex,
        leaf: &[u8],
        body: Option<&[u8]>,
    ) -> Result<Option<Event>, ScanError> {
        self.check_inner(index, leaf, body, None)
    }

    /// [`EntryCheck::check`], accounting for an erased body (`body` none) with the erasure
    /// entry the server says erased it (`AuditEntry.erased_by`): none is a finding, and so is
    /// one that, once reached, is not an erasure naming this entry.
    ///
    /// # Errors
    ///
    /// As [`EntryCheck::check`].
    pub fn check_erased(
        &mut self,
        index: LeafIndex,
        leaf: &[u8],
        body: Option<&[u8]>,
        erased_by: Option<u64>,
    ) -> Result<Option<Event>, ScanError> {
        // Only entries about a patient are sealed, so only they can be erased.
        let about_patient = Leaf::decode(leaf).is_ok_and(|leaf| {
            matches!(
                leaf.kind.as_str(),
                "consent.grant"
                    | "consent.revoke"
                    | "consent.opt_out"
                    | "consent.erase"
                    | "access.decision"
            )
        });
        if body.is_none() {
            match erased_by {
                Some(erasure) if !about_patient => {
                    self.scan.add_finding(Finding::ErasureDoesNotName {
                        index: index.get(),
                        erasure,
                    });
                }
                Some(erasure) if erasure > index.get() => {
                    self.awaiting.entry(erasure).or_default().push(index.get());
                }
                Some(erasure) => self.scan.add_finding(Finding::ErasureDoesNotName {
                    index: index.get(),
                    erasure,
                }),
                None => self
                    .scan
                    .add_finding(Finding::ErasedWithoutErasure { index: index.get() }),
            }
        }
        self.check_inner(index, leaf, body, Some(erased_by))
    }

    /// Takes in erasure entry `index` (its leaf and body) ahead of its turn, so that the entries
    /// it erased, met first, can still be placed in the subject map: their patient is the
    /// erasure's. Its body must match its leaf's commitment, and the leaf must be the one the
    /// log holds at `index` when the check gets there (else a finding). Anything else is
    /// ignored: the entries then count as unattributable, as without it.
    pub fn look_ahead(&mut self, index: u64, leaf: &[u8], body: Option<&[u8]>) {
        if index < self.scan.size().get() {
            return;
        }
        let (Ok(decoded), Some(body)) = (Leaf::decode(leaf), body) else {
            return;
        };
        if ledger::entry::verify_commitment(&decoded, body).is_err() {
            return;
        }
        let payload = body
            .get(ledger::entry::BODY_NONCE_LEN..)
            .unwrap_or_default()
            .to_vec();
        if let Ok(Event::EraseEntries { subject, .. }) = Event::from_json(&payload) {
            self.ahead.insert(
                index,
                Ahead {
                    leaf: leaf.to_vec(),
                    payload,
                    subject,
                },
            );
        }
    }

    fn check_inner(
        &mut self,
        index: LeafIndex,
        leaf: &[u8],
        body: Option<&[u8]>,
        erased_by: Option<Option<u64>>,
    ) -> Result<Option<Event>, ScanError> {
        let (event, about) = match self.scan.push(index, leaf, body)? {
            Some(entry) => {
                let event = self.event(&entry);
                (event, entry.payload)
            }
            None => (None, &[][..]),
        };
        let ahead = match erased_by {
            Some(Some(erasure)) => self.ahead.get(&erasure),
            _ => None,
        };
        let about = match (&event, body) {
            (_, None) if ahead.is_some() => match ahead {
                Some(ahead) => About::Patient {
                    subject: &ahead.subject,
                    payload: &ahead.payload,
                },
                None => About::Unattributable(Unattributable::LawfullyErased),
            },
            (_, None) if matches!(erased_by, Some(Some(_))) => {
                About::Unattributable(Unattributable::LawfullyErased)
            }
            (_, None) => About::Unattributable(Unattributable::Erased),
            (None, Some(_)) => About::Unattributable(Unattributable::Unreadable),
            (Some(event), Some(_)) => match event.subject() {
                Some(subject) => About::Patient {
                    subject,
                    payload: about,
                },
                None => About::NoPatient,
            },
        };
        let index = index.get();
        self.map.entry(index, leaf, about, self.scan.report_mut());
        if let Some(erased) = self.awaiting.remove(&index) {
            self.account(index, leaf, &erased, event.as_ref());
        }
        if let Some(ahead) = self.ahead.remove(&index)
            && ahead.leaf != leaf
        {
            self.scan
                .add_finding(Finding::ErasureServedTwice { erasure: index });
        }
        self.map
            .reached(self.scan.size().get(), self.scan.report_mut());
        Ok(event)
    }

    /// The event of an entry that passed the scan, when its body is one; its header is compared.
    fn event(&mut self, entry: &crate::scan::CheckedEntry<'_>) -> Option<Event> {
        let index = entry.index.get();
        let event = match Event::from_json(entry.payload) {
            Ok(event) => event,
            Err(err) => {
                self.scan.add_finding(Finding::BadEvent {
                    index,
                    error: event_error(&err),
                });
                return None;
            }
        };
        if let Some(finding) = header_mismatch(index, &entry.leaf, &event) {
            self.scan.add_finding(finding);
        }
        Some(event)
    }

    /// Checks that erasure entry `index` (its event, when readable) names every entry in
    /// `erased`, which the server says it erased.
    fn account(&mut self, index: u64, leaf: &[u8], erased: &[u64], event: Option<&Event>) {
        // An erasure whose own body was erased later cannot be read: its public leaf still
        // says it is an erasure, which is all that can be checked.
        let erased_erasure = event.is_none()
            && Leaf::decode(leaf).is_ok_and(|leaf| leaf.kind.as_str() == "consent.erase");
        let names = |entry: u64| match event {
            Some(Event::EraseEntries {
                through, indices, ..
            }) => through.is_some_and(|t| entry <= t) || indices.binary_search(&entry).is_ok(),
            _ => erased_erasure,
        };
        for &entry in erased {
            if !names(entry) {
                self.scan.add_finding(Finding::ErasureDoesNotName {
                    index: entry,
                    erasure: index,
                });
            }
        }
    }

    /// Ends the check, as [`LogScan::finish`]; erased bodies whose erasure was never reached
    /// are findings.
    pub fn finish(mut self) -> Report {
        for (erasure, erased) in std::mem::take(&mut self.awaiting) {
            for index in erased {
                self.scan
                    .add_finding(Finding::ErasureMissing { index, erasure });
            }
        }
        self.scan.finish()
    }
}

/// The second half of replay: events applied in log order to `policy`'s [`Replayer`], every
/// logged decision re-decided.
#[derive(Debug)]
pub struct DecisionCheck {
    replayer: Replayer,
    report: Report,
    provisions: Option<crate::provision::ProvisionRecords>,
    /// The entries about each patient that findings were made about, in case a later erasure
    /// of the patient's entries explains them.
    suspects: std::collections::HashMap<policy::domain::SubjectId, Vec<u64>>,
}

impl DecisionCheck {
    /// A check at the start of the log.
    pub fn new() -> Self {
        Self {
            replayer: Replayer::new(),
            report: Report::default(),
            provisions: None,
            suspects: std::collections::HashMap::new(),
        }
    }

    /// Replays the event of entry `index` (entries must come in log order; one that was not an
    /// event is simply skipped).
    pub fn replay(&mut self, index: u64, event: &Event) {
        let outcome = self.replayer.step(index, event);
        // A provision record only for a decision the replay re-derived: the basis is read from
        // the state after it, which a decision does not change but for the patient's chain.
        if let (
            Some(provisions),
            Ok(Outcome::DecisionMatches),
            Event::Decision {
                request,
                time,
                decision,
                recipient,
                ..
            },
        ) = (&mut self.provisions, &outcome, event)
        {
            provisions.observe(
                &self.replayer,
                index,
                request,
                *time,
                decision,
                recipient.as_ref(),
            );
        }
        let findings_before = self.report.findings.len() + self.report.findings_omitted as usize;
        self.count(index, outcome);
        let found = self.report.findings.len() + self.report.findings_omitted as usize;
        if let Some(subject) = event.subject()
            && found > findings_before
        {
            self.suspects
                .entry(subject.clone())
                .or_default()
                .push(index);
        }
        if let Event::EraseEntries {
            subject,
            through,
            indices,
            ..
        } = event
        {
            self.report.erasures += 1;
            self.withdraw(
                subject,
                index,
                if through.is_some() {
                    0
                } else {
                    indices.first().copied().unwrap_or(index)
                },
            );
        }
    }

    /// Withdraws the findings about `subject`'s entries after `first_erased` and before
    /// erasure `index`: they may rest on bodies the erasure deleted.
    fn withdraw(&mut self, subject: &policy::domain::SubjectId, index: u64, first_erased: u64) {
        let Some(suspects) = self.suspects.remove(subject) else {
            return;
        };
        let (explained, kept): (Vec<u64>, Vec<u64>) = suspects
            .into_iter()
            .partition(|i| *i > first_erased && *i < index);
        if !kept.is_empty() {
            self.suspects.insert(subject.clone(), kept);
        }
        let before = self.report.findings.len();
        self.report.findings.retain(|finding| {
            !matches!(finding,
                Finding::DecisionMismatch { index, .. }
                | Finding::RecipientMismatch { index, .. }
                | Finding::EventRejected { index, .. }
                    if explained.contains(index))
        });
        self.report.withdrawn_after_erasure += (before - self.report.findings.len()) as u64;
    }

    fn count(&mut self, index: u64, outcome: Result<Outcome, policy::replay::ReplayError>) {
        let report = &mut self.report;
        match outcome {
            Ok(Outcome::Applied) => report.events_applied += 1,
            Ok(Outcome::DecisionMatches) => {
                report.events_applied += 1;
                report.decisions_checked += 1;
                report.decisions_matching += 1;
            }
            Ok(Outcome::DecisionMismatch { logged, recomputed }) => {
                report.events_applied += 1;
                report.decisions_checked += 1;
                report.add(Finding::DecisionMismatch {
                    index,
                    logged: summary(&logged),
                    recomputed: summary(&recomputed),
                });
            }
            Ok(Outcome::RecipientMismatch { logged, recomputed }) => {
                report.events_applied += 1;
                report.decisions_checked += 1;
                report.add(Finding::RecipientMismatch {
                    index,
                    logged: logged.as_ref().map(recipient),
                    recomputed: recomputed.as_ref().map(recipient),
                });
            }
            Err(err) => report.add(Finding::EventRejected {
                index,
                error: error_chain(&err),
            }),
        }
    }

    /// The same check, also analysing what `analyzer`'s candidate policy set would decide
    /// instead of each logged decision of its window (see [`DecisionCheck::finish_analysis`]).
    #[must_use]
    pub fn with_analyzer(mut self, analyzer: Analyzer) -> Self {
        self.replayer = self.replayer.with_analyzer(analyzer);
        self
    }

    /// The same check, also making `records` of every third-party provision in their window
    /// ([`crate::provision`]; see [`DecisionCheck::finish_all`]).
    #[must_use]
    pub fn with_provisions(mut self, records: crate::provision::ProvisionRecords) -> Self {
        self.provisions = Some(records);
        self
    }

    /// Ends a check of a log replayed up to tree size `size`: the report, the analysis (when
    /// made [`DecisionCheck::with_analyzer`]) and the provision records (when made
    /// [`DecisionCheck::with_provisions`]).
    pub fn finish_all(
        self,
        size: u64,
    ) -> (
        Report,
        Option<Analysis>,
        Option<crate::provision::ProvisionRecords>,
    ) {
        (
            self.report,
            self.replayer.into_analysis(size),
            self.provisions,
        )
    }

    /// Ends the check: its counts and findings (to [`merge`] with the entry check's report).
    pub fn finish(self) -> Report {
        self.report
    }

    /// Ends the check of a log replayed up to tree size `size`: the report, and the analysis
    /// when the check was made [`DecisionCheck::with_analyzer`].
    pub fn finish_analysis(self, size: u64) -> (Report, Option<Analysis>) {
        (self.report, self.replayer.into_analysis(size))
    }
}

impl Default for DecisionCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Joins the reports of [`EntryCheck`] and [`DecisionCheck`] over the same entries: counts add
/// up, findings are put in log order.
pub fn merge(entries: Report, decisions: Report) -> Report {
    let mut merged = Report {
        events_applied: decisions.events_applied,
        erasures: decisions.erasures,
        withdrawn_after_erasure: decisions.withdrawn_after_erasure,
        decisions_checked: decisions.decisions_checked,
        decisions_matching: decisions.decisions_matching,
        findings: Vec::with_capacity(entries.findings.len() + decisions.findings.len()),
        findings_omitted: entries
            .findings_omitted
            .saturating_add(decisions.findings_omitted),
        ..entries
    };
    let mut all: Vec<Finding> = entries.findings;
    all.extend(decisions.findings);
    // Stable: findings about one entry keep the order they were found in.
    all.sort_by_key(Finding::log_position);
    for finding in all {
        merged.add(finding);
    }
    merged
}

/// The public leaf header akashi writes for `event`: its kind, and its public attributes in the
/// event's order (`policy::event::Event::public_attributes`), names and values verbatim.
pub fn leaf_header(event: &Event) -> (&'static str, Vec<(&'static str, String)>) {
    (event.kind(), event.public_attributes())
}

/// The first difference between a leaf's header and the header its event calls for, if any.
pub fn header_mismatch(index: u64, leaf: &Leaf, event: &Event) -> Option<Finding> {
    let (kind, attributes) = leaf_header(event);
    let mismatch = |field: &str, leaf: Option<&str>, body: Option<&str>| Finding::HeaderMismatch {
        index,
        field: field.to_owned(),
        leaf: leaf.map(str::to_owned),
        body: body.map(str::to_owned),
    };
    if leaf.kind.as_str() != kind {
        return Some(mismatch("kind", Some(leaf.kind.as_str()), Some(kind)));
    }
    for (name, value) in &attributes {
        let in_leaf = leaf.attribute(name);
        if in_leaf != Some(value.as_str()) {
            return Some(mismatch(name, in_leaf, Some(value)));
        }
    }
    let names: Vec<&str> = attributes.iter().map(|(n, _)| *n).collect();
    let in_order = leaf
        .attributes
        .iter()
        .map(|(n, _)| n.as_str())
        .eq(names.iter().copied());
    if !in_order {
        let extra = leaf
            .attributes
            .iter()
            .find(|(n, _)| !names.contains(&n.as_str()));
        return Some(match extra {
            Some((name, value)) => mismatch(name.as_str(), Some(value.as_str()), None),
            None => mismatch("attribute order", None, None),
        });
    }
    // The leaf's day is the day of the event's sequencing time, which the body states for
    // decisions, grants and revocations: a body claiming another time (a decision backdated
    // into a consent's validity, say) does not match its own leaf.
    if let Some(time) = event.sequenced_at() {
        let day = ledger::entry::Day::from_unix_seconds(time.unix_millis().div_euclid(1000)).ok();
        if day != Some(leaf.day) {
            let in_body = day.map(|d| d.to_string());
            return Some(mismatch(
                "day",
                Some(&leaf.day.to_string()),
                in_body.as_deref(),
            ));
        }
    }
    None
}

/// A recipient as the public leaf shows it: `org/class` (`org` alone when the class is unknown).
fn recipient(recipient: &policy::decision::Recipient) -> String {
    match recipient.class {
        Some(class) => format!("{}/{class}", recipient.id),
        None => recipient.id.to_string(),
    }
}

fn summary(decision: &policy::decision::Decision) -> DecisionSummary {
    DecisionSummary {
        effect: decision.effect.to_string(),
        determining_policies: decision.determining_policies.clone(),
        review_required: decision.review_required,
    }
}

/// Why a body is not an event, without echoing any of its content (it may name a patient).
fn event_error(err: &EventCodecError) -> String {
    match err {
        EventCodecError::Json { source } => format!(
            "body is not a valid event (json line {}, column {})",
            source.line(),
            source.column()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

//! Replay: fold a log's events into a fresh state in order and re-decide every logged decision
//! with the policy set in force at its position, as a regulator does (docs/design.md §2.3).
//!
//! [`Replayer`] is fed one entry at a time, so the auditor can stream a log of any size. It does
//! not fetch, verify signatures or proofs, or decode ledger entries; the auditor does that and
//! hands over each entry's leaf index and [`Event`].

use std::collections::{BTreeMap, HashMap};

use crate::decision::{Decision, PolicySetHash, Recipient};
use crate::directory::Directory;
use crate::engine::PolicyEngine;
use crate::event::Event;
use crate::facts::Facts;
use crate::policy_set::PolicyError;
use crate::state::{self, ApplyError, KvError, KvRead, KvWrite};
use crate::whatif::{Analysis, Analyzer};

/// What replaying one entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A state-changing event was applied.
    Applied,
    /// A logged decision was re-decided and agrees (effect, determining policies, review flag).
    DecisionMatches,
    /// A logged decision was re-decided and disagrees.
    DecisionMismatch {
        /// What the log says.
        logged: Box<Decision>,
        /// What the policy set and state in force decide.
        recomputed: Box<Decision>,
    },
    /// A logged decision agrees, but names another recipient (organisation and class, which
    /// its public leaf shows) than the directory in force gives for its principal.
    RecipientMismatch {
        /// What the log says.
        logged: Option<Recipient>,
        /// What the directory gives.
        recomputed: Option<Recipient>,
    },
}

/// Why replay cannot continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The event does not apply to the state built so far.
    #[error("entry {index} does not apply: {source}")]
    Apply {
        /// Its leaf index.
        index: u64,
        /// Why.
        source: ApplyError,
    },
    /// An activated policy set does not compile.
    #[error("entry {index} activates a policy set that does not compile: {source}")]
    Policy {
        /// Its leaf index.
        index: u64,
        /// Why.
        source: PolicyError,
    },
}

/// The replayed state: the server's state without the per-subject entry listing
/// (`subj/<pseudonym>/e/<page>`). Only the history service reads that listing; keeping it would
/// make a replay's memory grow with every entry, while everything a
/// decision reads stays bounded by the number of patients and directory records.
#[derive(Debug, Default)]
pub(crate) struct ReplayState(pub(crate) BTreeMap<Vec<u8>, Vec<u8>>);

impl KvRead for ReplayState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        KvRead::get(&self.0, key)
    }
}

impl KvWrite for ReplayState {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        if state::is_subject_listing_key(key) {
            return Ok(());
        }
        KvWrite::put(&mut self.0, key, value)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        KvWrite::delete(&mut self.0, key)
    }
}

/// What [`Replayer::provision_basis`] reads for a record of third-party provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionBasis {
    /// The recipient organisation's display name, when the directory holds it.
    pub recipient_name: Option<String>,
    /// The consents that covered the request and were the patient's latest word on its purpose,
    /// with the leaf index of each one's grant when known.
    pub consents: Vec<(crate::domain::ConsentId, Option<u64>)>,
}

/// Replays a log entry by entry.
#[derive(Debug)]
pub struct Replayer {
    kv: ReplayState,
    directory: Directory,
    engines: HashMap<PolicySetHash, PolicyEngine>,
    active: Option<PolicySetHash>,
    /// A candidate policy set's analysis, fed every logged decision of its window.
    analyzer: Option<Analyzer>,
}

impl Default for Replayer {
    fn default() -> Self {
        Self::new()
    }
}

impl Replayer {
    /// A replayer at the start of a log.
    pub fn new() -> Self {
        Self {
            kv: ReplayState::default(),
            directory: Directory::empty(),
            engines: HashMap::new(),
            active: None,
            analyzer: None,
        }
    }

    /// A replayer that also analyses what `analyzer`'s candidate set would have decided
    /// instead of each logged decision of its window ([`Replayer::into_analysis`]).
    #[must_use]
    pub fn with_analyzer(mut self, analyzer: Analyzer) -> Self {
        self.analyzer = Some(analyzer);
        self
    }

    /// The analysis, when the replayer was made [`Replayer::with_analyzer`], of a log replayed
    /// up to tree size `size`.
    pub fn into_analysis(self, size: u64) -> Option<Analysis> {
        self.analyzer.map(|analyzer| analyzer.finish(size))
    }

    /// Replays the entry at leaf `index`.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] when the event does not apply (out of order, unknown consent, policy hash
    /// or chain mismatch, ...) or an activated set does not compile.
    pub fn step(&mut self, index: u64, event: &Event) -> Result<Outcome, ReplayError> {
        let apply_error = |source| ReplayError::Apply { index, source };
        let mut outcome = Outcome::Applied;
        match event {
            Event::ActivatePolicySet { policies, hash }
            | Event::ApprovePolicySet { policies, hash, .. } => {
                state::check(&self.kv, event, index).map_err(apply_error)?;
                if !self.engines.contains_key(hash) {
                    let engine = PolicyEngine::new(policies)
                        .map_err(|source| ReplayError::Policy { index, source })?;
                    self.engines.insert(*hash, engine);
                }
                self.active = Some(*hash);
            }
            Event::Decision {
                request,
                time,
                decision,
                recipient,
                ..
            } => {
                state::check(&self.kv, event, index).map_err(apply_error)?;
                let engine = self
                    .active
                    .and_then(|h| self.engines.get(&h))
                    .ok_or_else(|| apply_error(ApplyError::NoActivePolicySet))?;
                self.directory
                    .flush()
                    .map_err(|e| apply_error(ApplyError::from(e)))?;
                let facts = Facts::gather(&self.directory, &self.kv, request)
                    .map_err(|e| apply_error(ApplyError::from(e)))?;
                let recomputed = engine.decide(request, &facts, &self.directory, *time);
                if let Some(analyzer) = &mut self.analyzer
                    && analyzer.wants(index, *time)
                {
                    let candidate =
                        analyzer
                            .candidate()
                            .decide(request, &facts, &self.directory, *time);
                    analyzer.record(index, request, decision, &candidate);
                }
                let derived = facts.recipient();
                outcome = if !recomputed.same_outcome(decision) {
                    Outcome::DecisionMismatch {
                        logged: Box::new(decision.clone()),
                        recomputed: Box::new(recomputed),
                    }
                } else if derived != *recipient {
                    // The recipient is public (the disclosure counts are made from it): the
                    // log may not name another organisation than the one that asked.
                    Outcome::RecipientMismatch {
                        logged: recipient.clone(),
                        recomputed: derived,
                    }
                } else {
                    Outcome::DecisionMatches
                };
            }
            Event::EraseEntries { .. } => {
                // The erased bodies are gone, so the replayed state may lack what they did:
                // the erasure is taken as logged if it widens nothing the replay can see.
                state::adopt_erasure(&mut self.kv, event, index).map_err(apply_error)?;
                return Ok(Outcome::Applied);
            }
            _ => {}
        }
        state::apply(&mut self.kv, event, index).map_err(apply_error)?;
        // The same incremental path as the server's sequencer.
        self.directory
            .apply(event, index)
            .map_err(|e| apply_error(ApplyError::from(e)))?;
        Ok(outcome)
    }

    /// What a record of third-party provision states about decision `request` (made at `time`,
    /// released to `recipient`) beyond the decision itself, read from the state as replayed so
    /// far: `recipient`'s display name, and the patient's consents that covered the request at
    /// `time` and were their latest word on its purpose, each with the leaf index of its grant
    /// when the state knows it. Call it just after the decision's [`Replayer::step`]: a decision
    /// changes nothing of the state this reads (only the patient's chain), and the step has
    /// brought the directory up to date.
    ///
    /// # Errors
    ///
    /// [`state::StateError`] when the state cannot be read.
    pub fn provision_basis(
        &self,
        request: &crate::decision::Request,
        recipient: &crate::domain::OrgId,
        time: crate::domain::Timestamp,
    ) -> Result<ProvisionBasis, state::StateError> {
        let facts = Facts::gather(&self.directory, &self.kv, request)?;
        let recipient_name =
            state::organization(&self.kv, recipient)?.map(|org| org.name.to_string());
        let matched = facts.matching_consents(request, time);
        let consents = matched
            .iter()
            .filter(|id| !facts.subject.opted_out_after(id, request.purpose))
            .map(|id| (id.clone(), facts.subject.consent_indices.get(id).copied()))
            .collect();
        Ok(ProvisionBasis {
            recipient_name,
            consents,
        })
    }

    /// The state built so far (without the per-subject entry listing, see [`Replayer`]).
    pub fn state(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.kv.0
    }

    /// The directory built so far.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The policy set in force, if any.
    pub fn active_engine(&self) -> Option<&PolicyEngine> {
        self.active.and_then(|h| self.engines.get(&h))
    }
}

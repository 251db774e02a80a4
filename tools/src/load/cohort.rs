//! The `cohort` workload: `AccessService/AuthorizeCohort`, a data-provision desk asking for a
//! research extract of `cohort_size` patients at a time, over the patients the `authorize`
//! workload's setup registered (so most hold a research consent to the university, a quarter do
//! not).
//!
//! Call `n` asks about the `cohort_size` consecutive patients from `n × cohort_size` (wrapping
//! around the patients), pseudonymised secondary use for research. Every answer is checked: one
//! decision per patient at consecutive leaf indices, `allowed` equal to the allows counted, and
//! a checkpoint whose signature verifies and whose tree holds every decision. A call counts once
//! in the report's calls per second; `decisions_logged` counts the decisions.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::bail;
use ledger::checkpoint::SignedCheckpoint;
use proto::pb::{
    self, AuthorizeCohortRequest, CohortSubject, Principal,
    access_service_client::AccessServiceClient,
};
use tonic::transport::Channel;

use super::{
    CallError, Workload,
    authorize::{AuthorizeWorkload, DEPARTMENT, HOSPITAL_A, UNIVERSITY, patient_id},
};

/// Most patients in one call (the server's limit).
pub const MAX_COHORT: u64 = 10_000;
/// Largest answer a caller accepts: 10,000 decisions with their reasons.
const MAX_ANSWER: usize = 64 << 20;

/// The workload, after setup.
pub struct CohortWorkload {
    setup: AuthorizeWorkload,
    patients: u64,
    cohort_size: u64,
    decisions: AtomicU64,
    allowed: AtomicU64,
    checkpoints_verified: AtomicU64,
}

impl CohortWorkload {
    /// Over the patients `setup` registered (`patients` of them), `cohort_size` per call.
    ///
    /// # Errors
    ///
    /// When `cohort_size` is 0, above [`MAX_COHORT`] or above `patients`.
    pub fn new(setup: AuthorizeWorkload, patients: u64, cohort_size: u64) -> anyhow::Result<Self> {
        if cohort_size == 0 || cohort_size > MAX_COHORT || cohort_size > patients {
            bail!("--cohort-size must be between 1 and {MAX_COHORT}, and at most --patients");
        }
        Ok(Self {
            setup,
            patients,
            cohort_size,
            decisions: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            checkpoints_verified: AtomicU64::new(0),
        })
    }

    /// The request of call `n`.
    fn request(&self, n: u64) -> AuthorizeCohortRequest {
        let start = n.wrapping_mul(self.cohort_size);
        AuthorizeCohortRequest {
            principal: Some(Principal {
                r#type: "Organization".into(),
                id: UNIVERSITY.into(),
            }),
            action: "secondary_use".into(),
            data_category: "lab_result".into(),
            source_facility: HOSPITAL_A.into(),
            source_department: DEPARTMENT.into(),
            purpose: "research".into(),
            level: "PSEUDONYMIZED".into(),
            subjects: (0..self.cohort_size)
                .map(|i| CohortSubject {
                    patient_id: patient_id(start.wrapping_add(i) % self.patients),
                    ..CohortSubject::default()
                })
                .collect(),
            ..AuthorizeCohortRequest::default()
        }
    }

    /// Checks an answer; the error names the failed check.
    fn check(&self, answer: &pb::AuthorizeCohortResponse) -> Result<(), CallError> {
        if answer.decisions.len() as u64 != self.cohort_size {
            return Err(CallError::new("decision_count_mismatch"));
        }
        let first = answer.decisions.first().map_or(0, |d| d.leaf_index);
        let mut allowed = 0;
        for (offset, decision) in answer.decisions.iter().enumerate() {
            if decision.leaf_index != first + offset as u64 {
                return Err(CallError::new("decision_index_mismatch"));
            }
            match decision.decision() {
                pb::Decision::Allow => allowed += 1,
                pb::Decision::Deny => {}
                pb::Decision::Unspecified => return Err(CallError::new("decision_unspecified")),
            }
        }
        if allowed != answer.allowed {
            return Err(CallError::new("decision_allowed_mismatch"));
        }
        let checkpoint = SignedCheckpoint::verify(&answer.checkpoint, self.setup.verifier())
            .map_err(|_| CallError::new("receipt_checkpoint_invalid"))?
            .into_checkpoint();
        if checkpoint.size.get() != answer.tree_size
            || first + self.cohort_size > checkpoint.size.get()
        {
            return Err(CallError::new("receipt_size_mismatch"));
        }
        self.checkpoints_verified.fetch_add(1, Ordering::Relaxed);
        self.decisions
            .fetch_add(self.cohort_size, Ordering::Relaxed);
        self.allowed.fetch_add(allowed, Ordering::Relaxed);
        Ok(())
    }
}

impl Workload for CohortWorkload {
    type Client = AccessServiceClient<Channel>;

    fn name(&self) -> &'static str {
        "cohort"
    }

    fn client(&self, channel: Channel) -> Self::Client {
        AccessServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER)
    }

    async fn call(&self, client: &mut Self::Client, n: u64) -> Result<(), CallError> {
        let answer = client
            .authorize_cohort(self.setup.request(self.request(n)))
            .await
            .map_err(|status| CallError::status(&status))?
            .into_inner();
        self.check(&answer)
    }

    fn checks(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            (
                "decisions_logged".to_owned(),
                self.decisions.load(Ordering::Relaxed),
            ),
            (
                "decisions_allow".to_owned(),
                self.allowed.load(Ordering::Relaxed),
            ),
            (
                "checkpoints_verified".to_owned(),
                self.checkpoints_verified.load(Ordering::Relaxed),
            ),
        ])
    }
}

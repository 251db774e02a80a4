//! The `authzen` workload: the OpenID AuthZEN 1.0 API (`--authzen-addr`), `POST
//! /access/v1/evaluations` with `evaluations` items per call (or `POST /access/v1/evaluation`
//! when 1), over the patients the `authorize` workload's setup registered: pseudonymised
//! secondary use for research by the university, the same question the cohort workload asks.
//!
//! Every answer is checked: status 200, one evaluation per item, each with a boolean `decision`
//! and a receipt (`context.receipt.leaf_index` below `context.receipt.tree_size`, and a
//! checkpoint whose signature verifies with the log's key, once per call). A call counts once in
//! the report's calls per second; `decisions_logged` counts the evaluations.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, bail};
use ledger::checkpoint::SignedCheckpoint;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{
    CallError, Workload,
    authorize::{AuthorizeWorkload, DEPARTMENT, HOSPITAL_A, UNIVERSITY, patient_id},
};

/// Most items per call (the server's limit).
pub const MAX_EVALUATIONS: u64 = 1_000;

/// The workload, after setup.
pub struct AuthZenWorkload {
    setup: AuthorizeWorkload,
    /// `http://ADDR/access/v1/evaluation(s)`.
    url: String,
    authorization: String,
    patients: u64,
    evaluations: u64,
    decisions: AtomicU64,
    allowed: AtomicU64,
    checkpoints_verified: AtomicU64,
}

impl AuthZenWorkload {
    /// Against the AuthZEN API at `target` (a loopback `http://` URL), `evaluations` items per
    /// call, over the patients `setup` registered (`patients` of them), with bearer `token`.
    ///
    /// # Errors
    ///
    /// When `evaluations` is 0 or above [`MAX_EVALUATIONS`], or `target` is not a loopback URL.
    pub fn new(
        setup: AuthorizeWorkload,
        target: &str,
        token: &str,
        patients: u64,
        evaluations: u64,
    ) -> anyhow::Result<Self> {
        if evaluations == 0 || evaluations > MAX_EVALUATIONS {
            bail!("--evaluations must be between 1 and {MAX_EVALUATIONS}");
        }
        super::ensure_loopback(target).context("while checking --authzen-target")?;
        let path = if evaluations == 1 {
            "/access/v1/evaluation"
        } else {
            "/access/v1/evaluations"
        };
        Ok(Self {
            setup,
            url: format!("{}{path}", target.trim_end_matches('/')),
            authorization: format!("Bearer {token}"),
            patients: patients.max(1),
            evaluations,
            decisions: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            checkpoints_verified: AtomicU64::new(0),
        })
    }

    /// The JSON body of call `n`.
    fn body(&self, n: u64) -> Value {
        let start = n.wrapping_mul(self.evaluations);
        let resource = |i: u64| {
            json!({"type": "patient", "id": patient_id(start.wrapping_add(i) % self.patients),
                "properties": {"data_category": "lab_result", "source_facility": HOSPITAL_A,
                    "source_department": DEPARTMENT}})
        };
        let (subject, action, context) = (
            json!({"type": "organization", "id": UNIVERSITY}),
            json!({"name": "secondary_use"}),
            json!({"purpose": "research", "level": "PSEUDONYMIZED"}),
        );
        if self.evaluations == 1 {
            json!({"subject": subject, "action": action, "context": context,
                "resource": resource(0)})
        } else {
            let evaluations: Vec<Value> = (0..self.evaluations)
                .map(|i| json!({"resource": resource(i)}))
                .collect();
            json!({"subject": subject, "action": action, "context": context,
                "evaluations": evaluations})
        }
    }

    /// Checks an answer; the error names the failed check.
    fn check(&self, answer: &Value) -> Result<(), CallError> {
        let items: Vec<&Value> = if self.evaluations == 1 {
            vec![answer]
        } else {
            answer
                .get("evaluations")
                .and_then(Value::as_array)
                .map(|items| items.iter().collect())
                .unwrap_or_default()
        };
        if items.len() as u64 != self.evaluations {
            return Err(CallError::new("decision_count_mismatch"));
        }
        let mut allowed = 0;
        let mut verified = false;
        for item in items {
            let decision = item
                .get("decision")
                .and_then(Value::as_bool)
                .ok_or_else(|| CallError::new("decision_missing"))?;
            allowed += u64::from(decision);
            let receipt = item.pointer("/context/receipt");
            let field = |name: &str| receipt.and_then(|r| r.get(name));
            let (Some(index), Some(size)) = (
                field("leaf_index").and_then(Value::as_u64),
                field("tree_size").and_then(Value::as_u64),
            ) else {
                return Err(CallError::new("receipt_missing"));
            };
            if index >= size {
                return Err(CallError::new("receipt_size_mismatch"));
            }
            if !verified {
                let note = field("checkpoint")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CallError::new("receipt_missing"))?;
                let checkpoint = SignedCheckpoint::verify(note, self.setup.verifier())
                    .map_err(|_| CallError::new("receipt_checkpoint_invalid"))?;
                if checkpoint.checkpoint().size.get() != size {
                    return Err(CallError::new("receipt_size_mismatch"));
                }
                verified = true;
            }
        }
        self.checkpoints_verified.fetch_add(1, Ordering::Relaxed);
        self.decisions
            .fetch_add(self.evaluations, Ordering::Relaxed);
        self.allowed.fetch_add(allowed, Ordering::Relaxed);
        Ok(())
    }
}

impl Workload for AuthZenWorkload {
    type Client = super::HttpClient;

    fn name(&self) -> &'static str {
        "authzen"
    }

    /// Each caller keeps its own HTTP/1.1 keep-alive connection (the gRPC channel is not used).
    fn client(&self, _channel: Channel) -> Self::Client {
        super::http_client()
    }

    async fn call(&self, client: &mut Self::Client, n: u64) -> Result<(), CallError> {
        let answer =
            super::post_json(client, &self.url, Some(&self.authorization), &self.body(n)).await?;
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

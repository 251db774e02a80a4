//! `ErasureService`: lawful erasure of a patient's entries, on the patient's request through the
//! platform, or by a regulator (see [`crate::erasure`] for how it reaches every copy).

use ledger::{chunk::Record, entry::Body, hash::LeafIndex};
use policy::event::{Event, MAX_ERASED_INDICES, MAX_ERASURE_REASON};
use proto::pb::{self, erasure_service_server::ErasureService};
use tonic::{Request, Response, Status};

use super::{Core, receipt, request_key};
use crate::{
    auth::{Refusal, Role, caller, require},
    erasure,
    error::{Error, FieldProblem},
    state_machine::Command,
};

/// The erasure service, with the legal retention period it enforces.
#[derive(Clone)]
pub struct Erasure {
    core: Core,
    retention_days: u32,
}

impl Erasure {
    /// The service over `core`, refusing (unless forced) entries younger than `retention_days`.
    pub fn new(core: Core, retention_days: u32) -> Self {
        Self {
            core,
            retention_days,
        }
    }

    /// How many entries the erasure logged at `index` erased, from its body (a retry's answer).
    fn erased_count(&self, index: u64) -> Result<u64, Error> {
        let log = self.core.log();
        let Record::Present(bytes) = log
            .body(LeafIndex(index))
            .map_err(|e| Error::Unavailable(Box::new(e)))?
        else {
            return Ok(0);
        };
        let body = Body::decode(&bytes).map_err(|_| Error::Internal("a stored body is bad"))?;
        match Event::from_json(&body.payload) {
            Ok(Event::EraseEntries {
                subject,
                through: Some(through),
                ..
            }) => Ok(policy::state::subject_entries_after(
                &crate::state_machine::LogKv(log),
                &subject,
                None,
                usize::MAX,
            )
            .map_err(|e| Error::Unavailable(Box::new(e)))?
            .into_iter()
            .filter(|i| *i <= through)
            .count() as u64),
            Ok(Event::EraseEntries { indices, .. }) => Ok(indices.len() as u64),
            _ => Err(Error::Internal("the entry answered is not an erasure")),
        }
    }
}

#[tonic::async_trait]
impl ErasureService for Erasure {
    async fn erase(
        &self,
        request: Request<pb::EraseRequest>,
    ) -> Result<Response<pb::EraseResponse>, Status> {
        let caller = caller(&request)?.clone();
        require(&caller, &[Role::Platform, Role::Regulator])?;
        let idempotent = request_key(&request, &request.get_ref().request_id)?;
        let r = request.into_inner();
        if r.force && caller.role != Role::Regulator {
            return Err(Error::Refused(Refusal::OptionDenied(
                "only a regulator may `force` an erasure within the retention period",
            ))
            .into());
        }
        if r.reason.trim().is_empty() {
            return Err(Error::invalid("reason", FieldProblem::Missing).into());
        }
        if r.reason.len() > MAX_ERASURE_REASON {
            return Err(Error::invalid(
                "reason",
                FieldProblem::TooLong {
                    max: MAX_ERASURE_REASON,
                },
            )
            .into());
        }
        if r.leaf_indices.len() > MAX_ERASED_INDICES {
            return Err(Error::invalid(
                "leaf_indices",
                FieldProblem::TooMany {
                    max: MAX_ERASED_INDICES,
                },
            )
            .into());
        }
        let mut indices = r.leaf_indices.clone();
        indices.sort_unstable();
        indices.dedup();
        let subject = self.core.subject("patient_id", &r.patient_id)?;
        let command = Command::Erase {
            subject: subject.clone(),
            indices,
            reason: r.reason,
            force: r.force,
            retention_days: self.retention_days,
        };
        let (logged, _) = self
            .core
            .submit_request(command, Some((&subject, &r.patient_id)), idempotent)
            .await?;
        let index = logged.leaf_index.get();
        let log = self.core.log().clone();
        // The batch is durable: now the bodies go and the old key is destroyed. Until this
        // is done the caller is not answered (a failure leaves the work to the next start).
        let erased = tokio::task::spawn_blocking(move || {
            let erased = erasure::execute(&log, index)?;
            // Any earlier erasure whose work failed after its batch is finished now too, not
            // only at the next start.
            if let Err(err) = erasure::resume(&log) {
                tracing::warn!(cause = %err, "an earlier erasure is still not carried out");
            }
            Ok::<_, Error>(erased)
        })
        .await
        .map_err(|_| Error::Internal("the erasure task failed"))??;
        let erased = match erased {
            0 => self.erased_count(index)?,
            n => n,
        };
        Ok(Response::new(pb::EraseResponse {
            receipt: Some(receipt(&logged)),
            erased,
        }))
    }
}

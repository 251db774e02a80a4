//! `AuditService`: the regulator's and auditor's read of the whole log, private bodies
//! included, and of every checkpoint the log ever signed: what `akashi-audit replay` needs to
//! recompute the tree and re-decide every logged decision.

use ledger::{
    chunk::Record,
    hash::{LeafIndex, TreeSize},
};
use proto::pb::{self, audit_service_server::AuditService};
use tonic::{Request, Response, Status};

use super::{Core, budget, transparency::READ_CHUNK};
use crate::{
    auth::{Role, caller, require},
    erasure,
    error::Error,
    error::FieldProblem,
};

/// Most entries or checkpoints returned by one call.
pub const MAX_AUDIT_PAGE: u32 = 1024;

/// The audit service.
#[derive(Clone)]
pub struct Audit(pub Core);

#[tonic::async_trait]
impl AuditService for Audit {
    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        require(caller(&request)?, &[Role::Regulator, Role::Auditor])?;
        let mut reservation = budget::reserve(&request)?;
        let r = request.into_inner();
        if r.count == 0 {
            return Err(Error::invalid("count", FieldProblem::Missing).into());
        }
        let count = u64::from(r.count.min(MAX_AUDIT_PAGE));
        let log = self.0.log();
        let mut entries: Vec<pb::AuditEntry> = Vec::new();
        // Read in chunks, each counted against the answer budget before it joins the answer.
        while (entries.len() as u64) < count {
            let want = (count - entries.len() as u64).min(READ_CHUNK);
            let start = LeafIndex(r.start.saturating_add(entries.len() as u64));
            let leaves = match log.leaves(start, want) {
                Ok(leaves) => leaves,
                Err(ledger::log::ReadError::OutOfRange { .. }) if !entries.is_empty() => break,
                Err(ledger::log::ReadError::OutOfRange { got, size, .. }) => {
                    return Err(Error::OutOfRange {
                        field: "start",
                        value: got,
                        limit: size,
                    }
                    .into());
                }
                Err(other) => return Err(Error::from(other).into()),
            };
            let got = leaves.len() as u64;
            let bodies = log.bodies(start, got).map_err(Error::from)?;
            let bytes = leaves
                .iter()
                .zip(&bodies)
                .map(|(leaf, body)| {
                    let body = match body {
                        Record::Present(body) => body.len(),
                        Record::Redacted => 0,
                    };
                    leaf.len() + body + budget::ITEM_OVERHEAD
                })
                .sum();
            reservation.grow(bytes)?;
            for (offset, (leaf, body)) in leaves.into_iter().zip(bodies).enumerate() {
                let leaf_index = start.get() + offset as u64;
                let (body, redacted, erased_by) = match body {
                    Record::Present(body) => (body, false, None),
                    Record::Redacted => (Vec::new(), true, erasure::erased_by(log, leaf_index)?),
                };
                entries.push(pb::AuditEntry {
                    leaf_index,
                    leaf,
                    body,
                    redacted,
                    erased_by,
                });
            }
            if got < want {
                break;
            }
        }
        Ok(reservation.attach(Response::new(pb::GetEntriesResponse { entries })))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        require(caller(&request)?, &[Role::Regulator, Role::Auditor])?;
        let mut reservation = budget::reserve(&request)?;
        let r = request.into_inner();
        if r.limit == 0 {
            return Err(Error::invalid("limit", FieldProblem::Missing).into());
        }
        let limit = r.limit.min(MAX_AUDIT_PAGE) as usize;
        let checkpoints = self
            .0
            .log()
            .checkpoints(TreeSize(r.from_size), TreeSize(u64::MAX), limit)
            .map_err(Error::from)?;
        reservation.grow(
            checkpoints
                .iter()
                .map(|note| note.len() + budget::ITEM_OVERHEAD)
                .sum(),
        )?;
        Ok(reservation.attach(Response::new(pb::ListCheckpointsResponse { checkpoints })))
    }
}

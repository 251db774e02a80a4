//! `HistoryService/GetSubjectHistory`: a patient's own entries (consents, opt-outs and every
//! decision about their data), each with its leaf, private body and inclusion proof against one
//! signed checkpoint. The patient may read only their own; a regulator may read anyone's.
//! Answers count against the answer budget (`budget`).

use ledger::{
    chunk::Record,
    hash::{LeafIndex, TreeSize},
};
use policy::state;
use proto::pb::{self, history_service_server::HistoryService};
use tonic::{Request, Response, Status};

use super::{Core, budget, hashes};
use crate::state_machine::LogKv;
use crate::subject_map;
use crate::{
    auth::{Role, caller, require_subject},
    error::Error,
};

/// Most entries returned by one call (page with `after_index`).
pub const MAX_HISTORY_PAGE: usize = 1000;

/// The history service.
#[derive(Clone)]
pub struct History(pub Core);

#[tonic::async_trait]
impl HistoryService for History {
    async fn get_subject_history(
        &self,
        request: Request<pb::GetSubjectHistoryRequest>,
    ) -> Result<Response<pb::GetSubjectHistoryResponse>, Status> {
        let caller = caller(&request)?.clone();
        let mut reservation = budget::reserve(&request)?;
        let r = request.into_inner();
        // The role first: a caller who may not ask learns nothing, not even that the id is bad.
        require_subject(&caller, &r.patient_id, &[Role::Regulator])?;
        let subject = self.0.subject("patient_id", &r.patient_id)?;
        let limit = match r.limit {
            0 => MAX_HISTORY_PAGE,
            n => usize::try_from(n)
                .unwrap_or(MAX_HISTORY_PAGE)
                .min(MAX_HISTORY_PAGE),
        };
        let log = self.0.log();
        // One checkpoint for the whole answer: entries after it are left for the next call.
        // With a subject map it is the published checkpoint that commits to the map the
        // completeness proof was read from.
        let (note, size, completeness) = match self.0.subject_map() {
            Some(key) => {
                let witnessed = self.0.witnessed().newest();
                let proven =
                    subject_map::prove(log, key, &subject, &r.patient_id, witnessed.as_deref())
                        .await?;
                (
                    proven.checkpoint,
                    TreeSize(proven.size),
                    Some(proven.completeness),
                )
            }
            None => {
                let checkpoint = log.checkpoint();
                (
                    checkpoint.note().to_owned(),
                    checkpoint.checkpoint().size,
                    None,
                )
            }
        };
        let mut indices =
            state::subject_entries_after(&LogKv(log), &subject, r.after_index, limit + 1)
                .map_err(|e| Error::Unavailable(Box::new(e)))?;
        // Entries sequenced after the checkpoint are left for the next call.
        indices.retain(|index| *index < size.get());
        let more = indices.len() > limit;
        indices.truncate(limit);
        let unacknowledged = log
            .unacknowledged()
            .map_err(|e| Error::Unavailable(Box::new(e)))?;
        let mut entries = Vec::with_capacity(indices.len());
        for index in indices {
            let index = LeafIndex(index);
            let unavailable = |e: ledger::log::ReadError| Error::Unavailable(Box::new(e));
            let leaf = log
                .leaves(index, 1)
                .map_err(unavailable)?
                .into_iter()
                .next()
                .ok_or(Error::Internal("a listed entry has no leaf"))?;
            let (body, redacted) = match log.body(index).map_err(unavailable)? {
                Record::Present(body) => (body, false),
                Record::Redacted => (Vec::new(), true),
            };
            let proof = log.inclusion_proof(index, size).map_err(unavailable)?;
            // Counted before it joins the answer: a caller past its budget gets
            // RESOURCE_EXHAUSTED rather than more memory.
            reservation
                .grow(leaf.len() + body.len() + proof.path.len() * 32 + budget::ITEM_OVERHEAD)?;
            let review_required = review_required(&leaf);
            entries.push(pb::HistoryEntry {
                review_required,
                leaf_index: index.get(),
                leaf,
                body,
                inclusion_proof: hashes(&proof.path),
                redacted,
                unacknowledged: unacknowledged.iter().any(|run| run.contains(&index.get())),
            });
        }
        Ok(
            reservation.attach(Response::new(pb::GetSubjectHistoryResponse {
                checkpoint: note,
                entries,
                tree_size: size.get(),
                more,
                completeness,
            })),
        )
    }
}

/// Whether a leaf is an allowing decision flagged for review (its `review` attribute is `true`,
/// which only an allow carries). A leaf that does not decode is not flagged: it is served as it is,
/// and the caller's verification of it fails.
fn review_required(leaf: &[u8]) -> bool {
    ledger::entry::Leaf::decode(leaf).is_ok_and(|leaf| {
        leaf.attribute("decision") == Some("ALLOW") && leaf.attribute("review") == Some("true")
    })
}

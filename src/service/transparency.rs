//! `TransparencyService`: what anyone may read without a token: the signed checkpoint and its
//! verifier key, inclusion and consistency proofs, public leaves, and the bodies of entries that
//! carry no personal data (policy activations and directory changes without patient
//! exclusions). Nothing here names a patient.

use ledger::{
    chunk::Record,
    entry::Body,
    hash::{LeafIndex, TreeSize},
    log::ReadError,
};
use policy::event::Event;
use proto::pb::{self, transparency_service_server::TransparencyService};
use tonic::{Request, Response, Status};

use super::{Core, budget, hashes};
use crate::{error::Error, error::FieldProblem};

/// Most leaves one `GetLeaves` call returns.
pub const MAX_LEAVES: u64 = 1024;
/// Leaves (or entries) read from the log at a time while a large answer is built, each chunk
/// counted against the answer budget before it joins the answer.
pub(crate) const READ_CHUNK: u64 = 64;

/// The transparency service.
#[derive(Clone)]
pub struct Transparency(pub Core);

#[tonic::async_trait]
impl TransparencyService for Transparency {
    async fn get_checkpoint(
        &self,
        _request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        let witnessed = self.0.witnessed();
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: self.0.log().checkpoint().note().to_owned(),
            verifier_key: self.0.verifier_key().to_owned(),
            witnessed_checkpoint: witnessed
                .newest()
                .map(|w| w.note().to_owned())
                .unwrap_or_default(),
            witness_keys: witnessed.keys().to_vec(),
            witness_quorum: u32::try_from(witnessed.quorum()).unwrap_or(u32::MAX),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let r = request.into_inner();
        if r.tree_size == 0 {
            return Err(Error::invalid("tree_size", FieldProblem::Missing).into());
        }
        let proof = self
            .0
            .log()
            .inclusion_proof(LeafIndex(r.leaf_index), TreeSize(r.tree_size))
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            leaf_index: r.leaf_index,
            tree_size: r.tree_size,
            path: hashes(&proof.path),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let r = request.into_inner();
        if r.old_size == 0 {
            return Err(Error::invalid(
                "old_size",
                FieldProblem::Malformed {
                    reason: "must be at least 1 (every tree extends the empty tree)",
                },
            )
            .into());
        }
        if r.new_size == 0 {
            return Err(Error::invalid("new_size", FieldProblem::Missing).into());
        }
        if r.old_size > r.new_size {
            return Err(Error::invalid(
                "old_size",
                FieldProblem::Malformed {
                    reason: "must not exceed `new_size`",
                },
            )
            .into());
        }
        let proof = self
            .0
            .log()
            .consistency_proof(TreeSize(r.old_size), TreeSize(r.new_size))
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            old_size: r.old_size,
            new_size: r.new_size,
            path: hashes(&proof.path),
        }))
    }

    async fn get_leaves(
        &self,
        request: Request<pb::GetLeavesRequest>,
    ) -> Result<Response<pb::GetLeavesResponse>, Status> {
        let mut reservation = budget::reserve(&request)?;
        let r = request.into_inner();
        if r.count == 0 {
            return Err(Error::invalid("count", FieldProblem::Missing).into());
        }
        if r.count > MAX_LEAVES {
            return Err(Error::invalid(
                "count",
                FieldProblem::TooMany {
                    max: MAX_LEAVES as usize,
                },
            )
            .into());
        }
        let log = self.0.log();
        let mut leaves: Vec<Vec<u8>> = Vec::new();
        // Read in chunks, each counted against the answer budget before it joins the answer.
        while (leaves.len() as u64) < r.count {
            let want = (r.count - leaves.len() as u64).min(READ_CHUNK);
            let chunk =
                match log.leaves(LeafIndex(r.start.saturating_add(leaves.len() as u64)), want) {
                    Ok(chunk) => chunk,
                    Err(ReadError::OutOfRange { .. }) if !leaves.is_empty() => break,
                    Err(ReadError::OutOfRange { got, size, .. }) => {
                        return Err(Error::OutOfRange {
                            field: "start",
                            value: got,
                            limit: size,
                        }
                        .into());
                    }
                    Err(other) => return Err(Error::from(other).into()),
                };
            let got = chunk.len() as u64;
            reservation.grow(
                chunk
                    .iter()
                    .map(|leaf| leaf.len() + budget::ITEM_OVERHEAD)
                    .sum(),
            )?;
            leaves.extend(chunk);
            if got < want {
                break;
            }
        }
        Ok(reservation.attach(Response::new(pb::GetLeavesResponse { leaves })))
    }

    async fn get_public_body(
        &self,
        request: Request<pb::GetPublicBodyRequest>,
    ) -> Result<Response<pb::GetPublicBodyResponse>, Status> {
        let index = LeafIndex(request.into_inner().leaf_index);
        let record = self.0.log().body(index).map_err(Error::from)?;
        // Public only when the whole event is: its public form is the event itself. An erased
        // body gets the same answer as a private one, so that nobody learns which private
        // entries (a patient's consents and decisions) were erased.
        let public = match &record {
            Record::Present(bytes) => Body::decode(bytes)
                .ok()
                .and_then(|body| Event::from_json(&body.payload).ok())
                .is_some_and(|event| event.public_body().as_ref() == Some(&event)),
            Record::Redacted => false,
        };
        let Record::Present(bytes) = record else {
            return Err(not_public(index));
        };
        if !public {
            return Err(not_public(index));
        }
        Ok(Response::new(pb::GetPublicBodyResponse {
            leaf_index: index.get(),
            body: bytes,
        }))
    }
}

/// The answer for a body that is not public: private, or erased (not told apart).
fn not_public(index: LeafIndex) -> Status {
    Error::FailedPrecondition(format!(
        "the body of entry {index} is not public (it is private, or was erased)"
    ))
    .into()
}

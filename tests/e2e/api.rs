//! Shared helpers for the akashi.v1 end-to-end tests: clients with a token, receipt
//! verification with the ledger's own verifier, and a small directory fixture.

use ledger::{
    checkpoint::SignedCheckpoint,
    hash::{Hash, LeafIndex, TreeSize},
    note::NoteVerifier,
    proof::InclusionProof,
};
use proto::pb::{
    self, access_service_client::AccessServiceClient, audit_service_client::AuditServiceClient,
    consent_service_client::ConsentServiceClient, directory_service_client::DirectoryServiceClient,
    history_service_client::HistoryServiceClient, policy_service_client::PolicyServiceClient,
    transparency_service_client::TransparencyServiceClient,
};
use tonic::transport::Channel;

use crate::harness::{TestServer, with_token};
use akashi::auth::Role;

/// Clients of every service, calling with one token.
#[derive(Clone)]
pub struct Api {
    pub channel: Channel,
    pub token: String,
}

impl Api {
    /// Clients for `role` (and `patient` for the patient role) on `server`.
    pub async fn new(server: &TestServer, role: Role, patient: Option<&str>) -> Self {
        Self {
            channel: server.channel().await,
            token: server.token(role, patient),
        }
    }

    pub fn req<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, &self.token)
    }

    pub fn directory(&self) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel.clone())
    }
    pub fn consent(&self) -> ConsentServiceClient<Channel> {
        ConsentServiceClient::new(self.channel.clone())
    }
    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channel.clone())
    }
    pub fn policy(&self) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(self.channel.clone())
    }
    pub fn history(&self) -> HistoryServiceClient<Channel> {
        HistoryServiceClient::new(self.channel.clone())
    }
    /// `GetSubjectHistory` for `patient_id`, first page, default limit.
    pub async fn subject_history(
        &self,
        patient_id: &str,
    ) -> Result<pb::GetSubjectHistoryResponse, tonic::Status> {
        self.history()
            .get_subject_history(self.req(pb::GetSubjectHistoryRequest {
                patient_id: patient_id.into(),
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
    }
    pub fn transparency(&self) -> TransparencyServiceClient<Channel> {
        TransparencyServiceClient::new(self.channel.clone())
    }
    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    /// A patient's consent state, as this caller may read it.
    pub async fn consent_state(&self, patient: &str) -> pb::GetConsentStateResponse {
        self.consent()
            .get_consent_state(self.req(pb::GetConsentStateRequest {
                patient_id: patient.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
    }

    /// The current tree size.
    pub async fn size(&self) -> u64 {
        let cp = self
            .transparency()
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner();
        cp.checkpoint
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap()
    }

    pub async fn org(&self, id: &str, class: &str) -> pb::Receipt {
        self.directory()
            .upsert_organization(self.req(pb::UpsertOrganizationRequest {
                request_id: String::new(),
                id: id.into(),
                name: format!("{id} Inc."),
                recipient_class: class.into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap()
    }

    pub async fn facility(&self, id: &str, group: &str, departments: &[&str], patients: &[&str]) {
        self.org(id, "hospital").await;
        self.directory()
            .upsert_facility(self.req(pb::UpsertFacilityRequest {
                request_id: String::new(),
                id: id.into(),
                name: format!("{id} hospital"),
                group: group.into(),
                excluded_departments: departments.iter().map(|d| (*d).into()).collect(),
                excluded_patients: patients.iter().map(|p| (*p).into()).collect(),
                recipient_class: String::new(),
            }))
            .await
            .unwrap();
    }

    pub async fn clinician(&self, id: &str, facility: &str, department: &str, role: &str) {
        self.directory()
            .upsert_clinician(self.req(pb::UpsertClinicianRequest {
                request_id: String::new(),
                id: id.into(),
                facility: facility.into(),
                department: department.into(),
                role: role.into(),
            }))
            .await
            .unwrap();
    }

    /// Grants a consent; returns its id.
    pub async fn grant(&self, grant: pb::GrantConsentRequest) -> String {
        self.consent()
            .grant_consent(self.req(grant))
            .await
            .unwrap()
            .into_inner()
            .consent_id
    }

    pub async fn authorize(&self, request: pb::AuthorizeRequest) -> pb::AuthorizeResponse {
        self.access()
            .authorize(self.req(request))
            .await
            .unwrap()
            .into_inner()
    }
}

/// A grant of `purposes` on `categories` to `recipients` at `level`, open-ended.
pub fn grant(
    patient: &str,
    purposes: &[&str],
    categories: &[&str],
    recipients: &[&str],
    classes: &[&str],
    level: &str,
) -> pb::GrantConsentRequest {
    pb::GrantConsentRequest {
        request_id: String::new(),
        patient_id: patient.into(),
        purposes: purposes.iter().map(|s| (*s).into()).collect(),
        data_categories: categories.iter().map(|s| (*s).into()).collect(),
        recipients: recipients.iter().map(|s| (*s).into()).collect(),
        recipient_classes: classes.iter().map(|s| (*s).into()).collect(),
        max_level: level.into(),
        valid_from: String::new(),
        valid_until: String::new(),
    }
}

/// An Authorize request.
#[allow(clippy::too_many_arguments, reason = "mirrors the request's fields")]
pub fn ask(
    principal_type: &str,
    principal_id: &str,
    action: &str,
    patient: &str,
    category: &str,
    purpose: &str,
    level: &str,
) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        principal: Some(pb::Principal {
            r#type: principal_type.into(),
            id: principal_id.into(),
        }),
        action: action.into(),
        patient_id: patient.into(),
        data_category: category.into(),
        purpose: purpose.into(),
        level: level.into(),
        ..Default::default()
    }
}

/// Verifies a receipt the way an outside verifier would: checkpoint signature with the vkey,
/// then the inclusion proof of the leaf hash against the checkpoint's root. Returns the size.
pub fn verify_receipt(receipt: &pb::Receipt, vkey: &str) -> u64 {
    let verifier = NoteVerifier::from_vkey(vkey).unwrap();
    let checkpoint = SignedCheckpoint::verify(&receipt.checkpoint, &verifier)
        .unwrap()
        .into_checkpoint();
    assert_eq!(checkpoint.size.get(), receipt.tree_size);
    let proof = InclusionProof {
        leaf_index: LeafIndex(receipt.leaf_index),
        tree_size: checkpoint.size,
        path: receipt
            .inclusion_proof
            .iter()
            .map(|h| Hash::from_slice(h).unwrap())
            .collect(),
    };
    proof
        .verify(
            &Hash::from_slice(&receipt.leaf_hash).unwrap(),
            &checkpoint.root,
        )
        .unwrap();
    checkpoint.size.get()
}

/// The root of a signed checkpoint note (after checking its signature).
pub fn checkpoint_root(note: &str, vkey: &str) -> (TreeSize, Hash) {
    let verifier = NoteVerifier::from_vkey(vkey).unwrap();
    let cp = SignedCheckpoint::verify(note, &verifier)
        .unwrap()
        .into_checkpoint();
    (cp.size, cp.root)
}

/// Whether a decision allows.
pub fn allowed(response: &pb::AuthorizeResponse) -> bool {
    response.decision == pb::Decision::Allow as i32
}

//! The `authorize` workload: a realistic mix of `AccessService/Authorize` over many patients
//! with some consent writes, checking every answer.
//!
//! Setup (before the clock starts) registers a university, two hospitals and a doctor, and
//! grants consents for P patients (research to the university for most; inter-facility
//! treatment sharing for half; a product-development opt-out for a tenth). The run then mixes,
//! per 100 calls: `write_percent` consent writes (a grant, later revoked, so state stays
//! bounded) and Authorize calls — secondary use for research (pseudonymised), clinical viewing
//! across facilities, anonymised product development, and cohort statistics.
//!
//! Every answer must carry a decision and a receipt; every `verify_every`-th receipt is checked
//! offline: checkpoint signature with the log's verifier key, sizes, and the inclusion proof.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, bail};
use ledger::{
    checkpoint::SignedCheckpoint,
    hash::{Hash, LeafIndex, TreeSize},
    note::NoteVerifier,
    proof::InclusionProof,
};
use proto::pb::{
    self, AuthorizeRequest, Decision, GetCheckpointRequest, GrantConsentRequest, Principal,
    RecordOptOutRequest, RevokeConsentRequest, UpsertClinicianRequest, UpsertFacilityRequest,
    UpsertOrganizationRequest, access_service_client::AccessServiceClient,
    consent_service_client::ConsentServiceClient, directory_service_client::DirectoryServiceClient,
    transparency_service_client::TransparencyServiceClient,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

use super::{CallError, Workload};

/// Most patients set up.
pub const MAX_PATIENTS: u64 = 1_000_000;
/// Consent writes in flight during setup.
const SETUP_CONCURRENCY: usize = 64;

/// The university setup registers (the recipient of research consents).
pub const UNIVERSITY: &str = "load-university";
/// A hospital setup registers.
pub const HOSPITAL_A: &str = "load-hospital-a";
/// The other hospital setup registers (whose records the doctor views).
pub const HOSPITAL_B: &str = "load-hospital-b";
/// The doctor setup registers (of hospital A).
pub const DOCTOR: &str = "load-doctor-a";
/// The department records are asked of.
pub const DEPARTMENT: &str = "internal_medicine";

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct AuthorizeOptions {
    /// Platform bearer token.
    pub token: String,
    /// Patients to set up and spread calls over.
    pub patients: u64,
    /// Consent writes per 100 calls (0..=100).
    pub write_percent: u64,
    /// Verify every n-th receipt fully (0 = none).
    pub verify_every: u64,
    /// The log's verifier key (note `vkey`); fetched from `GetCheckpoint` when absent.
    pub vkey: Option<String>,
}

/// The workload, after setup.
pub struct AuthorizeWorkload {
    options: AuthorizeOptions,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    verifier: NoteVerifier,
    /// Consents granted during the run, to revoke later: (patient, consent id).
    granted: Mutex<Vec<(String, String)>>,
    /// Consent writes started, to alternate grants and revocations.
    writes: AtomicU64,
    receipts_verified: AtomicU64,
    receipts_invalid: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// The clients of one caller.
pub struct Clients {
    access: AccessServiceClient<Channel>,
    consent: ConsentServiceClient<Channel>,
}

impl AuthorizeWorkload {
    /// Registers the directory and consents on `channel`, and gets the verifier key.
    ///
    /// # Errors
    ///
    /// When an option is out of range or a setup call fails.
    pub async fn setup(channel: Channel, options: AuthorizeOptions) -> anyhow::Result<Self> {
        if options.patients == 0 || options.patients > MAX_PATIENTS {
            bail!("--patients must be between 1 and {MAX_PATIENTS}");
        }
        if options.write_percent > 100 {
            bail!("--write-percent must be at most 100");
        }
        let authorization: MetadataValue<_> = format!("Bearer {}", options.token)
            .parse()
            .context("while reading --token")?;
        let vkey = match &options.vkey {
            Some(vkey) => vkey.clone(),
            None => {
                TransparencyServiceClient::new(channel.clone())
                    .get_checkpoint(GetCheckpointRequest::default())
                    .await
                    .context("while fetching the verifier key")?
                    .into_inner()
                    .verifier_key
            }
        };
        let verifier = NoteVerifier::from_vkey(vkey.trim())
            .with_context(|| format!("while parsing verifier key `{vkey}`"))?;
        let workload = Self {
            options,
            authorization,
            verifier,
            granted: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
            receipts_verified: AtomicU64::new(0),
            receipts_invalid: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        };
        workload.setup_directory(&channel).await?;
        workload.setup_consents(&channel).await?;
        Ok(workload)
    }

    async fn setup_directory(&self, channel: &Channel) -> anyhow::Result<()> {
        let mut directory = DirectoryServiceClient::new(channel.clone());
        for (id, name, class) in [
            (UNIVERSITY, "Load Test University", "university"),
            (HOSPITAL_A, "Load Test Hospital A", "hospital"),
            (HOSPITAL_B, "Load Test Hospital B", "hospital"),
        ] {
            directory
                .upsert_organization(self.request(UpsertOrganizationRequest {
                    request_id: String::new(),
                    id: id.into(),
                    name: name.into(),
                    recipient_class: class.into(),
                }))
                .await
                .with_context(|| format!("while registering organisation `{id}`"))?;
        }
        for id in [HOSPITAL_A, HOSPITAL_B] {
            directory
                .upsert_facility(self.request(UpsertFacilityRequest {
                    request_id: String::new(),
                    id: id.into(),
                    name: id.into(),
                    group: String::new(),
                    excluded_departments: vec!["psychiatry".into()],
                    excluded_patients: Vec::new(),
                    recipient_class: String::new(),
                }))
                .await
                .with_context(|| format!("while registering facility `{id}`"))?;
        }
        directory
            .upsert_clinician(self.request(UpsertClinicianRequest {
                request_id: String::new(),
                id: DOCTOR.into(),
                facility: HOSPITAL_A.into(),
                department: DEPARTMENT.into(),
                role: "doctor".into(),
            }))
            .await
            .context("while registering the clinician")?;
        Ok(())
    }

    async fn setup_consents(&self, channel: &Channel) -> anyhow::Result<()> {
        let consent = ConsentServiceClient::new(channel.clone());
        let mut patients = 0..self.options.patients;
        loop {
            let mut batch = tokio::task::JoinSet::new();
            for i in patients.by_ref().take(SETUP_CONCURRENCY) {
                let mut client = consent.clone();
                let requests = self.setup_requests(i);
                batch.spawn(async move {
                    for request in requests {
                        match request {
                            SetupRequest::Grant(r) => client.grant_consent(r).await.map(drop)?,
                            SetupRequest::OptOut(r) => {
                                client.record_opt_out(r).await.map(drop)?;
                            }
                        }
                    }
                    Ok::<(), tonic::Status>(())
                });
            }
            if batch.is_empty() {
                return Ok(());
            }
            while let Some(result) = batch.join_next().await {
                result
                    .context("a setup task failed")?
                    .context("while granting setup consents")?;
            }
        }
    }

    /// Consents granted during the run and not yet revoked.
    pub fn outstanding_grants(&self) -> usize {
        self.granted.lock().map_or(0, |granted| granted.len())
    }

    fn setup_requests(&self, i: u64) -> Vec<SetupRequest> {
        let patient = patient_id(i);
        let mut out = Vec::new();
        if i % 4 != 3 {
            out.push(SetupRequest::Grant(
                self.request(research_consent(&patient)),
            ));
        }
        if i.is_multiple_of(2) {
            out.push(SetupRequest::Grant(self.request(GrantConsentRequest {
                request_id: String::new(),
                patient_id: patient.clone(),
                purposes: vec!["treatment".into()],
                data_categories: vec!["lab_result".into(), "medication".into()],
                recipients: Vec::new(),
                recipient_classes: vec!["hospital".into()],
                max_level: "IDENTIFIED".into(),
                valid_from: String::new(),
                valid_until: String::new(),
            })));
        }
        if i % 10 == 9 {
            out.push(SetupRequest::OptOut(self.request(RecordOptOutRequest {
                request_id: String::new(),
                patient_id: patient,
                purposes: vec!["product_development".into()],
                replace: false,
            })));
        }
        out
    }

    /// `message` with the workload's bearer token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    async fn write(&self, clients: &mut Clients, n: u64) -> Result<(), CallError> {
        // Every other write revokes a consent granted earlier in the run, so the patients'
        // consent records stay the size setup made them. (Alternating on the call number `n`
        // instead left 3 grants against 2 revocations per 100 calls at 5% writes: records grew
        // all run long, and so did the cost of every decision.)
        let revoke = if self.writes.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
            self.granted
                .lock()
                .ok()
                .and_then(|mut granted| granted.pop())
        } else {
            None
        };
        let receipt = match revoke {
            Some((patient_id, consent_id)) => {
                clients
                    .consent
                    .revoke_consent(self.request(RevokeConsentRequest {
                        request_id: String::new(),
                        patient_id,
                        consent_id,
                    }))
                    .await
                    .map_err(|status| CallError::status(&status))?
                    .into_inner()
                    .receipt
            }
            None => {
                let patient = patient_id(spread(n, self.options.patients));
                let response = clients
                    .consent
                    .grant_consent(self.request(research_consent(&patient)))
                    .await
                    .map_err(|status| CallError::status(&status))?
                    .into_inner();
                if let Ok(mut granted) = self.granted.lock() {
                    granted.push((patient, response.consent_id));
                }
                response.receipt
            }
        };
        self.check_receipt(receipt.as_ref(), n)
    }

    /// The log's verifier.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    async fn authorize(&self, clients: &mut Clients, n: u64) -> Result<(), CallError> {
        let response = clients
            .access
            .authorize(self.request(authorize_request(n, self.options.patients)))
            .await
            .map_err(|status| CallError::status(&status))?
            .into_inner();
        match response.decision() {
            Decision::Allow => self.allowed.fetch_add(1, Ordering::Relaxed),
            Decision::Deny => self.denied.fetch_add(1, Ordering::Relaxed),
            Decision::Unspecified => return Err(CallError::new("decision_unspecified")),
        };
        self.check_receipt(response.receipt.as_ref(), n)
    }

    /// Every receipt must be there; every `verify_every`-th is verified fully.
    fn check_receipt(&self, receipt: Option<&pb::Receipt>, n: u64) -> Result<(), CallError> {
        let receipt = receipt.ok_or_else(|| CallError::new("receipt_missing"))?;
        let every = self.options.verify_every;
        if every == 0 || !n.is_multiple_of(every) {
            return Ok(());
        }
        match verify_receipt(receipt, &self.verifier) {
            Ok(()) => {
                self.receipts_verified.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(kind) => {
                self.receipts_invalid.fetch_add(1, Ordering::Relaxed);
                Err(CallError::new(kind))
            }
        }
    }
}

impl Workload for AuthorizeWorkload {
    type Client = Clients;

    fn name(&self) -> &'static str {
        "authorize"
    }

    fn client(&self, channel: Channel) -> Self::Client {
        Clients {
            access: AccessServiceClient::new(channel.clone()),
            consent: ConsentServiceClient::new(channel),
        }
    }

    async fn call(&self, client: &mut Self::Client, n: u64) -> Result<(), CallError> {
        if n % 100 < self.options.write_percent {
            self.write(client, n).await
        } else {
            self.authorize(client, n).await
        }
    }

    fn checks(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            (
                "decisions_allow".to_owned(),
                self.allowed.load(Ordering::Relaxed),
            ),
            (
                "decisions_deny".to_owned(),
                self.denied.load(Ordering::Relaxed),
            ),
            (
                "receipts_verified".to_owned(),
                self.receipts_verified.load(Ordering::Relaxed),
            ),
            (
                "receipts_invalid".to_owned(),
                self.receipts_invalid.load(Ordering::Relaxed),
            ),
        ])
    }
}

/// Verifies a receipt offline: signed checkpoint, sizes, inclusion proof. The error names the
/// failed check.
///
/// # Errors
///
/// `receipt_checkpoint_invalid`, `receipt_size_mismatch`, `receipt_hash_invalid` or
/// `receipt_proof_invalid`.
pub fn verify_receipt(receipt: &pb::Receipt, verifier: &NoteVerifier) -> Result<(), &'static str> {
    let checkpoint = SignedCheckpoint::verify(&receipt.checkpoint, verifier)
        .map_err(|_| "receipt_checkpoint_invalid")?
        .into_checkpoint();
    if checkpoint.size != TreeSize(receipt.tree_size) || receipt.leaf_index >= receipt.tree_size {
        return Err("receipt_size_mismatch");
    }
    let leaf_hash = Hash::from_slice(&receipt.leaf_hash).map_err(|_| "receipt_hash_invalid")?;
    let path = receipt
        .inclusion_proof
        .iter()
        .map(|node| Hash::from_slice(node))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "receipt_proof_invalid")?;
    InclusionProof {
        leaf_index: LeafIndex(receipt.leaf_index),
        tree_size: TreeSize(receipt.tree_size),
        path,
    }
    .verify(&leaf_hash, &checkpoint.root)
    .map_err(|_| "receipt_proof_invalid")
}

enum SetupRequest {
    Grant(Request<GrantConsentRequest>),
    OptOut(Request<RecordOptOutRequest>),
}

/// The id setup gave patient `i`.
pub fn patient_id(i: u64) -> String {
    format!("load-patient-{i}")
}

/// Spreads call numbers over `0..patients` (multiplicative hashing, so neighbours differ).
pub fn spread(n: u64, patients: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % patients.max(1)
}

fn research_consent(patient: &str) -> GrantConsentRequest {
    GrantConsentRequest {
        request_id: String::new(),
        patient_id: patient.to_owned(),
        purposes: vec!["research".into()],
        data_categories: vec!["lab_result".into(), "medication".into()],
        recipients: vec![UNIVERSITY.into()],
        recipient_classes: Vec::new(),
        max_level: "PSEUDONYMIZED".into(),
        valid_from: String::new(),
        valid_until: String::new(),
    }
}

/// The Authorize request of call `n`: 60% research secondary use, 20% clinical viewing across
/// facilities, 15% anonymised product development, 5% cohort statistics.
fn authorize_request(n: u64, patients: u64) -> AuthorizeRequest {
    let patient = patient_id(spread(n, patients));
    let organization = |id: &str| Principal {
        r#type: "Organization".into(),
        id: id.into(),
    };
    match n % 20 {
        0..12 => AuthorizeRequest {
            principal: Some(organization(UNIVERSITY)),
            action: "secondary_use".into(),
            patient_id: patient,
            data_category: "lab_result".into(),
            source_facility: HOSPITAL_A.into(),
            source_department: DEPARTMENT.into(),
            purpose: "research".into(),
            level: "PSEUDONYMIZED".into(),
            cohort_size: 0,
        },
        12..16 => AuthorizeRequest {
            principal: Some(Principal {
                r#type: "Clinician".into(),
                id: DOCTOR.into(),
            }),
            action: "view_record".into(),
            patient_id: patient,
            data_category: "medication".into(),
            source_facility: HOSPITAL_B.into(),
            source_department: DEPARTMENT.into(),
            purpose: "treatment".into(),
            level: "IDENTIFIED".into(),
            cohort_size: 0,
        },
        16..19 => AuthorizeRequest {
            principal: Some(organization(UNIVERSITY)),
            action: "secondary_use".into(),
            patient_id: patient,
            data_category: "lab_result".into(),
            source_facility: HOSPITAL_A.into(),
            source_department: DEPARTMENT.into(),
            purpose: "product_development".into(),
            level: "ANONYMIZED".into(),
            cohort_size: 0,
        },
        _ => AuthorizeRequest {
            principal: Some(organization(UNIVERSITY)),
            action: "export_statistics".into(),
            patient_id: String::new(),
            data_category: "lab_result".into(),
            source_facility: HOSPITAL_A.into(),
            source_department: DEPARTMENT.into(),
            purpose: "public_health".into(),
            level: "STATISTICAL".into(),
            cohort_size: 50,
        },
    }
}

#[cfg(test)]
mod tests;

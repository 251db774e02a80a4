//! Applying an event to the state: [`apply`], the checks it runs ([`check`], [`check_grant`],
//! [`check_revoke`]), [`ApplyError`], and the writes of each kind of event.

use crate::decision::PolicySetHash;
use crate::domain::{
    ClinicianId, Consent, ConsentId, Deactivation, DomainError, Facility, FacilityGroup,
    FacilityId, GroupId, OrgId, Organization, SubjectId,
};
use crate::event::Event;
use crate::policy_set::{self, ValidationIssue};

use super::kv::{KvRead, KvWrite};
use super::layout::{
    CLINICIAN, CONSENT, DIRECTORY_LOG, FACILITY, FACILITY_PATIENTS, GROUP, GROUP_PATIENTS,
    LAYOUT_VERSION, META_DIRECTORY, META_LAST, META_LAYOUT, ORG, POLICY_ACTIVE, POLICY_ACTIVE_HASH,
    POLICY_PENDING, get_json, key, put_json,
};
use super::read::{
    StateError, active_policy_set_hash, clinician_record, consent_record, last_applied,
    organization, organization_record, pending_policy_sets,
};
use super::records::{
    ActivePolicySet, ClinicianRecord, ConsentRecord, OrganizationRecord, PendingPolicySet,
    StoredFacility, StoredGroup, sorted,
};
use super::subject::{
    SubjectState, append_subject_entry, consent_state, put_subject_state, subject_head,
};
use super::{facility_group_record, facility_record};

/// Most policy sets that may wait for approval at once (two-person rule).
pub const MAX_PENDING_POLICY_SETS: usize = 4;

/// Most unrevoked consents a patient may hold (consents that expired before a new grant are
/// dropped at that grant and do not count).
pub const MAX_CONSENTS_PER_SUBJECT: usize = 256;

/// Why an event cannot be applied (or, from [`check`], would not be).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Reading or writing the state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The event breaks a cap or shape rule.
    #[error("invalid event: {0}")]
    Invalid(#[from] DomainError),
    /// Events must be applied in increasing leaf-index order, each once.
    #[error("event at index {index} applied after index {last}")]
    OutOfOrder {
        /// The event's index.
        index: u64,
        /// The last applied index.
        last: u64,
    },
    /// The event names an organisation the directory does not hold.
    #[error("unknown organisation `{id}`")]
    UnknownOrganization {
        /// The organisation.
        id: OrgId,
    },
    /// The event names a facility the directory does not hold.
    #[error("unknown facility `{id}`")]
    UnknownFacility {
        /// The facility.
        id: FacilityId,
    },
    /// The event names a facility group the directory does not hold.
    #[error("unknown facility group `{id}`")]
    UnknownGroup {
        /// The group.
        id: GroupId,
    },
    /// The event names a clinician the directory does not hold.
    #[error("unknown clinician `{id}`")]
    UnknownClinician {
        /// The clinician.
        id: ClinicianId,
    },
    /// A deactivation names something already deactivated.
    #[error("{} is already deactivated (at entry {at})", describe(.target))]
    AlreadyDeactivated {
        /// What the event names.
        target: Deactivation,
        /// The leaf index of its deactivation.
        at: u64,
    },
    /// A grant reuses a consent id.
    #[error("consent `{id}` already exists")]
    DuplicateConsent {
        /// The consent.
        id: ConsentId,
    },
    /// A revocation names a consent that was never granted.
    #[error("unknown consent `{id}`")]
    UnknownConsent {
        /// The consent.
        id: ConsentId,
    },
    /// A revocation names a consent of another patient.
    #[error("consent `{id}` belongs to another patient")]
    ConsentOfOtherSubject {
        /// The consent.
        id: ConsentId,
    },
    /// A revocation names a consent that is already revoked.
    #[error("consent `{id}` is already revoked")]
    AlreadyRevoked {
        /// The consent.
        id: ConsentId,
    },
    /// An erasure's consequences are not the ones its entries imply: it names entries at or
    /// after itself, or the consents it drops or the state it leaves differ from what erasing
    /// those entries does to the patient's state.
    #[error("the erasure does not match the state: {0}")]
    ErasureMismatch(&'static str),
    /// A patient would hold more unrevoked consents than allowed.
    #[error("the patient already holds {max} consents")]
    TooManyConsents {
        /// The cap.
        max: usize,
    },
    /// An activation's hash is not the SHA-256 of its text, or the text is not canonical.
    #[error("policy set hash `{claimed}` does not match its canonical text (`{actual}`)")]
    PolicyHashMismatch {
        /// The hash in the event.
        claimed: PolicySetHash,
        /// The hash of the canonical text.
        actual: PolicySetHash,
    },
    /// An activation's policies do not validate against the schema.
    #[error("policy set is invalid: {}", first_issue(.issues))]
    InvalidPolicySet {
        /// What is wrong.
        issues: Vec<ValidationIssue>,
    },
    /// A proposal names the set already active.
    #[error("policy set `{hash}` is already the active one")]
    AlreadyActive {
        /// Its hash.
        hash: PolicySetHash,
    },
    /// A proposal names a set already waiting for approval.
    #[error("policy set `{hash}` is already waiting for approval")]
    AlreadyPending {
        /// Its hash.
        hash: PolicySetHash,
    },
    /// A proposal would make more sets wait for approval than allowed.
    #[error("{max} policy sets are already waiting for approval")]
    TooManyPending {
        /// [`MAX_PENDING_POLICY_SETS`].
        max: usize,
    },
    /// An approval names a set that is not waiting for approval (or its text differs).
    #[error("no policy set `{hash}` is waiting for approval")]
    NotPending {
        /// The hash the approval names.
        hash: PolicySetHash,
    },
    /// An approval names an analysis window whose start lies after its end, or that reaches
    /// past the approval itself.
    #[error("an approval's analysis covers entries {from}..{to}, not all logged before it")]
    BadAnalysisWindow {
        /// First leaf index of the window.
        from: u64,
        /// End of the window (exclusive).
        to: u64,
    },
    /// A decision was logged before any policy set was activated.
    #[error("decision logged with no active policy set")]
    NoActivePolicySet,
    /// A decision names a policy set other than the active one.
    #[error("decision names policy set `{logged}` but `{active}` is active")]
    PolicySetMismatch {
        /// The hash in the event.
        logged: PolicySetHash,
        /// The active hash.
        active: PolicySetHash,
    },
    /// A decision's `subject_prev` is not the subject's last entry.
    #[error("decision names previous subject entry {logged:?} but the last one is {actual:?}")]
    SubjectChainMismatch {
        /// The index in the event.
        logged: Option<u64>,
        /// The subject's last entry.
        actual: Option<u64>,
    },
}

/// `clinician `dr-x``, `facility `f``, `organisation `o``: what a deactivation names, for messages.
pub fn describe(target: &Deactivation) -> String {
    match target {
        Deactivation::Clinician(id) => format!("clinician `{id}`"),
        Deactivation::Facility(id) => format!("facility `{id}`"),
        Deactivation::Organization(id) => format!("organisation `{id}`"),
    }
}

/// Stores the pending policy sets (none: the key is removed).
fn put_pending(kv: &mut impl KvWrite, pending: &[PendingPolicySet]) -> Result<(), StateError> {
    if pending.is_empty() {
        kv.delete(POLICY_PENDING)?;
        Ok(())
    } else {
        put_json(kv, POLICY_PENDING, &pending)
    }
}

/// An activation's or proposal's text is canonical, hashes to `hash` and validates.
fn check_policy_text(policies: &str, hash: PolicySetHash) -> Result<(), ApplyError> {
    let canonical = policy_set::canonicalize(policies);
    let actual = policy_set::hash_text(&canonical);
    if canonical != policies || actual != hash {
        return Err(ApplyError::PolicyHashMismatch {
            claimed: hash,
            actual,
        });
    }
    policy_set::validate(policies).map_err(|issues| ApplyError::InvalidPolicySet { issues })
}

fn first_issue(issues: &[ValidationIssue]) -> String {
    issues
        .first()
        .map_or_else(|| "no details".to_owned(), ToString::to_string)
}

/// Applies the event at leaf `index` to the state.
///
/// # Errors
///
/// [`ApplyError`] when the event breaks a rule of [`check`] (nothing is written then) or the store
/// fails (the caller's transaction must then be dropped).
pub fn apply(kv: &mut impl KvWrite, event: &Event, index: u64) -> Result<(), ApplyError> {
    check(&*kv, event, index)?;
    write(kv, event, index)
}

/// Applies erasure `event` at leaf `index` as logged, checking only that it leaves the patient
/// no wider a consent state than the state shows: no consent the state does not hold, no
/// opt-out or exclusion fewer. This is how a replay takes an erasure it cannot check fully (the
/// bodies it erased are gone, so the replayed state may lack what they did); the server checks
/// every erasure with [`check`].
///
/// # Errors
///
/// [`ApplyError::ErasureMismatch`] when the erasure widens the state or is not an erasure; as
/// [`apply`] otherwise.
pub fn adopt_erasure(kv: &mut impl KvWrite, event: &Event, index: u64) -> Result<(), ApplyError> {
    let Event::EraseEntries {
        subject,
        state_after,
        ..
    } = event
    else {
        return Err(ApplyError::ErasureMismatch("the event is not an erasure"));
    };
    let known = consent_state(&*kv, subject)?;
    let narrower = state_after
        .consents
        .iter()
        .all(|c| known.consents.contains(c))
        // A consent the replay knows was granted where the replay saw it.
        && state_after
            .consent_indices
            .iter()
            .all(|(id, at)| known.consent_indices.get(id).is_none_or(|k| k == at))
        // An opt-out the replay knows stays, in force since then or earlier (an erased
        // opt-out may have started it sooner), never later: a later start would let consents
        // granted in between override it.
        && known.opt_outs.iter().all(|p| {
            state_after.opt_outs.contains(p)
                && match (known.opt_out_indices.get(p), state_after.opt_out_indices.get(p)) {
                    (Some(k), Some(after)) => after <= k,
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        })
        && known
            .excluded_by_facilities
            .iter()
            .all(|f| state_after.excluded_by_facilities.contains(f))
        && known
            .excluded_by_groups
            .iter()
            .all(|g| state_after.excluded_by_groups.contains(g));
    if !narrower {
        return Err(ApplyError::ErasureMismatch(
            "it leaves the patient a consent the log does not show, or drops an opt-out or \
             exclusion",
        ));
    }
    event.check()?;
    if let Some(last) = last_applied(&*kv)?
        && index <= last
    {
        return Err(ApplyError::OutOfOrder { index, last });
    }
    write(kv, event, index)
}

/// Writes what `event` at leaf `index` changes, once it has been checked.
fn write(kv: &mut impl KvWrite, event: &Event, index: u64) -> Result<(), ApplyError> {
    match event {
        Event::UpsertOrganization(org) => put_json(kv, &key(ORG, org.id.as_str()), org)?,
        Event::UpsertFacility(facility) => {
            apply_facility(kv, facility)?;
            // A facility is an organisation with the same id, when the event says under which
            // class (events logged before that register none).
            if let Some(organization) = facility_organization(facility) {
                put_json(kv, &key(ORG, facility.id.as_str()), &organization)?;
            }
        }
        Event::UpsertFacilityGroup(group) => apply_group(kv, group)?,
        Event::UpsertClinician(clinician) => {
            put_json(kv, &key(CLINICIAN, clinician.id.as_str()), clinician)?;
        }
        Event::Deactivate { target } => apply_deactivation(kv, target, index)?,
        Event::SetEmergency { facility, active } => {
            let k = key(FACILITY, facility.as_str());
            let mut stored: StoredFacility =
                get_json(&*kv, &k, "facility")?.ok_or_else(|| ApplyError::UnknownFacility {
                    id: facility.clone(),
                })?;
            stored.emergency_active = *active;
            put_json(kv, &k, &stored)?;
        }
        Event::GrantConsent(consent) => {
            let mut state = consent_state(&*kv, &consent.subject)?;
            state
                .consents
                .retain(|c| c.valid_until.is_none_or(|until| until > consent.granted_at));
            state.consents.push(consent.clone());
            state.consent_indices.insert(consent.id.clone(), index);
            state.prune_indices();
            put_subject_state(kv, &consent.subject, &state)?;
            let record = ConsentRecord {
                subject: consent.subject.clone(),
                granted: index,
                revoked: None,
            };
            put_json(kv, &key(CONSENT, consent.id.as_str()), &record)?;
        }
        Event::RevokeConsent {
            subject,
            consent_id,
            ..
        } => {
            let k = key(CONSENT, consent_id.as_str());
            if let Some(mut record) = get_json::<ConsentRecord>(&*kv, &k, "consent")? {
                record.revoked = Some(index);
                put_json(kv, &k, &record)?;
            }
            let mut state = consent_state(&*kv, subject)?;
            state.consents.retain(|c| &c.id != consent_id);
            state.prune_indices();
            put_subject_state(kv, subject, &state)?;
        }
        Event::EraseEntries {
            subject,
            dropped_consents,
            state_after,
            ..
        } => {
            for id in dropped_consents {
                let k = key(CONSENT, id.as_str());
                if let Some(mut record) = get_json::<ConsentRecord>(&*kv, &k, "consent")?
                    && record.revoked.is_none()
                {
                    // Ended by the erasure: the id cannot be revoked again, nor granted anew.
                    record.revoked = Some(index);
                    put_json(kv, &k, &record)?;
                }
            }
            put_subject_state(kv, subject, state_after)?;
        }
        Event::RecordOptOut { subject, purposes } => {
            let mut state = consent_state(&*kv, subject)?;
            let mut purposes = purposes.clone();
            purposes.sort_unstable();
            purposes.dedup();
            // A purpose that stays opted out keeps the index it was recorded at (or none, for
            // one stored before indices were kept); a newly opted-out purpose gets this one.
            let earlier = std::mem::take(&mut state.opt_out_indices);
            for purpose in &purposes {
                if state.opt_outs.contains(purpose) {
                    if let Some(at) = earlier.get(purpose) {
                        state.opt_out_indices.insert(*purpose, *at);
                    }
                } else {
                    state.opt_out_indices.insert(*purpose, index);
                }
            }
            state.opt_outs = purposes;
            put_subject_state(kv, subject, &state)?;
        }
        Event::ActivatePolicySet { policies, hash }
        | Event::ApprovePolicySet { policies, hash, .. } => {
            let active = ActivePolicySet {
                hash: *hash,
                policies: policies.clone(),
                index,
            };
            put_json(kv, POLICY_ACTIVE, &active)?;
            // The hash alone, under its own key: every decision reads it, and the whole set is
            // tens of kilobytes.
            kv.put(POLICY_ACTIVE_HASH, &hash.0)
                .map_err(StateError::from)?;
            // A set that becomes active, approved or not, no longer waits.
            let mut pending = pending_policy_sets(&*kv)?;
            let before = pending.len();
            pending.retain(|p| p.hash != *hash);
            if pending.len() != before {
                put_pending(kv, &pending)?;
            }
        }
        Event::RejectPolicySet { hash } => {
            let mut pending = pending_policy_sets(&*kv)?;
            pending.retain(|p| p.hash != *hash);
            put_pending(kv, &pending)?;
        }
        Event::ProposePolicySet { policies, hash } => {
            let mut pending = pending_policy_sets(&*kv)?;
            pending.push(PendingPolicySet {
                hash: *hash,
                policies: policies.clone(),
                index,
            });
            put_pending(kv, &pending)?;
        }
        Event::Decision { .. } => {}
    }
    if let Some(subject) = event.subject() {
        append_subject_entry(kv, subject, index)?;
    }
    let changed = directory_keys(&*kv, event)?;
    if !changed.is_empty() {
        kv.put(META_DIRECTORY, &index.to_be_bytes())
            .map_err(StateError::from)?;
        for (n, changed) in changed.iter().enumerate() {
            let mut log_key = DIRECTORY_LOG.to_vec();
            log_key.extend_from_slice(&index.to_be_bytes());
            // The first record keeps the key events have always used; further ones (a
            // facility's organisation) sort right after it.
            if let Some(n) = n.checked_sub(1) {
                log_key.push(u8::try_from(n).unwrap_or(u8::MAX));
            }
            kv.put(&log_key, changed).map_err(StateError::from)?;
        }
    }
    if last_applied(&*kv)?.is_none() {
        kv.put(META_LAYOUT, &LAYOUT_VERSION.to_be_bytes())
            .map_err(StateError::from)?;
    }
    kv.put(META_LAST, &index.to_be_bytes())
        .map_err(StateError::from)?;
    Ok(())
}

/// The storage keys of the directory records a directory event changed (none for other
/// events), read after the event was applied.
fn directory_keys(kv: &impl KvRead, event: &Event) -> Result<Vec<Vec<u8>>, StateError> {
    Ok(match event {
        Event::UpsertOrganization(org) => vec![key(ORG, org.id.as_str())],
        Event::UpsertFacility(facility) if facility.recipient_class.is_some() => vec![
            key(FACILITY, facility.id.as_str()),
            key(ORG, facility.id.as_str()),
        ],
        Event::UpsertFacility(facility) => vec![key(FACILITY, facility.id.as_str())],
        Event::SetEmergency { facility, .. } => vec![key(FACILITY, facility.as_str())],
        Event::UpsertFacilityGroup(group) => vec![key(GROUP, group.id.as_str())],
        Event::UpsertClinician(clinician) => vec![key(CLINICIAN, clinician.id.as_str())],
        Event::Deactivate {
            target: Deactivation::Clinician(id),
        } => vec![key(CLINICIAN, id.as_str())],
        Event::Deactivate {
            target: Deactivation::Organization(id),
        } => vec![key(ORG, id.as_str())],
        Event::Deactivate {
            target: Deactivation::Facility(id),
        } => {
            let org = key(ORG, id.as_str());
            let mut keys = vec![key(FACILITY, id.as_str())];
            if kv.get(&org)?.is_some() {
                keys.push(org);
            }
            keys
        }
        _ => Vec::new(),
    })
}

/// The organisation a facility event registers, if it names a recipient class.
fn facility_organization(facility: &Facility) -> Option<Organization> {
    Some(Organization {
        id: OrgId::of_facility(&facility.id),
        name: facility.name.clone(),
        recipient_class: facility.recipient_class?,
    })
}

/// Marks what `target` names deactivated at `index` (a facility's organisation too).
fn apply_deactivation(
    kv: &mut impl KvWrite,
    target: &Deactivation,
    index: u64,
) -> Result<(), ApplyError> {
    match target {
        Deactivation::Clinician(id) => {
            let k = key(CLINICIAN, id.as_str());
            let mut record: ClinicianRecord = get_json(&*kv, &k, "clinician")?
                .ok_or_else(|| ApplyError::UnknownClinician { id: id.clone() })?;
            record.deactivated = Some(index);
            put_json(kv, &k, &record)?;
        }
        Deactivation::Organization(id) => deactivate_organization(kv, id, index)?,
        Deactivation::Facility(id) => {
            let k = key(FACILITY, id.as_str());
            let mut stored: StoredFacility = get_json(&*kv, &k, "facility")?
                .ok_or_else(|| ApplyError::UnknownFacility { id: id.clone() })?;
            stored.deactivated = Some(index);
            put_json(kv, &k, &stored)?;
            let org = OrgId::of_facility(id);
            if organization_record(&*kv, &org)?.is_some() {
                deactivate_organization(kv, &org, index)?;
            }
        }
    }
    Ok(())
}

fn deactivate_organization(
    kv: &mut impl KvWrite,
    id: &OrgId,
    index: u64,
) -> Result<(), ApplyError> {
    let k = key(ORG, id.as_str());
    let mut record: OrganizationRecord = get_json(&*kv, &k, "organisation")?
        .ok_or_else(|| ApplyError::UnknownOrganization { id: id.clone() })?;
    record.deactivated = Some(index);
    put_json(kv, &k, &record)?;
    Ok(())
}

/// When what `target` names was deactivated: `Ok(None)` when it is registered and active.
fn deactivated_at(kv: &impl KvRead, target: &Deactivation) -> Result<Option<u64>, ApplyError> {
    Ok(match target {
        Deactivation::Clinician(id) => {
            clinician_record(kv, id)?
                .ok_or_else(|| ApplyError::UnknownClinician { id: id.clone() })?
                .deactivated
        }
        Deactivation::Organization(id) => {
            organization_record(kv, id)?
                .ok_or_else(|| ApplyError::UnknownOrganization { id: id.clone() })?
                .deactivated
        }
        Deactivation::Facility(id) => {
            facility_record(kv, id)?
                .ok_or_else(|| ApplyError::UnknownFacility { id: id.clone() })?
                .deactivated
        }
    })
}

/// Checks, without writing, that the event at leaf `index` can be applied: the same checks as
/// [`apply`]. The server calls it before sequencing an event it built (a revocation of an unknown
/// consent or of another patient's consent, an emergency for an unknown facility, an invalid
/// policy set, ...).
///
/// Within one batch, later events must be checked against the state after the earlier ones:
/// [`apply`] them in order and drop the ones that fail.
///
/// # Errors
///
/// The first [`ApplyError`] found.
pub fn check(kv: &impl KvRead, event: &Event, index: u64) -> Result<(), ApplyError> {
    event.check()?;
    if let Some(last) = last_applied(kv)?
        && index <= last
    {
        return Err(ApplyError::OutOfOrder { index, last });
    }
    match event {
        Event::UpsertOrganization(_) => {}
        Event::UpsertFacility(facility) => {
            if let Some(group) = &facility.group
                && facility_group_record(kv, group)?.is_none()
            {
                return Err(ApplyError::UnknownGroup { id: group.clone() });
            }
        }
        Event::UpsertFacilityGroup(_) => {}
        Event::UpsertClinician(clinician) => require_facility(kv, &clinician.facility)?,
        Event::SetEmergency { facility, .. } => require_facility(kv, facility)?,
        Event::Deactivate { target } => {
            if let Some(at) = deactivated_at(kv, target)? {
                return Err(ApplyError::AlreadyDeactivated {
                    target: target.clone(),
                    at,
                });
            }
        }
        Event::GrantConsent(consent) => check_grant(kv, consent)?,
        Event::RevokeConsent {
            subject,
            consent_id,
            ..
        } => check_revoke(kv, subject, consent_id)?,
        Event::RecordOptOut { .. } => {}
        Event::EraseEntries {
            subject,
            through,
            indices,
            dropped_consents,
            state_after,
            ..
        } => check_erasure(
            kv,
            subject,
            (*through, indices),
            dropped_consents,
            state_after,
            index,
        )?,
        Event::ActivatePolicySet { policies, hash } => check_policy_text(policies, *hash)?,
        Event::ProposePolicySet { policies, hash } => {
            check_policy_text(policies, *hash)?;
            if active_policy_set_hash(kv)? == Some(*hash) {
                return Err(ApplyError::AlreadyActive { hash: *hash });
            }
            let pending = pending_policy_sets(kv)?;
            if pending.iter().any(|p| p.hash == *hash) {
                return Err(ApplyError::AlreadyPending { hash: *hash });
            }
            if pending.len() >= MAX_PENDING_POLICY_SETS {
                return Err(ApplyError::TooManyPending {
                    max: MAX_PENDING_POLICY_SETS,
                });
            }
        }
        Event::RejectPolicySet { hash } => {
            if !pending_policy_sets(kv)?.iter().any(|p| p.hash == *hash) {
                return Err(ApplyError::NotPending { hash: *hash });
            }
        }
        Event::ApprovePolicySet {
            policies,
            hash,
            analysis_from,
            analysis_to,
            ..
        } => {
            // The proposal's text was checked when it was proposed; the approval must carry
            // the very same text.
            if !pending_policy_sets(kv)?
                .iter()
                .any(|p| p.hash == *hash && p.policies == *policies)
            {
                return Err(ApplyError::NotPending { hash: *hash });
            }
            if analysis_from > analysis_to || *analysis_to > index {
                return Err(ApplyError::BadAnalysisWindow {
                    from: *analysis_from,
                    to: *analysis_to,
                });
            }
        }
        Event::Decision {
            request,
            policy_set_hash,
            subject_prev,
            ..
        } => {
            let active = active_policy_set_hash(kv)?.ok_or(ApplyError::NoActivePolicySet)?;
            if active != *policy_set_hash {
                return Err(ApplyError::PolicySetMismatch {
                    logged: *policy_set_hash,
                    active,
                });
            }
            let actual = match &request.subject {
                Some(subject) => subject_head(kv, subject)?.map(|h| h.last_index),
                None => None,
            };
            if actual != *subject_prev {
                return Err(ApplyError::SubjectChainMismatch {
                    logged: *subject_prev,
                    actual,
                });
            }
        }
    }
    Ok(())
}

/// Checks that `consent` can be granted: valid shape, a new id, named recipients registered, and
/// room for one more consent.
///
/// # Errors
///
/// [`ApplyError::Invalid`], [`ApplyError::DuplicateConsent`],
/// [`ApplyError::UnknownOrganization`] or [`ApplyError::TooManyConsents`].
pub fn check_grant(kv: &impl KvRead, consent: &Consent) -> Result<(), ApplyError> {
    consent.check()?;
    if consent_record(kv, &consent.id)?.is_some() {
        return Err(ApplyError::DuplicateConsent {
            id: consent.id.clone(),
        });
    }
    for recipient in &consent.recipients {
        if organization(kv, recipient)?.is_none() {
            return Err(ApplyError::UnknownOrganization {
                id: recipient.clone(),
            });
        }
    }
    let state = consent_state(kv, &consent.subject)?;
    let kept = state
        .consents
        .iter()
        .filter(|c| c.valid_until.is_none_or(|until| until > consent.granted_at))
        .count();
    if kept >= MAX_CONSENTS_PER_SUBJECT {
        return Err(ApplyError::TooManyConsents {
            max: MAX_CONSENTS_PER_SUBJECT,
        });
    }
    Ok(())
}

/// What erasing the entries `erased` says of (`through`: every entry up to it; `indices`: those
/// named) does to `subject`'s consent state: the consents whose grants were erased (they stop
/// counting), and the state that is left. Opt-outs, exclusions and revocations keep their
/// effect, so that an erasure never widens what may be done with the patient's data. A consent
/// stored before grant indices were kept counts as erased only by an erasure of everything.
///
/// # Errors
///
/// A [`StateError`] when the state cannot be read.
pub fn erasure_effect(
    kv: &impl KvRead,
    subject: &SubjectId,
    (through, indices): (Option<u64>, &[u64]),
) -> Result<(Vec<ConsentId>, SubjectState), StateError> {
    let mut state = consent_state(kv, subject)?;
    let erased = |consent: &ConsentId| match state.consent_indices.get(consent) {
        Some(at) => through.is_some_and(|t| *at <= t) || indices.binary_search(at).is_ok(),
        None => through.is_some(),
    };
    let dropped: Vec<ConsentId> = state
        .consents
        .iter()
        .map(|c| c.id.clone())
        .filter(|id| erased(id))
        .collect();
    state.consents.retain(|c| !dropped.contains(&c.id));
    state.prune_indices();
    Ok((dropped, state))
}

fn check_erasure(
    kv: &impl KvRead,
    subject: &SubjectId,
    (through, indices): (Option<u64>, &[u64]),
    dropped: &[ConsentId],
    state_after: &SubjectState,
    index: u64,
) -> Result<(), ApplyError> {
    if through.is_some_and(|t| t >= index) || indices.last().is_some_and(|last| *last >= index) {
        return Err(ApplyError::ErasureMismatch(
            "it names an entry at or after itself",
        ));
    }
    if !indices.is_sorted_by(|a, b| a < b) {
        return Err(ApplyError::ErasureMismatch(
            "its indices are not strictly ascending",
        ));
    }
    let (expected_dropped, expected_state) = erasure_effect(kv, subject, (through, indices))?;
    if expected_dropped != dropped {
        return Err(ApplyError::ErasureMismatch("the consents it drops"));
    }
    if &expected_state != state_after {
        return Err(ApplyError::ErasureMismatch("the state it leaves"));
    }
    Ok(())
}

/// Checks that `subject` can revoke `consent_id`: it exists, is theirs, and is not revoked yet.
///
/// # Errors
///
/// [`ApplyError::UnknownConsent`], [`ApplyError::ConsentOfOtherSubject`] or
/// [`ApplyError::AlreadyRevoked`].
pub fn check_revoke(
    kv: &impl KvRead,
    subject: &SubjectId,
    consent_id: &ConsentId,
) -> Result<(), ApplyError> {
    let record = consent_record(kv, consent_id)?.ok_or_else(|| ApplyError::UnknownConsent {
        id: consent_id.clone(),
    })?;
    if &record.subject != subject {
        return Err(ApplyError::ConsentOfOtherSubject {
            id: consent_id.clone(),
        });
    }
    if record.revoked.is_some() {
        return Err(ApplyError::AlreadyRevoked {
            id: consent_id.clone(),
        });
    }
    Ok(())
}

fn require_facility(kv: &impl KvRead, id: &FacilityId) -> Result<(), ApplyError> {
    if facility_record(kv, id)?.is_none() {
        return Err(ApplyError::UnknownFacility { id: id.clone() });
    }
    Ok(())
}

fn apply_facility(kv: &mut impl KvWrite, facility: &Facility) -> Result<(), StateError> {
    let k = key(FACILITY, facility.id.as_str());
    let emergency_active = facility_record(&*kv, &facility.id)?.is_some_and(|f| f.emergency_active);
    put_json(kv, &k, &StoredFacility::new(facility, emergency_active))?;
    let patients_key = key(FACILITY_PATIENTS, facility.id.as_str());
    update_exclusions(
        kv,
        &patients_key,
        &facility.excluded_patients,
        |state| &mut state.excluded_by_facilities,
        &facility.id,
    )
}

fn apply_group(kv: &mut impl KvWrite, group: &FacilityGroup) -> Result<(), StateError> {
    put_json(kv, &key(GROUP, group.id.as_str()), &StoredGroup::new(group))?;
    let patients_key = key(GROUP_PATIENTS, group.id.as_str());
    update_exclusions(
        kv,
        &patients_key,
        &group.excluded_patients,
        |state| &mut state.excluded_by_groups,
        &group.id,
    )
}

/// Replaces the patient list under `list_key` with `new`, and updates the exclusion list (chosen
/// by `field`) of every patient added or removed.
fn update_exclusions<T: Clone + Ord>(
    kv: &mut impl KvWrite,
    list_key: &[u8],
    new: &[SubjectId],
    field: impl Fn(&mut SubjectState) -> &mut Vec<T>,
    id: &T,
) -> Result<(), StateError> {
    let old: Vec<SubjectId> = get_json(&*kv, list_key, "exclusion list")?.unwrap_or_default();
    let new = sorted(new);
    for subject in old.iter().filter(|s| new.binary_search(s).is_err()) {
        let mut state = consent_state(&*kv, subject)?;
        field(&mut state).retain(|x| x != id);
        put_subject_state(kv, subject, &state)?;
    }
    for subject in new.iter().filter(|s| old.binary_search(s).is_err()) {
        let mut state = consent_state(&*kv, subject)?;
        let list = field(&mut state);
        if let Err(at) = list.binary_search(id) {
            list.insert(at, id.clone());
        }
        put_subject_state(kv, subject, &state)?;
    }
    if new.is_empty() {
        kv.delete(list_key)?;
    } else {
        put_json(kv, list_key, &new)?;
    }
    Ok(())
}

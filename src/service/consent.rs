//! `ConsentService`: opt-in grants, revocations, opt-outs (each a log entry about the patient)
//! and reading a patient's consent state — by the platform on a patient's behalf, or by the
//! patient themself for their own patient id only (the consent capture of a PHR app).
//!
//! Requests are checked here against the server's clock and the vocabulary's meaning, before
//! anything is logged: a grant that has already ended (or whose period is empty) would be logged
//! and then never shown, and an opt-out of `treatment` (the patient's own care, not a secondary
//! use) has no meaning. These checks are the edge's, not `policy::state::check`'s, so entries
//! logged before them still replay.
//!
//! The consent history (`include_inactive`) is read from the log, the source of truth: the
//! patient's entries are walked a page at a time (their listing in the state, their leaves and,
//! for grants and revocations, their private bodies), so a read costs at most
//! [`MAX_CONSENT_WALK`] entries however long the patient's history is.

use ledger::{
    chunk::Record,
    entry::{Body, Leaf},
    hash::LeafIndex,
    log::ReadError,
};
use policy::{
    domain::{
        Consent, ConsentId, MAX_CATEGORIES, MAX_PURPOSES, MAX_RECIPIENT_CLASSES, MAX_RECIPIENTS,
        Purpose, SubjectId, Timestamp,
    },
    event::Event,
    state,
};
use proto::pb::{self, consent_service_server::ConsentService};
use rand::RngCore as _;
use tonic::{Request, Response, Status};

use super::{Core, budget, list, optional, parse, receipt, request_key, required};
use crate::state_machine::LogKv;
use crate::{
    auth::{Role, caller, require, require_subject},
    error::Error,
    error::FieldProblem,
    state_machine::{Command, Output},
};

/// Most of a patient's log entries one `GetConsentState` with `include_inactive` walks (page
/// with `after_index`).
pub const MAX_CONSENT_WALK: usize = 1000;

/// The consent service.
#[derive(Clone)]
pub struct Consents(pub Core);

/// Where a consent stands, as `Consent.status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsentStatus {
    /// Granted, neither revoked nor expired.
    Active,
    /// Its validity period ended.
    Expired,
    /// Revoked.
    Revoked,
}

impl ConsentStatus {
    /// The status at `now` of `consent`, revoked by entry `revoked` if any. A revocation counts
    /// before expiry: a consent revoked and since expired is shown as revoked.
    fn of(consent: &Consent, revoked: Option<u64>, now: Timestamp) -> Self {
        if revoked.is_some() {
            Self::Revoked
        } else if consent.valid_until.is_some_and(|until| until <= now) {
            Self::Expired
        } else {
            Self::Active
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// How a consent's record came about: its grant's entry and, if revoked, the revocation's.
#[derive(Debug, Clone, Copy, Default)]
struct Entries {
    granted: u64,
    revoked: Option<u64>,
    revoked_at: Option<Timestamp>,
}

#[tonic::async_trait]
impl ConsentService for Consents {
    type WatchConsentChangesStream = super::consent_changes::ChangeStream;

    async fn watch_consent_changes(
        &self,
        request: Request<pb::WatchConsentChangesRequest>,
    ) -> Result<Response<Self::WatchConsentChangesStream>, Status> {
        require(caller(&request)?, &[Role::Platform])?;
        Ok(Response::new(super::consent_changes::subscribe(
            &self.0,
            request.get_ref(),
        )?))
    }

    async fn grant_consent(
        &self,
        request: Request<pb::GrantConsentRequest>,
    ) -> Result<Response<pb::GrantConsentResponse>, Status> {
        let caller = caller(&request)?.clone();
        let idempotent = request_key(&request, &request.get_ref().request_id);
        let r = request.into_inner();
        // A patient grants for itself (the PHR app's consent capture); the platform for anyone.
        require_subject(&caller, &r.patient_id, &[Role::Platform])?;
        let idempotent = idempotent?;
        // A retry after the first grant went through: the first answer stands, even if its
        // `valid_until` has passed since.
        if let Some((r, Output::Granted(consent_id))) = self.0.answered(idempotent.as_ref()).await?
        {
            return Ok(Response::new(pb::GrantConsentResponse {
                consent_id: consent_id.to_string(),
                receipt: Some(receipt(&r)),
            }));
        }
        let now = Timestamp::now();
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let consent = Consent {
            id: ConsentId::from_random_bytes(id),
            subject: self.0.subject("patient_id", &r.patient_id)?,
            purposes: list("purposes", &r.purposes, MAX_PURPOSES, parse)?,
            data_categories: list("data_categories", &r.data_categories, MAX_CATEGORIES, parse)?,
            recipients: list("recipients", &r.recipients, MAX_RECIPIENTS, parse)?,
            recipient_classes: list(
                "recipient_classes",
                &r.recipient_classes,
                MAX_RECIPIENT_CLASSES,
                parse,
            )?,
            max_level: required("max_level", &r.max_level, parse)?,
            valid_from: optional("valid_from", &r.valid_from, |v| {
                Timestamp::parse("valid_from", v)
            })?,
            valid_until: optional("valid_until", &r.valid_until, |v| {
                Timestamp::parse("valid_until", v)
            })?,
            // Set to the sequencing time by the state machine.
            granted_at: Timestamp::now(),
            revoked_at: None,
        };
        check_validity(&consent, now)?;
        // Shape rules no single field breaks (no recipient at all).
        consent
            .check()
            .map_err(|e| Error::Rejected(e.to_string()))?;
        let subject = consent.subject.clone();
        let (r, output) = self
            .0
            .submit_request(
                Command::Grant(consent),
                Some((&subject, &r.patient_id)),
                idempotent,
            )
            .await?;
        let Output::Granted(consent_id) = output else {
            return Err(Error::Internal("grant answered with another output").into());
        };
        Ok(Response::new(pb::GrantConsentResponse {
            consent_id: consent_id.to_string(),
            receipt: Some(receipt(&r)),
        }))
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::RevokeConsentResponse>, Status> {
        let caller = caller(&request)?.clone();
        let idempotent = request_key(&request, &request.get_ref().request_id);
        let r = request.into_inner();
        // Another patient's consent id under one's own patient id is NOT_FOUND (state machine).
        require_subject(&caller, &r.patient_id, &[Role::Platform])?;
        let idempotent = idempotent?;
        let subject = self.0.subject("patient_id", &r.patient_id)?;
        let command = Command::Revoke {
            subject: subject.clone(),
            consent_id: required("consent_id", &r.consent_id, parse)?,
        };
        let (r, _) = self
            .0
            .submit_request(command, Some((&subject, &r.patient_id)), idempotent)
            .await?;
        Ok(Response::new(pb::RevokeConsentResponse {
            receipt: Some(receipt(&r)),
        }))
    }

    async fn record_opt_out(
        &self,
        request: Request<pb::RecordOptOutRequest>,
    ) -> Result<Response<pb::RecordOptOutResponse>, Status> {
        let caller = caller(&request)?.clone();
        let idempotent = request_key(&request, &request.get_ref().request_id);
        let r = request.into_inner();
        require_subject(&caller, &r.patient_id, &[Role::Platform])?;
        let idempotent = idempotent?;
        let purposes: Vec<Purpose> = list("purposes", &r.purposes, MAX_PURPOSES, parse)?;
        // Care of the patient, and the running of the facility that gives it, are not secondary
        // uses: there is nothing to opt out of, and such an opt-out would change no decision.
        // (The sub-purpose `emergency` is different: the patient refuses emergency access by
        // other facilities.)
        if let Some(&purpose) = purposes
            .iter()
            .find(|p| matches!(p, Purpose::Treatment | Purpose::FacilityOperations))
        {
            return Err(Error::invalid(
                "purposes",
                FieldProblem::NotAllowed {
                    value: purpose.as_str(),
                    reason: "the patient's own care and the facility's operations cannot be \
                             opted out of (revoke consents instead; an opt-out of `emergency` \
                             refuses emergency access by other facilities)",
                },
            )
            .into());
        }
        if purposes.is_empty() && !r.replace {
            // Nothing to add: a no-op would still be logged. Withdrawing every opt-out is an
            // explicit `replace` with no purposes.
            return Err(Error::invalid("purposes", FieldProblem::Missing).into());
        }
        let subject = self.0.subject("patient_id", &r.patient_id)?;
        let command = Command::OptOut {
            subject: subject.clone(),
            purposes,
            replace: r.replace,
        };
        let (r, _) = self
            .0
            .submit_request(command, Some((&subject, &r.patient_id)), idempotent)
            .await?;
        Ok(Response::new(pb::RecordOptOutResponse {
            receipt: Some(receipt(&r)),
        }))
    }

    async fn get_consent_state(
        &self,
        request: Request<pb::GetConsentStateRequest>,
    ) -> Result<Response<pb::GetConsentStateResponse>, Status> {
        let caller = caller(&request)?.clone();
        let mut reservation = budget::reserve(&request)?;
        let r = request.into_inner();
        // The role first: a caller who may not ask learns nothing, not even that the id is bad.
        require_subject(&caller, &r.patient_id, &[Role::Platform])?;
        let subject = self.0.subject("patient_id", &r.patient_id)?;
        let now = Timestamp::now();
        let kv = LogKv(self.0.log());
        let stored = state::consent_state(&kv, &subject).map_err(unavailable)?;
        let mut consents = Vec::new();
        // Expired consents are history, not state.
        for c in stored
            .consents
            .iter()
            .filter(|c| c.valid_until.is_none_or(|until| now < until))
        {
            let granted = state::consent_record(&kv, &c.id)
                .map_err(unavailable)?
                .map_or(0, |record| record.granted);
            let entries = Entries {
                granted,
                ..Entries::default()
            };
            consents.push(to_pb(c, ConsentStatus::Active, entries, now));
        }
        let opt_outs = stored
            .opt_outs
            .iter()
            .map(|p| pb::OptOut {
                purpose: p.to_string(),
            })
            .collect();
        let mut answer = pb::GetConsentStateResponse {
            consents,
            opt_outs,
            ..Default::default()
        };
        if r.include_inactive {
            self.walk_inactive(&subject, r.after_index, now, &mut answer, &mut reservation)?;
        }
        Ok(reservation.attach(Response::new(answer)))
    }
}

impl Consents {
    /// Walks up to [`MAX_CONSENT_WALK`] of the patient's entries after `after` (entries in the
    /// latest checkpoint only) and adds to `answer` the consents granted there that are no
    /// longer in force, with the cursor for the next page.
    fn walk_inactive(
        &self,
        subject: &SubjectId,
        after: Option<u64>,
        now: Timestamp,
        answer: &mut pb::GetConsentStateResponse,
        reservation: &mut budget::Reservation,
    ) -> Result<(), Error> {
        let log = self.0.log();
        let kv = LogKv(log);
        let size = log.checkpoint().checkpoint().size.get();
        let mut indices = state::subject_entries_after(&kv, subject, after, MAX_CONSENT_WALK + 1)
            .map_err(unavailable)?;
        // Entries sequenced after the checkpoint are left for the next call.
        indices.retain(|index| *index < size);
        answer.more = indices.len() > MAX_CONSENT_WALK;
        indices.truncate(MAX_CONSENT_WALK);
        answer.next_after_index = indices.last().copied();
        for index in indices {
            let leaf = log
                .leaves(LeafIndex(index), 1)
                .map_err(read_unavailable)?
                .into_iter()
                .next()
                .ok_or(Error::Internal("a listed entry has no leaf"))?;
            let leaf = Leaf::decode(&leaf).map_err(|_| Error::Internal("a stored leaf is bad"))?;
            if leaf.kind.as_str() != "consent.grant" {
                continue;
            }
            // A grant whose body was erased cannot be shown; the leaf alone names no consent.
            let Some(Event::GrantConsent(consent)) = self.event(index)? else {
                continue;
            };
            if &consent.subject != subject {
                return Err(Error::Internal("a patient's listing names another's grant"));
            }
            let record = state::consent_record(&kv, &consent.id).map_err(unavailable)?;
            let revoked = record.and_then(|r| r.revoked);
            let status = ConsentStatus::of(&consent, revoked, now);
            if status == ConsentStatus::Active {
                // In force or not yet: listed in `consents`.
                continue;
            }
            let revoked_at = match revoked {
                Some(at) if at < size => match self.event(at)? {
                    Some(Event::RevokeConsent { revoked_at, .. }) => revoked_at,
                    _ => None,
                },
                _ => None,
            };
            let entries = Entries {
                granted: index,
                revoked,
                revoked_at,
            };
            let item = to_pb(&consent, status, entries, now);
            reservation.grow(consent_size(&item) + budget::ITEM_OVERHEAD)?;
            answer.inactive.push(item);
        }
        Ok(())
    }

    /// The event in the private body of entry `index`, or none when the body was erased.
    fn event(&self, index: u64) -> Result<Option<Event>, Error> {
        let record = self
            .0
            .log()
            .body(LeafIndex(index))
            .map_err(read_unavailable)?;
        let Record::Present(bytes) = record else {
            return Ok(None);
        };
        let body = Body::decode(&bytes).map_err(|_| Error::Internal("a stored body is bad"))?;
        let event = Event::from_json(&body.payload)
            .map_err(|_| Error::Internal("a stored body holds no event"))?;
        Ok(Some(event))
    }
}

/// Refuses a validity period that is empty, or that ends at or before `now` (the server's clock
/// as the request arrives): such a consent would be logged and never be in force.
fn check_validity(consent: &Consent, now: Timestamp) -> Result<(), Error> {
    let Some(until) = consent.valid_until else {
        return Ok(());
    };
    if consent.valid_from.is_some_and(|from| until <= from) {
        return Err(Error::invalid(
            "valid_until",
            FieldProblem::NotAfter {
                other: "valid_from",
            },
        ));
    }
    if until <= now {
        return Err(Error::invalid(
            "valid_until",
            FieldProblem::NotInFuture { now },
        ));
    }
    Ok(())
}

fn to_pb(c: &Consent, status: ConsentStatus, entries: Entries, now: Timestamp) -> pb::Consent {
    pb::Consent {
        consent_id: c.id.to_string(),
        purposes: c.purposes.iter().map(ToString::to_string).collect(),
        data_categories: c.data_categories.iter().map(ToString::to_string).collect(),
        recipients: c.recipients.iter().map(ToString::to_string).collect(),
        recipient_classes: c
            .recipient_classes
            .iter()
            .map(ToString::to_string)
            .collect(),
        max_level: c.max_level.to_string(),
        valid_from: c.valid_from.map(|t| t.to_rfc3339()).unwrap_or_default(),
        valid_until: c.valid_until.map(|t| t.to_rfc3339()).unwrap_or_default(),
        granted_at: c.granted_at.to_rfc3339(),
        in_force: status == ConsentStatus::Active && c.in_force_at(now),
        status: status.as_str().to_owned(),
        granted_index: entries.granted,
        revoked_index: entries.revoked,
        revoked_at: entries
            .revoked_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    }
}

/// Roughly the bytes `consent` takes in an answer, for the answer budget.
fn consent_size(consent: &pb::Consent) -> usize {
    let lists = [
        &consent.purposes,
        &consent.data_categories,
        &consent.recipients,
        &consent.recipient_classes,
    ];
    lists
        .iter()
        .flat_map(|list| list.iter())
        .map(|item| item.len() + 2)
        .sum::<usize>()
        + consent.consent_id.len()
        + 4 * 32
}

fn unavailable(err: state::StateError) -> Error {
    Error::Unavailable(Box::new(err))
}

fn read_unavailable(err: ReadError) -> Error {
    Error::Unavailable(Box::new(err))
}

#[cfg(test)]
mod tests;

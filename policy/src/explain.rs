//! Why a request was denied by default, in words an auditor and a patient can read
//! (docs/design.md §5.1).
//!
//! When no `permit` matches, Cedar only says that nothing permitted the request. This module
//! names the condition that failed, from the same [`Request`] and [`Facts`] the decision was made
//! from: for the rules that rest on consent it finds the patient's consent nearest to covering the
//! request and names the first thing it lacks (purpose, data category, recipient, level, then
//! time); otherwise the condition of the rule the request came closest to (the cohort threshold,
//! the level of statistics, an opt-out, who may view what).
//!
//! A reason is advice for people, not part of the decision: a replay compares the effect, the
//! determining policies and the review flag only ([`Decision::same_outcome`]), so a better wording
//! never makes an old decision differ. It reads the default set's rules; it never replaces the
//! `@reason` of a policy that decided, and it names nothing when it cannot tell (the generic
//! reason stays). It names nothing the caller did not send beyond the patient's own consent
//! scope and opt-outs: no consent ids, no dates, no other patient. Reasons go into the decision's
//! private body and the answer, never into the public leaf.

use crate::decision::{Decision, Request};
use crate::domain::{
    Action, ClinicianRole, Consent, DataCategory, Effect, Level, Purpose, RecipientClass, Timestamp,
};
use crate::facts::{Facts, PrincipalFacts};

/// The cohort threshold k of the default set's `statistics.cohort-at-least-k` rule.
const COHORT_THRESHOLD: u64 = 10;

/// Puts the reason a deny by default was denied first among `decision.reasons`, when `decision`
/// is one (a deny with no determining policy and no evaluation error) and a reason can be named.
pub(crate) fn explain_default_deny(
    decision: &mut Decision,
    request: &Request,
    facts: &Facts,
    now: Timestamp,
) {
    let by_default = decision.effect == Effect::Deny
        && decision.determining_policies.is_empty()
        && decision.errors.is_empty();
    if !by_default {
        return;
    }
    if let Some(reason) = default_deny_reason(request, facts, now) {
        decision.reasons.insert(0, reason);
    }
}

/// The condition that kept every `permit` from matching `request`, when one can be named.
pub(crate) fn default_deny_reason(
    request: &Request,
    facts: &Facts,
    now: Timestamp,
) -> Option<String> {
    let principal = facts.principal.as_ref()?;
    match request.action {
        Action::SecondaryUse => secondary_use(request, facts, now),
        Action::ViewRecord => view_record(request, facts, principal, now),
        Action::ExportStatistics => statistics(request, facts),
        Action::EmergencyView => emergency_view(request, facts, principal),
    }
}

fn secondary_use(request: &Request, facts: &Facts, now: Timestamp) -> Option<String> {
    if let Some(reason) = opted_out(request, facts) {
        return Some(reason);
    }
    // A covering consent permits every level it allows, `STATISTICAL` included, unless a later
    // opt-out (named above) overrides it: what remains is a gap in the consents.
    consent_gap(request, facts, now)
}

fn emergency_view(request: &Request, facts: &Facts, principal: &PrincipalFacts) -> Option<String> {
    // Break-glass denies of the own facility, of a purpose other than `emergency` and of an
    // unnamed source come from forbids, which give their own reasons.
    let PrincipalFacts::Clinician { role, facility, .. } = principal else {
        return None;
    };
    let source = facts.source.as_ref()?;
    if request.purpose != Purpose::Emergency
        || source.id == facility.id
        || *role == ClinicianRole::Doctor
    {
        return None;
    }
    Some(format!(
        "emergency access to another facility's records is for doctors, and this clinician is an `{role}` of `{}`",
        facility.id
    ))
}

fn view_record(
    request: &Request,
    facts: &Facts,
    principal: &PrincipalFacts,
    now: Timestamp,
) -> Option<String> {
    let (role, own_facility) = match principal {
        PrincipalFacts::Patient { id } => {
            return (request.subject.as_ref() != Some(id))
                .then(|| "a patient may view only their own records".to_owned());
        }
        PrincipalFacts::Organization { .. } => return None,
        PrincipalFacts::Clinician { role, facility, .. } => (*role, &facility.id),
    };
    let Some(source) = &facts.source else {
        return Some(
            "the request names no source facility, which a clinician's view needs".to_owned(),
        );
    };
    match role {
        ClinicianRole::InformationManager if source.id != *own_facility => Some(format!(
            "an information manager may view only their own facility's records, and these are held by `{}`",
            source.id
        )),
        // An information manager's own facility: only the purpose can deny.
        ClinicianRole::InformationManager => (!request.purpose.is_a(Purpose::Treatment)
            && request.purpose != Purpose::FacilityOperations)
            .then(|| {
                format!(
                    "an information manager may view their own facility's records only for `{}` or `{}`, not for `{}`",
                    Purpose::Treatment,
                    Purpose::FacilityOperations,
                    request.purpose
                )
            }),
        ClinicianRole::Doctor if source.id == *own_facility => Some(
            "no rule decides a doctor's view of their own facility's records (the facility's own systems do)"
                .to_owned(),
        ),
        ClinicianRole::Doctor if !request.purpose.is_a(Purpose::Treatment) => Some(format!(
            "a doctor of another facility may view records only for `{}`, not for `{}`",
            Purpose::Treatment,
            request.purpose
        )),
        ClinicianRole::Doctor => consent_gap(request, facts, now),
    }
}

fn statistics(request: &Request, facts: &Facts) -> Option<String> {
    if request.level != Level::Statistical {
        return Some(format!(
            "statistics are released only at level `{}`, not `{}`",
            Level::Statistical,
            request.level
        ));
    }
    if request.subject.is_some()
        && let Some(reason) = opted_out(request, facts)
    {
        return Some(reason);
    }
    match request.cohort_size {
        Some(size) if size < COHORT_THRESHOLD => Some(format!(
            "the cohort has {size} people, fewer than the {COHORT_THRESHOLD} a statistical release needs"
        )),
        None if request.subject.is_none() => {
            Some("the request states no cohort size, which a statistical release needs".to_owned())
        }
        _ => None,
    }
}

/// "The patient opted out of …", when they opted out of the request's purpose or of a purpose it
/// is a kind of.
fn opted_out(request: &Request, facts: &Facts) -> Option<String> {
    let purpose = request.purpose;
    let opt_out = facts.subject.opt_outs.iter().find(|o| purpose.is_a(**o))?;
    Some(if *opt_out == purpose {
        format!("the patient opted out of `{purpose}`")
    } else {
        format!("the patient opted out of `{opt_out}`, which includes `{purpose}`")
    })
}

/// What one consent lacks to cover a request, in the order the reason names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    Purpose,
    Category,
    Recipient,
    Level(Level),
    NotYetInForce,
    Expired,
}

impl Gap {
    /// How near a consent with this gap comes to covering the request: the number of checks it
    /// passes before failing one.
    fn depth(self) -> u8 {
        match self {
            Self::Purpose => 0,
            Self::Category => 1,
            Self::Recipient => 2,
            Self::Level(_) => 3,
            Self::NotYetInForce | Self::Expired => 4,
        }
    }
}

/// Why no consent of the patient covers `request`: the first thing the nearest consent lacks.
/// None when the request has no recipient or known category (other reasons then apply), or when
/// some consent covers it.
///
/// Scope is checked before time, so that a consent for the right use that has expired is named
/// as expired, rather than a consent for another use that is in force.
fn consent_gap(request: &Request, facts: &Facts, now: Timestamp) -> Option<String> {
    let recipient = facts.recipient()?;
    let category = request.data_category.category()?;
    let consents = &facts.subject.consents;
    if consents.is_empty() {
        return Some("no consent of the patient covers this request: none is on record".to_owned());
    }
    let mut nearest: Option<Gap> = None;
    for consent in consents {
        // A consent that lacks nothing covers the request: then there is no gap to name.
        let gap = gap(
            consent,
            request,
            category,
            &recipient.id,
            recipient.class,
            now,
        )?;
        let nearer = match (nearest, gap) {
            (None, _) => true,
            // Of two consents that both fall short on level, name the more generous one.
            (Some(Gap::Level(best)), Gap::Level(this)) => {
                this.identifiability() > best.identifiability()
            }
            (Some(best), this) => this.depth() > best.depth(),
        };
        if nearer {
            nearest = Some(gap);
        }
    }
    let purpose = request.purpose;
    Some(match nearest? {
        Gap::Purpose => format!("no consent of the patient covers the purpose `{purpose}`"),
        Gap::Category => format!(
            "no consent of the patient for `{purpose}` covers the data category `{}`",
            request.data_category
        ),
        Gap::Recipient => {
            let class = recipient
                .class
                .map_or_else(String::new, |c| format!(" or its class `{c}`"));
            format!(
                "no consent of the patient for `{purpose}` covers the recipient `{}`{class}",
                recipient.id
            )
        }
        Gap::Level(max) => format!(
            "the patient's consent allows at most `{max}`, and `{}` was asked for",
            request.level
        ),
        Gap::NotYetInForce => {
            "the patient's consent that covers this request is not yet in force".to_owned()
        }
        Gap::Expired => "the patient's consent that covers this request has expired".to_owned(),
    })
}

/// What `consent` lacks to cover the request, or none when it covers it (mirrors
/// [`Consent::covers`], one condition at a time).
fn gap(
    consent: &Consent,
    request: &Request,
    category: DataCategory,
    recipient: &crate::domain::OrgId,
    class: Option<RecipientClass>,
    now: Timestamp,
) -> Option<Gap> {
    if !consent.purposes.iter().any(|p| request.purpose.is_a(*p)) {
        return Some(Gap::Purpose);
    }
    if !consent.data_categories.iter().any(|c| category.is_a(*c)) {
        return Some(Gap::Category);
    }
    let names_recipient = consent.recipients.contains(recipient)
        || class.is_some_and(|c| consent.recipient_classes.contains(&c));
    if !names_recipient {
        return Some(Gap::Recipient);
    }
    if !consent.max_level.allows(request.level) {
        return Some(Gap::Level(consent.max_level));
    }
    if consent.valid_from.is_some_and(|from| now < from) {
        return Some(Gap::NotYetInForce);
    }
    if consent.valid_until.is_some_and(|until| until <= now) {
        return Some(Gap::Expired);
    }
    None
}

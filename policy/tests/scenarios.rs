//! Scenario tests for the nine default rules of docs/design.md §5, through the crate's public API: a
//! directory and consents are applied as log events to a `BTreeMap` state, then each request is
//! decided by the default policy set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "test code"
)]

use std::collections::BTreeMap;

use policy::domain::{ClinicianId, ConsentId, GroupId, Name};
use policy::{
    Action, CategoryName, Clinician, ClinicianRole, Consent, DataCategory, Decision, Department,
    Effect, Event, Facility, FacilityGroup, FacilityId, Level, OrgId, Organization, PolicyEngine,
    Principal, Purpose, RecipientClass, Request, SubjectId, Timestamp, state,
};

type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse("test", s).unwrap()
}

fn ms(t: Timestamp, delta: i64) -> Timestamp {
    Timestamp::from_unix_millis(t.unix_millis() + delta).unwrap()
}

const NOW: &str = "2026-06-01T00:00:00Z";
const C1_FROM: &str = "2026-01-01T00:00:00Z";
const C1_UNTIL: &str = "2027-01-01T00:00:00Z";

/// Patients: 1 consents to research by univ-a and to treatment by hospitals; 2 to clinical
/// trials by pharma; 3 opted out of research; 4 consents to anonymised insurance use; 5 to
/// treatment by hosp-b only; 6 is excluded from sharing by hosp-a; 7 by the facility group; 9 has
/// nothing on record.
fn p(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

struct World {
    kv: Kv,
    directory: policy::DirectoryCache,
    engine: PolicyEngine,
    next: u64,
    log: Vec<(u64, Event)>,
}

impl World {
    fn new() -> Self {
        let engine = PolicyEngine::default_set().unwrap();
        let mut world = Self {
            kv: Kv::new(),
            directory: policy::DirectoryCache::new(policy::Directory::empty()),
            engine,
            next: 0,
            log: Vec::new(),
        };
        world.apply(Event::ActivatePolicySet {
            policies: world.engine.text().to_owned(),
            hash: world.engine.hash(),
        });
        for (id, class) in [
            ("insurer-a", RecipientClass::PrivateInsurer),
            ("univ-a", RecipientClass::University),
            ("univ-b", RecipientClass::University),
            ("ai-co", RecipientClass::AiVendor),
            ("pharma-x", RecipientClass::Pharma),
            ("adco", RecipientClass::DeviceMaker),
            ("gov", RecipientClass::PublicBody),
            ("hosp-a", RecipientClass::Hospital),
            ("hosp-b", RecipientClass::Hospital),
            ("hosp-c", RecipientClass::Hospital),
            ("chk-d", RecipientClass::CheckupCenter),
        ] {
            world.apply(Event::UpsertOrganization(Organization {
                id: OrgId::new(id).unwrap(),
                name: Name::new(format!("The {id}")).unwrap(),
                recipient_class: class,
            }));
        }
        world.apply(Event::UpsertFacilityGroup(FacilityGroup {
            id: GroupId::new("grp-north").unwrap(),
            excluded_departments: vec![Department::new("reproductive").unwrap()],
            excluded_patients: vec![p(7)],
        }));
        for (id, group, departments, patients) in [
            ("hosp-a", Some("grp-north"), vec!["psychiatry"], vec![p(6)]),
            ("hosp-b", None, vec![], vec![]),
            ("hosp-c", Some("grp-north"), vec![], vec![]),
            ("chk-d", None, vec![], vec![]),
        ] {
            world.apply(Event::UpsertFacility(Facility {
                id: FacilityId::new(id).unwrap(),
                name: Name::new(format!("Facility {id}")).unwrap(),
                group: group.map(|g| GroupId::new(g).unwrap()),
                excluded_departments: departments
                    .into_iter()
                    .map(|d| Department::new(d).unwrap())
                    .collect(),
                excluded_patients: patients,
            }));
        }
        for (id, facility, department, role) in [
            ("dr-a", "hosp-a", "internal", ClinicianRole::Doctor),
            (
                "im-a",
                "hosp-a",
                "records",
                ClinicianRole::InformationManager,
            ),
            ("dr-b", "hosp-b", "internal", ClinicianRole::Doctor),
            (
                "im-b",
                "hosp-b",
                "records",
                ClinicianRole::InformationManager,
            ),
            ("dr-c", "hosp-c", "internal", ClinicianRole::Doctor),
        ] {
            world.apply(Event::UpsertClinician(Clinician {
                id: ClinicianId::new(id).unwrap(),
                facility: FacilityId::new(facility).unwrap(),
                department: Department::new(department).unwrap(),
                role,
            }));
        }
        world.grant(consent(
            "c1",
            p(1),
            &[Purpose::Research],
            &[DataCategory::Clinical],
            &["univ-a"],
            &[],
            Level::Pseudonymized,
            Some(C1_FROM),
            Some(C1_UNTIL),
        ));
        world.grant(consent(
            "c2",
            p(1),
            &[Purpose::Treatment],
            &[DataCategory::General],
            &[],
            &[RecipientClass::Hospital],
            Level::Identified,
            None,
            None,
        ));
        world.grant(consent(
            "c3",
            p(2),
            &[Purpose::ClinicalTrial],
            &[DataCategory::LabResult],
            &[],
            &[RecipientClass::Pharma],
            Level::Identified,
            None,
            None,
        ));
        world.apply(Event::RecordOptOut {
            subject: p(3),
            purposes: vec![Purpose::Research],
        });
        world.grant(consent(
            "c4",
            p(4),
            &[Purpose::Insurance],
            &[DataCategory::General],
            &["insurer-a"],
            &[],
            Level::Anonymized,
            None,
            None,
        ));
        world.grant(consent(
            "c5",
            p(5),
            &[Purpose::Treatment],
            &[DataCategory::General],
            &["hosp-b"],
            &[],
            Level::Identified,
            None,
            None,
        ));
        for patient in [6, 7] {
            world.grant(consent(
                &format!("c{patient}"),
                p(patient),
                &[Purpose::Research, Purpose::Treatment],
                &[DataCategory::General],
                &["univ-a"],
                &[RecipientClass::Hospital],
                Level::Identified,
                None,
                None,
            ));
        }
        world
    }

    fn apply(&mut self, event: Event) {
        state::apply(&mut self.kv, &event, self.next).unwrap();
        self.log.push((self.next, event));
        self.next += 1;
    }

    fn grant(&mut self, consent: Consent) {
        self.apply(Event::GrantConsent(consent));
    }

    fn decide(&self, request: &Request, now: Timestamp) -> Decision {
        let directory = self.directory.current(&self.kv).unwrap();
        self.engine
            .decide_kv(request, &directory, &self.kv, now)
            .unwrap()
    }

    /// Decides and logs the decision, as the server does.
    fn decide_and_log(&mut self, request: &Request, now: Timestamp) -> Decision {
        let directory = self.directory.current(&self.kv).unwrap();
        let facts = policy::Facts::gather(&directory, &self.kv, request).unwrap();
        let decision = self.engine.decide(request, &facts, &directory, now);
        let subject_prev = request
            .subject
            .as_ref()
            .and_then(|s| state::subject_head(&self.kv, s).unwrap())
            .map(|h| h.last_index);
        self.apply(Event::Decision {
            request: request.clone(),
            time: now,
            decision: decision.clone(),
            policy_set_hash: self.engine.hash(),
            subject_prev,
            recipient: facts.recipient(),
        });
        decision
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "test helper mirroring the consent fields"
)]
fn consent(
    id: &str,
    subject: SubjectId,
    purposes: &[Purpose],
    categories: &[DataCategory],
    recipients: &[&str],
    classes: &[RecipientClass],
    max_level: Level,
    from: Option<&str>,
    until: Option<&str>,
) -> Consent {
    Consent {
        id: ConsentId::new(id).unwrap(),
        subject,
        purposes: purposes.to_vec(),
        data_categories: categories.to_vec(),
        recipients: recipients.iter().map(|r| OrgId::new(*r).unwrap()).collect(),
        recipient_classes: classes.to_vec(),
        max_level,
        valid_from: from.map(ts),
        valid_until: until.map(ts),
        granted_at: ts("2025-12-01T00:00:00Z"),
        revoked_at: None,
    }
}

/// A request builder: `org("univ-a").secondary(1, "diagnosis", Purpose::Research,
/// Level::Pseudonymized)`.
#[derive(Clone)]
struct R(Request);

fn principal(principal: Principal) -> R {
    R(Request {
        principal,
        action: Action::SecondaryUse,
        subject: None,
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: None,
        source_department: None,
        purpose: Purpose::Research,
        level: Level::Identified,
        cohort_size: None,
    })
}

fn org(id: &str) -> R {
    principal(Principal::Organization(OrgId::new(id).unwrap()))
}

fn clinician(id: &str) -> R {
    principal(Principal::Clinician(ClinicianId::new(id).unwrap()))
}

fn patient(n: u8) -> R {
    principal(Principal::Patient(p(n))).subject(n)
}

impl R {
    fn action(mut self, action: Action) -> Self {
        self.0.action = action;
        self
    }
    fn subject(mut self, n: u8) -> Self {
        self.0.subject = Some(p(n));
        self
    }
    fn category(mut self, category: &str) -> Self {
        self.0.data_category = CategoryName::new(category).unwrap();
        self
    }
    fn purpose(mut self, purpose: Purpose) -> Self {
        self.0.purpose = purpose;
        self
    }
    fn level(mut self, level: Level) -> Self {
        self.0.level = level;
        self
    }
    fn from(mut self, facility: &str, department: &str) -> Self {
        self.0.source_facility = Some(FacilityId::new(facility).unwrap());
        self.0.source_department = Some(Department::new(department).unwrap());
        self
    }
    /// The source facility alone, without a department.
    fn at_facility(mut self, facility: &str) -> Self {
        self.0.source_facility = Some(FacilityId::new(facility).unwrap());
        self
    }
    fn cohort(mut self, size: u64) -> Self {
        self.0.cohort_size = Some(size);
        self
    }
    /// Secondary use of one patient's data.
    fn secondary(self, n: u8, purpose: Purpose, level: Level) -> Self {
        self.action(Action::SecondaryUse)
            .subject(n)
            .purpose(purpose)
            .level(level)
    }
    /// Clinical view of one patient's records from a facility's department.
    fn view(self, n: u8, facility: &str, department: &str) -> Self {
        self.action(Action::ViewRecord)
            .subject(n)
            .purpose(Purpose::Treatment)
            .from(facility, department)
    }
    /// Statistics over a cohort.
    fn stats(self, purpose: Purpose, cohort: u64) -> Self {
        self.action(Action::ExportStatistics)
            .purpose(purpose)
            .level(Level::Statistical)
            .cohort(cohort)
    }
}

/// What a case expects: the effect, and the determining policy (for allows and explicit forbids)
/// or a fragment of the reason (for denies by default or before Cedar).
enum Want {
    Allow(&'static str),
    AllowReview(&'static str),
    Forbid(&'static str),
    DenyBecause(&'static str),
}

struct Case {
    rule: u8,
    name: &'static str,
    request: R,
    at: Timestamp,
    want: Want,
}

fn case(rule: u8, name: &'static str, request: R, want: Want) -> Case {
    Case {
        rule,
        name,
        request,
        at: ts(NOW),
        want,
    }
}

fn at(mut c: Case, t: Timestamp) -> Case {
    c.at = t;
    c
}

fn check(world: &World, case: &Case) -> Result<(), String> {
    let d = world.decide(&case.request.0, case.at);
    let ctx = || {
        format!(
            "rule {} `{}`: got {:?} determining {:?} reasons {:?} errors {:?}",
            case.rule, case.name, d.effect, d.determining_policies, d.reasons, d.errors
        )
    };
    if !d.errors.is_empty() {
        return Err(format!("unexpected evaluation errors: {}", ctx()));
    }
    match &case.want {
        Want::Allow(id) | Want::AllowReview(id) => {
            let review = matches!(case.want, Want::AllowReview(_));
            if d.effect != Effect::Allow
                || !d.determining_policies.iter().any(|p| p == id)
                || d.review_required != review
            {
                return Err(format!("want allow by `{id}` (review {review}): {}", ctx()));
            }
        }
        Want::Forbid(id) => {
            if d.effect != Effect::Deny || !d.determining_policies.iter().any(|p| p == id) {
                return Err(format!("want deny by `{id}`: {}", ctx()));
            }
        }
        Want::DenyBecause(fragment) => {
            if d.effect != Effect::Deny
                || d.review_required
                || !d.reasons.iter().any(|r| r.contains(fragment))
            {
                return Err(format!("want deny because `{fragment}`: {}", ctx()));
            }
        }
    }
    Ok(())
}

const BY_DEFAULT: &str = "deny by default";

fn cases() -> Vec<Case> {
    use Level::*;
    use Purpose::*;
    use Want::*;
    let from = ts(C1_FROM);
    let until = ts(C1_UNTIL);
    let univ_a_p1 = org("univ-a").secondary(1, Research, Pseudonymized);
    vec![
        // Rule 1: deny unless a rule permits; unknown things deny with a reason.
        case(
            1,
            "no consent, identified research",
            org("univ-a").secondary(9, Research, Identified),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            1,
            "unknown organisation",
            org("nobody").secondary(1, Research, Pseudonymized),
            DenyBecause("unknown organisation `nobody`"),
        ),
        case(
            1,
            "unknown clinician",
            clinician("dr-x").view(1, "hosp-a", "internal"),
            DenyBecause("unknown clinician `dr-x`"),
        ),
        case(
            1,
            "unknown data category",
            univ_a_p1.clone().category("tarot"),
            DenyBecause("unknown data category `tarot`"),
        ),
        case(
            1,
            "unknown source facility",
            univ_a_p1.clone().from("hosp-z", "internal"),
            DenyBecause("unknown source facility `hosp-z`"),
        ),
        case(
            1,
            "an organisation never gets view_record",
            org("univ-a").view(1, "hosp-a", "internal"),
            DenyBecause("not available to a `Organization`"),
        ),
        case(
            1,
            "secondary use needs a patient",
            org("ai-co")
                .action(Action::SecondaryUse)
                .purpose(ProductDevelopment)
                .level(Anonymized),
            DenyBecause("needs a patient"),
        ),
        // Rule 2: opt-in consent for identified and pseudonymised data.
        case(
            2,
            "consent covers purpose, category (diagnosis in clinical), recipient, level",
            univ_a_p1.clone(),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            2,
            "level above the consent's maximum",
            org("univ-a").secondary(1, Research, Identified),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            2,
            "lower level than the maximum is allowed",
            org("univ-a")
                .secondary(1, Research, Anonymized)
                .category("lab_result"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            2,
            "same class, but the consent names another organisation",
            org("univ-b").secondary(1, Research, Pseudonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            2,
            "purpose hierarchy: clinical_trial is a kind of research",
            org("univ-a").secondary(1, ClinicalTrial, Pseudonymized),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            2,
            "category outside the consent (genomic)",
            univ_a_p1.clone().category("genomic"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            2,
            "category outside the consent (claims is general, not clinical)",
            univ_a_p1.clone().category("claims"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            2,
            "purpose outside the consent",
            org("univ-a").secondary(1, ProductDevelopment, Pseudonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            2,
            "consent to a recipient class (pharma)",
            org("pharma-x")
                .secondary(2, ClinicalTrial, Identified)
                .category("lab_result"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            2,
            "consent for a sub-purpose does not cover its parent",
            org("pharma-x")
                .secondary(2, Research, Identified)
                .category("lab_result"),
            DenyBecause(BY_DEFAULT),
        ),
        at(
            case(
                2,
                "valid_from exactly now: in force",
                univ_a_p1.clone(),
                Allow("secondary-use.opt-in-consent"),
            ),
            from,
        ),
        at(
            case(
                2,
                "1 ms before valid_from: not yet in force",
                univ_a_p1.clone(),
                DenyBecause(BY_DEFAULT),
            ),
            ms(from, -1),
        ),
        at(
            case(
                2,
                "1 ms before valid_until: still in force",
                univ_a_p1.clone(),
                Allow("secondary-use.opt-in-consent"),
            ),
            ms(until, -1),
        ),
        at(
            case(
                2,
                "valid_until exactly now: expired",
                univ_a_p1.clone(),
                DenyBecause(BY_DEFAULT),
            ),
            until,
        ),
        // Rule 3: anonymised data, opt-out model except for insurance.
        case(
            3,
            "anonymised product development, nothing on record",
            org("ai-co").secondary(9, ProductDevelopment, Anonymized),
            Allow("secondary-use.anonymized-opt-out"),
        ),
        case(
            3,
            "anonymised research, patient opted out",
            org("univ-b").secondary(3, Research, Anonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            3,
            "opt-out of research covers clinical trials",
            org("univ-b").secondary(3, ClinicalTrial, Anonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            3,
            "opt-out of research leaves public health",
            org("gov").secondary(3, PublicHealth, Anonymized),
            Allow("secondary-use.anonymized-opt-out"),
        ),
        case(
            3,
            "insurance, anonymised, no opt-in",
            org("insurer-a").secondary(9, Insurance, Anonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            3,
            "insurance, anonymised, with opt-in",
            org("insurer-a")
                .secondary(4, Insurance, Anonymized)
                .category("claims"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            3,
            "insurance opt-in does not reach pseudonymised data",
            org("insurer-a")
                .secondary(4, Insurance, Pseudonymized)
                .category("claims"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            3,
            "anonymised marketing is not opt-out",
            org("adco").secondary(9, Marketing, Anonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            3,
            "pseudonymised research is not opt-out",
            org("ai-co").secondary(9, Research, Pseudonymized),
            DenyBecause(BY_DEFAULT),
        ),
        // Rule 4: statistics with k = 10, never marketing, opted-out patients not counted.
        case(
            4,
            "cohort of 10",
            org("gov").stats(PublicHealth, 10),
            Allow("statistics.cohort-at-least-k"),
        ),
        case(
            4,
            "cohort of 9",
            org("gov").stats(PublicHealth, 9),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            4,
            "marketing statistics",
            org("adco").stats(Marketing, 1000),
            Forbid("statistics.no-marketing"),
        ),
        case(
            4,
            "no cohort size",
            org("gov")
                .stats(Research, 10)
                .action(Action::ExportStatistics)
                .level(Statistical)
                .subject_none(),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            4,
            "statistics must be at the statistical level",
            org("gov").stats(Research, 50).level(Anonymized),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            4,
            "count a patient who did not opt out",
            org("univ-b").stats(Research, 0).subject(9),
            Allow("statistics.count-patient"),
        ),
        case(
            4,
            "do not count an opted-out patient",
            org("univ-b").stats(Research, 0).subject(3),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            4,
            "never count for marketing",
            org("adco").stats(Marketing, 0).subject(9),
            Forbid("statistics.no-marketing"),
        ),
        // Rule 5: facility and group disclosure settings override consent.
        case(
            5,
            "excluded department overrides consent",
            univ_a_p1.clone().from("hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            5,
            "other department of the same facility",
            univ_a_p1.clone().from("hosp-a", "internal"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            5,
            "group exclusion reaches a member facility",
            univ_a_p1.clone().from("hosp-c", "reproductive"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            5,
            "group exclusion does not reach a non-member",
            univ_a_p1.clone().from("hosp-b", "reproductive"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            5,
            "patient-level exclusion",
            org("univ-a")
                .secondary(6, Research, Identified)
                .from("hosp-a", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            5,
            "patient-level exclusion only at that facility",
            org("univ-a")
                .secondary(6, Research, Identified)
                .from("hosp-b", "internal"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            5,
            "patient excluded by the facility group",
            org("univ-a")
                .secondary(7, Research, Identified)
                .from("hosp-c", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            5,
            "excluded department even for anonymised opt-out use",
            org("ai-co")
                .secondary(9, ProductDevelopment, Anonymized)
                .from("hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            5,
            "own staff's secondary use still respects a patient exclusion",
            clinician("dr-a")
                .secondary(6, Research, Identified)
                .from("hosp-a", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            5,
            "own staff's secondary use still respects a department exclusion",
            clinician("dr-a")
                .secondary(9, ProductDevelopment, Anonymized)
                .from("hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            5,
            "own staff's secondary use still respects the group's exclusion",
            clinician("dr-c")
                .secondary(9, ProductDevelopment, Anonymized)
                .from("hosp-c", "reproductive"),
            Forbid("disclosure.excluded-department"),
        ),
        // Rule 5 fails closed: an exclusion that could apply is not skipped by leaving out
        // where the records come from.
        case(
            5,
            "patient excluded somewhere, no source facility named",
            org("univ-a").secondary(6, Research, Identified),
            Forbid("disclosure.source-unnamed"),
        ),
        case(
            5,
            "patient excluded by a group, no source facility named",
            org("univ-a").secondary(7, Research, Identified),
            Forbid("disclosure.source-unnamed"),
        ),
        case(
            5,
            "no exclusion anywhere, no source named: consent decides",
            univ_a_p1.clone(),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            5,
            "facility excluding departments, no department named",
            org("ai-co")
                .secondary(9, ProductDevelopment, Anonymized)
                .at_facility("hosp-a"),
            Forbid("disclosure.department-unnamed"),
        ),
        case(
            5,
            "group excluding departments, no department named",
            org("ai-co")
                .secondary(9, ProductDevelopment, Anonymized)
                .at_facility("hosp-c"),
            Forbid("disclosure.department-unnamed"),
        ),
        // Rule 6: clinical viewing across facilities.
        case(
            6,
            "doctor of another facility with class consent",
            clinician("dr-b").view(1, "hosp-a", "internal"),
            Allow("ehr.inter-facility-consent"),
        ),
        case(
            6,
            "doctor of another facility without consent",
            clinician("dr-b").view(9, "hosp-a", "internal"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "consent, but excluded department",
            clinician("dr-b").view(1, "hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            6,
            "consent, but patient excluded",
            clinician("dr-b").view(6, "hosp-a", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            6,
            "consent naming the viewing facility",
            clinician("dr-b").view(5, "hosp-a", "internal"),
            Allow("ehr.inter-facility-consent"),
        ),
        case(
            6,
            "consent naming another facility",
            clinician("dr-c").view(5, "hosp-a", "internal"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "view for research is not treatment",
            clinician("dr-b")
                .view(1, "hosp-a", "internal")
                .purpose(Research),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "emergency is a kind of treatment",
            clinician("dr-b")
                .view(1, "hosp-a", "internal")
                .purpose(Emergency),
            Allow("ehr.inter-facility-consent"),
        ),
        case(
            6,
            "information manager, own facility",
            clinician("im-a").view(9, "hosp-a", "internal"),
            Allow("ehr.information-manager-own-facility"),
        ),
        case(
            6,
            "information manager, own facility, excluded department",
            clinician("im-a").view(6, "hosp-a", "psychiatry"),
            Allow("ehr.information-manager-own-facility"),
        ),
        case(
            6,
            "information manager of another facility",
            clinician("im-b").view(9, "hosp-a", "internal"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "information manager of another facility, even with consent",
            clinician("im-b").view(1, "hosp-a", "internal"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "a doctor's own facility is not inter-facility sharing",
            clinician("dr-a").view(1, "hosp-a", "internal"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "view without a source facility",
            clinician("dr-b")
                .action(Action::ViewRecord)
                .subject(1)
                .purpose(Treatment),
            DenyBecause(BY_DEFAULT),
        ),
        // Rule 7: break-glass (emergency declared for hosp-b only, see `World` setup in `rules`).
        case(
            7,
            "no emergency declared",
            clinician("dr-a")
                .view(9, "hosp-a", "internal")
                .action(Action::EmergencyView),
            Forbid("break-glass.no-emergency"),
        ),
        case(
            7,
            "declared emergency, own facility",
            clinician("dr-b")
                .view(9, "hosp-b", "internal")
                .action(Action::EmergencyView),
            AllowReview("break-glass.declared-emergency"),
        ),
        case(
            7,
            "declared emergency, another facility's records",
            clinician("dr-a")
                .view(9, "hosp-b", "internal")
                .action(Action::EmergencyView),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            7,
            "emergency view by an organisation",
            org("univ-a")
                .view(9, "hosp-b", "internal")
                .action(Action::EmergencyView),
            DenyBecause("not available"),
        ),
        // Rule 8: patients and their own records.
        case(
            8,
            "patient views own records",
            patient(1)
                .action(Action::ViewRecord)
                .from("hosp-a", "internal"),
            Allow("patient.own-records"),
        ),
        case(
            8,
            "patient views own records of an excluded department",
            patient(6)
                .action(Action::ViewRecord)
                .from("hosp-a", "psychiatry"),
            Allow("patient.own-records"),
        ),
        case(
            8,
            "patient views another patient's records",
            patient(1).action(Action::ViewRecord).subject(2),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            8,
            "patients get no secondary use",
            patient(1).action(Action::SecondaryUse),
            DenyBecause("not available"),
        ),
    ]
}

impl R {
    fn subject_none(mut self) -> Self {
        self.0.subject = None;
        self.0.cohort_size = None;
        self
    }
}

#[test]
fn rules() {
    let mut world = World::new();
    world.apply(Event::SetEmergency {
        facility: FacilityId::new("hosp-b").unwrap(),
        active: true,
    });
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(&world, c).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for rule in 1..=8 {
        assert!(
            cases.iter().any(|c| c.rule == rule),
            "rule {rule} has no case"
        );
    }
}

/// A decision prepared at one instant may be logged at a later one only inside the facts'
/// stable span: check, for every scenario, that the decision is the same at both ends of the
/// span, and that the span of a consent with a validity period is exactly that period.
#[test]
fn decisions_hold_across_the_stable_span() {
    let world = World::new();
    let mut bounded = 0;
    for case in cases() {
        let request = &case.request.0;
        let directory = world.directory.current(&world.kv).unwrap();
        let facts = policy::Facts::gather(&directory, &world.kv, request).unwrap();
        let span = facts.stable_span(case.at);
        assert!(span.contains(case.at), "`{}`: {span:?}", case.name);
        let at_now = world.engine.decide(request, &facts, &directory, case.at);
        let mut ends = Vec::new();
        if let Some(from) = span.from {
            ends.push(from);
        }
        if let Some(until) = span.until {
            assert!(!span.contains(until));
            ends.push(ms(until, -1));
            bounded += 1;
        }
        for t in ends {
            assert!(span.contains(t));
            let then = world.engine.decide(request, &facts, &directory, t);
            assert_eq!(at_now, then, "`{}` at {t:?} (span {span:?})", case.name);
        }
    }
    assert!(bounded > 0, "no scenario has a bounded span");
    // Patient 1's research consent runs from C1_FROM until C1_UNTIL: the span is that period,
    // and just outside it the decision changes.
    let request = org("univ-a")
        .subject(1)
        .category("diagnosis")
        .purpose(Purpose::Research)
        .level(Level::Pseudonymized)
        .0;
    let directory = world.directory.current(&world.kv).unwrap();
    let facts = policy::Facts::gather(&directory, &world.kv, &request).unwrap();
    let span = facts.stable_span(ts(NOW));
    assert_eq!(
        (span.from, span.until),
        (Some(ts(C1_FROM)), Some(ts(C1_UNTIL)))
    );
    let inside = world.engine.decide(&request, &facts, &directory, ts(NOW));
    let after = world
        .engine
        .decide(&request, &facts, &directory, ts(C1_UNTIL));
    let before = world
        .engine
        .decide(&request, &facts, &directory, ms(ts(C1_FROM), -1));
    assert_eq!(inside.effect, Effect::Allow);
    assert_eq!(after.effect, Effect::Deny);
    assert_eq!(before.effect, Effect::Deny);
}

#[test]
fn rule_7_emergency_declared_then_ended() {
    let mut world = World::new();
    let request = clinician("dr-a")
        .view(9, "hosp-a", "internal")
        .action(Action::EmergencyView)
        .0;
    let now = ts(NOW);
    assert_eq!(world.decide(&request, now).effect, Effect::Deny);
    let hosp_a = FacilityId::new("hosp-a").unwrap();
    world.apply(Event::SetEmergency {
        facility: hosp_a.clone(),
        active: true,
    });
    let d = world.decide(&request, now);
    assert_eq!(d.effect, Effect::Allow);
    assert!(d.review_required);
    // A doctor of another facility still cannot break the glass on hosp-a's records.
    let other = clinician("dr-b")
        .view(9, "hosp-a", "internal")
        .action(Action::EmergencyView)
        .0;
    assert_eq!(world.decide(&other, now).effect, Effect::Deny);
    world.apply(Event::SetEmergency {
        facility: hosp_a,
        active: false,
    });
    let d = world.decide(&request, now);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.determining_policies, vec!["break-glass.no-emergency"]);
}

#[test]
fn rule_9_revocation_then_new_grant() {
    let mut world = World::new();
    let request = org("univ-a")
        .secondary(1, Purpose::Research, Level::Pseudonymized)
        .0;
    let now = ts(NOW);
    let d = world.decide_and_log(&request, now);
    assert!(d.is_allow());
    assert_eq!(d.matched_consents, vec![ConsentId::new("c1").unwrap()]);
    world.apply(Event::RevokeConsent {
        subject: p(1),
        consent_id: ConsentId::new("c1").unwrap(),
        revoked_at: Some(now),
    });
    // Every decision sequenced after the revocation sees it, whatever its time.
    let d = world.decide_and_log(&request, now);
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.matched_consents.is_empty());
    // Revoking again, or revoking another patient's consent, is refused.
    let again = Event::RevokeConsent {
        subject: p(1),
        consent_id: ConsentId::new("c1").unwrap(),
        revoked_at: None,
    };
    assert!(matches!(
        state::check(&world.kv, &again, world.next),
        Err(policy::ApplyError::AlreadyRevoked { .. })
    ));
    let other = Event::RevokeConsent {
        subject: p(2),
        consent_id: ConsentId::new("c2").unwrap(),
        revoked_at: None,
    };
    assert!(matches!(
        state::check(&world.kv, &other, world.next),
        Err(policy::ApplyError::ConsentOfOtherSubject { .. })
    ));
    // A new grant restores access.
    world.grant(consent(
        "c1-again",
        p(1),
        &[Purpose::Research],
        &[DataCategory::Diagnosis],
        &["univ-a"],
        &[],
        Level::Pseudonymized,
        None,
        None,
    ));
    let d = world.decide_and_log(&request, now);
    assert!(d.is_allow());
    assert_eq!(
        d.matched_consents,
        vec![ConsentId::new("c1-again").unwrap()]
    );
    // The patient's chain: grants c1, c2, three decisions, revoke, grant.
    let head = state::subject_head(&world.kv, &p(1)).unwrap().unwrap();
    assert_eq!(head.count, 7);
    assert_eq!(head.last_index, world.next - 1);
    let entries = state::subject_entries(&world.kv, &p(1)).unwrap();
    assert_eq!(entries.len(), 7);
    assert!(entries.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn replay_and_what_if_over_a_logged_history() {
    let mut world = World::new();
    let requests = [
        org("univ-a")
            .secondary(1, Purpose::Research, Level::Pseudonymized)
            .0,
        clinician("dr-b").view(1, "hosp-a", "internal").0,
        org("gov").stats(Purpose::PublicHealth, 12).0,
        org("gov").stats(Purpose::PublicHealth, 25).0,
        org("nobody")
            .secondary(1, Purpose::Research, Level::Pseudonymized)
            .0,
    ];
    for request in &requests {
        world.decide_and_log(request, ts(NOW));
    }

    // A regulator's replay recomputes every decision and agrees.
    let mut replayer = policy::replay::Replayer::new();
    let mut decisions = 0;
    for (index, event) in &world.log {
        let outcome = replayer.step(*index, event).unwrap();
        if matches!(event, Event::Decision { .. }) {
            assert_eq!(
                outcome,
                policy::replay::Outcome::DecisionMatches,
                "entry {index}"
            );
            decisions += 1;
        }
    }
    assert_eq!(decisions, requests.len());
    // The replayed state is the server's, less the per-subject listing only history reads.
    let mut served = world.kv.clone();
    served.retain(|key, _| !policy::state::is_subject_listing_key(key));
    assert!(served.len() < world.kv.len());
    assert_eq!(replayer.state(), &served);

    // An operator who logged a different answer is caught.
    let mut tampered = world.log.clone();
    let (_, last) = tampered
        .iter_mut()
        .rev()
        .find(|(_, e)| matches!(e, Event::Decision { .. }))
        .unwrap();
    if let Event::Decision { decision, .. } = last {
        decision.effect = Effect::Allow;
        decision.determining_policies = vec!["secondary-use.opt-in-consent".to_owned()];
    }
    let mut replayer = policy::replay::Replayer::new();
    let mismatches = tampered
        .iter()
        .map(|(i, e)| replayer.step(*i, e).unwrap())
        .filter(|o| matches!(o, policy::replay::Outcome::DecisionMismatch { .. }))
        .count();
    assert_eq!(mismatches, 1);

    // What-if: raising k to 20 changes exactly the cohort-of-12 decision.
    let candidate = PolicyEngine::new(&world.engine.text().replace(">= 10", ">= 20")).unwrap();
    assert_ne!(candidate.hash(), world.engine.hash());
    let changes =
        policy::whatif::what_if_log(&candidate, world.log.iter().map(|(i, e)| (*i, e))).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].old.effect, Effect::Allow);
    assert_eq!(changes[0].new.effect, Effect::Deny);
    let (_, changed) = world
        .log
        .iter()
        .find(|(i, _)| *i == changes[0].position)
        .unwrap();
    match changed {
        Event::Decision { request, .. } => assert_eq!(request.cohort_size, Some(12)),
        other => panic!("not a decision: {}", other.kind()),
    }
    // The same set changes nothing.
    let same = PolicyEngine::default_set().unwrap();
    assert!(
        policy::whatif::what_if_log(&same, world.log.iter().map(|(i, e)| (*i, e)))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn what_if_reports_each_changed_effect() {
    let world = World::new();
    let directory = world.directory.current(&world.kv).unwrap();
    let cases: Vec<policy::whatif::WhatIfCase> = cases()
        .into_iter()
        .map(|c| {
            let facts = policy::Facts::gather(&directory, &world.kv, &c.request.0).unwrap();
            let old = world.engine.decide(&c.request.0, &facts, &directory, c.at);
            policy::whatif::WhatIfCase {
                request: c.request.0,
                facts,
                time: c.at,
                old,
            }
        })
        .collect();
    assert!(policy::whatif::what_if(&world.engine, &directory, &cases).is_empty());
    // Dropping the marketing ban on statistics allows exactly the marketing statistics cases.
    let text = world.engine.text();
    let start = text.find("@id(\"statistics.no-marketing\")").unwrap();
    let end = start + text[start..].find("};").unwrap() + 2;
    let candidate = PolicyEngine::new(&format!("{}{}", &text[..start], &text[end..])).unwrap();
    let changes = policy::whatif::what_if(&candidate, &directory, &cases);
    assert_eq!(changes.len(), 2, "{changes:?}");
    for change in &changes {
        let case = &cases[usize::try_from(change.position).unwrap()];
        assert_eq!(case.request.purpose, Purpose::Marketing);
        assert_eq!(case.request.action, Action::ExportStatistics);
        assert_eq!(change.old.effect, Effect::Deny);
        assert_eq!(change.new.effect, Effect::Allow);
    }
}

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
    decision::{Decision, Request},
    directory::{Directory, DirectoryCache},
    domain::{
        Action, CategoryName, Clinician, ClinicianRole, Consent, DataCategory, Department, Effect,
        Facility, FacilityGroup, FacilityId, Level, OrgId, Organization, Principal, Purpose,
        RecipientClass, SubjectId, Timestamp,
    },
    engine::PolicyEngine,
    event::Event,
    state,
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
/// nothing on record; 10 consents to research on genomic data by univ-a; 11 refused emergency
/// access by other facilities (an opt-out of `emergency`).
fn p(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

struct World {
    kv: Kv,
    directory: policy::directory::DirectoryCache,
    engine: PolicyEngine,
    next: u64,
    log: Vec<(u64, Event)>,
}

impl World {
    fn new() -> Self {
        let engine = PolicyEngine::default_set().unwrap();
        let mut world = Self {
            kv: Kv::new(),
            directory: DirectoryCache::new(Directory::empty()),
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
            header: None,
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
                recipient_class: None,
                header: None,
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
        world.grant(consent(
            "c10",
            p(10),
            &[Purpose::Research],
            &[DataCategory::Genomic],
            &["univ-a"],
            &[],
            Level::Pseudonymized,
            None,
            None,
        ));
        world.apply(Event::RecordOptOut {
            subject: p(11),
            purposes: vec![Purpose::Emergency],
        });
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
        let facts = policy::facts::Facts::gather(&directory, &self.kv, request).unwrap();
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
            header: None,
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
    /// "May this patient be counted", stating no cohort size.
    fn count(self, n: u8, purpose: Purpose) -> Self {
        let mut r = self
            .action(Action::ExportStatistics)
            .subject(n)
            .purpose(purpose)
            .level(Level::Statistical);
        r.0.cohort_size = None;
        r
    }
    /// Break-glass view of one patient's records from a facility's department, for an emergency.
    fn glass(self, n: u8, facility: &str, department: &str) -> Self {
        self.action(Action::EmergencyView)
            .subject(n)
            .purpose(Purpose::Emergency)
            .from(facility, department)
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
            DenyBecause("not available to `Organization` principals"),
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
            Forbid("secondary-use.sensitive-needs-opt-in"),
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
        // Rule 3: sensitive categories never take the opt-out path (issue 22, item 3).
        case(
            3,
            "anonymised genomic data, no opt-in",
            org("ai-co")
                .secondary(9, ProductDevelopment, Anonymized)
                .category("genomic"),
            Forbid("secondary-use.sensitive-needs-opt-in"),
        ),
        case(
            3,
            "anonymised mental-health data, no opt-in",
            org("univ-b")
                .secondary(9, Research, Anonymized)
                .category("mental_health"),
            Forbid("secondary-use.sensitive-needs-opt-in"),
        ),
        case(
            3,
            "a clinical consent does not reach genomic data",
            org("univ-a")
                .secondary(1, Research, Anonymized)
                .category("genomic"),
            Forbid("secondary-use.sensitive-needs-opt-in"),
        ),
        case(
            3,
            "anonymised genomic data under an opt-in naming genomic",
            org("univ-a")
                .secondary(10, Research, Anonymized)
                .category("genomic"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            3,
            "a genomic opt-in covers only its recipient",
            org("univ-b")
                .secondary(10, Research, Anonymized)
                .category("genomic"),
            Forbid("secondary-use.sensitive-needs-opt-in"),
        ),
        case(
            3,
            "a patient with genomic data may still be counted in statistics",
            org("univ-b").count(9, Research).category("genomic"),
            Allow("statistics.count-patient"),
        ),
        // Rule 2: a consent allows every less identifiable level (issue 22, item 10).
        case(
            2,
            "identified consent covers statistical secondary use",
            org("pharma-x")
                .secondary(2, ClinicalTrial, Statistical)
                .category("lab_result"),
            Allow("secondary-use.opt-in-consent"),
        ),
        case(
            2,
            "pseudonymised consent covers statistical secondary use",
            org("univ-a").secondary(1, Research, Statistical),
            Allow("secondary-use.opt-in-consent"),
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
            org("univ-b").count(9, Research),
            Allow("statistics.count-patient"),
        ),
        case(
            4,
            "do not count an opted-out patient",
            org("univ-b").count(3, Research),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            4,
            "never count for marketing",
            org("adco").count(9, Marketing),
            Forbid("statistics.no-marketing"),
        ),
        // Rule 4: counting one patient states no cohort below k (issue 22, item 6).
        case(
            4,
            "count a patient in a cohort of 9",
            org("univ-b").stats(Research, 9).subject(9),
            Forbid("statistics.patient-cohort-below-k"),
        ),
        case(
            4,
            "count a patient in a cohort of 10",
            org("univ-b").stats(Research, 10).subject(9),
            Allow("statistics.count-patient"),
        ),
        // Rule 5 binds statistics: excluded patients and departments are not counted (issue 22,
        // item 6).
        case(
            5,
            "an excluded patient is not counted",
            org("gov").count(6, PublicHealth).from("hosp-a", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            5,
            "a patient excluded by the group is not counted",
            org("gov").count(7, PublicHealth).from("hosp-c", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            5,
            "a patient of an excluded department is not counted",
            org("gov")
                .count(9, PublicHealth)
                .from("hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            5,
            "the facility's own staff do not count an excluded patient either",
            clinician("im-a")
                .count(6, PublicHealth)
                .from("hosp-a", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            5,
            "counting a patient excluded somewhere, no source named",
            org("gov").count(6, PublicHealth),
            Forbid("disclosure.source-unnamed"),
        ),
        case(
            5,
            "counting at a facility excluding departments, no department named",
            org("gov").count(9, PublicHealth).at_facility("hosp-a"),
            Forbid("disclosure.department-unnamed"),
        ),
        case(
            5,
            "counting a patient excluded elsewhere only",
            org("gov").count(6, PublicHealth).from("hosp-b", "internal"),
            Allow("statistics.count-patient"),
        ),
        case(
            5,
            "a release about an excluded department",
            org("gov")
                .stats(PublicHealth, 100)
                .from("hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            5,
            "a release naming its facility but no department",
            org("gov").stats(PublicHealth, 100).at_facility("hosp-a"),
            Allow("statistics.cohort-at-least-k"),
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
        // Rule 6: an information manager's view has a purpose (issue 22, item 4).
        case(
            6,
            "information manager, own facility, for facility operations",
            clinician("im-a")
                .view(9, "hosp-a", "internal")
                .purpose(FacilityOperations),
            Allow("ehr.information-manager-own-facility"),
        ),
        case(
            6,
            "information manager, own facility, for an emergency",
            clinician("im-a")
                .view(9, "hosp-a", "internal")
                .purpose(Emergency),
            Allow("ehr.information-manager-own-facility"),
        ),
        case(
            6,
            "information manager, own facility, for marketing",
            clinician("im-a")
                .view(9, "hosp-a", "internal")
                .purpose(Marketing),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            6,
            "information manager, own facility, for research",
            clinician("im-a")
                .view(9, "hosp-a", "internal")
                .purpose(Research),
            DenyBecause(BY_DEFAULT),
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
            clinician("dr-a").glass(9, "hosp-a", "internal"),
            Forbid("break-glass.no-emergency"),
        ),
        case(
            7,
            "declared emergency, own facility",
            clinician("dr-b").glass(9, "hosp-b", "internal"),
            AllowReview("break-glass.declared-emergency"),
        ),
        case(
            7,
            "emergency view by an organisation",
            org("univ-a").glass(9, "hosp-b", "internal"),
            DenyBecause("not available"),
        ),
        // Rule 7 serves emergencies only (issue 22, item 4).
        case(
            7,
            "break-glass for treatment that is not an emergency",
            clinician("dr-b")
                .glass(9, "hosp-b", "internal")
                .purpose(Treatment),
            Forbid("break-glass.emergency-purpose-only"),
        ),
        case(
            7,
            "break-glass for marketing",
            clinician("dr-b")
                .glass(9, "hosp-b", "internal")
                .purpose(Marketing),
            Forbid("break-glass.emergency-purpose-only"),
        ),
        // Rule 7b: a doctor of another facility, in an emergency (issue 22, item 11).
        case(
            7,
            "7b: doctor of another facility, no emergency declared there",
            clinician("dr-b").glass(9, "hosp-a", "internal"),
            AllowReview("break-glass.other-facility-emergency"),
        ),
        case(
            7,
            "7b: doctor of another facility in the same group",
            clinician("dr-c").glass(1, "hosp-a", "internal"),
            AllowReview("break-glass.other-facility-emergency"),
        ),
        case(
            7,
            "7b: another facility's records while the doctor's own has an emergency",
            clinician("dr-a").glass(9, "hosp-b", "internal"),
            AllowReview("break-glass.other-facility-emergency"),
        ),
        case(
            7,
            "7b: the patient refused emergency access by other facilities",
            clinician("dr-b").glass(11, "hosp-a", "internal"),
            Forbid("break-glass.refused-by-patient"),
        ),
        case(
            7,
            "7a: a refusal of emergency access does not reach the own facility",
            clinician("dr-b").glass(11, "hosp-b", "internal"),
            AllowReview("break-glass.declared-emergency"),
        ),
        case(
            7,
            "7b: the source facility excludes the department",
            clinician("dr-b").glass(9, "hosp-a", "psychiatry"),
            Forbid("disclosure.excluded-department"),
        ),
        case(
            7,
            "7b: the source facility excludes the patient",
            clinician("dr-b").glass(6, "hosp-a", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            7,
            "7b: the source's group excludes the patient",
            clinician("dr-b").glass(7, "hosp-c", "internal"),
            Forbid("disclosure.excluded-patient"),
        ),
        case(
            7,
            "7b: no department named where the source excludes departments",
            clinician("dr-b")
                .glass(9, "hosp-a", "internal")
                .at_facility_only(),
            Forbid("disclosure.department-unnamed"),
        ),
        case(
            7,
            "7b: no source facility named",
            clinician("dr-b").glass(9, "hosp-a", "internal").no_source(),
            Forbid("break-glass.source-unnamed"),
        ),
        case(
            7,
            "7b: only doctors",
            clinician("im-b").glass(9, "hosp-a", "internal"),
            DenyBecause(BY_DEFAULT),
        ),
        case(
            7,
            "7b: only for the purpose `emergency`",
            clinician("dr-b")
                .glass(9, "hosp-a", "internal")
                .purpose(Treatment),
            Forbid("break-glass.emergency-purpose-only"),
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
    fn no_source(mut self) -> Self {
        self.0.source_facility = None;
        self.0.source_department = None;
        self
    }
    fn at_facility_only(mut self) -> Self {
        self.0.source_department = None;
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
        let facts = policy::facts::Facts::gather(&directory, &world.kv, request).unwrap();
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
    let facts = policy::facts::Facts::gather(&directory, &world.kv, &request).unwrap();
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
    let request = clinician("dr-a").glass(9, "hosp-a", "internal").0;
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
    // A doctor of another facility is under rule 7b, whether or not hosp-a declared an
    // emergency.
    let other = clinician("dr-b").glass(9, "hosp-a", "internal").0;
    let d = world.decide(&other, now);
    assert_eq!(
        d.determining_policies,
        vec!["break-glass.other-facility-emergency"]
    );
    world.apply(Event::SetEmergency {
        facility: hosp_a,
        active: false,
    });
    let d = world.decide(&request, now);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.determining_policies, vec!["break-glass.no-emergency"]);
    let d = world.decide(&other, now);
    assert!(d.is_allow() && d.review_required, "{d:?}");
}

/// Rule 7b's refusal is the patient's to record and withdraw: an opt-out of `emergency` stops
/// other facilities' emergency views, and withdrawing it lets them in again.
#[test]
fn rule_7b_refusal_of_emergency_access_recorded_then_withdrawn() {
    let mut world = World::new();
    let now = ts(NOW);
    let request = clinician("dr-b").glass(9, "hosp-a", "internal").0;
    assert!(world.decide(&request, now).is_allow());
    world.apply(Event::RecordOptOut {
        subject: p(9),
        purposes: vec![Purpose::Emergency],
    });
    let d = world.decide(&request, now);
    assert_eq!(
        d.determining_policies,
        vec!["break-glass.refused-by-patient"]
    );
    world.apply(Event::RecordOptOut {
        subject: p(9),
        purposes: vec![],
    });
    assert!(world.decide(&request, now).is_allow());
}

/// The patient's latest word wins (issue 22, item 5): an opt-out blocks use for its purpose
/// under consents granted before it, a consent granted after it is in force, and an opt-out that
/// a later opt-out event carries on keeps its place in time.
#[test]
fn a_later_opt_out_wins_over_an_earlier_consent() {
    let mut world = World::new();
    let now = ts(NOW);
    // Patient 1 consented to research by univ-a (c1); now they opt out of research.
    let research = org("univ-a")
        .secondary(1, Purpose::Research, Level::Pseudonymized)
        .0;
    let trial = org("univ-a")
        .secondary(1, Purpose::ClinicalTrial, Level::Pseudonymized)
        .0;
    assert!(world.decide(&research, now).is_allow());
    world.apply(Event::RecordOptOut {
        subject: p(1),
        purposes: vec![Purpose::Research],
    });
    for request in [&research, &trial] {
        let d = world.decide(request, now);
        assert_eq!(d.effect, Effect::Deny, "{d:?}");
        assert!(d.determining_policies.is_empty(), "{d:?}");
    }
    // Their treatment consent (c2) is not about research: still in force.
    let view = clinician("dr-b").view(1, "hosp-a", "internal").0;
    assert!(world.decide(&view, now).is_allow());
    // A consent granted after the opt-out is in force for its own scope (clinical trials).
    world.grant(consent(
        "c1-trial",
        p(1),
        &[Purpose::ClinicalTrial],
        &[DataCategory::Clinical],
        &["univ-a"],
        &[],
        Level::Pseudonymized,
        None,
        None,
    ));
    assert!(world.decide(&trial, now).is_allow());
    assert_eq!(world.decide(&research, now).effect, Effect::Deny);
    // Adding another opt-out carries research's on from where it was recorded: the later
    // consent stays in force.
    world.apply(Event::RecordOptOut {
        subject: p(1),
        purposes: vec![Purpose::Research, Purpose::Marketing],
    });
    assert!(world.decide(&trial, now).is_allow());
    // Withdrawing the research opt-out and recording it again is a new, later word.
    world.apply(Event::RecordOptOut {
        subject: p(1),
        purposes: vec![Purpose::Marketing],
    });
    assert!(world.decide(&research, now).is_allow());
    world.apply(Event::RecordOptOut {
        subject: p(1),
        purposes: vec![Purpose::Marketing, Purpose::Research],
    });
    assert_eq!(world.decide(&trial, now).effect, Effect::Deny);
    assert_eq!(world.decide(&research, now).effect, Effect::Deny);

    // An opt-out of `emergency` overrides an earlier treatment consent for emergencies only.
    world.apply(Event::RecordOptOut {
        subject: p(5),
        purposes: vec![Purpose::Emergency],
    });
    let treatment = clinician("dr-b").view(5, "hosp-a", "internal").0;
    assert!(world.decide(&treatment, now).is_allow());
    let emergency = clinician("dr-b")
        .view(5, "hosp-a", "internal")
        .purpose(Purpose::Emergency)
        .0;
    assert_eq!(world.decide(&emergency, now).effect, Effect::Deny);

    // Replay rebuilds the order from the log and re-decides alike.
    let mut replayer = policy::replay::Replayer::new();
    for (index, event) in &world.log {
        replayer.step(*index, event).unwrap();
    }
    let mut served = world.kv.clone();
    served.retain(|key, _| !policy::state::is_subject_listing_key(key));
    assert_eq!(replayer.state(), &served);
}

/// `has_opt_in_consent` keeps its meaning for policy sets that use it: a consent covers the
/// request whatever opt-outs came after it. Only `has_current_opt_in_consent` orders them.
#[test]
fn has_opt_in_consent_keeps_its_meaning() {
    let mut world = World::new();
    let now = ts(NOW);
    world.apply(Event::RecordOptOut {
        subject: p(1),
        purposes: vec![Purpose::Research],
    });
    let research = org("univ-a")
        .secondary(1, Purpose::Research, Level::Pseudonymized)
        .0;
    let directory = world.directory.current(&world.kv).unwrap();
    let old_style = PolicyEngine::new(
        r#"@id("old") @reason("consent")
permit (principal, action == Action::"secondary_use", resource)
when { context.has_opt_in_consent };"#,
    )
    .unwrap();
    let d = old_style
        .decide_kv(&research, &directory, &world.kv, now)
        .unwrap();
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(world.decide(&research, now).effect, Effect::Deny);
}

/// A patient record stored before the order of grants and opt-outs was kept fails closed: its
/// opt-outs count as later than every consent it holds, so the default set denies what they
/// cover; a consent granted after the record was stored is known to be the later word.
#[test]
fn a_record_without_recording_order_fails_closed() {
    let mut world = World::new();
    let now = ts(NOW);
    world.apply(Event::RecordOptOut {
        subject: p(1),
        purposes: vec![Purpose::Research],
    });
    world.grant(consent(
        "c1-later",
        p(1),
        &[Purpose::Research],
        &[DataCategory::Clinical],
        &["univ-a"],
        &[],
        Level::Pseudonymized,
        None,
        None,
    ));
    let research = org("univ-a")
        .secondary(1, Purpose::Research, Level::Pseudonymized)
        .0;
    assert!(world.decide(&research, now).is_allow());
    // The record as the code before this change wrote it: no grant or opt-out indices.
    let key = [b"subj/".as_slice(), p(1).as_str().as_bytes(), b"/s"].concat();
    let mut stored: serde_json::Value = serde_json::from_slice(&world.kv[&key]).unwrap();
    let object = stored.as_object_mut().unwrap();
    assert!(object.remove("oi").is_some());
    for consent in object["c"].as_array_mut().unwrap() {
        assert!(consent.as_object_mut().unwrap().remove("n").is_some());
    }
    world.kv.insert(key, serde_json::to_vec(&stored).unwrap());
    let d = world.decide(&research, now);
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    // Consents for purposes it did not opt out of are unaffected.
    let view = clinician("dr-b").view(1, "hosp-a", "internal").0;
    assert!(world.decide(&view, now).is_allow());
    // A consent granted from now on is later than an opt-out stored without its index (which
    // was recorded before the change): it is in force.
    world.grant(consent(
        "c1-now",
        p(1),
        &[Purpose::Research],
        &[DataCategory::Clinical],
        &["univ-a"],
        &[],
        Level::Pseudonymized,
        None,
        None,
    ));
    assert!(world.decide(&research, now).is_allow());
}

/// Operators mark a category sensitive by adding it to the list in
/// `secondary-use.sensitive-needs-opt-in` (policy/README.md).
#[test]
fn operators_can_mark_more_categories_sensitive() {
    let world = World::new();
    let now = ts(NOW);
    let lifelog = org("ai-co")
        .secondary(9, Purpose::ProductDevelopment, Level::Anonymized)
        .category("lifelog")
        .0;
    assert!(world.decide(&lifelog, now).is_allow());
    let list = r#"[DataCategory::"genomic", DataCategory::"mental_health"]"#;
    let text = world.engine.text();
    assert_eq!(text.matches(list).count(), 1);
    let edited = text.replace(
        list,
        r#"[DataCategory::"genomic", DataCategory::"mental_health", DataCategory::"lifelog"]"#,
    );
    let engine = PolicyEngine::new(&edited).unwrap();
    let directory = world.directory.current(&world.kv).unwrap();
    let d = engine
        .decide_kv(&lifelog, &directory, &world.kv, now)
        .unwrap();
    assert_eq!(
        d.determining_policies,
        vec!["secondary-use.sensitive-needs-opt-in"]
    );
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
        Err(policy::state::ApplyError::AlreadyRevoked { .. })
    ));
    let other = Event::RevokeConsent {
        subject: p(2),
        consent_id: ConsentId::new("c2").unwrap(),
        revoked_at: None,
    };
    assert!(matches!(
        state::check(&world.kv, &other, world.next),
        Err(policy::state::ApplyError::ConsentOfOtherSubject { .. })
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
            let facts = policy::facts::Facts::gather(&directory, &world.kv, &c.request.0).unwrap();
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

/// Registers facility `id` as the service now does: with a recipient class and the second leaf
/// format, and no separate organisation.
fn facility_v2(id: &str, class: RecipientClass) -> Event {
    Event::UpsertFacility(Facility {
        id: FacilityId::new(id).unwrap(),
        name: Name::new(format!("Facility {id}")).unwrap(),
        group: None,
        excluded_departments: vec![],
        excluded_patients: vec![],
        recipient_class: Some(class),
        header: Some(policy::domain::LeafHeader::V2),
    })
}

fn doctor(id: &str, facility: &str) -> Event {
    Event::UpsertClinician(Clinician {
        id: ClinicianId::new(id).unwrap(),
        facility: FacilityId::new(facility).unwrap(),
        department: Department::new("internal").unwrap(),
        role: ClinicianRole::Doctor,
    })
}

fn deactivate(target: policy::domain::Deactivation) -> Event {
    Event::Deactivate { target }
}

/// Every logged decision of `world` re-decides identically in a regulator's replay.
fn replays_identically(world: &World) {
    let mut replayer = policy::replay::Replayer::new();
    for (index, event) in &world.log {
        let outcome = replayer.step(*index, event).unwrap();
        if matches!(event, Event::Decision { .. }) {
            assert_eq!(
                outcome,
                policy::replay::Outcome::DecisionMatches,
                "entry {index}"
            );
        }
    }
}

#[test]
fn a_registered_facility_is_an_organisation_of_its_class() {
    let mut world = World::new();
    world.apply(facility_v2("hosp-e", RecipientClass::Hospital));
    world.apply(facility_v2("chk-e", RecipientClass::CheckupCenter));
    world.apply(doctor("dr-e", "hosp-e"));
    // A consent naming the facility is accepted without UpsertOrganization...
    let named = consent(
        "c-hosp-e",
        p(9),
        &[Purpose::Treatment],
        &[DataCategory::General],
        &["hosp-e", "chk-e"],
        &[],
        Level::Identified,
        None,
        None,
    );
    state::check_grant(&world.kv, &named).unwrap();
    let org = state::organization(&world.kv, &OrgId::new("chk-e").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(org.recipient_class, RecipientClass::CheckupCenter);
    assert_eq!(org.name.as_str(), "Facility chk-e");
    // ...and patient 1's consent to class `hospital` covers the facility's doctors.
    let view = clinician("dr-e").view(1, "hosp-a", "internal").0;
    let d = world.decide_and_log(&view, ts(NOW));
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.determining_policies, vec!["ehr.inter-facility-consent"]);
    replays_identically(&world);
}

#[test]
fn a_facility_event_logged_before_facilities_were_organisations_registers_none() {
    let mut world = World::new();
    let mut old = facility_v2("hosp-f", RecipientClass::Hospital);
    if let Event::UpsertFacility(facility) = &mut old {
        facility.recipient_class = None;
        facility.header = None;
    }
    world.apply(old);
    world.apply(doctor("dr-f", "hosp-f"));
    assert!(
        state::organization(&world.kv, &OrgId::new("hosp-f").unwrap())
            .unwrap()
            .is_none()
    );
    let named = consent(
        "c-hosp-f",
        p(9),
        &[Purpose::Treatment],
        &[DataCategory::General],
        &["hosp-f"],
        &[],
        Level::Identified,
        None,
        None,
    );
    assert!(matches!(
        state::check_grant(&world.kv, &named),
        Err(policy::state::ApplyError::UnknownOrganization { .. })
    ));
    let view = clinician("dr-f").view(1, "hosp-a", "internal").0;
    assert_eq!(world.decide_and_log(&view, ts(NOW)).effect, Effect::Deny);
    replays_identically(&world);
}

#[test]
fn a_deactivated_clinician_is_denied_until_registered_again() {
    use policy::domain::Deactivation;
    let mut world = World::new();
    let view = clinician("dr-b").view(1, "hosp-a", "internal").0;
    assert!(world.decide_and_log(&view, ts(NOW)).is_allow());
    let at = world.next;
    let dr_b = ClinicianId::new("dr-b").unwrap();
    world.apply(deactivate(Deactivation::Clinician(dr_b.clone())));
    let d = world.decide_and_log(&view, ts(NOW));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.determining_policies.is_empty());
    assert_eq!(
        d.reasons,
        vec![format!("clinician `dr-b` was deactivated at entry {at}")]
    );
    // Deactivating twice, or someone unknown, is refused.
    assert!(matches!(
        state::check(
            &world.kv,
            &deactivate(Deactivation::Clinician(dr_b)),
            world.next
        ),
        Err(policy::state::ApplyError::AlreadyDeactivated { at: a, .. }) if a == at
    ));
    assert!(matches!(
        state::check(
            &world.kv,
            &deactivate(Deactivation::Clinician(ClinicianId::new("dr-zz").unwrap())),
            world.next
        ),
        Err(policy::state::ApplyError::UnknownClinician { .. })
    ));
    // Registering the clinician again reactivates them.
    world.apply(doctor("dr-b", "hosp-b"));
    assert!(world.decide_and_log(&view, ts(NOW)).is_allow());
    replays_identically(&world);
}

#[test]
fn a_deactivated_facility_denies_its_clinicians_and_consents_naming_it() {
    use policy::domain::Deactivation;
    let mut world = World::new();
    world.apply(facility_v2("hosp-e", RecipientClass::Hospital));
    world.apply(doctor("dr-e", "hosp-e"));
    world.grant(consent(
        "c-hosp-e",
        p(9),
        &[Purpose::Treatment],
        &[DataCategory::General],
        &["hosp-e"],
        &[],
        Level::Identified,
        None,
        None,
    ));
    let view = clinician("dr-e").view(9, "hosp-a", "internal").0;
    assert!(world.decide_and_log(&view, ts(NOW)).is_allow());
    let at = world.next;
    world.apply(deactivate(Deactivation::Facility(
        FacilityId::new("hosp-e").unwrap(),
    )));
    let d = world.decide_and_log(&view, ts(NOW));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.reasons,
        vec![format!(
            "facility `hosp-e` of the clinician was deactivated at entry {at}"
        )]
    );
    // Its organisation went with it.
    let org = state::organization_record(&world.kv, &OrgId::new("hosp-e").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(org.deactivated, Some(at));
    // Registering the facility again reactivates it and its organisation.
    world.apply(facility_v2("hosp-e", RecipientClass::Hospital));
    assert!(world.decide_and_log(&view, ts(NOW)).is_allow());
    replays_identically(&world);
}

#[test]
fn consents_naming_a_deactivated_organisation_stop_covering_it() {
    use policy::domain::Deactivation;
    let mut world = World::new();
    let research = org("univ-a")
        .secondary(1, Purpose::Research, Level::Pseudonymized)
        .0;
    assert!(world.decide_and_log(&research, ts(NOW)).is_allow());
    let at = world.next;
    world.apply(deactivate(Deactivation::Organization(
        OrgId::new("univ-a").unwrap(),
    )));
    let d = world.decide_and_log(&research, ts(NOW));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.matched_consents.is_empty());
    assert_eq!(
        d.reasons,
        vec![format!(
            "organisation `univ-a` was deactivated at entry {at}"
        )]
    );
    // A facility's doctors are denied when its organisation is deactivated.
    world.apply(deactivate(Deactivation::Organization(
        OrgId::new("hosp-b").unwrap(),
    )));
    let view = clinician("dr-b").view(1, "hosp-a", "internal").0;
    let d = world.decide_and_log(&view, ts(NOW));
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.reasons[0].starts_with("organisation `hosp-b` was deactivated"));
    replays_identically(&world);
}

#[test]
fn department_exclusions_stored_before_normalisation_still_bind_under_the_default_set() {
    let mut world = World::new();
    // Settings logged before identifiers were normalised at the edge keep their spelling: they
    // decode as logged.
    let group = Event::from_json(
        br#"{"kind":"directory.facility_group","id":"grp-old","excluded_departments":["Oncology"],"excluded_patients":[]}"#,
    )
    .unwrap();
    let facility = Event::from_json(
        br#"{"kind":"directory.facility","id":"hosp-old","name":"Old","group":"grp-old","excluded_departments":["Psychiatry"],"excluded_patients":[]}"#,
    )
    .unwrap();
    world.apply(group);
    world.apply(facility);
    let ask = |department: &str| {
        org("univ-a")
            .secondary(1, Purpose::Research, Level::Pseudonymized)
            .from("hosp-old", department)
            .0
    };
    // Requests arrive normalised (`psychiatry`); the stored `Psychiatry` still excludes it, for
    // the facility's own list and its group's.
    for department in ["Psychiatry", "oncology"] {
        let d = world.decide_and_log(&ask(department), ts(NOW));
        assert_eq!(d.effect, Effect::Deny, "{department}: {d:?}");
        assert_eq!(
            d.determining_policies,
            vec!["disclosure.excluded-department"]
        );
    }
    let d = world.decide_and_log(&ask("internal"), ts(NOW));
    assert!(d.is_allow(), "{d:?}");
    replays_identically(&world);
    // A set written before the fact existed compares the raw strings, as its logged decisions
    // did: it does not see the stored `Psychiatry` in `psychiatry`.
    let old_text = include_str!("fixtures/log-2026-12-02.jsonl")
        .lines()
        .next()
        .map(|line| match Event::from_json(line.as_bytes()).unwrap() {
            Event::ActivatePolicySet { policies, .. } => policies,
            other => panic!("the fixture starts with {other:?}"),
        })
        .unwrap();
    let old = PolicyEngine::new(&old_text).unwrap();
    let directory = world.directory.current(&world.kv).unwrap();
    let d = old
        .decide_kv(&ask("psychiatry"), &directory, &world.kv, ts(NOW))
        .unwrap();
    assert!(d.is_allow(), "{d:?}");
}

/// Item 13 of issue 22: a deny by default names the condition that failed, first among its
/// reasons, in words a patient and an auditor can read; the generic reason follows, and no
/// policy is named as determining (none was).
#[test]
fn denies_by_default_say_why() {
    use Level::*;
    use Purpose::*;
    let world = World::new();
    let now = ts(NOW);
    let cases: Vec<(&str, R, Timestamp, &str)> = vec![
        (
            "nothing on record",
            org("univ-a").secondary(9, Research, Identified),
            now,
            "no consent of the patient covers this request: none is on record",
        ),
        (
            "purpose",
            org("insurer-a").secondary(1, Insurance, Identified),
            now,
            "no consent of the patient covers the purpose `insurance`",
        ),
        (
            "category",
            org("univ-a")
                .secondary(1, Research, Pseudonymized)
                .category("claims"),
            now,
            "no consent of the patient for `research` covers the data category `claims`",
        ),
        (
            "recipient",
            org("univ-b").secondary(1, Research, Pseudonymized),
            now,
            "no consent of the patient for `research` covers the recipient `univ-b` or its class `university`",
        ),
        (
            "level",
            org("univ-a").secondary(1, Research, Identified),
            now,
            "the patient's consent allows at most `PSEUDONYMIZED`, and `IDENTIFIED` was asked for",
        ),
        (
            "not yet in force",
            org("univ-a").secondary(1, Research, Pseudonymized),
            ms(ts(C1_FROM), -1),
            "the patient's consent that covers this request is not yet in force",
        ),
        (
            "expired",
            org("univ-a").secondary(1, Research, Pseudonymized),
            ts(C1_UNTIL),
            "the patient's consent that covers this request has expired",
        ),
        (
            "opt-out",
            org("univ-a").secondary(3, Research, Anonymized),
            now,
            "the patient opted out of `research`",
        ),
        (
            "opt-out of the parent purpose",
            org("pharma-x").secondary(3, ClinicalTrial, Anonymized),
            now,
            "the patient opted out of `research`, which includes `clinical_trial`",
        ),
        (
            "an information manager's own facility, for marketing",
            clinician("im-a")
                .view(1, "hosp-a", "internal")
                .purpose(Marketing),
            now,
            "an information manager may view their own facility's records only for `treatment` or `facility_operations`, not for `marketing`",
        ),
        (
            "emergency access by another facility's information manager",
            clinician("im-b")
                .view(1, "hosp-a", "internal")
                .action(Action::EmergencyView)
                .purpose(Emergency),
            now,
            "emergency access to another facility's records is for doctors, and this clinician is an `information_manager` of `hosp-b`",
        ),
        (
            "cohort below k",
            org("univ-a").stats(Research, 7),
            now,
            "the cohort has 7 people, fewer than the 10 a statistical release needs",
        ),
        (
            "statistics at another level",
            org("univ-a").stats(Research, 50).level(Anonymized),
            now,
            "statistics are released only at level `STATISTICAL`, not `ANONYMIZED`",
        ),
        (
            "counting a patient who opted out",
            org("univ-a")
                .action(Action::ExportStatistics)
                .subject(3)
                .purpose(Research)
                .level(Statistical),
            now,
            "the patient opted out of `research`",
        ),
        (
            "doctor of another facility, no consent",
            clinician("dr-b").view(9, "hosp-a", "internal"),
            now,
            "no consent of the patient covers this request: none is on record",
        ),
        (
            "doctor of another facility, consent names another hospital",
            clinician("dr-c").view(5, "hosp-a", "internal"),
            now,
            "no consent of the patient for `treatment` covers the recipient `hosp-c` or its class `hospital`",
        ),
        (
            "doctor of another facility, not for treatment",
            clinician("dr-b")
                .view(1, "hosp-a", "internal")
                .purpose(Research),
            now,
            "a doctor of another facility may view records only for `treatment`, not for `research`",
        ),
        (
            "doctor of another facility, no source named",
            clinician("dr-b")
                .action(Action::ViewRecord)
                .subject(1)
                .purpose(Treatment),
            now,
            "the request names no source facility, which a clinician's view needs",
        ),
        (
            "information manager of another facility",
            clinician("im-b").view(1, "hosp-a", "internal"),
            now,
            "an information manager may view only their own facility's records, and these are held by `hosp-a`",
        ),
        (
            "doctor of the own facility",
            clinician("dr-a").view(1, "hosp-a", "internal"),
            now,
            "no rule decides a doctor's view of their own facility's records (the facility's own systems do)",
        ),
        (
            "patient asking about another patient",
            patient(1).action(Action::ViewRecord).subject(2),
            now,
            "a patient may view only their own records",
        ),
    ];
    let mut failures = Vec::new();
    for (name, request, at, want) in cases {
        let d = world.decide(&request.0, at);
        let ok = d.effect == Effect::Deny
            && d.determining_policies.is_empty()
            && d.reasons.first().map(String::as_str) == Some(want)
            && d.reasons.last().map(String::as_str) == Some(policy::engine::DEFAULT_DENY_REASON);
        if !ok {
            failures.push(format!(
                "`{name}`: want `{want}`, got {:?} {:?} {:?}",
                d.effect, d.determining_policies, d.reasons
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A deny by a forbid keeps the policy's own reason, alone: the explanation is for denies by
/// default only.
#[test]
fn forbids_keep_their_own_reason() {
    let world = World::new();
    let d = world.decide(
        &org("univ-a")
            .secondary(7, Purpose::Research, Level::Identified)
            .from("hosp-c", "reproductive")
            .0,
        ts(NOW),
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(!d.determining_policies.is_empty(), "{d:?}");
    assert!(
        d.reasons
            .iter()
            .all(|r| r.starts_with("the source facility or its facility group excludes")),
        "{:?}",
        d.reasons
    );
}

/// The default set plus a rule that permits everything: what a careless activation would do.
fn open_everything() -> PolicyEngine {
    let base = PolicyEngine::default_set().unwrap();
    PolicyEngine::new(&format!(
        "{}\n@id(\"open-everything\")\n@reason(\"everything is allowed\")\npermit (principal, action, resource);\n",
        base.text()
    ))
    .unwrap()
}

/// Replays the world's log with an analysis of `candidate` over `start..end`.
fn analyse(
    world: &World,
    candidate: PolicyEngine,
    start: policy::whatif::WindowStart,
    end: Option<u64>,
) -> policy::whatif::Analysis {
    // Two ways, which must agree: the regulator's replay carrying the analysis, and the
    // server's analysis alone.
    let again = PolicyEngine::new(candidate.text()).unwrap();
    let analyzer = policy::whatif::Analyzer::new(candidate, start, end);
    let mut replayer = policy::replay::Replayer::new().with_analyzer(analyzer);
    let mut alone =
        policy::whatif::LogAnalysis::new(policy::whatif::Analyzer::new(again, start, end));
    for (index, event) in &world.log {
        replayer.step(*index, event).unwrap();
        alone.step(*index, event).unwrap();
    }
    let analysis = replayer.into_analysis(world.next).unwrap();
    assert_eq!(alone.finish(world.next), analysis);
    analysis
}

/// Issue 20: the preview of a policy change counts, among the logged decisions of a window,
/// those the candidate would decide the other way, by direction, rule and purpose, with example
/// leaf indices; the same log, window and candidate always give the same analysis id.
#[test]
fn a_candidate_is_analysed_against_the_logged_decisions_of_its_window() {
    use policy::whatif::{Direction, WindowStart};
    let mut world = World::new();
    let now = ts(NOW);
    let first = world.next;
    // Allowed (consent), denied (nothing on record), denied (opted out), allowed again.
    assert!(
        world
            .decide_and_log(
                &org("univ-a")
                    .secondary(1, Purpose::Research, Level::Pseudonymized)
                    .0,
                now
            )
            .is_allow()
    );
    let unconsented = world.next;
    let ask_9 = org("univ-a")
        .secondary(9, Purpose::Research, Level::Pseudonymized)
        .0;
    assert!(!world.decide_and_log(&ask_9, now).is_allow());
    let opted_out = world.next;
    let ask_3 = org("univ-a")
        .secondary(3, Purpose::Research, Level::Pseudonymized)
        .0;
    assert!(!world.decide_and_log(&ask_3, ms(now, 1000)).is_allow());
    let insurer = world.next;
    let ask_insurer = org("insurer-a")
        .secondary(1, Purpose::Insurance, Level::Identified)
        .0;
    assert!(!world.decide_and_log(&ask_insurer, ms(now, 2000)).is_allow());

    let all = analyse(&world, open_everything(), WindowStart::Index(0), None);
    assert_eq!((all.from_index, all.to_index), (0, world.next));
    assert_eq!(all.decisions, 4);
    assert_eq!(all.allow_to_deny, 0);
    // Every deny that no forbid rule made turns into an allow under the permit-all rule.
    let opened: Vec<_> = all
        .groups
        .iter()
        .map(|g| {
            (
                g.direction,
                g.rule.as_str(),
                g.purpose.as_str(),
                g.count,
                g.examples.clone(),
            )
        })
        .collect();
    assert!(
        opened
            .iter()
            .all(|g| g.0 == Direction::DenyToAllow && g.1 == "open-everything"),
        "{opened:?}"
    );
    let research = opened.iter().find(|g| g.2 == "research").unwrap();
    let insurance = opened.iter().find(|g| g.2 == "insurance").unwrap();
    assert_eq!(insurance.4, vec![insurer]);
    assert!(research.4.contains(&unconsented), "{opened:?}");
    assert_eq!(all.deny_to_allow, research.3 + insurance.3);
    assert!(!research.4.contains(&first));
    // Deterministic: the same analysis again has the same id; another window another one.
    let again = analyse(&world, open_everything(), WindowStart::Index(0), None);
    assert_eq!(again.id(), all.id());
    let later = analyse(
        &world,
        open_everything(),
        WindowStart::Index(opted_out),
        None,
    );
    assert_eq!(later.decisions, 2);
    assert_ne!(later.id(), all.id());
    // A window given by time starts at the first decision at or after it, and the window so
    // found, given by index, is the same analysis.
    let since = analyse(
        &world,
        open_everything(),
        WindowStart::Since(ms(now, 500)),
        None,
    );
    assert_eq!(since.from_index, opted_out);
    assert_eq!(since, later);
    // An end bounds it too.
    let bounded = analyse(
        &world,
        open_everything(),
        WindowStart::Index(0),
        Some(opted_out),
    );
    assert_eq!((bounded.decisions, bounded.to_index), (2, opted_out));
    // The set in force changes nothing.
    let same = analyse(
        &world,
        PolicyEngine::default_set().unwrap(),
        WindowStart::Index(0),
        None,
    );
    assert_eq!((same.decisions, same.groups.len()), (4, 0));
    // A set without the consent rule for research denies what it allowed: the rule named is
    // the one that allowed it.
    let base = PolicyEngine::default_set().unwrap();
    let forbid = PolicyEngine::new(&format!(
        "{}\n@id(\"no-research\")\n@reason(\"research is closed\")\nforbid (principal, action, resource) when {{ context.purpose in Purpose::\"research\" }};\n",
        base.text()
    ))
    .unwrap();
    let closed = analyse(&world, forbid, WindowStart::Index(0), None);
    assert_eq!(closed.allow_to_deny, 1);
    assert_eq!(closed.groups[0].rule, "no-research");
    assert_eq!(closed.groups[0].examples, vec![first]);
}

/// Issue 20: under the two-person rule a proposed set waits, the set in force keeps deciding,
/// and only an approval makes it active; replay follows the same path.
#[test]
fn a_proposed_set_takes_effect_only_when_approved() {
    let mut world = World::new();
    let open = open_everything();
    let active_before = state::active_policy_set_hash(&world.kv).unwrap();
    world.apply(Event::ProposePolicySet {
        policies: open.text().to_owned(),
        hash: open.hash(),
    });
    let pending = state::pending_policy_sets(&world.kv).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].hash, open.hash());
    assert_eq!(
        state::active_policy_set_hash(&world.kv).unwrap(),
        active_before
    );
    // Still decided by the set in force.
    let ask_9 = org("univ-a")
        .secondary(9, Purpose::Research, Level::Pseudonymized)
        .0;
    assert!(!world.decide_and_log(&ask_9, ts(NOW)).is_allow());
    let analysis = analyse(
        &world,
        open_everything(),
        policy::whatif::WindowStart::Index(0),
        None,
    );
    world.apply(Event::ApprovePolicySet {
        policies: open.text().to_owned(),
        hash: open.hash(),
        analysis: analysis.id(),
        analysis_from: analysis.from_index,
        analysis_to: analysis.to_index,
    });
    assert_eq!(
        state::active_policy_set_hash(&world.kv).unwrap(),
        Some(open.hash())
    );
    assert!(state::pending_policy_sets(&world.kv).unwrap().is_empty());
    world.engine = open;
    assert!(world.decide_and_log(&ask_9, ts(NOW)).is_allow());
    replays_identically(&world);
}

use super::*;
use crate::domain::Purpose;
use crate::domain::{
    CategoryName, Clinician, ClinicianId, ClinicianRole, Consent, ConsentId, Department, Facility,
    FacilityGroup, FacilityId, GroupId, Level, Name, OrgId, Organization, Principal,
    RecipientClass, SubjectId,
};
use crate::event::Event;
use crate::facts::Missing;
use crate::policy_set::{MAX_POLICY_TEXT, compile_unchecked, line_column, validate};
use sha2::{Digest, Sha256};

mod limits;

const MINIMAL: &str = "@id(\"stats\")\n@reason(\"always\")\npermit (principal, action == Action::\"export_statistics\", resource);\n";

fn issues(text: &str) -> Vec<ValidationIssue> {
    validate(text).expect_err("should be invalid")
}

fn now() -> Timestamp {
    Timestamp::parse("now", "2026-06-01T00:00:00Z").unwrap()
}

#[test]
fn default_set_validates_and_is_canonical() {
    if let Err(issues) = validate(DEFAULT_POLICIES) {
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        panic!("default set is invalid:\n{}", text.join("\n"));
    }
    let engine = PolicyEngine::default_set().unwrap();
    assert_eq!(engine.text(), canonicalize(DEFAULT_POLICIES));
    assert_eq!(canonicalize(engine.text()), engine.text());
    assert_eq!(engine.hash(), hash_text(engine.text()));
    assert_eq!(PolicyEngine::schema_text(), SCHEMA);
    let ids = engine.policy_ids();
    assert_eq!(ids.first(), Some(&"secondary-use.opt-in-consent"));
    assert!(ids.contains(&"break-glass.declared-emergency"));
}

#[test]
fn canonical_text_ignores_line_endings_trailing_space_and_bom() {
    let variants = [
        MINIMAL.to_owned(),
        MINIMAL.replace('\n', "\r\n"),
        format!("\u{feff}{MINIMAL}"),
        MINIMAL.replace('\n', "  \t\n"),
        format!("{MINIMAL}\n\n\n"),
        MINIMAL.trim_end().to_owned(),
    ];
    let hashes: Vec<PolicySetHash> = variants
        .iter()
        .map(|v| PolicyEngine::new(v).unwrap().hash())
        .collect();
    assert!(hashes.iter().all(|h| *h == hashes[0]));
    // Meaningful changes change the hash, even ones Cedar ignores.
    let spaced = MINIMAL.replace("permit (", "permit  (");
    assert_ne!(PolicyEngine::new(&spaced).unwrap().hash(), hashes[0]);
    assert_eq!(canonicalize(""), "");
    assert_eq!(canonicalize("\r\n \n"), "");
    assert_eq!(canonicalize("a\rb"), "a\nb\n");
}

#[test]
fn hash_is_sha256_of_canonical_text() {
    // Pinned: `printf '%s' "$MINIMAL" | sha256sum` gives this; the definition must never drift.
    let engine = PolicyEngine::new(MINIMAL).unwrap();
    assert_eq!(
        engine.hash().to_hex(),
        hex::encode(Sha256::digest(MINIMAL.as_bytes()))
    );
    assert_eq!(
        hash_text("").to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        PolicyEngine::default_set().unwrap().hash(),
        PolicyEngine::new(&DEFAULT_POLICIES.replace('\n', "\r\n"))
            .unwrap()
            .hash()
    );
}

#[test]
fn schema_type_errors_are_refused_with_location() {
    let text = "@id(\"a\")\n@reason(\"r\")\npermit (principal, action == Action::\"secondary_use\", resource)\nwhen { context.has_opt_in_consnet };\n";
    let found = issues(text);
    let issue = found
        .iter()
        .find(|i| i.message.contains("has_opt_in_consnet"))
        .unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(issue.policy.as_deref(), Some("a"));
    assert!(
        !issue.message.contains("policy0"),
        "cedar's internal ids are not shown: {issue}"
    );
    assert_eq!(issue.line, Some(4));
    assert!(issue.column.is_some());
    assert!(issue.to_string().starts_with("4:"), "{issue}");
}

#[test]
fn parse_errors_are_refused_with_location() {
    let text = format!(
        "{MINIMAL}\n@id(\"b\")\n@reason(\"r\")\npermit (principal, action, resource) when {{ 1 + }};\n"
    );
    let found = issues(&text);
    assert!(found.iter().all(|i| i.line == Some(7)), "{found:?}");
    assert!(found.iter().all(|i| !i.message.is_empty()));
}

#[test]
fn enum_typos_are_refused() {
    let text = "@id(\"a\")\n@reason(\"r\")\npermit (principal, action == Action::\"secondary_use\", resource)\nwhen { context.level == Level::\"IDENTIFED\" };\n";
    let found = issues(text);
    assert!(
        found.iter().any(|i| i.message.contains("IDENTIFED")),
        "{found:?}"
    );
}

#[test]
fn unknown_purpose_and_category_literals_are_refused() {
    let text = "@id(\"a\")\n@reason(\"r\")\npermit (principal, action == Action::\"secondary_use\", resource)\nwhen { context.purpose in Purpose::\"reserch\" || resource.category in DataCategory::\"tarot\" };\n";
    let found = issues(text);
    assert!(
        found
            .iter()
            .any(|i| i.message == "unknown purpose `reserch`" && i.line == Some(1)),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.message == "unknown data category `tarot`"),
        "{found:?}"
    );
}

#[test]
fn annotations_are_required() {
    let no_id =
        "@reason(\"r\")\npermit (principal, action == Action::\"secondary_use\", resource);\n";
    assert!(issues(no_id).iter().any(|i| i.message.contains("no `@id")));
    let no_reason =
        "@id(\"a\")\npermit (principal, action == Action::\"secondary_use\", resource);\n";
    assert!(
        issues(no_reason)
            .iter()
            .any(|i| i.message.contains("@reason"))
    );
    let bad_id = "@id(\"a b\")\n@reason(\"r\")\npermit (principal, action == Action::\"secondary_use\", resource);\n";
    assert!(
        issues(bad_id)
            .iter()
            .any(|i| i.message.contains("`@id` must be"))
    );
    let duplicate = format!("{MINIMAL}\n\n{MINIMAL}");
    let found = issues(&duplicate);
    let dup = found
        .iter()
        .find(|i| i.message.contains("another policy"))
        .unwrap();
    assert_eq!((dup.line, dup.column), (Some(6), Some(1)));
    let review = MINIMAL.replace("@reason", "@review(\"yes\")\n@reason");
    assert!(
        issues(&review)
            .iter()
            .any(|i| i.message.contains("`@review`"))
    );
}

#[test]
fn templates_empty_and_oversized_sets_are_refused() {
    let template = "@id(\"t\")\n@reason(\"r\")\npermit (principal == ?principal, action == Action::\"secondary_use\", resource);\n";
    assert!(
        issues(template)
            .iter()
            .any(|i| i.message.contains("templates"))
    );
    assert!(issues("").iter().any(|i| i.message.contains("no policies")));
    assert!(
        issues("// only a comment\n")
            .iter()
            .any(|i| i.message.contains("no policies"))
    );
    let huge = format!("{MINIMAL}//{}\n", "x".repeat(MAX_POLICY_TEXT));
    assert!(
        issues(&huge)
            .iter()
            .any(|i| i.message.contains("too large"))
    );
    assert!(matches!(
        PolicyEngine::new(template),
        Err(PolicyError::Invalid { .. })
    ));
}

fn stats_request(cohort: u64) -> Request {
    Request {
        principal: Principal::Organization(OrgId::new("gov").unwrap()),
        action: Action::ExportStatistics,
        subject: None,
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: None,
        source_department: None,
        purpose: Purpose::PublicHealth,
        level: Level::Statistical,
        cohort_size: Some(cohort),
    }
}

type Kv = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// A small directory: `gov` (public body), hospitals `hosp-a` (group `grp`, excludes psychiatry)
/// and `hosp-b` (emergency declared), doctor `dr-b` of `hosp-b`.
fn world() -> (Kv, Directory) {
    let mut kv = Kv::new();
    let events = [
        Event::UpsertOrganization(Organization {
            id: OrgId::new("gov").unwrap(),
            name: Name::new("Ministry").unwrap(),
            recipient_class: RecipientClass::PublicBody,
        }),
        Event::UpsertOrganization(Organization {
            id: OrgId::new("hosp-b").unwrap(),
            name: Name::new("Hospital B").unwrap(),
            recipient_class: RecipientClass::Hospital,
        }),
        Event::UpsertFacilityGroup(FacilityGroup {
            id: GroupId::new("grp").unwrap(),
            excluded_departments: vec![Department::new("genetics").unwrap()],
            excluded_patients: vec![],
            header: None,
        }),
        Event::UpsertFacility(Facility {
            id: FacilityId::new("hosp-a").unwrap(),
            name: Name::new("Hospital A").unwrap(),
            group: Some(GroupId::new("grp").unwrap()),
            excluded_departments: vec![Department::new("psychiatry").unwrap()],
            excluded_patients: vec![],
            recipient_class: None,
            header: None,
        }),
        Event::UpsertFacility(Facility {
            id: FacilityId::new("hosp-b").unwrap(),
            name: Name::new("Hospital B").unwrap(),
            group: None,
            excluded_departments: vec![],
            excluded_patients: vec![],
            recipient_class: None,
            header: None,
        }),
        Event::SetEmergency {
            facility: FacilityId::new("hosp-b").unwrap(),
            active: true,
        },
        Event::UpsertClinician(Clinician {
            id: ClinicianId::new("dr-b").unwrap(),
            facility: FacilityId::new("hosp-b").unwrap(),
            department: Department::new("internal").unwrap(),
            role: ClinicianRole::Doctor,
        }),
    ];
    for (i, event) in (0..).zip(&events) {
        state::apply(&mut kv, event, i).unwrap();
    }
    let directory = Directory::load(&kv).unwrap();
    (kv, directory)
}

fn decide(engine: &PolicyEngine, request: &Request) -> Decision {
    let (kv, directory) = world();
    engine.decide_kv(request, &directory, &kv, now()).unwrap()
}

#[test]
fn evaluation_errors_never_allow() {
    let text = format!(
        "{MINIMAL}\n@id(\"overflow\")\n@reason(\"r\")\nforbid (principal, action == Action::\"export_statistics\", resource)\nwhen {{ context has cohort_size && context.cohort_size * 1000000000000 > 5 }};\n"
    );
    let engine = PolicyEngine::new(&text).unwrap();
    let ok = decide(&engine, &stats_request(3));
    assert_eq!(ok.effect, Effect::Deny, "the forbid applies without error");
    assert_eq!(ok.determining_policies, vec!["overflow"]);
    let d = decide(&engine, &stats_request(100_000_000));
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert!(d.determining_policies.is_empty());
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0].starts_with("policy `overflow` failed to evaluate"),
        "{:?}",
        d.errors
    );
    assert!(d.reasons[0].contains("fail closed"));
    // Huge cohorts saturate instead of failing.
    let saturated = decide(&engine, &stats_request(u64::MAX));
    assert_eq!(saturated.effect, Effect::Deny);
}

#[test]
fn a_stale_directory_is_refused_and_a_missing_entity_fails_closed() {
    let (kv, _) = world();
    let engine = PolicyEngine::new(MINIMAL).unwrap();
    let empty = Directory::empty();
    let err = engine
        .decide_kv(&stats_request(50), &empty, &kv, now())
        .unwrap_err();
    assert!(matches!(err, StateError::StaleDirectory { .. }), "{err}");
    // Facts that name a facility the directory's entities lack make attribute access fail:
    // the decision is a deny, not an allow.
    let text = "@id(\"e\")\n@reason(\"r\")\npermit (principal, action == Action::\"export_statistics\", resource)\nwhen { context has source_facility && !context.source_facility.emergency_active };\n";
    let engine = PolicyEngine::new(text).unwrap();
    let (_, directory) = world();
    let mut facts = org_facts(&directory, &kv);
    facts.source = Some(crate::facts::FacilityFacts {
        id: FacilityId::new("ghost").unwrap(),
        group: None,
    });
    let d = engine.decide(&stats_request(50), &facts, &empty, now());
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.errors.len(), 1, "{d:?}");
}

fn org_facts(directory: &Directory, kv: &Kv) -> Facts {
    Facts::gather(directory, kv, &stats_request(1)).unwrap()
}

#[test]
fn missing_facts_deny_before_cedar() {
    let engine = PolicyEngine::new(MINIMAL).unwrap();
    let (kv, directory) = world();
    let mut facts = org_facts(&directory, &kv);
    facts
        .missing
        .push(Missing::Organization(OrgId::new("gov").unwrap()));
    let d = engine.decide(&stats_request(50), &facts, &directory, now());
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.reasons, vec!["unknown organisation `gov`"]);
    let mut unknown_category = stats_request(50);
    unknown_category.data_category = CategoryName::new("tarot").unwrap();
    let d = decide(&engine, &unknown_category);
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.reasons, vec!["unknown data category `tarot`"]);
    // The permit-everything set allows this when it reaches Cedar.
    assert!(decide(&engine, &stats_request(50)).is_allow());
}

fn clinician_request(subject: &SubjectId) -> Request {
    Request {
        principal: Principal::Clinician(ClinicianId::new("dr-b").unwrap()),
        action: Action::ViewRecord,
        subject: Some(subject.clone()),
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: Some(FacilityId::new("hosp-a").unwrap()),
        source_department: Some(Department::new("internal").unwrap()),
        purpose: Purpose::Treatment,
        level: Level::Identified,
        cohort_size: None,
    }
}

/// The directory's entities and the requests built on the decision path (both without schema
/// checks, for speed) conform to the schema.
#[test]
fn directory_entities_and_requests_conform_to_the_schema() {
    let schema = schema_for_tests();
    let (mut kv, directory) = world();
    let entities = crate::directory::entities_for_tests(&directory);
    let checked = cedar_policy::Entities::from_entities(entities, Some(&schema));
    assert!(checked.is_ok(), "{checked:?}");

    let subject = SubjectId::from_bytes([7; 32]);
    let consent = Consent {
        id: ConsentId::new("c").unwrap(),
        subject: subject.clone(),
        purposes: vec![Purpose::Treatment],
        data_categories: vec![DataCategory::General],
        recipients: Vec::new(),
        recipient_classes: vec![RecipientClass::Hospital],
        max_level: Level::Identified,
        valid_from: None,
        valid_until: None,
        granted_at: now(),
        revoked_at: None,
    };
    state::apply(&mut kv, &Event::GrantConsent(consent), 100).unwrap();
    let clinician = clinician_request(&subject);
    let mut own_facility = clinician.clone();
    own_facility.source_facility = Some(FacilityId::new("hosp-b").unwrap());
    own_facility.action = Action::EmergencyView;
    let patient = Request {
        principal: Principal::Patient(subject.clone()),
        ..clinician.clone()
    };
    let mut count = stats_request(12);
    count.subject = Some(subject.clone());
    for request in [
        stats_request(12),
        count,
        clinician.clone(),
        own_facility,
        patient,
    ] {
        let facts = Facts::gather(&directory, &kv, &request).unwrap();
        let built = build_for_tests(&request, &facts, now());
        let validated = cedar_policy::Request::new(
            built.principal().unwrap().clone(),
            built.action().unwrap().clone(),
            built.resource().unwrap().clone(),
            built.context().unwrap().clone(),
            Some(&schema),
        );
        assert!(validated.is_ok(), "{request:?}: {validated:?}");
    }
    // And the default set decides the clinician case by consent.
    let engine = PolicyEngine::default_set().unwrap();
    let d = engine
        .decide_kv(&clinician, &directory, &kv, now())
        .unwrap();
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(d.matched_consents, vec![ConsentId::new("c").unwrap()]);
}

#[test]
fn line_column_counts_characters() {
    let text = "ab\nçd\n";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 3), (2, 1));
    assert_eq!(line_column(text, 5), (2, 2));
    assert_eq!(line_column(text, 4), (2, 1), "inside a character");
    assert_eq!(line_column(text, 999), (3, 1));
}

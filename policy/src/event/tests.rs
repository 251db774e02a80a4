use super::*;
use crate::decision::PolicySetHash;
use crate::domain::{
    Action, CategoryName, ClinicianId, ClinicianRole, ConsentId, DataCategory, Department, Effect,
    GroupId, Level, Name, OrgId, Principal, RecipientClass,
};

fn ts(s: &str) -> Timestamp {
    Timestamp::parse("t", s).unwrap()
}

fn subject() -> SubjectId {
    SubjectId::from_bytes([0x5a; 32])
}

fn consent() -> Consent {
    Consent {
        id: ConsentId::new("c_1").unwrap(),
        subject: subject(),
        purposes: vec![Purpose::Research, Purpose::PublicHealth],
        data_categories: vec![DataCategory::Clinical],
        recipients: vec![OrgId::new("univ-a").unwrap()],
        recipient_classes: vec![RecipientClass::University],
        max_level: Level::Pseudonymized,
        valid_from: Some(ts("2026-01-01T00:00:00Z")),
        valid_until: None,
        granted_at: ts("2025-12-01T10:00:00Z"),
        revoked_at: None,
    }
}

fn decision_event() -> Event {
    Event::Decision {
        request: Request {
            principal: Principal::Organization(OrgId::new("univ-a").unwrap()),
            action: Action::SecondaryUse,
            subject: Some(subject()),
            data_category: CategoryName::new("diagnosis").unwrap(),
            source_facility: None,
            source_department: None,
            purpose: Purpose::Research,
            level: Level::Pseudonymized,
            cohort_size: None,
        },
        time: ts("2026-06-01T00:00:00Z"),
        decision: Decision {
            effect: Effect::Allow,
            determining_policies: vec!["secondary-use.opt-in-consent".to_owned()],
            reasons: vec!["consent".to_owned()],
            errors: vec![],
            review_required: false,
            matched_consents: vec![ConsentId::new("c_1").unwrap()],
        },
        policy_set_hash: PolicySetHash([0x11; 32]),
        subject_prev: Some(41),
        recipient: Some(Recipient {
            id: OrgId::new("univ-a").unwrap(),
            class: Some(RecipientClass::University),
        }),
        header: None,
    }
}

fn all_events() -> Vec<Event> {
    vec![
        Event::UpsertOrganization(Organization {
            id: OrgId::new("univ-a").unwrap(),
            name: Name::new("University A").unwrap(),
            recipient_class: RecipientClass::University,
        }),
        Event::UpsertFacility(Facility {
            id: FacilityId::new("hosp-a").unwrap(),
            name: Name::new("Hospital A").unwrap(),
            group: Some(GroupId::new("grp").unwrap()),
            excluded_departments: vec![
                Department::new("psychiatry").unwrap(),
                Department::new("genetics").unwrap(),
            ],
            excluded_patients: vec![subject(), SubjectId::from_bytes([1; 32])],
            recipient_class: None,
            header: None,
        }),
        Event::UpsertFacilityGroup(FacilityGroup {
            id: GroupId::new("grp").unwrap(),
            excluded_departments: vec![],
            excluded_patients: vec![subject()],
            header: None,
        }),
        Event::UpsertClinician(Clinician {
            id: ClinicianId::new("dr-a").unwrap(),
            facility: FacilityId::new("hosp-a").unwrap(),
            department: Department::new("internal").unwrap(),
            role: ClinicianRole::Doctor,
        }),
        Event::SetEmergency {
            facility: FacilityId::new("hosp-a").unwrap(),
            active: true,
        },
        Event::GrantConsent(consent()),
        Event::RevokeConsent {
            subject: subject(),
            consent_id: ConsentId::new("c_1").unwrap(),
            revoked_at: Some(ts("2026-02-01T00:00:00Z")),
        },
        Event::RecordOptOut {
            subject: subject(),
            purposes: vec![Purpose::Marketing],
        },
        Event::ActivatePolicySet {
            policies: "// p\n".to_owned(),
            hash: PolicySetHash([0x22; 32]),
        },
        decision_event(),
        Event::UpsertFacility(facility_v2()),
        Event::UpsertFacilityGroup(FacilityGroup {
            id: GroupId::new("grp").unwrap(),
            excluded_departments: vec![],
            excluded_patients: vec![subject()],
            header: Some(LeafHeader::V2),
        }),
        Event::Deactivate {
            target: Deactivation::Clinician(ClinicianId::new("dr-a").unwrap()),
        },
        Event::Deactivate {
            target: Deactivation::Facility(FacilityId::new("hosp-a").unwrap()),
        },
        Event::Deactivate {
            target: Deactivation::Organization(OrgId::new("univ-a").unwrap()),
        },
    ]
}

/// A facility event as the service now builds it: a recipient class and the second leaf format.
fn facility_v2() -> Facility {
    Facility {
        id: FacilityId::new("hosp-a").unwrap(),
        name: Name::new("Hospital A").unwrap(),
        group: Some(GroupId::new("grp").unwrap()),
        excluded_departments: vec![Department::new("psychiatry").unwrap()],
        excluded_patients: vec![subject(), SubjectId::from_bytes([1; 32])],
        recipient_class: Some(RecipientClass::CheckupCenter),
        header: Some(LeafHeader::V2),
    }
}

#[test]
fn facility_and_group_leaves_of_the_second_format_carry_no_patient_count() {
    let facility = Event::UpsertFacility(facility_v2()).public_attributes();
    assert_eq!(
        facility,
        vec![
            ("header", "2".to_owned()),
            ("facility", "hosp-a".to_owned()),
            ("group", "grp".to_owned()),
            ("excluded_departments", "psychiatry".to_owned()),
            ("recipient_class", "checkup_center".to_owned()),
        ]
    );
    let group = Event::UpsertFacilityGroup(FacilityGroup {
        id: GroupId::new("grp").unwrap(),
        excluded_departments: vec![],
        excluded_patients: vec![subject()],
        header: Some(LeafHeader::V2),
    })
    .public_attributes();
    assert_eq!(
        group,
        vec![
            ("header", "2".to_owned()),
            ("group", "grp".to_owned()),
            ("excluded_departments", "none".to_owned()),
        ]
    );
    // Events of the first format, as logged before, keep their leaves: with the count.
    let old = Event::UpsertFacility(Facility {
        header: None,
        recipient_class: None,
        ..facility_v2()
    })
    .public_attributes();
    assert_eq!(old.last(), Some(&("excluded_patients", "2".to_owned())));
}

/// Facility events logged before the recipient class and leaf format existed decode as before:
/// no class (no organisation registered) and the first format.
#[test]
fn old_facility_and_group_bodies_decode_to_the_first_format() {
    let old = r#"{"kind":"directory.facility","id":"hosp-a","name":"Hospital A","group":null,"excluded_departments":[],"excluded_patients":[]}"#;
    match Event::from_json(old.as_bytes()).unwrap() {
        Event::UpsertFacility(facility) => {
            assert_eq!(facility.recipient_class, None);
            assert_eq!(facility.header, None);
            let json = Event::UpsertFacility(facility).to_json().unwrap();
            assert_eq!(String::from_utf8(json).unwrap(), old);
        }
        other => panic!("decoded as {}", other.kind()),
    }
    let old = r#"{"kind":"directory.facility_group","id":"grp","excluded_departments":[],"excluded_patients":[]}"#;
    match Event::from_json(old.as_bytes()).unwrap() {
        Event::UpsertFacilityGroup(group) => assert_eq!(group.header, None),
        other => panic!("decoded as {}", other.kind()),
    }
    let new = Event::UpsertFacility(facility_v2()).to_json().unwrap();
    let new = String::from_utf8(new).unwrap();
    assert!(
        new.ends_with(r#""recipient_class":"checkup_center","header":"2"}"#),
        "{new}"
    );
}

#[test]
fn a_deactivation_names_kind_and_id_only() {
    let event = Event::Deactivate {
        target: Deactivation::Clinician(ClinicianId::new("dr-x").unwrap()),
    };
    assert_eq!(
        String::from_utf8(event.to_json().unwrap()).unwrap(),
        r#"{"kind":"directory.deactivate","target":{"entity":"clinician","id":"dr-x"}}"#
    );
    assert_eq!(event.kind(), "directory.deactivate");
    assert_eq!(
        event.public_attributes(),
        vec![("clinician", "dr-x".to_owned())]
    );
    assert_eq!(event.public_body(), Some(event.clone()));
    assert_eq!(event.subject(), None);
    let facility = Event::Deactivate {
        target: Deactivation::Facility(FacilityId::new("hosp-a").unwrap()),
    };
    assert_eq!(
        facility.public_attributes(),
        vec![("facility", "hosp-a".to_owned())]
    );
    let org = Event::Deactivate {
        target: Deactivation::Organization(OrgId::new("univ-a").unwrap()),
    };
    assert_eq!(org.public_attributes(), vec![("org", "univ-a".to_owned())]);
}

#[test]
fn every_event_round_trips_and_is_tagged_with_its_kind() {
    for event in all_events() {
        let json = event.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["kind"], event.kind(), "{}", event.kind());
        assert_eq!(Event::from_json(&json).unwrap(), event);
    }
}

/// The bytes in the log never change: these pin the field names and encodings.
#[test]
fn json_encoding_is_stable() {
    let grant = String::from_utf8(Event::GrantConsent(consent()).to_json().unwrap()).unwrap();
    let s = "5a".repeat(32);
    assert_eq!(
        grant,
        format!(
            r#"{{"kind":"consent.grant","id":"c_1","subject":"{s}","purposes":["research","public_health"],"data_categories":["clinical"],"recipients":["univ-a"],"recipient_classes":["university"],"max_level":"PSEUDONYMIZED","valid_from":"2026-01-01T00:00:00Z","valid_until":null,"granted_at":"2025-12-01T10:00:00Z","revoked_at":null}}"#
        )
    );
    let decision = String::from_utf8(decision_event().to_json().unwrap()).unwrap();
    let h = "11".repeat(32);
    assert_eq!(
        decision,
        format!(
            r#"{{"kind":"access.decision","request":{{"principal":{{"type":"Organization","id":"univ-a"}},"action":"secondary_use","subject":"{s}","data_category":"diagnosis","source_facility":null,"source_department":null,"purpose":"research","level":"PSEUDONYMIZED","cohort_size":null}},"time":"2026-06-01T00:00:00Z","decision":{{"effect":"ALLOW","determining_policies":["secondary-use.opt-in-consent"],"reasons":["consent"],"errors":[],"review_required":false,"matched_consents":["c_1"]}},"policy_set_hash":"{h}","subject_prev":41,"recipient":{{"id":"univ-a","class":"university"}}}}"#
        )
    );
    // An entry written before `recipient` existed still decodes.
    let old = decision.replace(r#","recipient":{"id":"univ-a","class":"university"}"#, "");
    match Event::from_json(old.as_bytes()).unwrap() {
        Event::Decision { recipient, .. } => assert_eq!(recipient, None),
        other => panic!("decoded as {}", other.kind()),
    }
}

#[test]
fn public_attributes_never_carry_patients_and_are_header_safe() {
    let hex = subject().as_str().to_owned();
    for event in all_events() {
        let attributes = event.public_attributes();
        for (name, value) in &attributes {
            assert!(!value.is_empty(), "{} {name}", event.kind());
            assert!(
                value.bytes().all(|b| b.is_ascii_graphic()),
                "{} {name}={value}",
                event.kind()
            );
            assert!(
                !value.contains(&hex),
                "{} {name} leaks the subject",
                event.kind()
            );
            assert!(!value.contains(&"01".repeat(32)), "{} {name}", event.kind());
        }
    }
    let facility = &all_events()[1];
    assert!(
        facility
            .public_attributes()
            .contains(&("excluded_patients", "2".to_owned()))
    );
    let decision = decision_event().public_attributes();
    for expected in [
        ("recipient", "univ-a"),
        ("recipient_class", "university"),
        ("purpose", "research"),
        ("level", "PSEUDONYMIZED"),
        ("decision", "ALLOW"),
        ("action", "secondary_use"),
    ] {
        assert!(
            decision.contains(&(expected.0, expected.1.to_owned())),
            "{expected:?} in {decision:?}"
        );
    }
    assert!(decision.contains(&("policy_set", "11".repeat(32))));
    assert!(
        decision
            .iter()
            .all(|(n, _)| *n != "data_category" && *n != "category")
    );
}

#[test]
fn a_second_format_decision_gives_its_category_as_a_vocabulary_word() {
    let with_header = |category: &str| {
        let mut event = decision_event();
        let Event::Decision {
            header, request, ..
        } = &mut event
        else {
            unreachable!()
        };
        *header = Some(LeafHeader::V2);
        request.data_category = CategoryName::new(category).unwrap();
        event
    };
    let known = with_header("diagnosis").public_attributes();
    let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "header",
            "action",
            "principal_type",
            "recipient",
            "recipient_class",
            "purpose",
            "level",
            "category",
            "decision",
            "policy_set",
            "review"
        ]
    );
    assert_eq!(known[0], ("header", "2".to_owned()));
    assert!(known.contains(&("category", "diagnosis".to_owned())));
    // A name akashi does not know is caller text: it never reaches the public leaf.
    let unknown = with_header("alice-hiv-test").public_attributes();
    assert!(unknown.contains(&("category", "other".to_owned())));
    assert!(unknown.iter().all(|(_, v)| !v.contains("alice")));
    // The header survives the body's JSON, so replay recomputes the same leaf.
    let event = with_header("genomic");
    let json = event.to_json().unwrap();
    assert!(
        String::from_utf8(json.clone())
            .unwrap()
            .ends_with(r#""header":"2"}"#)
    );
    assert_eq!(Event::from_json(&json).unwrap(), event);
}

#[test]
fn subjects_and_public_bodies() {
    let events = all_events();
    let with_subject: Vec<&str> = events
        .iter()
        .filter(|e| e.subject() == Some(&subject()))
        .map(Event::kind)
        .collect();
    assert_eq!(
        with_subject,
        [
            "consent.grant",
            "consent.revoke",
            "consent.opt_out",
            "access.decision"
        ]
    );
    for event in &events {
        match event.public_body() {
            None => assert!(event.subject().is_some(), "{}", event.kind()),
            Some(public) => {
                let json = String::from_utf8(public.to_json().unwrap()).unwrap();
                assert!(!json.contains(subject().as_str()), "{}", event.kind());
                assert!(!json.contains(&"01".repeat(32)), "{}", event.kind());
                assert_eq!(public.kind(), event.kind());
            }
        }
    }
}

#[test]
fn caps_are_enforced() {
    let too_big = vec![b' '; MAX_EVENT_BYTES + 1];
    assert!(matches!(
        Event::from_json(&too_big),
        Err(EventCodecError::TooLarge { .. })
    ));
    assert!(Event::from_json(b"{\"kind\":\"consent.teleport\"}").is_err());
    let opt_out = Event::RecordOptOut {
        subject: subject(),
        purposes: vec![Purpose::Marketing; MAX_PURPOSES + 1],
    };
    assert!(opt_out.check().is_err());
    let facility = Event::UpsertFacility(Facility {
        id: FacilityId::new("f").unwrap(),
        name: Name::new("F").unwrap(),
        group: None,
        excluded_departments: vec![Department::new("d").unwrap(); MAX_EXCLUDED_DEPARTMENTS + 1],
        excluded_patients: vec![],
        recipient_class: None,
        header: None,
    });
    assert!(facility.check().is_err());
    let policies = Event::ActivatePolicySet {
        policies: " ".repeat(MAX_POLICY_TEXT + 1),
        hash: PolicySetHash([0; 32]),
    };
    assert!(policies.check().is_err());
    assert!(all_events().iter().all(|e| e.check().is_ok()));
}

#[test]
fn department_names_outside_ascii_are_percent_encoded_in_leaves_and_ascii_ones_are_not() {
    let facility = |departments: &[&str]| {
        Event::UpsertFacility(Facility {
            id: FacilityId::new("hosp-a").unwrap(),
            name: Name::new("Hospital A").unwrap(),
            group: None,
            excluded_departments: departments
                .iter()
                .map(|d| Department::new(*d).unwrap())
                .collect(),
            excluded_patients: vec![],
            recipient_class: None,
            header: None,
        })
    };
    let departments = |event: &Event| {
        event
            .public_attributes()
            .into_iter()
            .find(|(name, _)| *name == "excluded_departments")
            .map(|(_, value)| value)
            .unwrap()
    };
    // What a leaf held before department names could leave ASCII is unchanged.
    assert_eq!(
        departments(&facility(&["psychiatry", "gen.etics_2:@-"])),
        "psychiatry,gen.etics_2:@-"
    );
    assert_eq!(departments(&facility(&[])), "none");
    // UTF-8 bytes are percent-encoded: printable ASCII without spaces, and one comma per item.
    let encoded = departments(&facility(&["精神科", "psychiatry"]));
    assert_eq!(encoded, "%E7%B2%BE%E7%A5%9E%E7%A7%91,psychiatry");
    assert!(encoded.bytes().all(|b| b.is_ascii_graphic()));
    let clinician = Event::UpsertClinician(Clinician {
        id: ClinicianId::new("dr-a").unwrap(),
        facility: FacilityId::new("hosp-a").unwrap(),
        department: Department::new("心療内科").unwrap(),
        role: ClinicianRole::Doctor,
    });
    assert!(clinician.public_attributes().contains(&(
        "department",
        "%E5%BF%83%E7%99%82%E5%86%85%E7%A7%91".to_owned()
    )));
    assert_eq!(leaf_text("a%b,c d"), "a%25b%2Cc%20d");
}

#[test]
fn decoding_a_logged_event_keeps_the_ids_as_logged() {
    // Logged before ids were normalised: decoding must not fold the case (a replay re-decides
    // with the bytes that were decided on).
    let logged = r#"{"kind":"directory.facility","id":"Hosp-A","name":"A","group":null,"excluded_departments":["Psychiatry"],"excluded_patients":[]}"#;
    let Event::UpsertFacility(facility) = Event::from_json(logged.as_bytes()).unwrap() else {
        panic!("not a facility");
    };
    assert_eq!(facility.id.as_str(), "Hosp-A");
    assert_eq!(facility.excluded_departments[0].as_str(), "Psychiatry");
    // The same ids from a request are normalised.
    assert_eq!(FacilityId::new("Hosp-A").unwrap().as_str(), "hosp-a");
    // Characters a logged id could never hold are still refused.
    let bad = logged.replace("Psychiatry", "a,b");
    assert!(Event::from_json(bad.as_bytes()).is_err());
}

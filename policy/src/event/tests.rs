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
        }),
        Event::UpsertFacilityGroup(FacilityGroup {
            id: GroupId::new("grp").unwrap(),
            excluded_departments: vec![],
            excluded_patients: vec![subject()],
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
    ]
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
    assert!(decision.iter().all(|(n, _)| *n != "data_category"));
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
    });
    assert!(facility.check().is_err());
    let policies = Event::ActivatePolicySet {
        policies: " ".repeat(MAX_POLICY_TEXT + 1),
        hash: PolicySetHash([0; 32]),
    };
    assert!(policies.check().is_err());
    assert!(all_events().iter().all(|e| e.check().is_ok()));
}

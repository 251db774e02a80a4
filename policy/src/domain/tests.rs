use super::*;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse("t", s).unwrap()
}

#[test]
fn identifiers_are_validated_and_errors_name_the_field() {
    assert_eq!(
        OrgId::new("acme-insurance_2.jp").unwrap().as_str(),
        "acme-insurance_2.jp"
    );
    assert_eq!(
        OrgId::new("").unwrap_err().to_string(),
        "organisation id is empty"
    );
    assert_eq!(
        FacilityId::new("a/b").unwrap_err().to_string(),
        "facility id `a/b` may only hold ASCII letters, digits and `._:@-`"
    );
    assert_eq!(
        Department::new("x".repeat(MAX_ID_LEN + 1)).unwrap_err(),
        DomainError::TooLong {
            field: "department",
            len: MAX_ID_LEN + 1,
            max: MAX_ID_LEN
        }
    );
    assert!(ClinicianId::new("dr a").is_err());
    assert!(
        ConsentId::new("c,1").is_err(),
        "commas would break public attribute lists"
    );
    assert!(GroupId::new("grp\n").is_err());
    let err = CategoryName::new("bad\u{7}").unwrap_err().to_string();
    assert!(err.contains("`bad\\u{7}`"), "{err}");
    assert_eq!(ConsentId::from_random_bytes([0xab; 16]).as_str().len(), 34);
    assert_eq!(
        OrgId::of_facility(&FacilityId::new("h1").unwrap()).as_str(),
        "h1"
    );
}

#[test]
fn subject_pseudonyms_are_64_lowercase_hex_and_not_leaked_by_debug() {
    let hex = "0123456789abcdef".repeat(4);
    let subject = SubjectId::new(hex.clone()).unwrap();
    assert_eq!(subject.as_str(), hex);
    assert_eq!(format!("{subject:?}"), "SubjectId(01234567…)");
    assert_eq!(
        SubjectId::new(hex.to_uppercase()),
        Err(DomainError::BadSubject)
    );
    assert_eq!(SubjectId::new(&hex[1..]), Err(DomainError::BadSubject));
    assert_eq!(
        SubjectId::new(format!("{}g", &hex[1..])),
        Err(DomainError::BadSubject)
    );
    assert!(!DomainError::BadSubject.to_string().contains("0123"));
    assert_eq!(SubjectId::from_bytes([0xff; 32]).as_str(), "f".repeat(64));
}

#[test]
fn names_reject_control_characters_and_empty() {
    assert!(Name::new("St. Luke's Hospital 聖路加").is_ok());
    assert!(Name::new("  ").is_err());
    assert!(Name::new("a\tb").is_err());
    assert!(Name::new("x".repeat(MAX_NAME_LEN + 1)).is_err());
}

#[test]
fn vocabularies_round_trip_and_list_what_is_expected() {
    for p in Purpose::ALL {
        assert_eq!(p.as_str().parse::<Purpose>().unwrap(), *p);
    }
    for c in DataCategory::ALL {
        assert_eq!(c.as_str().parse::<DataCategory>().unwrap(), *c);
    }
    for l in Level::ALL {
        assert_eq!(l.as_str().parse::<Level>().unwrap(), *l);
    }
    assert_eq!(Purpose::ALL.len(), 10);
    assert_eq!(RecipientClass::ALL.len(), 8);
    assert_eq!(Action::ALL.len(), 4);
    assert_eq!(
        "identified".parse::<Level>().unwrap_err().to_string(),
        "unknown level `identified` (expected one of: IDENTIFIED, PSEUDONYMIZED, ANONYMIZED, STATISTICAL)"
    );
    assert!(
        "view"
            .parse::<Action>()
            .unwrap_err()
            .to_string()
            .starts_with("unknown action `view`")
    );
}

#[test]
fn purpose_hierarchy() {
    assert!(Purpose::ClinicalTrial.is_a(Purpose::Research));
    assert!(Purpose::Emergency.is_a(Purpose::Treatment));
    assert!(Purpose::Research.is_a(Purpose::Research));
    assert!(!Purpose::Research.is_a(Purpose::ClinicalTrial));
    assert!(!Purpose::Treatment.is_a(Purpose::Emergency));
    assert!(!Purpose::Marketing.is_a(Purpose::Research));
}

#[test]
fn category_hierarchy_is_a_forest_with_sensitive_roots() {
    assert!(DataCategory::Diagnosis.is_a(DataCategory::Clinical));
    assert!(DataCategory::Diagnosis.is_a(DataCategory::General));
    assert!(DataCategory::CheckupResult.is_a(DataCategory::Checkup));
    assert!(!DataCategory::Genomic.is_a(DataCategory::General));
    assert!(!DataCategory::MentalHealth.is_a(DataCategory::General));
    assert!(!DataCategory::Clinical.is_a(DataCategory::Diagnosis));
    for c in DataCategory::ALL {
        // Every chain ends at a root within a few steps (no cycles).
        let depth = std::iter::successors(Some(*c), |c| c.parent()).count();
        assert!(depth <= 3, "{c}");
    }
}

#[test]
fn level_order_by_identifiability() {
    assert!(Level::Identified.allows(Level::Statistical));
    assert!(Level::Pseudonymized.allows(Level::Pseudonymized));
    assert!(Level::Pseudonymized.allows(Level::Anonymized));
    assert!(!Level::Pseudonymized.allows(Level::Identified));
    assert!(!Level::Statistical.allows(Level::Anonymized));
    assert!(Level::Identified.identifiability() > Level::Pseudonymized.identifiability());
}

#[test]
fn timestamps_parse_rfc3339_store_utc_and_bound_years() {
    let t = ts("2026-04-01T18:30:00+09:00");
    assert_eq!(t.to_rfc3339(), "2026-04-01T09:30:00Z");
    assert_eq!(t, ts("2026-04-01T09:30:00Z"));
    assert_eq!(t.day(), "2026-04-01");
    assert_eq!(
        ts("2026-04-01T09:30:00.250Z").to_rfc3339(),
        "2026-04-01T09:30:00.25Z"
    );
    assert_eq!(Timestamp::from_unix_millis(t.unix_millis()).unwrap(), t);
    assert_eq!(
        Timestamp::from_unix_seconds(0).unwrap().to_rfc3339(),
        "1970-01-01T00:00:00Z"
    );
    assert!(Timestamp::from_unix_millis(-1).is_none());
    assert!(Timestamp::from_unix_millis(i64::MAX).is_none());
    let err = Timestamp::parse("valid_from", "2026-04-01").unwrap_err();
    assert_eq!(
        err.to_string(),
        "valid_from `2026-04-01` is not an RFC 3339 timestamp between years 1970 and 9999"
    );
    assert!(Timestamp::parse("t", "1969-12-31T23:59:59Z").is_err());
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, "\"2026-04-01T09:30:00Z\"");
    assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
}

#[test]
fn timestamps_past_year_9999_in_utc_are_refused_not_a_panic() {
    // Year 9999 as written, year 10000 once in UTC: `to_offset` would panic here.
    for (field, value) in [
        ("valid_until", "9999-12-31T23:59:59-00:01"),
        ("valid_from", "9999-12-31T23:00:00-23:59"),
    ] {
        let err = Timestamp::parse(field, value).unwrap_err();
        assert!(
            matches!(&err, DomainError::BadTimestamp { field: f, value: v } if *f == field && v == value),
            "{err:?}"
        );
    }
    // Year 1970 as written, 1969 in UTC; and the edges that stay inside.
    assert!(matches!(
        Timestamp::parse("t", "1970-01-01T00:00:00+00:01"),
        Err(DomainError::BadTimestamp { .. })
    ));
    assert_eq!(
        ts("9999-12-31T23:59:59+01:00").to_rfc3339(),
        "9999-12-31T22:59:59Z"
    );
    assert_eq!(
        ts("1970-01-01T00:00:00-01:00").to_rfc3339(),
        "1970-01-01T01:00:00Z"
    );
    // The same text in a log body is refused by the JSON reader, not a panic.
    assert!(serde_json::from_str::<Timestamp>("\"9999-12-31T23:59:59-00:01\"").is_err());
}

fn consent() -> Consent {
    Consent {
        id: ConsentId::new("c1").unwrap(),
        subject: SubjectId::from_bytes([1; 32]),
        purposes: vec![Purpose::Research],
        data_categories: vec![DataCategory::Clinical],
        recipients: vec![OrgId::new("univ-a").unwrap()],
        recipient_classes: vec![RecipientClass::Pharma],
        max_level: Level::Pseudonymized,
        valid_from: Some(ts("2026-01-01T00:00:00Z")),
        valid_until: Some(ts("2027-01-01T00:00:00Z")),
        granted_at: ts("2025-12-01T00:00:00Z"),
        revoked_at: None,
    }
}

#[test]
fn validity_is_half_open() {
    let c = consent();
    let from = ts("2026-01-01T00:00:00Z");
    let until = ts("2027-01-01T00:00:00Z");
    let just = |t: Timestamp, d: i64| Timestamp::from_unix_millis(t.unix_millis() + d).unwrap();
    assert!(!c.in_force_at(just(from, -1)));
    assert!(c.in_force_at(from));
    assert!(c.in_force_at(just(until, -1)));
    assert!(!c.in_force_at(until));
    let open = Consent {
        valid_from: None,
        valid_until: None,
        ..consent()
    };
    assert!(open.in_force_at(Timestamp::from_unix_seconds(0).unwrap()));
    assert!(open.in_force_at(ts("9999-12-31T23:59:59Z")));
}

#[test]
fn consent_coverage() {
    let c = consent();
    let now = ts("2026-06-01T00:00:00Z");
    let univ_a = OrgId::new("univ-a").unwrap();
    let other = OrgId::new("pharma-y").unwrap();
    let covers = |purpose, category, level, org: &OrgId, class| {
        c.covers(purpose, category, level, org, class, now)
    };
    use DataCategory::*;
    use Purpose::*;
    assert!(covers(
        Research,
        Diagnosis,
        Level::Pseudonymized,
        &univ_a,
        None
    ));
    assert!(covers(
        ClinicalTrial,
        LabResult,
        Level::Anonymized,
        &univ_a,
        None
    ));
    assert!(!covers(
        Research,
        Diagnosis,
        Level::Identified,
        &univ_a,
        None
    ));
    assert!(!covers(
        Research,
        Claims,
        Level::Pseudonymized,
        &univ_a,
        None
    ));
    assert!(!covers(
        PublicHealth,
        Diagnosis,
        Level::Pseudonymized,
        &univ_a,
        None
    ));
    assert!(covers(
        Research,
        Diagnosis,
        Level::Pseudonymized,
        &other,
        Some(RecipientClass::Pharma)
    ));
    assert!(!covers(
        Research,
        Diagnosis,
        Level::Pseudonymized,
        &other,
        Some(RecipientClass::University)
    ));
    assert!(!covers(
        Research,
        Diagnosis,
        Level::Pseudonymized,
        &other,
        None
    ));
    assert!(!c.covers(
        Research,
        Diagnosis,
        Level::Pseudonymized,
        &univ_a,
        None,
        ts("2027-01-01T00:00:00Z")
    ));
}

#[test]
fn consent_shape_checks() {
    assert!(consent().check().is_ok());
    let no_purpose = Consent {
        purposes: vec![],
        ..consent()
    };
    assert_eq!(
        no_purpose.check().unwrap_err().to_string(),
        "purposes must not be empty"
    );
    let nobody = Consent {
        recipients: vec![],
        recipient_classes: vec![],
        ..consent()
    };
    assert_eq!(nobody.check(), Err(DomainError::NoRecipients));
    let backwards = Consent {
        valid_until: consent().valid_from,
        ..consent()
    };
    assert_eq!(backwards.check(), Err(DomainError::EmptyValidity));
    let revoked = Consent {
        revoked_at: Some(ts("2026-02-01T00:00:00Z")),
        ..consent()
    };
    assert_eq!(revoked.check(), Err(DomainError::GrantedRevoked));
    let many = Consent {
        recipients: (0..=MAX_RECIPIENTS)
            .map(|i| OrgId::new(format!("o{i}")).unwrap())
            .collect(),
        ..consent()
    };
    assert!(matches!(
        many.check(),
        Err(DomainError::TooMany {
            field: "recipients",
            ..
        })
    ));
}

#[test]
fn principals_parse_and_serialise_as_type_and_id() {
    let p = Principal::parse("Organization", "univ-a").unwrap();
    assert_eq!(p, Principal::Organization(OrgId::new("univ-a").unwrap()));
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"type":"Organization","id":"univ-a"}"#
    );
    assert_eq!(p.principal_type(), PrincipalType::Organization);
    assert!(Principal::parse("Robot", "r2").is_err());
    assert_eq!(
        Principal::parse("Patient", "alice").unwrap_err(),
        DomainError::BadSubject,
        "patients are named by their pseudonym only"
    );
    let back: Principal = serde_json::from_str(r#"{"type":"Clinician","id":"dr-a"}"#).unwrap();
    assert_eq!(
        back,
        Principal::Clinician(ClinicianId::new("dr-a").unwrap())
    );
    assert!(serde_json::from_str::<Principal>(r#"{"type":"Clinician","id":"dr a"}"#).is_err());
}

#[test]
fn identifiers_from_outside_are_normalised_nfc_then_ascii_lowercase() {
    assert_eq!(
        Department::new("Psychiatry").unwrap().as_str(),
        "psychiatry"
    );
    assert_eq!(
        Department::new("Psychiatry").unwrap(),
        "psychiatry".parse::<Department>().unwrap()
    );
    assert_eq!(OrgId::new("Univ-A").unwrap().as_str(), "univ-a");
    assert_eq!(ClinicianId::new("DR.Sato").unwrap().as_str(), "dr.sato");
    assert_eq!(
        ConsentId::try_from("C_AB".to_owned()).unwrap().as_str(),
        "c_ab"
    );
    // NFC: `ガ` written as `カ` + combining voiced mark is the same department as `ガ`.
    let decomposed = "\u{30ab}\u{3099}ン科";
    assert_eq!(
        Department::new(decomposed).unwrap().as_str(),
        "\u{30ac}ン科"
    );
    // Only ASCII letters are folded: Latin letters outside ASCII keep their case.
    assert_eq!(Department::new("Ärzte").unwrap().as_str(), "Ärzte");
    assert_eq!(normalize_id("ÄB\u{301}"), "Äb\u{301}");
}

#[test]
fn department_names_may_be_written_in_any_script_but_other_ids_stay_ascii() {
    for name in [
        "精神科",
        "心療内科",
        "内分泌・代謝内科",
        "リハビリテーション科",
        "psychiatry",
    ] {
        assert_eq!(Department::new(name).unwrap().as_str(), name);
    }
    for bad in ["精神 科", "精神\u{3000}科", "a/b", "a,b", "a%b", "科\n"] {
        assert!(
            matches!(Department::new(bad), Err(DomainError::BadDepartment { .. })),
            "{bad:?}"
        );
    }
    // Echoed readably, not as escapes.
    let err = Department::new("精神/科").unwrap_err().to_string();
    assert!(err.contains("`精神/科`"), "{err}");
    assert!(matches!(
        FacilityId::new("精神科"),
        Err(DomainError::BadIdentifier { .. })
    ));
    // The byte cap counts UTF-8 bytes: 22 three-byte characters are 66 bytes.
    assert!(matches!(
        Department::new("科".repeat(22)),
        Err(DomainError::TooLong { len: 66, .. })
    ));
}

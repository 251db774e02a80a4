use policy::domain::{ConsentId, Level, OrgId, Purpose, SubjectId, Timestamp};

use super::*;

fn at(text: &str) -> Timestamp {
    Timestamp::parse("t", text).unwrap()
}

fn consent(valid_from: Option<&str>, valid_until: Option<&str>) -> Consent {
    Consent {
        id: ConsentId::new("c_1").unwrap(),
        subject: SubjectId::from_bytes([7; 32]),
        purposes: vec![Purpose::Research],
        data_categories: vec![policy::domain::DataCategory::Clinical],
        recipients: vec![OrgId::new("uni").unwrap()],
        recipient_classes: vec![],
        max_level: Level::Identified,
        valid_from: valid_from.map(at),
        valid_until: valid_until.map(at),
        granted_at: at("2026-01-01T00:00:00Z"),
        revoked_at: None,
    }
}

#[test]
fn a_consent_is_revoked_before_it_is_expired_and_expires_at_valid_until() {
    let now = at("2026-06-01T00:00:00Z");
    let ended = consent(None, Some("2026-06-01T00:00:00Z"));
    assert_eq!(ConsentStatus::of(&ended, None, now), ConsentStatus::Expired);
    assert_eq!(
        ConsentStatus::of(&ended, Some(9), now),
        ConsentStatus::Revoked
    );
    let open = consent(None, None);
    assert_eq!(ConsentStatus::of(&open, None, now), ConsentStatus::Active);
    let later = consent(Some("2027-01-01T00:00:00Z"), None);
    assert_eq!(ConsentStatus::of(&later, None, now), ConsentStatus::Active);
    let shown = to_pb(&later, ConsentStatus::Active, Entries::default(), now);
    assert_eq!(shown.status, "active");
    assert!(!shown.in_force, "not yet in force");
}

#[test]
fn grants_that_could_never_be_in_force_name_valid_until() {
    let now = at("2026-06-01T00:00:00Z");
    assert!(check_validity(&consent(None, None), now).is_ok());
    assert!(check_validity(&consent(None, Some("2026-06-01T00:00:01Z")), now).is_ok());
    for (from, until, problem) in [
        (
            None,
            "2026-06-01T00:00:00Z",
            "is not after the server's clock",
        ),
        (
            None,
            "2020-01-01T00:00:00Z",
            "is not after the server's clock",
        ),
        (
            Some("2030-01-01T00:00:00Z"),
            "2029-01-01T00:00:00Z",
            "must be after `valid_from`",
        ),
    ] {
        let err = check_validity(&consent(from, Some(until)), now).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "valid_until",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(problem), "{err}");
    }
}

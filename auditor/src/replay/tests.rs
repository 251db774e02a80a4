use ledger::{
    entry::{AttrName, AttrValue, Day, EntryKind, Leaf},
    hash::Hash,
};
use policy::domain::Name;
use policy::{
    domain::{OrgId, Organization, RecipientClass},
    event::Event,
};

use super::{header_mismatch, leaf_header};
use crate::report::Finding;

fn org_event() -> Event {
    Event::UpsertOrganization(Organization {
        id: OrgId::new("univ-a").unwrap(),
        name: Name::new("University A").unwrap(),
        recipient_class: RecipientClass::University,
    })
}

fn leaf(kind: &str, attributes: &[(&str, &str)]) -> Leaf {
    Leaf::new(
        EntryKind::new(kind).unwrap(),
        Day::parse("2026-06-01").unwrap(),
        attributes
            .iter()
            .map(|(n, v)| (AttrName::new(n).unwrap(), AttrValue::new(v).unwrap()))
            .collect(),
        Hash([1; 32]),
    )
    .unwrap()
}

#[test]
fn header_is_the_events_kind_and_public_attributes_verbatim() {
    let (kind, attributes) = leaf_header(&org_event());
    assert_eq!(kind, "directory.organization");
    assert_eq!(
        attributes,
        vec![
            ("org", "univ-a".to_owned()),
            ("recipient_class", "university".to_owned())
        ]
    );
    let (kind, _) = leaf_header(&Event::RecordOptOut {
        subject: policy::domain::SubjectId::from_bytes([3; 32]),
        purposes: Vec::new(),
    });
    assert_eq!(kind, "consent.opt_out");
    // Every header the mapping produces is one the ledger accepts.
    EntryKind::new(kind).unwrap();
}

#[test]
fn matching_header_has_no_finding() {
    let good = leaf(
        "directory.organization",
        &[("org", "univ-a"), ("recipient_class", "university")],
    );
    assert_eq!(header_mismatch(4, &good, &org_event()), None);
}

#[test]
fn each_kind_of_header_difference_is_named() {
    let event = org_event();
    let cases = [
        (
            leaf(
                "directory.clinician",
                &[("org", "univ-a"), ("recipient_class", "university")],
            ),
            "kind",
            Some("directory.clinician"),
            Some("directory.organization"),
        ),
        (
            leaf(
                "directory.organization",
                &[("org", "univ-b"), ("recipient_class", "university")],
            ),
            "org",
            Some("univ-b"),
            Some("univ-a"),
        ),
        (
            leaf("directory.organization", &[("org", "univ-a")]),
            "recipient_class",
            None,
            Some("university"),
        ),
        (
            leaf(
                "directory.organization",
                &[
                    ("org", "univ-a"),
                    ("recipient_class", "university"),
                    ("extra", "1"),
                ],
            ),
            "extra",
            Some("1"),
            None,
        ),
        (
            leaf(
                "directory.organization",
                &[("recipient_class", "university"), ("org", "univ-a")],
            ),
            "attribute order",
            None,
            None,
        ),
    ];
    for (leaf, field, in_leaf, in_body) in cases {
        assert_eq!(
            header_mismatch(9, &leaf, &event),
            Some(Finding::HeaderMismatch {
                index: 9,
                field: field.to_owned(),
                leaf: in_leaf.map(str::to_owned),
                body: in_body.map(str::to_owned),
            }),
            "{field}"
        );
    }
}

#[test]
fn a_body_timed_on_another_day_than_its_leaf_is_named() {
    let revoke = |at: &str| Event::RevokeConsent {
        subject: policy::domain::SubjectId::from_bytes([3; 32]),
        consent_id: policy::domain::ConsentId::new("c_1").unwrap(),
        revoked_at: Some(policy::domain::Timestamp::parse("revoked_at", at).unwrap()),
    };
    let (kind, _) = leaf_header(&revoke("2026-06-01T12:00:00Z"));
    // The test leaf is dated 2026-06-01.
    let leaf = leaf(kind, &[]);
    assert_eq!(
        header_mismatch(5, &leaf, &revoke("2026-06-01T23:59:59Z")),
        None
    );
    assert_eq!(
        header_mismatch(5, &leaf, &revoke("2026-05-31T23:59:00Z")),
        Some(Finding::HeaderMismatch {
            index: 5,
            field: "day".to_owned(),
            leaf: Some("2026-06-01".to_owned()),
            body: Some("2026-05-31".to_owned()),
        })
    );
}

#[test]
fn merged_reports_add_counts_and_keep_log_order() {
    use crate::report::Report;
    let entries = Report {
        tree_size: 10,
        entries: 10,
        checkpoints_checked: 3,
        findings: vec![
            Finding::BadCommitment { index: 2 },
            Finding::CheckpointMismatch {
                size: 6,
                signed_root: "a".to_owned(),
                recomputed_root: "b".to_owned(),
            },
            Finding::CheckpointBeyondLog {
                size: 12,
                entries: 10,
            },
        ],
        ..Report::default()
    };
    let decisions = Report {
        events_applied: 9,
        decisions_checked: 4,
        decisions_matching: 3,
        findings: vec![
            Finding::EventRejected {
                index: 2,
                error: "x".to_owned(),
            },
            Finding::EventRejected {
                index: 7,
                error: "y".to_owned(),
            },
        ],
        ..Report::default()
    };
    let merged = super::merge(entries, decisions);
    assert_eq!(
        (
            merged.entries,
            merged.checkpoints_checked,
            merged.events_applied
        ),
        (10, 3, 9)
    );
    assert_eq!(
        (merged.decisions_checked, merged.decisions_matching),
        (4, 3)
    );
    let positions: Vec<u64> = merged.findings.iter().map(Finding::log_position).collect();
    assert_eq!(positions, vec![2, 2, 5, 7, u64::MAX]);
    assert!(matches!(merged.findings[0], Finding::BadCommitment { .. }));
}

/// A facility body as the server logged it before leaf headers had versions, and the header it
/// wrote then (with the count of excluded patients), and the same for the second format.
const OLD_FACILITY: &str = r#"{"kind":"directory.facility","id":"hosp-a","name":"Hospital A","group":null,"excluded_departments":["psychiatry"],"excluded_patients":["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"]}"#;
const NEW_FACILITY: &str = r#"{"kind":"directory.facility","id":"hosp-a","name":"Hospital A","group":null,"excluded_departments":["psychiatry"],"excluded_patients":["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],"recipient_class":"hospital","header":"2"}"#;

#[test]
fn facility_leaves_of_both_formats_verify_against_their_bodies() {
    let old = Event::from_json(OLD_FACILITY.as_bytes()).unwrap();
    let old_leaf = leaf(
        "directory.facility",
        &[
            ("facility", "hosp-a"),
            ("group", "none"),
            ("excluded_departments", "psychiatry"),
            ("excluded_patients", "1"),
        ],
    );
    assert_eq!(header_mismatch(3, &old_leaf, &old), None);
    let new = Event::from_json(NEW_FACILITY.as_bytes()).unwrap();
    let new_leaf = leaf(
        "directory.facility",
        &[
            ("header", "2"),
            ("facility", "hosp-a"),
            ("group", "none"),
            ("excluded_departments", "psychiatry"),
            ("recipient_class", "hospital"),
        ],
    );
    assert_eq!(header_mismatch(4, &new_leaf, &new), None);
    // Each body binds its own format: an old leaf over a new body, or a count added to a new
    // leaf, is a finding.
    assert!(matches!(
        header_mismatch(4, &old_leaf, &new),
        Some(Finding::HeaderMismatch { .. })
    ));
    let counted = leaf(
        "directory.facility",
        &[
            ("header", "2"),
            ("facility", "hosp-a"),
            ("group", "none"),
            ("excluded_departments", "psychiatry"),
            ("recipient_class", "hospital"),
            ("excluded_patients", "1"),
        ],
    );
    assert_eq!(
        header_mismatch(4, &counted, &new),
        Some(Finding::HeaderMismatch {
            index: 4,
            field: "excluded_patients".to_owned(),
            leaf: Some("1".to_owned()),
            body: None,
        })
    );
}

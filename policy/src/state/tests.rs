use super::*;
use crate::decision::{Decision, Request};
use crate::domain::{
    Action, CategoryName, ClinicianRole, DataCategory, Level, Principal, RecipientClass,
};
use crate::engine::PolicyEngine;

type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse("t", s).unwrap()
}

fn p(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

fn org(id: &str) -> Event {
    Event::UpsertOrganization(Organization {
        id: OrgId::new(id).unwrap(),
        name: Name::new(id).unwrap(),
        recipient_class: RecipientClass::University,
    })
}

fn facility(id: &str, group: Option<&str>, patients: &[SubjectId]) -> Event {
    Event::UpsertFacility(Facility {
        id: FacilityId::new(id).unwrap(),
        name: Name::new(id).unwrap(),
        group: group.map(|g| GroupId::new(g).unwrap()),
        excluded_departments: vec![Department::new("psychiatry").unwrap()],
        excluded_patients: patients.to_vec(),
        recipient_class: None,
        header: None,
    })
}

fn group(id: &str, patients: &[SubjectId]) -> Event {
    Event::UpsertFacilityGroup(FacilityGroup {
        id: GroupId::new(id).unwrap(),
        excluded_departments: vec![],
        excluded_patients: patients.to_vec(),
        header: None,
    })
}

fn consent(id: &str, subject: SubjectId, until: Option<&str>) -> Consent {
    Consent {
        id: ConsentId::new(id).unwrap(),
        subject,
        purposes: vec![Purpose::Research],
        data_categories: vec![DataCategory::Clinical],
        recipients: vec![OrgId::new("univ-a").unwrap()],
        recipient_classes: vec![],
        max_level: Level::Pseudonymized,
        valid_from: None,
        valid_until: until.map(ts),
        granted_at: ts("2026-01-01T00:00:00Z"),
        revoked_at: None,
    }
}

/// Applies events at indices 0, 1, ... and returns the next index.
fn apply_all(kv: &mut Kv, events: &[Event]) -> u64 {
    let start = last_applied(kv).unwrap().map_or(0, |l| l + 1);
    for (i, event) in (start..).zip(events) {
        apply(kv, event, i).unwrap_or_else(|e| panic!("event {i} ({}): {e}", event.kind()));
    }
    start + events.len() as u64
}

#[test]
fn grants_revocations_and_opt_outs_round_trip_through_consent_state() {
    let mut kv = Kv::new();
    apply_all(
        &mut kv,
        &[
            org("univ-a"),
            Event::GrantConsent(consent("c1", p(1), None)),
            Event::GrantConsent(consent("c2", p(1), Some("2026-03-01T00:00:00Z"))),
            Event::GrantConsent(consent("c3", p(2), None)),
            Event::RecordOptOut {
                subject: p(1),
                purposes: vec![Purpose::Marketing, Purpose::Research, Purpose::Marketing],
            },
        ],
    );
    let state = consent_state(&kv, &p(1)).unwrap();
    let ids: Vec<&str> = state.consents.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert_eq!(state.opt_outs, vec![Purpose::Research, Purpose::Marketing]);
    assert!(state.opted_out_of(Purpose::ClinicalTrial));
    assert!(!state.opted_out_of(Purpose::Treatment));
    assert_eq!(state.active_at(ts("2026-06-01T00:00:00Z")).count(), 1);
    assert_eq!(state.active_at(ts("2026-02-01T00:00:00Z")).count(), 2);
    assert_eq!(consent_state(&kv, &p(3)).unwrap(), SubjectState::default());

    let next = apply_all(
        &mut kv,
        &[Event::RevokeConsent {
            subject: p(1),
            consent_id: ConsentId::new("c1").unwrap(),
            revoked_at: None,
        }],
    );
    let record = consent_record(&kv, &ConsentId::new("c1").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(record.subject, p(1));
    assert_eq!((record.granted, record.revoked), (1, Some(next - 1)));
    let ids: Vec<String> = consent_state(&kv, &p(1))
        .unwrap()
        .consents
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(ids, ["c2"]);

    // Withdrawing every opt-out and the last consent leaves no record at all.
    apply_all(
        &mut kv,
        &[
            Event::RecordOptOut {
                subject: p(1),
                purposes: vec![],
            },
            Event::RevokeConsent {
                subject: p(1),
                consent_id: ConsentId::new("c2").unwrap(),
                revoked_at: None,
            },
        ],
    );
    assert!(
        KvRead::get(&kv, &subject_key(&p(1), b"s"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_grant_drops_consents_that_expired_before_it() {
    let mut kv = Kv::new();
    let mut late = consent("c2", p(1), None);
    late.granted_at = ts("2026-04-01T00:00:00Z");
    apply_all(
        &mut kv,
        &[
            org("univ-a"),
            Event::GrantConsent(consent("c1", p(1), Some("2026-03-01T00:00:00Z"))),
            Event::GrantConsent(late),
        ],
    );
    let ids: Vec<String> = consent_state(&kv, &p(1))
        .unwrap()
        .consents
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(ids, ["c2"]);
    // It can still be revoked (the patient may not know it expired).
    let revoke = Event::RevokeConsent {
        subject: p(1),
        consent_id: ConsentId::new("c1").unwrap(),
        revoked_at: None,
    };
    assert!(check(&kv, &revoke, 3).is_ok());
}

#[test]
fn grant_and_revoke_are_checked() {
    let mut kv = Kv::new();
    apply_all(
        &mut kv,
        &[
            org("univ-a"),
            Event::GrantConsent(consent("c1", p(1), None)),
        ],
    );
    let dup = Event::GrantConsent(consent("c1", p(2), None));
    assert!(matches!(
        check(&kv, &dup, 9),
        Err(ApplyError::DuplicateConsent { .. })
    ));
    let mut unknown_recipient = consent("c9", p(1), None);
    unknown_recipient.recipients = vec![OrgId::new("nobody").unwrap()];
    let err = check(&kv, &Event::GrantConsent(unknown_recipient), 9).unwrap_err();
    assert_eq!(err.to_string(), "unknown organisation `nobody`");
    let mut bad = consent("c9", p(1), None);
    bad.purposes.clear();
    assert!(matches!(
        check(&kv, &Event::GrantConsent(bad), 9),
        Err(ApplyError::Invalid(_))
    ));
    let revoke = |subject, id: &str| Event::RevokeConsent {
        subject,
        consent_id: ConsentId::new(id).unwrap(),
        revoked_at: None,
    };
    let err = check(&kv, &revoke(p(1), "c0"), 9).unwrap_err();
    assert_eq!(err.to_string(), "unknown consent `c0`");
    let err = check(&kv, &revoke(p(2), "c1"), 9).unwrap_err();
    assert_eq!(err.to_string(), "consent `c1` belongs to another patient");
    assert!(!err.to_string().contains(p(1).as_str()));
    apply(&mut kv, &revoke(p(1), "c1"), 2).unwrap();
    assert!(matches!(
        apply(&mut kv, &revoke(p(1), "c1"), 3),
        Err(ApplyError::AlreadyRevoked { .. })
    ));
    // A failed apply writes nothing.
    assert_eq!(last_applied(&kv).unwrap(), Some(2));
}

#[test]
fn too_many_consents_are_refused() {
    let mut kv = Kv::new();
    let mut events = vec![org("univ-a")];
    events.extend(
        (0..MAX_CONSENTS_PER_SUBJECT)
            .map(|i| Event::GrantConsent(consent(&format!("c{i}"), p(1), None))),
    );
    let next = apply_all(&mut kv, &events);
    let one_more = Event::GrantConsent(consent("last", p(1), None));
    assert!(matches!(
        check(&kv, &one_more, next),
        Err(ApplyError::TooManyConsents { .. })
    ));
}

#[test]
fn events_apply_once_in_index_order() {
    let mut kv = Kv::new();
    apply(&mut kv, &org("a"), 5).unwrap();
    let err = apply(&mut kv, &org("b"), 5).unwrap_err();
    assert_eq!(err.to_string(), "event at index 5 applied after index 5");
    assert!(apply(&mut kv, &org("b"), 4).is_err());
    apply(&mut kv, &org("b"), 7).unwrap();
    assert_eq!(last_applied(&kv).unwrap(), Some(7));
}

#[test]
fn directory_references_must_exist() {
    let mut kv = Kv::new();
    let err = check(&kv, &facility("h", Some("g"), &[]), 0).unwrap_err();
    assert_eq!(err.to_string(), "unknown facility group `g`");
    let clinician = Event::UpsertClinician(Clinician {
        id: ClinicianId::new("dr").unwrap(),
        facility: FacilityId::new("h").unwrap(),
        department: Department::new("er").unwrap(),
        role: ClinicianRole::Doctor,
    });
    assert_eq!(
        check(&kv, &clinician, 0).unwrap_err().to_string(),
        "unknown facility `h`"
    );
    let emergency = Event::SetEmergency {
        facility: FacilityId::new("h").unwrap(),
        active: true,
    };
    assert!(matches!(
        check(&kv, &emergency, 0),
        Err(ApplyError::UnknownFacility { .. })
    ));
    apply_all(
        &mut kv,
        &[
            group("g", &[]),
            facility("h", Some("g"), &[]),
            clinician,
            emergency,
        ],
    );
    let state = super::facility(&kv, &FacilityId::new("h").unwrap())
        .unwrap()
        .unwrap();
    assert!(state.emergency_active);
    // Upserting the facility keeps the emergency in force.
    apply_all(&mut kv, &[facility("h", None, &[])]);
    let state = super::facility(&kv, &FacilityId::new("h").unwrap())
        .unwrap()
        .unwrap();
    assert!(state.emergency_active);
    assert_eq!(state.facility.group, None);
    assert!(
        super::clinician(&kv, &ClinicianId::new("dr").unwrap())
            .unwrap()
            .is_some()
    );
}

#[test]
fn patient_exclusions_are_diffed_into_subject_state() {
    let mut kv = Kv::new();
    apply_all(
        &mut kv,
        &[
            group("g", &[p(3)]),
            facility("h", Some("g"), &[p(1), p(2), p(1)]),
        ],
    );
    let h = FacilityId::new("h").unwrap();
    let g = GroupId::new("g").unwrap();
    assert_eq!(
        consent_state(&kv, &p(1)).unwrap().excluded_by_facilities,
        vec![h.clone()]
    );
    assert_eq!(
        consent_state(&kv, &p(3)).unwrap().excluded_by_groups,
        vec![g.clone()]
    );
    let stored = super::facility(&kv, &h).unwrap().unwrap();
    assert_eq!(stored.facility.excluded_patients, vec![p(1), p(2)]);

    apply_all(
        &mut kv,
        &[facility("h", Some("g"), &[p(2), p(4)]), group("g", &[])],
    );
    assert_eq!(consent_state(&kv, &p(1)).unwrap(), SubjectState::default());
    assert!(
        KvRead::get(&kv, &subject_key(&p(1), b"s"))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        consent_state(&kv, &p(4)).unwrap().excluded_by_facilities,
        vec![h.clone()]
    );
    assert_eq!(
        consent_state(&kv, &p(2)).unwrap().excluded_by_facilities,
        vec![h.clone()]
    );
    assert!(
        consent_state(&kv, &p(3))
            .unwrap()
            .excluded_by_groups
            .is_empty()
    );
    assert!(
        facility_group(&kv, &g)
            .unwrap()
            .unwrap()
            .excluded_patients
            .is_empty()
    );
    // The decision-path record does not carry the list.
    let raw = KvRead::get(&kv, &key(FACILITY, "h")).unwrap().unwrap();
    assert!(!String::from_utf8(raw).unwrap().contains(p(2).as_str()));
}

fn decision_event(
    kv: &Kv,
    engine: &PolicyEngine,
    subject: Option<SubjectId>,
    subject_prev: Option<u64>,
) -> Event {
    let request = Request {
        principal: Principal::Organization(OrgId::new("univ-a").unwrap()),
        action: Action::SecondaryUse,
        subject,
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: None,
        source_department: None,
        purpose: Purpose::Research,
        level: Level::Anonymized,
        cohort_size: None,
    };
    let now = ts("2026-06-01T00:00:00Z");
    let directory = crate::directory::Directory::load(kv).unwrap();
    let decision: Decision = engine.decide_kv(&request, &directory, kv, now).unwrap();
    Event::Decision {
        request,
        time: now,
        decision,
        policy_set_hash: engine.hash(),
        subject_prev,
        recipient: None,
        header: None,
    }
}

#[test]
fn decisions_need_the_active_policy_set_and_the_subject_chain() {
    let mut kv = Kv::new();
    let engine = PolicyEngine::default_set().unwrap();
    apply_all(&mut kv, &[org("univ-a")]);
    let first = decision_event(&kv, &engine, Some(p(1)), None);
    assert!(matches!(
        check(&kv, &first, 1),
        Err(ApplyError::NoActivePolicySet)
    ));
    let activate = Event::ActivatePolicySet {
        policies: engine.text().to_owned(),
        hash: engine.hash(),
    };
    apply_all(&mut kv, &[activate, first.clone()]);
    assert_eq!(active_policy_set(&kv).unwrap().unwrap().index, 1);
    let head = subject_head(&kv, &p(1)).unwrap().unwrap();
    assert_eq!((head.last_index, head.count), (2, 1));
    // The next decision must name entry 2 as the previous one.
    let stale = decision_event(&kv, &engine, Some(p(1)), None);
    assert_eq!(
        check(&kv, &stale, 3).unwrap_err().to_string(),
        "decision names previous subject entry None but the last one is Some(2)"
    );
    let chained = decision_event(&kv, &engine, Some(p(1)), Some(2));
    let cohort = decision_event(&kv, &engine, None, None);
    apply_all(&mut kv, &[chained, cohort]);
    assert_eq!(subject_entries(&kv, &p(1)).unwrap(), vec![2, 3]);
    assert_eq!(subject_head(&kv, &p(1)).unwrap().unwrap().count, 2);
    // Another policy set's hash is refused.
    let mut other = decision_event(&kv, &engine, None, None);
    if let Event::Decision {
        policy_set_hash, ..
    } = &mut other
    {
        *policy_set_hash = PolicySetHash([9; 32]);
    }
    assert!(matches!(
        check(&kv, &other, 5),
        Err(ApplyError::PolicySetMismatch { .. })
    ));
}

#[test]
fn activations_must_be_canonical_hashed_and_valid() {
    let kv = Kv::new();
    let engine = PolicyEngine::default_set().unwrap();
    let wrong_hash = Event::ActivatePolicySet {
        policies: engine.text().to_owned(),
        hash: PolicySetHash([0; 32]),
    };
    assert!(matches!(
        check(&kv, &wrong_hash, 0),
        Err(ApplyError::PolicyHashMismatch { .. })
    ));
    let not_canonical = Event::ActivatePolicySet {
        policies: engine.text().replace('\n', "\r\n"),
        hash: engine.hash(),
    };
    assert!(matches!(
        check(&kv, &not_canonical, 0),
        Err(ApplyError::PolicyHashMismatch { .. })
    ));
    let text = "permit (principal, action, resource);\n";
    let invalid = Event::ActivatePolicySet {
        policies: text.to_owned(),
        hash: crate::policy_set::hash_text(text),
    };
    let err = check(&kv, &invalid, 0).unwrap_err();
    assert!(
        err.to_string().starts_with("policy set is invalid: "),
        "{err}"
    );
}

fn opt_out(subject: SubjectId) -> Event {
    Event::RecordOptOut {
        subject,
        purposes: vec![Purpose::Marketing],
    }
}

#[test]
fn the_subject_listing_is_paged_and_read_from_any_point() {
    let mut kv = Kv::new();
    // 70 entries of patient 1 (three pages, the last partial) interleaved with patient 2's.
    let mut events = Vec::new();
    for i in 0..70 {
        events.push(opt_out(p(1)));
        if i % 3 == 0 {
            events.push(opt_out(p(2)));
        }
    }
    apply_all(&mut kv, &events);
    let ones: Vec<u64> = (0u64..)
        .zip(&events)
        .filter(|(_, e)| e.subject() == Some(&p(1)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ones.len(), 70);
    assert_eq!(subject_entries(&kv, &p(1)).unwrap(), ones);
    let head = subject_head(&kv, &p(1)).unwrap().unwrap();
    assert_eq!((head.last_index, head.count), (*ones.last().unwrap(), 70));
    // One key per 32 entries, not one per entry.
    let prefix = subject_entries_prefix(&p(1));
    let pages = scan_prefix(&kv, &prefix).unwrap();
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|(key, _)| is_subject_listing_key(key)));
    assert!(!is_subject_listing_key(&prefix));
    assert!(!is_subject_listing_key(&subject_key(&p(1), b"h")));
    assert!(!is_subject_listing_key(b"subj/x/e/12345678"));
    // Every starting point (before, at and between entries, past the end) and page size.
    let last = *ones.last().unwrap();
    let mut afters = vec![None];
    afters.extend((0..=last + 1).map(Some));
    for after in afters {
        for limit in [0, 1, 5, 31, 32, 33, 100] {
            let want: Vec<u64> = ones
                .iter()
                .copied()
                .filter(|i| after.is_none_or(|a| *i > a))
                .take(limit)
                .collect();
            let got = subject_entries_after(&kv, &p(1), after, limit).unwrap();
            assert_eq!(got, want, "after {after:?} limit {limit}");
        }
    }
    assert!(
        subject_entries_after(&kv, &p(9), None, 10)
            .unwrap()
            .is_empty()
    );
    // A page lost from the store is reported, not skipped.
    kv.remove(&pages[1].0);
    assert!(subject_entries_after(&kv, &p(1), Some(ones[40]), 10).is_err());
}

#[test]
fn the_state_records_its_layout_and_refuses_another() {
    let mut kv = Kv::new();
    check_layout(&kv).unwrap();
    apply_all(&mut kv, &[org("univ-a")]);
    assert_eq!(
        kv.get(META_LAYOUT),
        Some(&LAYOUT_VERSION.to_be_bytes().to_vec())
    );
    check_layout(&kv).unwrap();
    // A state written before the marker existed (layout 1).
    kv.remove(META_LAYOUT);
    assert_eq!(
        check_layout(&kv).unwrap_err().to_string(),
        "the derived state has key layout 1 but this server reads layout 4: the data dir was \
         written by another version of akashi"
    );
    // Layouts 2 and 3 (before the subject map's journal and its tile slots) open as they are;
    // a newer one does not.
    for older in [2u64, 3] {
        kv.insert(META_LAYOUT.to_vec(), older.to_be_bytes().to_vec());
        check_layout(&kv).unwrap();
    }
    kv.insert(META_LAYOUT.to_vec(), 5u64.to_be_bytes().to_vec());
    assert!(matches!(
        check_layout(&kv),
        Err(StateError::Layout {
            found: 5,
            expected: 4
        })
    ));
}

#[test]
fn corrupt_records_are_reported_without_their_key() {
    let mut kv = Kv::new();
    kv.insert(subject_key(&p(1), b"s"), b"{not json".to_vec());
    kv.insert(subject_key(&p(1), b"h"), vec![1, 2, 3]);
    let err = consent_state(&kv, &p(1)).unwrap_err();
    assert_eq!(err.to_string(), "stored patient record is corrupt");
    assert!(subject_head(&kv, &p(1)).is_err());
    kv.insert(META_LAST.to_vec(), vec![0]);
    assert!(apply(&mut kv, &org("a"), 0).is_err());
}

#[test]
fn prefix_end_bounds_a_prefix_scan() {
    assert_eq!(prefix_end(b"subj/x/"), Some(b"subj/x0".to_vec()));
    assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
    assert_eq!(prefix_end(&[0xff, 0xff]), None);
    assert_eq!(prefix_end(b""), None);
    let mut kv = Kv::new();
    for k in [&b"dir/fac/a"[..], b"dir/facx/a", b"dir/fac0", b"dir/fac/"] {
        kv.insert(k.to_vec(), vec![]);
    }
    // A prefix of only 0xff bytes has no end bound: every longer key that starts with it is
    // found (a bound of three 0xff bytes would have missed the four-byte key).
    for k in [
        &[0xffu8, 0xff][..],
        &[0xff, 0xff, 0xff, 0xff],
        &[0xff, 0xfe],
    ] {
        kv.insert(k.to_vec(), vec![]);
    }
    let high: Vec<Vec<u8>> = scan_prefix(&kv, &[0xff, 0xff])
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(high, vec![vec![0xff, 0xff], vec![0xff; 4]]);
    let keys: Vec<Vec<u8>> = scan_prefix(&kv, b"dir/fac/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"dir/fac/".to_vec(), b"dir/fac/a".to_vec()]);
    assert!(kv.scan_range(b"z", Some(b"a")).unwrap().is_empty());
}

#[test]
fn only_directory_events_move_the_directory_version_and_log() {
    let mut kv = Kv::new();
    assert_eq!(directory_version(&kv).unwrap(), None);
    apply_all(
        &mut kv,
        &[
            org("univ-a"),
            Event::GrantConsent(consent("c1", p(1), None)),
            group("g", &[]),
            Event::RecordOptOut {
                subject: p(1),
                purposes: vec![],
            },
        ],
    );
    assert_eq!(directory_version(&kv).unwrap(), Some(2));
    let changed: Vec<String> = directory_changes(&kv, Some(0))
        .unwrap()
        .into_iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(changed.len(), 1);
    assert!(changed[0].starts_with("Group("), "{changed:?}");
    assert_eq!(directory_changes(&kv, None).unwrap().len(), 2);
    assert!(directory_changes(&kv, Some(2)).unwrap().is_empty());
}

#[test]
fn directory_lists_page_in_id_order_after_a_given_id() {
    let mut kv = Kv::new();
    apply_all(
        &mut kv,
        &[
            org("c"),
            org("a"),
            org("e"),
            org("b"),
            org("d"),
            group("g", &[p(1)]),
        ],
    );
    let ids = |page: &Page<OrganizationRecord>| -> Vec<String> {
        page.items
            .iter()
            .map(|o| o.organization.id.to_string())
            .collect()
    };
    let first = list_organizations(&kv, None, 2).unwrap();
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(first.next_after.as_deref(), Some("b"));
    let second = list_organizations(&kv, Some("b"), 2).unwrap();
    assert_eq!(ids(&second), ["c", "d"]);
    let last = list_organizations(&kv, Some("d"), 2).unwrap();
    assert_eq!(ids(&last), ["e"]);
    assert_eq!(last.next_after, None);
    // A page that ends exactly at the last record says there is no more.
    assert_eq!(
        list_organizations(&kv, Some("c"), 2).unwrap().next_after,
        None
    );
    // Groups list without their patients, and the patient lists are not mistaken for groups.
    let groups = list_facility_groups(&kv, None, 10).unwrap();
    assert_eq!(groups.items.len(), 1);
    assert_eq!(groups.items[0].id.as_str(), "g");
}

#[test]
fn proposals_wait_until_approved_and_approvals_need_a_waiting_set() {
    use crate::whatif::AnalysisId;
    let mut kv = Kv::new();
    let engine = PolicyEngine::default_set().unwrap();
    apply_all(
        &mut kv,
        &[Event::ActivatePolicySet {
            policies: engine.text().to_owned(),
            hash: engine.hash(),
        }],
    );
    let propose = |text: &str| {
        let candidate = PolicyEngine::new(text).unwrap();
        Event::ProposePolicySet {
            policies: candidate.text().to_owned(),
            hash: candidate.hash(),
        }
    };
    let approve = |event: &Event, from: u64, to: u64| match event {
        Event::ProposePolicySet { policies, hash } => Event::ApprovePolicySet {
            policies: policies.clone(),
            hash: *hash,
            analysis: AnalysisId([7; 32]),
            analysis_from: from,
            analysis_to: to,
        },
        _ => unreachable!(),
    };
    // The set in force cannot be proposed.
    assert!(matches!(
        check(&kv, &propose(engine.text()), 1),
        Err(ApplyError::AlreadyActive { .. })
    ));
    let candidates: Vec<Event> = (0..=MAX_PENDING_POLICY_SETS)
        .map(|n| propose(&format!("{}\n// variant {n}\n", engine.text())))
        .collect();
    // Nothing is waiting: an approval is refused.
    assert!(matches!(
        check(&kv, &approve(&candidates[0], 0, 1), 1),
        Err(ApplyError::NotPending { .. })
    ));
    apply_all(&mut kv, &candidates[..MAX_PENDING_POLICY_SETS]);
    let last = last_applied(&kv).unwrap().unwrap();
    assert_eq!(
        pending_policy_sets(&kv).unwrap().len(),
        MAX_PENDING_POLICY_SETS
    );
    assert!(matches!(
        check(&kv, &candidates[0], last + 1),
        Err(ApplyError::AlreadyPending { .. })
    ));
    assert!(matches!(
        check(&kv, &candidates[MAX_PENDING_POLICY_SETS], last + 1),
        Err(ApplyError::TooManyPending { .. })
    ));
    // The set in force is unchanged by proposals.
    assert_eq!(active_policy_set_hash(&kv).unwrap(), Some(engine.hash()));
    // An approval must carry the proposal's very text, and an analysis of earlier entries.
    let mut altered = approve(&candidates[1], 0, last);
    if let Event::ApprovePolicySet { policies, .. } = &mut altered {
        policies.push_str("// another text\n");
    }
    assert!(matches!(
        check(&kv, &altered, last + 1),
        Err(ApplyError::NotPending { .. })
    ));
    assert!(matches!(
        check(&kv, &approve(&candidates[1], 0, last + 2), last + 1),
        Err(ApplyError::BadAnalysisWindow { .. })
    ));
    assert!(matches!(
        check(&kv, &approve(&candidates[1], 3, 2), last + 1),
        Err(ApplyError::BadAnalysisWindow { .. })
    ));
    let approval = approve(&candidates[1], 0, last + 1);
    apply_all(&mut kv, std::slice::from_ref(&approval));
    let Event::ApprovePolicySet { hash, .. } = approval else {
        unreachable!()
    };
    let active = active_policy_set(&kv).unwrap().unwrap();
    assert_eq!((active.hash, active.index), (hash, last + 1));
    let waiting = pending_policy_sets(&kv).unwrap();
    assert_eq!(waiting.len(), MAX_PENDING_POLICY_SETS - 1);
    assert!(waiting.iter().all(|p| p.hash != hash));
    // A waiting set can be declined: it leaves the list, and only a waiting one can be.
    let Event::ProposePolicySet { hash: third, .. } = candidates[2].clone() else {
        unreachable!()
    };
    let last = last_applied(&kv).unwrap().unwrap();
    apply_all(&mut kv, &[Event::RejectPolicySet { hash: third }]);
    assert!(
        pending_policy_sets(&kv)
            .unwrap()
            .iter()
            .all(|p| p.hash != third)
    );
    assert!(matches!(
        check(&kv, &Event::RejectPolicySet { hash: third }, last + 2),
        Err(ApplyError::NotPending { .. })
    ));
    // A direct activation of a waiting set also takes it off the list.
    let Event::ProposePolicySet { policies, hash } = candidates[0].clone() else {
        unreachable!()
    };
    apply_all(&mut kv, &[Event::ActivatePolicySet { policies, hash }]);
    assert_eq!(
        pending_policy_sets(&kv).unwrap().len(),
        MAX_PENDING_POLICY_SETS - 3
    );
}

fn erasure(
    subject: SubjectId,
    (through, indices): (Option<u64>, Vec<u64>),
    dropped_consents: Vec<ConsentId>,
    state_after: SubjectState,
) -> Event {
    Event::EraseEntries {
        subject,
        through,
        indices,
        reason: "patient request".to_owned(),
        forced: false,
        time: ts("2026-02-01T00:00:00Z"),
        dropped_consents,
        state_after: Box::new(state_after),
    }
}

#[test]
fn an_erasure_ends_erased_grants_and_keeps_refusals() {
    let mut kv = Kv::new();
    // 0: org, 1: grant c1, 2: grant c2, 3: opt-out, 4: revoke c2.
    let next = apply_all(
        &mut kv,
        &[
            org("univ-a"),
            Event::GrantConsent(consent("c1", p(1), None)),
            Event::GrantConsent(consent("c2", p(1), None)),
            opt_out(p(1)),
        ],
    );
    assert_eq!(next, 4);
    // Erasing the opt-out's entry (3) ends nothing and keeps the opt-out.
    let (dropped, after) = erasure_effect(&kv, &p(1), (None, &[3])).unwrap();
    assert!(dropped.is_empty());
    assert_eq!(after, consent_state(&kv, &p(1)).unwrap());
    // Erasing c1's grant ends c1 only; the opt-out stays.
    let (dropped, after) = erasure_effect(&kv, &p(1), (None, &[1])).unwrap();
    assert_eq!(dropped, [ConsentId::new("c1").unwrap()]);
    assert_eq!(after.consents.len(), 1);
    assert_eq!(after.consents[0].id.as_str(), "c2");
    assert!(!after.opt_outs.is_empty());
    // Everything: both consents end.
    let (all, emptied) = erasure_effect(&kv, &p(1), (Some(3), &[])).unwrap();
    assert_eq!(all.len(), 2);
    assert!(emptied.consents.is_empty() && !emptied.opt_outs.is_empty());

    // The server's check holds an erasure to exactly that effect.
    let wrong = erasure(p(1), (None, vec![1]), vec![], after.clone());
    assert!(matches!(
        check(&kv, &wrong, 4),
        Err(ApplyError::ErasureMismatch(_))
    ));
    let widening = erasure(
        p(1),
        (None, vec![1]),
        dropped.clone(),
        consent_state(&kv, &p(1)).unwrap(),
    );
    assert!(matches!(
        check(&kv, &widening, 4),
        Err(ApplyError::ErasureMismatch(_))
    ));
    let itself = erasure(p(1), (Some(4), vec![]), all.clone(), emptied.clone());
    assert!(matches!(
        check(&kv, &itself, 4),
        Err(ApplyError::ErasureMismatch(_))
    ));
    let right = erasure(p(1), (None, vec![1]), dropped, after);
    apply(&mut kv, &right, 4).unwrap();
    let state = consent_state(&kv, &p(1)).unwrap();
    assert_eq!(state.consents.len(), 1);
    // The ended consent cannot be revoked again.
    assert!(matches!(
        check_revoke(&kv, &p(1), &ConsentId::new("c1").unwrap()),
        Err(ApplyError::AlreadyRevoked { .. })
    ));
}

#[test]
fn a_replay_adopts_an_erasure_only_if_it_widens_nothing() {
    let mut kv = Kv::new();
    apply_all(
        &mut kv,
        &[
            org("univ-a"),
            Event::GrantConsent(consent("c1", p(1), None)),
            opt_out(p(1)),
        ],
    );
    let known = consent_state(&kv, &p(1)).unwrap();
    // A replay that could not read erased entries: the server's state after may hold less.
    let narrower = SubjectState {
        consents: Vec::new(),
        consent_indices: Default::default(),
        ..known.clone()
    };
    let mut adopted = kv.clone();
    adopt_erasure(
        &mut adopted,
        &erasure(p(1), (Some(2), vec![]), vec![], narrower.clone()),
        3,
    )
    .unwrap();
    assert_eq!(consent_state(&adopted, &p(1)).unwrap(), narrower);
    // A consent the log does not show, or an opt-out dropped, is refused.
    let mut extra = known.clone();
    extra.consents.push(consent("c9", p(1), None));
    assert!(
        adopt_erasure(
            &mut kv.clone(),
            &erasure(p(1), (Some(2), vec![]), vec![], extra),
            3
        )
        .is_err()
    );
    let fewer_opt_outs = SubjectState {
        opt_outs: Vec::new(),
        opt_out_indices: Default::default(),
        ..known
    };
    assert!(
        adopt_erasure(
            &mut kv.clone(),
            &erasure(p(1), (Some(2), vec![]), vec![], fewer_opt_outs),
            3
        )
        .is_err()
    );
}

use std::collections::BTreeMap;

use super::*;
use crate::domain::{DataCategory, Facility, FacilityGroup, Name, Organization, Purpose};
use crate::event::Event;

type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

fn group(id: &str, departments: &[&str]) -> Event {
    Event::UpsertFacilityGroup(FacilityGroup {
        id: GroupId::new(id).unwrap(),
        excluded_departments: departments
            .iter()
            .map(|d| Department::new(*d).unwrap())
            .collect(),
        excluded_patients: vec![],
        header: None,
    })
}

fn facility(id: &str, group: Option<&str>) -> Event {
    Event::UpsertFacility(Facility {
        id: FacilityId::new(id).unwrap(),
        name: Name::new(id).unwrap(),
        group: group.map(|g| GroupId::new(g).unwrap()),
        excluded_departments: vec![],
        excluded_patients: vec![],
        recipient_class: None,
        header: None,
    })
}

fn clinician(id: &str, facility: &str, department: &str) -> Event {
    Event::UpsertClinician(Clinician {
        id: ClinicianId::new(id).unwrap(),
        facility: FacilityId::new(facility).unwrap(),
        department: Department::new(department).unwrap(),
        role: ClinicianRole::Doctor,
    })
}

fn org(id: &str, class: RecipientClass) -> Event {
    Event::UpsertOrganization(Organization {
        id: OrgId::new(id).unwrap(),
        name: Name::new(id).unwrap(),
        recipient_class: class,
    })
}

struct World {
    kv: Kv,
    next: u64,
}

impl World {
    fn apply(&mut self, events: &[Event]) {
        for event in events {
            state::apply(&mut self.kv, event, self.next).unwrap();
            self.next += 1;
        }
    }
}

fn names_() -> &'static Names {
    names().unwrap()
}

fn is_in(directory: &Directory, child: EntityUid, ancestor: EntityUid) -> bool {
    directory.entities().is_ancestor_of(&ancestor, &child)
}

/// Same version, same typed maps and same entities, except departments no clinician is in any
/// more (the incremental path keeps them; they have no attributes and no members, so no decision
/// can tell).
fn same(a: &Directory, b: &Directory) -> bool {
    let without_departments = |d: &Directory| {
        let department = &names_().department;
        let kept = d
            .entities()
            .iter()
            .filter(|e| e.uid().type_name() != department)
            .cloned();
        cedar_policy::Entities::from_entities(kept, None).unwrap()
    };
    a.version() == b.version()
        && without_departments(a).deep_eq(&without_departments(b))
        && a.organizations == b.organizations
        && a.facilities == b.facilities
        && a.clinicians == b.clinicians
}

#[test]
fn incremental_refresh_matches_a_full_load() {
    let n = names_();
    let mut world = World {
        kv: Kv::new(),
        next: 0,
    };
    let mut incremental = Directory::empty();
    assert!(
        !incremental.refresh(&world.kv).unwrap(),
        "nothing to do yet"
    );
    assert_eq!(incremental.version(), None);

    world.apply(&[
        group("g1", &["genetics"]),
        group("g2", &[]),
        facility("h1", Some("g1")),
        clinician("dr", "h1", "er"),
        org("univ", RecipientClass::University),
    ]);
    assert!(incremental.refresh(&world.kv).unwrap());
    assert!(same(&incremental, &Directory::load(&world.kv).unwrap()));
    let dr = uid(&n.clinician, "dr");
    assert!(is_in(&incremental, dr.clone(), uid(&n.department, "h1/er")));
    assert!(is_in(&incremental, dr.clone(), uid(&n.facility, "h1")));
    assert!(is_in(
        &incremental,
        dr.clone(),
        uid(&n.facility_group, "g1")
    ));
    assert!(is_in(
        &incremental,
        uid(&n.purpose, "clinical_trial"),
        uid(&n.purpose, "research")
    ));
    assert!(is_in(
        &incremental,
        uid(&n.data_category, "diagnosis"),
        uid(&n.data_category, "general")
    ));

    // Moving the facility to another group moves its clinicians with it; an emergency shows.
    world.apply(&[
        facility("h1", Some("g2")),
        Event::SetEmergency {
            facility: FacilityId::new("h1").unwrap(),
            active: true,
        },
        group("g1", &[]),
        org("univ", RecipientClass::PublicBody),
    ]);
    assert!(incremental.refresh(&world.kv).unwrap());
    assert!(!is_in(
        &incremental,
        dr.clone(),
        uid(&n.facility_group, "g1")
    ));
    assert!(is_in(
        &incremental,
        dr.clone(),
        uid(&n.facility_group, "g2")
    ));
    let full = Directory::load(&world.kv).unwrap();
    assert!(same(&incremental, &full));
    assert_eq!(
        incremental.organization_class(&OrgId::new("univ").unwrap()),
        Some(RecipientClass::PublicBody)
    );
    let h1 = incremental
        .entities()
        .get(&uid(&n.facility, "h1"))
        .unwrap()
        .attr("emergency_active")
        .unwrap()
        .unwrap();
    assert_eq!(
        h1,
        cedar_policy::EvalResult::Bool(true),
        "emergency reflected"
    );
    assert_eq!(incremental.version(), Some(world.next - 1));
    assert_eq!(
        incremental.facility(&FacilityId::new("h1").unwrap()),
        Some(FacilityView {
            id: &FacilityId::new("h1").unwrap(),
            group: Some(&GroupId::new("g2").unwrap()),
            deactivated: None,
        })
    );
    assert!(
        incremental
            .clinician(&ClinicianId::new("dr").unwrap())
            .is_some()
    );
    assert!(incremental.len() > DataCategory::ALL.len() + Purpose::ALL.len());
}

#[test]
fn applying_events_matches_loading_the_state() {
    let mut world = World {
        kv: Kv::new(),
        next: 0,
    };
    let mut applied = Directory::empty();
    let events = [
        group("g1", &["genetics", "genetics"]),
        facility("h1", Some("g1")),
        Event::SetEmergency {
            facility: FacilityId::new("h1").unwrap(),
            active: true,
        },
        clinician("dr", "h1", "er"),
        org("univ", RecipientClass::University),
        facility("h1", None),
        clinician("dr", "h1", "icu"),
        Event::RecordOptOut {
            subject: crate::domain::SubjectId::from_bytes([1; 32]),
            purposes: vec![],
        },
    ];
    for event in &events {
        state::apply(&mut world.kv, event, world.next).unwrap();
        applied.apply(event, world.next).unwrap();
        world.next += 1;
        if event.kind().starts_with("directory.") {
            assert!(applied.has_pending());
            assert_ne!(
                applied.version(),
                state::directory_version(&world.kv).unwrap()
            );
        }
        applied.flush().unwrap();
        assert!(
            same(&applied, &Directory::load(&world.kv).unwrap()),
            "after {}",
            event.kind()
        );
    }
    assert!(
        applied.facilities.values().all(|f| f.emergency_active),
        "kept across the upsert"
    );
    let unknown = Event::SetEmergency {
        facility: FacilityId::new("nowhere").unwrap(),
        active: true,
    };
    assert!(applied.apply(&unknown, world.next).is_err());

    // Several changes flushed at once give the same directory, and an emergency declared for a
    // facility upserted in the same flush keeps the facility's new settings.
    let mut batched = Directory::empty();
    let mut kv = Kv::new();
    let events = [
        group("g1", &[]),
        facility("h2", Some("g1")),
        Event::SetEmergency {
            facility: FacilityId::new("h2").unwrap(),
            active: true,
        },
        clinician("dr2", "h2", "er"),
    ];
    for (i, event) in (0..).zip(&events) {
        state::apply(&mut kv, event, i).unwrap();
        batched.apply(event, i).unwrap();
    }
    batched.flush().unwrap();
    assert!(!batched.has_pending());
    assert!(same(&batched, &Directory::load(&kv).unwrap()));
}

#[test]
fn non_directory_events_do_not_change_the_version() {
    let mut world = World {
        kv: Kv::new(),
        next: 0,
    };
    world.apply(&[org("univ", RecipientClass::University)]);
    let directory = Directory::load(&world.kv).unwrap();
    world.apply(&[Event::RecordOptOut {
        subject: crate::domain::SubjectId::from_bytes([1; 32]),
        purposes: vec![Purpose::Marketing],
    }]);
    assert_eq!(
        state::directory_version(&world.kv).unwrap(),
        directory.version()
    );
}

#[test]
fn a_directory_ahead_of_the_state_reloads() {
    let mut world = World {
        kv: Kv::new(),
        next: 0,
    };
    world.apply(&[org("a", RecipientClass::University)]);
    let older = world.kv.clone();
    world.apply(&[org("b", RecipientClass::University)]);
    let mut directory = Directory::load(&world.kv).unwrap();
    assert!(directory.refresh(&older).unwrap());
    assert!(same(&directory, &Directory::load(&older).unwrap()));
    assert_eq!(
        directory.organization_class(&OrgId::new("b").unwrap()),
        None
    );
}

#[test]
fn the_cache_shares_a_snapshot_until_the_directory_changes() {
    let mut world = World {
        kv: Kv::new(),
        next: 0,
    };
    world.apply(&[org("a", RecipientClass::University)]);
    let cache = DirectoryCache::new(Directory::empty());
    let first = cache.current(&world.kv).unwrap();
    let again = cache.current(&world.kv).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    world.apply(&[org("b", RecipientClass::Pharma)]);
    let third = cache.current(&world.kv).unwrap();
    assert!(!Arc::ptr_eq(&first, &third));
    assert_eq!(first.organization_class(&OrgId::new("b").unwrap()), None);
    assert_eq!(
        third.organization_class(&OrgId::new("b").unwrap()),
        Some(RecipientClass::Pharma)
    );
}

#[test]
fn directory_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Directory>();
    assert_send_sync::<DirectoryCache>();
}

#[test]
fn facility_organisations_and_deactivations_apply_as_they_load() {
    use crate::domain::{Deactivation, LeafHeader};
    let with_class = |id: &str| {
        Event::UpsertFacility(Facility {
            recipient_class: Some(RecipientClass::CheckupCenter),
            header: Some(LeafHeader::V2),
            ..match facility(id, None) {
                Event::UpsertFacility(f) => f,
                _ => unreachable!(),
            }
        })
    };
    let deactivate = |target| Event::Deactivate { target };
    let h1 = FacilityId::new("h1").unwrap();
    let events = [
        with_class("h1"),
        clinician("dr", "h1", "er"),
        org("univ", RecipientClass::University),
        deactivate(Deactivation::Clinician(ClinicianId::new("dr").unwrap())),
        deactivate(Deactivation::Facility(h1.clone())),
        deactivate(Deactivation::Organization(OrgId::new("univ").unwrap())),
        // Upserts reactivate.
        clinician("dr", "h1", "er"),
        with_class("h1"),
    ];
    let mut world = World {
        kv: Kv::new(),
        next: 0,
    };
    let mut applied = Directory::empty();
    let mut cached = Directory::empty();
    for event in &events {
        state::apply(&mut world.kv, event, world.next).unwrap();
        applied.apply(event, world.next).unwrap();
        applied.flush().unwrap();
        cached.refresh(&world.kv).unwrap();
        let loaded = Directory::load(&world.kv).unwrap();
        assert!(same(&applied, &loaded), "applied, after {}", event.kind());
        assert!(same(&cached, &loaded), "refreshed, after {}", event.kind());
        match world.next {
            0 => assert_eq!(
                applied.organization_class(&OrgId::of_facility(&h1)),
                Some(RecipientClass::CheckupCenter)
            ),
            3 => assert_eq!(
                applied.clinician_deactivated(&ClinicianId::new("dr").unwrap()),
                Some(3)
            ),
            4 => {
                assert_eq!(applied.facility(&h1).unwrap().deactivated, Some(4));
                assert_eq!(
                    applied.organization_deactivated(&OrgId::of_facility(&h1)),
                    Some(4)
                );
            }
            5 => assert_eq!(
                applied.organization_deactivated(&OrgId::new("univ").unwrap()),
                Some(5)
            ),
            _ => {}
        }
        world.next += 1;
    }
    assert_eq!(
        applied.clinician_deactivated(&ClinicianId::new("dr").unwrap()),
        None
    );
    assert_eq!(applied.facility(&h1).unwrap().deactivated, None);
    assert_eq!(
        applied.organization_deactivated(&OrgId::of_facility(&h1)),
        None
    );
    // The university stays deactivated: nothing upserted it.
    assert_eq!(
        applied.organization_deactivated(&OrgId::new("univ").unwrap()),
        Some(5)
    );
    let unknown = deactivate(Deactivation::Clinician(ClinicianId::new("nobody").unwrap()));
    assert!(applied.apply(&unknown, world.next).is_err());
}

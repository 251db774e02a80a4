//! Decision latency, including the state reads and Cedar context building, over a directory of
//! 100 organisations, 20 facilities in 4 groups and 1,040 clinicians, and a `BTreeMap` state built
//! through `policy::state::apply`, with 1,000, 10,000 and 100,000 patients holding three consents
//! each; plus the cost of loading the Cedar directory and of one incremental directory change.
//!
//! Run with `cargo bench -p policy --bench decide`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "bench code"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use policy::domain::{ClinicianId, ConsentId, GroupId, Name};
use policy::{
    decision::Request,
    directory::Directory,
    domain::{
        Action, CategoryName, Clinician, ClinicianRole, Consent, DataCategory, Department, Effect,
        Facility, FacilityGroup, FacilityId, Level, OrgId, Organization, Principal, Purpose,
        RecipientClass, SubjectId, Timestamp,
    },
    engine::PolicyEngine,
    event::Event,
    facts::Facts,
    state,
};

type Kv = BTreeMap<Vec<u8>, Vec<u8>>;

const ORGS: usize = 100;
const FACILITIES: usize = 20;
const CLINICIANS_PER_FACILITY: usize = 50;

fn patient(i: usize) -> SubjectId {
    let mut bytes = [0xabu8; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
    SubjectId::from_bytes(bytes)
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse("t", s).unwrap()
}

fn facility_id(i: usize) -> FacilityId {
    FacilityId::new(format!("hosp-{i:02}")).unwrap()
}

fn world(patients: usize) -> (Kv, PolicyEngine, Directory) {
    let engine = PolicyEngine::default_set().unwrap();
    let mut kv = Kv::new();
    let mut index = 0u64;
    let mut apply = |kv: &mut Kv, event: Event| {
        state::apply(kv, &event, index).unwrap();
        index += 1;
    };
    apply(
        &mut kv,
        Event::ActivatePolicySet {
            policies: engine.text().to_owned(),
            hash: engine.hash(),
        },
    );
    let classes = [
        RecipientClass::University,
        RecipientClass::Pharma,
        RecipientClass::PrivateInsurer,
        RecipientClass::AiVendor,
        RecipientClass::PublicBody,
    ];
    for i in 0..ORGS {
        apply(
            &mut kv,
            Event::UpsertOrganization(Organization {
                id: OrgId::new(format!("org-{i:03}")).unwrap(),
                name: Name::new(format!("Organisation {i}")).unwrap(),
                recipient_class: classes[i % classes.len()],
            }),
        );
    }
    for g in 0..4 {
        apply(
            &mut kv,
            Event::UpsertFacilityGroup(FacilityGroup {
                id: GroupId::new(format!("grp-{g}")).unwrap(),
                excluded_departments: vec![Department::new("reproductive").unwrap()],
                excluded_patients: (0..20).map(|k| patient(k * 37 + g)).collect(),
                header: None,
            }),
        );
    }
    for i in 0..FACILITIES {
        apply(
            &mut kv,
            Event::UpsertOrganization(Organization {
                id: OrgId::of_facility(&facility_id(i)),
                name: Name::new(format!("Hospital {i}")).unwrap(),
                recipient_class: RecipientClass::Hospital,
            }),
        );
        apply(
            &mut kv,
            Event::UpsertFacility(Facility {
                id: facility_id(i),
                name: Name::new(format!("Hospital {i}")).unwrap(),
                group: Some(GroupId::new(format!("grp-{}", i % 4)).unwrap()),
                excluded_departments: vec![Department::new("psychiatry").unwrap()],
                excluded_patients: (0..50).map(|k| patient(k * 101 + i + 1)).collect(),
                recipient_class: None,
                header: None,
            }),
        );
        for (role, name) in [
            (ClinicianRole::Doctor, "dr"),
            (ClinicianRole::InformationManager, "im"),
        ] {
            apply(
                &mut kv,
                Event::UpsertClinician(Clinician {
                    id: ClinicianId::new(format!("{name}-{i:02}")).unwrap(),
                    facility: facility_id(i),
                    department: Department::new("internal").unwrap(),
                    role,
                }),
            );
        }
        // More staff, so the directory is not trivially small.
        for k in 0..CLINICIANS_PER_FACILITY {
            apply(
                &mut kv,
                Event::UpsertClinician(Clinician {
                    id: ClinicianId::new(format!("staff-{i:02}-{k:03}")).unwrap(),
                    facility: facility_id(i),
                    department: Department::new(["internal", "surgery", "er", "psychiatry"][k % 4])
                        .unwrap(),
                    role: ClinicianRole::Doctor,
                }),
            );
        }
    }
    for p in 0..patients {
        let subject = patient(p);
        let grants = [
            (
                Purpose::Research,
                DataCategory::Clinical,
                vec![],
                vec![RecipientClass::University],
                Level::Pseudonymized,
            ),
            (
                Purpose::Treatment,
                DataCategory::General,
                vec![],
                vec![RecipientClass::Hospital],
                Level::Identified,
            ),
            (
                Purpose::Insurance,
                DataCategory::Claims,
                vec![OrgId::new(format!("org-{:03}", 2 + 5 * (p % 20))).unwrap()],
                vec![],
                Level::Anonymized,
            ),
        ];
        for (k, (purpose, category, recipients, recipient_classes, max_level)) in
            grants.into_iter().enumerate()
        {
            apply(
                &mut kv,
                Event::GrantConsent(Consent {
                    id: ConsentId::new(format!("c-{p}-{k}")).unwrap(),
                    subject: subject.clone(),
                    purposes: vec![purpose],
                    data_categories: vec![category],
                    recipients,
                    recipient_classes,
                    max_level,
                    valid_from: Some(ts("2026-01-01T00:00:00Z")),
                    valid_until: Some(ts("2030-01-01T00:00:00Z")),
                    granted_at: ts("2025-12-01T00:00:00Z"),
                    revoked_at: None,
                }),
            );
        }
        if p % 10 == 0 {
            apply(
                &mut kv,
                Event::RecordOptOut {
                    subject,
                    purposes: vec![Purpose::Marketing],
                },
            );
        }
    }
    let directory = Directory::load(&kv).unwrap();
    (kv, engine, directory)
}

fn base(principal: Principal, subject: SubjectId) -> Request {
    Request {
        principal,
        action: Action::SecondaryUse,
        subject: Some(subject),
        data_category: CategoryName::new("diagnosis").unwrap(),
        source_facility: None,
        source_department: None,
        purpose: Purpose::Research,
        level: Level::Pseudonymized,
        cohort_size: None,
    }
}

/// A university's pseudonymised research use, allowed by the patient's class consent; the data
/// come from a facility's internal-medicine department.
fn secondary_use(p: usize, patients: usize) -> Request {
    let subject = patient(p % patients);
    let mut r = base(
        Principal::Organization(OrgId::new(format!("org-{:03}", 5 * (p % 20))).unwrap()),
        subject,
    );
    r.source_facility = Some(facility_id(p % FACILITIES));
    r.source_department = Some(Department::new("internal").unwrap());
    r
}

/// A doctor viewing another facility's records under an inter-facility sharing consent.
fn view_record(p: usize, patients: usize) -> Request {
    let subject = patient(p % patients);
    let mut r = base(
        Principal::Clinician(ClinicianId::new(format!("dr-{:02}", p % FACILITIES)).unwrap()),
        subject,
    );
    r.action = Action::ViewRecord;
    r.purpose = Purpose::Treatment;
    r.level = Level::Identified;
    r.source_facility = Some(facility_id((p + 1) % FACILITIES));
    r.source_department = Some(Department::new("internal").unwrap());
    r
}

/// Patients excluded by some facility or group are skipped so that every decision allows.
fn allowed_patient(kv: &Kv, p: usize, patients: usize) -> bool {
    let s = state::consent_state(kv, &patient(p % patients)).unwrap();
    s.excluded_by_facilities.is_empty() && s.excluded_by_groups.is_empty()
}

/// The default policy set as it was before the rule corrections of 2026-12: the set activated
/// by the replay-compatibility fixture's first entry.
fn previous_default_set() -> PolicyEngine {
    let first = include_str!("../tests/fixtures/log-2026-12-02.jsonl")
        .lines()
        .next()
        .unwrap();
    match Event::from_json(first.as_bytes()).unwrap() {
        Event::ActivatePolicySet { policies, .. } => PolicyEngine::new(&policies).unwrap(),
        other => panic!("the fixture starts with {other:?}"),
    }
}

fn bench_decide(c: &mut Criterion) {
    let now = ts("2026-06-01T00:00:00Z");
    let mut group = c.benchmark_group("decide");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for patients in [1_000usize, 10_000, 100_000] {
        let (kv, engine, directory) = world(patients);
        // A fixed, scattered sequence of patients that no exclusion touches.
        let picks: Vec<usize> = (0..4096usize)
            .map(|i| (i * 7919) % patients)
            .filter(|p| allowed_patient(&kv, *p, patients))
            .collect();
        assert!(picks.len() > 1000);
        // The default set before the rule corrections of 2026-12, on the same requests and state
        // (at one size), so that a run shows what the corrected rules cost.
        let previous = (patients == 10_000).then(previous_default_set);
        for (name, make) in [
            (
                "secondary_use",
                secondary_use as fn(usize, usize) -> Request,
            ),
            ("view_record", view_record),
        ] {
            let requests: Vec<Request> = picks.iter().map(|p| make(*p, patients)).collect();
            for (suffix, engine) in [("", Some(&engine)), ("_previous_set", previous.as_ref())] {
                let Some(engine) = engine else { continue };
                let mut i = 0usize;
                group.bench_function(BenchmarkId::new(format!("{name}{suffix}"), patients), |b| {
                    b.iter(|| {
                        let request = &requests[i % requests.len()];
                        i += 1;
                        let decision = engine
                            .decide_kv(black_box(request), &directory, &kv, now)
                            .unwrap();
                        assert_eq!(decision.effect, Effect::Allow, "{decision:?}");
                        decision
                    });
                });
            }
        }
        {
            // The same decisions without the state reads, to show where the time goes.
            let requests: Vec<(Request, Facts)> = picks
                .iter()
                .map(|p| {
                    let r = secondary_use(*p, patients);
                    let f = Facts::gather(&directory, &kv, &r).unwrap();
                    (r, f)
                })
                .collect();
            let mut i = 0usize;
            group.bench_function(
                BenchmarkId::new("secondary_use_facts_given", patients),
                |b| {
                    b.iter(|| {
                        let (request, facts) = &requests[i % requests.len()];
                        i += 1;
                        let decision =
                            engine.decide(black_box(request), black_box(facts), &directory, now);
                        assert_eq!(decision.effect, Effect::Allow);
                        decision
                    });
                },
            );
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("gather_facts", patients), |b| {
                b.iter(|| {
                    let (request, _) = &requests[i % requests.len()];
                    i += 1;
                    let facts = Facts::gather(&directory, &kv, black_box(request)).unwrap();
                    assert_eq!(facts.subject.consents.len(), 3);
                    facts
                });
            });
        }
        if patients == 10_000 {
            let stats = Request {
                principal: Principal::Organization(OrgId::new("org-004").unwrap()),
                action: Action::ExportStatistics,
                subject: None,
                data_category: CategoryName::new("diagnosis").unwrap(),
                source_facility: None,
                source_department: None,
                purpose: Purpose::PublicHealth,
                level: Level::Statistical,
                cohort_size: Some(120),
            };
            group.bench_function(BenchmarkId::new("export_statistics", patients), |b| {
                b.iter(|| {
                    let decision = engine
                        .decide_kv(black_box(&stats), &directory, &kv, now)
                        .unwrap();
                    assert_eq!(decision.effect, Effect::Allow);
                    decision
                });
            });
            group.bench_function(BenchmarkId::new("directory_load", patients), |b| {
                b.iter(|| {
                    let loaded = Directory::load(black_box(&kv)).unwrap();
                    assert_eq!(loaded.version(), directory.version());
                    loaded
                });
            });
            let mut live = directory.clone();
            let mut index = 1u64 << 40;
            for changes in [1u64, 100] {
                group.bench_function(
                    BenchmarkId::new(format!("directory_apply_flush_{changes}"), patients),
                    |b| {
                        b.iter(|| {
                            for _ in 0..changes {
                                index += 1;
                                let event = Event::SetEmergency {
                                    facility: facility_id((index % 20) as usize),
                                    active: index.is_multiple_of(2),
                                };
                                live.apply(black_box(&event), index).unwrap();
                            }
                            live.flush().unwrap();
                            assert_eq!(live.version(), Some(index));
                        });
                    },
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);

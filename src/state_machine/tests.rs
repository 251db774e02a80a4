use std::sync::Arc;

use ledger::{
    conformance::test_signer,
    entry::Body,
    log::Log,
    sequencer::{Sequencer, SequencerOptions, SubmitError},
    store::MemoryStore,
};
use policy::domain::{
    Action, CategoryName, Level, Name, OrgId, Organization, Principal, Purpose, RecipientClass,
};

use super::*;

fn subject(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

fn start() -> Sequencer<DomainStateMachine> {
    start_shared().0
}

fn start_shared() -> (Sequencer<DomainStateMachine>, Arc<Decisions>) {
    let log = Arc::new(Log::open(Arc::new(MemoryStore::new()), test_signer()).unwrap());
    let machine = DomainStateMachine::new(log.clone()).unwrap();
    let decisions = machine.decisions();
    let sequencer = Sequencer::start(log, machine, SequencerOptions::default()).unwrap();
    (sequencer, decisions)
}

fn org(id: &str, class: RecipientClass) -> Command {
    Command::Directory(Event::UpsertOrganization(Organization {
        id: OrgId::new(id).unwrap(),
        name: Name::new("Example University").unwrap(),
        recipient_class: class,
    }))
}

fn research_request(subject: SubjectId) -> Request {
    Request {
        principal: Principal::Organization(OrgId::new("uni").unwrap()),
        action: Action::SecondaryUse,
        subject: Some(subject),
        data_category: CategoryName::new("lab_result").unwrap(),
        source_facility: None,
        source_department: None,
        purpose: Purpose::Research,
        level: Level::Pseudonymized,
        cohort_size: None,
    }
}

fn grant(subject: SubjectId) -> Command {
    research_grant("c_test", subject)
}

/// A research consent with id `id` from `subject` to the university `uni`.
pub(crate) fn research_grant(id: &str, subject: SubjectId) -> Command {
    Command::Grant(Consent {
        id: ConsentId::new(id).unwrap(),
        subject,
        purposes: vec![Purpose::Research],
        data_categories: vec!["clinical".parse().unwrap()],
        recipients: vec![OrgId::new("uni").unwrap()],
        recipient_classes: Vec::new(),
        max_level: Level::Pseudonymized,
        valid_from: None,
        valid_until: None,
        granted_at: Timestamp::now(),
        revoked_at: None,
    })
}

async fn decide(sequencer: &Sequencer<DomainStateMachine>, request: Request) -> Decision {
    decide_prepared(sequencer, request, None).await.1
}

#[tokio::test]
async fn a_decision_without_an_active_policy_set_is_an_error_not_an_allow() {
    let sequencer = start();
    let result = sequencer
        .submit(Command::Authorize(research_request(subject(1)), None))
        .await;
    assert!(matches!(
        result,
        Err(SubmitError::Rejected(Error::Internal(_)))
    ));
    // Nothing was logged for it.
    assert_eq!(sequencer.log().size().get(), 0);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn decisions_see_every_earlier_write_and_revocation() {
    let sequencer = start();
    let engine = Arc::new(PolicyEngine::default_set().unwrap());
    sequencer.submit(Command::Activate(engine)).await.unwrap();
    sequencer
        .submit(org("uni", RecipientClass::University))
        .await
        .unwrap();
    let patient = subject(7);
    assert!(
        !decide(&sequencer, research_request(patient.clone()))
            .await
            .is_allow()
    );
    sequencer.submit(grant(patient.clone())).await.unwrap();
    let allowed = decide(&sequencer, research_request(patient.clone())).await;
    assert!(allowed.is_allow(), "{:?}", allowed.reasons);
    sequencer
        .submit(Command::Revoke {
            subject: patient.clone(),
            consent_id: ConsentId::new("c_test").unwrap(),
        })
        .await
        .unwrap();
    assert!(
        !decide(&sequencer, research_request(patient.clone()))
            .await
            .is_allow()
    );
    // Revoking again is refused and appends nothing.
    let size = sequencer.log().size();
    let again = sequencer
        .submit(Command::Revoke {
            subject: patient,
            consent_id: ConsentId::new("c_test").unwrap(),
        })
        .await;
    assert!(matches!(
        again,
        Err(SubmitError::Rejected(Error::FailedPrecondition(_)))
    ));
    assert_eq!(sequencer.log().size(), size);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_revocation_of_another_patients_consent_is_not_found() {
    let sequencer = start();
    sequencer
        .submit(Command::Activate(Arc::new(
            PolicyEngine::default_set().unwrap(),
        )))
        .await
        .unwrap();
    sequencer
        .submit(org("uni", RecipientClass::University))
        .await
        .unwrap();
    sequencer.submit(grant(subject(1))).await.unwrap();
    let result = sequencer
        .submit(Command::Revoke {
            subject: subject(2),
            consent_id: ConsentId::new("c_test").unwrap(),
        })
        .await;
    assert!(matches!(
        result,
        Err(SubmitError::Rejected(Error::NotFound {
            kind: "consent",
            ..
        }))
    ));
    sequencer.shutdown().await;
}

#[test]
fn frame_puts_public_attributes_in_the_leaf_and_the_event_in_the_body() {
    let event = Event::RecordOptOut {
        subject: subject(3),
        purposes: vec![Purpose::Research],
    };
    let now = Timestamp::from_unix_millis(1_795_000_000_000).unwrap();
    let entry = frame(&event, now).unwrap();
    assert_eq!(entry.leaf.kind.as_str(), event.kind());
    assert_eq!(entry.leaf.day.to_string(), now.day());
    let attributes: Vec<(String, String)> = entry
        .leaf
        .attributes
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
        .collect();
    let want: Vec<(String, String)> = event
        .public_attributes()
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    assert_eq!(attributes, want);
    // The pseudonym is in the private body only.
    let leaf = String::from_utf8(entry.leaf.encode()).unwrap();
    assert!(!leaf.contains(subject(3).as_str()));
    let body = Body::decode(&entry.body.encode()).unwrap();
    assert_eq!(Event::from_json(&body.payload).unwrap(), event);
    assert_eq!(entry.leaf.commitment, entry.body.commitment());
}

async fn decide_prepared(
    sequencer: &Sequencer<DomainStateMachine>,
    request: Request,
    prepared: Option<Box<Prepared>>,
) -> (u64, Decision, Event) {
    match sequencer
        .submit(Command::Authorize(request, prepared))
        .await
    {
        Ok((receipt, Output::Decided { decision, .. })) => {
            let index = receipt.leaf_index.get();
            let ledger::chunk::Record::Present(bytes) =
                sequencer.log().body(receipt.leaf_index).unwrap()
            else {
                panic!("body redacted");
            };
            let body = Body::decode(&bytes).unwrap();
            let event = Event::from_json(&body.payload).unwrap();
            (index, *decision, event)
        }
        Ok(other) => panic!("unexpected output {other:?}"),
        Err(_) => panic!("authorize failed"),
    }
}

/// A world with the default policy set, one university and patient 7's research consent.
async fn prepared_world() -> (Sequencer<DomainStateMachine>, Arc<Decisions>) {
    let (sequencer, decisions) = start_shared();
    let engine = Arc::new(PolicyEngine::default_set().unwrap());
    sequencer.submit(Command::Activate(engine)).await.unwrap();
    sequencer
        .submit(org("uni", RecipientClass::University))
        .await
        .unwrap();
    sequencer.submit(grant(subject(7))).await.unwrap();
    (sequencer, decisions)
}

#[tokio::test]
async fn a_prepared_decision_is_logged_as_the_writer_would_have_made_it() {
    let (sequencer, decisions) = prepared_world().await;
    let request = research_request(subject(7));
    let prepared = decisions.prepare(sequencer.log(), &request).unwrap();
    let (first, decision, event) =
        decide_prepared(&sequencer, request.clone(), Some(prepared)).await;
    assert!(decision.is_allow(), "{:?}", decision.reasons);
    assert_eq!((decisions.accepted(), decisions.redone()), (1, 0));
    // The writer's own decision of the same request, right after, is the same decision, and
    // both entries link into the patient's chain.
    let (second, own, own_event) = decide_prepared(&sequencer, request, None).await;
    assert_eq!(decision, own);
    let (
        Event::Decision {
            subject_prev: prev_first,
            recipient: recipient_first,
            policy_set_hash: hash_first,
            ..
        },
        Event::Decision {
            subject_prev: prev_second,
            recipient: recipient_second,
            policy_set_hash: hash_second,
            ..
        },
    ) = (event, own_event)
    else {
        panic!("not decisions");
    };
    assert_eq!(prev_second, Some(first));
    assert_eq!(
        prev_first,
        Some(first - 1),
        "the grant is the patient's previous entry"
    );
    assert_eq!(recipient_first, recipient_second);
    assert_eq!(hash_first, hash_second);
    assert!(second > first);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_stale_prepared_decision_links_to_the_patients_entry_logged_since() {
    let (sequencer, decisions) = prepared_world().await;
    let request = research_request(subject(7));
    // Prepared (with the patient's head and listing as they were), then another entry about the
    // patient is logged before it: the writer must not take the stale head.
    let stale = decisions.prepare(sequencer.log(), &request).unwrap();
    let (between, _, _) = decide_prepared(&sequencer, request.clone(), None).await;
    let (last, _, event) = decide_prepared(&sequencer, request, Some(stale)).await;
    let Event::Decision { subject_prev, .. } = event else {
        panic!("not a decision");
    };
    assert_eq!(subject_prev, Some(between));
    let head = state::subject_head(&LogKv(sequencer.log()), &subject(7))
        .unwrap()
        .unwrap();
    assert_eq!(
        (head.last_index, head.count),
        (last, 3),
        "the grant and two decisions"
    );
    let listed = state::subject_entries(&LogKv(sequencer.log()), &subject(7)).unwrap();
    assert_eq!(listed.last().copied(), Some(last));
    assert_eq!(listed.len(), 3);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_prepared_allow_is_redone_after_a_revocation_sequenced_before_it() {
    let (sequencer, decisions) = prepared_world().await;
    let request = research_request(subject(7));
    let stale = decisions.prepare(sequencer.log(), &request).unwrap();
    assert!(stale.decision.is_allow());
    sequencer
        .submit(Command::Revoke {
            subject: subject(7),
            consent_id: ConsentId::new("c_test").unwrap(),
        })
        .await
        .unwrap();
    let (_, decision, event) = decide_prepared(&sequencer, request, Some(stale)).await;
    assert!(!decision.is_allow(), "a revoked consent must not allow");
    let Event::Decision {
        decision: logged, ..
    } = event
    else {
        panic!("not a decision");
    };
    assert_eq!(logged, decision);
    assert_eq!((decisions.accepted(), decisions.redone()), (0, 1));
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_prepared_decision_is_redone_after_a_directory_change_or_outside_its_span() {
    let (sequencer, decisions) = prepared_world().await;
    let request = research_request(subject(7));
    // The university becomes an insurer: the directory version moves on.
    let stale = decisions.prepare(sequencer.log(), &request).unwrap();
    sequencer
        .submit(org("uni", RecipientClass::PrivateInsurer))
        .await
        .unwrap();
    let (_, after_change, _) = decide_prepared(&sequencer, request.clone(), Some(stale)).await;
    assert_eq!((decisions.accepted(), decisions.redone()), (0, 1));
    // Once committed, the new directory is published and preparation is accepted again.
    let fresh = decisions.prepare(sequencer.log(), &request).unwrap();
    assert_eq!(fresh.decision, after_change);
    decide_prepared(&sequencer, request.clone(), Some(fresh)).await;
    assert_eq!((decisions.accepted(), decisions.redone()), (1, 1));
    // A span that ended before the sequencing time: redone.
    let mut ended = decisions.prepare(sequencer.log(), &request).unwrap();
    ended.span.until = Timestamp::from_unix_millis(1);
    decide_prepared(&sequencer, request, Some(ended)).await;
    assert_eq!((decisions.accepted(), decisions.redone()), (1, 2));
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_prepared_decision_is_redone_under_another_policy_set() {
    let (sequencer, decisions) = prepared_world().await;
    let request = research_request(subject(7));
    let stale = decisions.prepare(sequencer.log(), &request).unwrap();
    // A set that forbids everything.
    let text = format!(
        "{}\n@id(\"deny-all\")\n@reason(\"test\")\nforbid (principal, action, resource);",
        PolicyEngine::default_set().unwrap().text()
    );
    let engine = Arc::new(PolicyEngine::new(&text).unwrap());
    sequencer.submit(Command::Activate(engine)).await.unwrap();
    let (_, decision, _) = decide_prepared(&sequencer, request, Some(stale)).await;
    assert!(!decision.is_allow());
    assert_eq!((decisions.accepted(), decisions.redone()), (0, 1));
    sequencer.shutdown().await;
}

fn facility(excluded: &[&str]) -> Command {
    Command::Directory(Event::UpsertFacility(policy::domain::Facility {
        id: "hosp-a".parse().unwrap(),
        name: Name::new("Hospital A").unwrap(),
        group: None,
        excluded_departments: excluded.iter().map(|d| d.parse().unwrap()).collect(),
        excluded_patients: Vec::new(),
        recipient_class: None,
        header: None,
    }))
}

#[tokio::test]
async fn a_directory_change_that_cannot_be_logged_never_reaches_decisions() {
    let (sequencer, _) = prepared_world().await;
    sequencer.submit(facility(&["psychiatry"])).await.unwrap();
    let mut request = research_request(subject(7));
    request.source_facility = Some("hosp-a".parse().unwrap());
    request.source_department = Some("psychiatry".parse().unwrap());
    let before = decide(&sequencer, request.clone()).await;
    assert!(!before.is_allow(), "psychiatry is excluded");

    // A change whose public leaf cannot be framed (its joined departments are longer than a
    // leaf value may be) is rejected, and must leave no trace in the directory...
    let long: Vec<String> = (0..40).map(|i| format!("dept-{i:02}")).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let size = sequencer.log().size();
    assert!(sequencer.submit(facility(&long)).await.is_err());
    assert_eq!(sequencer.log().size(), size, "nothing logged");
    // ...even once a later directory change commits.
    sequencer
        .submit(org("uni", RecipientClass::University))
        .await
        .unwrap();
    let after = decide(&sequencer, request).await;
    assert_eq!(after, before, "the unlogged exclusion list must not apply");
    sequencer.shutdown().await;
}

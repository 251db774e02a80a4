use std::sync::Arc;

use ledger::{
    entry::Body,
    log::Log,
    sequencer::{Sequencer, SequencerOptions, SubmitError},
    store::{MemoryStore, conformance::test_signer},
};
use policy::domain::{
    Action, CategoryName, Level, Name, OrgId, Organization, Principal, Purpose, RecipientClass,
};

use super::*;

fn subject(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

fn start() -> Sequencer<Akashi> {
    let log = Arc::new(Log::open(Arc::new(MemoryStore::new()), test_signer()).unwrap());
    let machine = Akashi::new(log.clone()).unwrap();
    Sequencer::start(log, machine, SequencerOptions::default()).unwrap()
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
    Command::Grant(Consent {
        id: ConsentId::new("c_test").unwrap(),
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

async fn decide(sequencer: &Sequencer<Akashi>, request: Request) -> Decision {
    match sequencer.submit(Command::Authorize(request)).await {
        Ok((_, Output::Decided(decision))) => *decision,
        Ok(other) => panic!("unexpected output {other:?}"),
        Err(_) => panic!("authorize failed"),
    }
}

#[tokio::test]
async fn a_decision_without_an_active_policy_set_is_an_error_not_an_allow() {
    let sequencer = start();
    let result = sequencer
        .submit(Command::Authorize(research_request(subject(1))))
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

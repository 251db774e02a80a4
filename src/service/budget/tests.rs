use super::*;

fn reservation(budget: &Arc<AnswerBudget>, caller: CallerKey) -> Reservation {
    Reservation {
        budget: budget.clone(),
        caller,
        bytes: 0,
    }
}

fn patient(id: &str) -> CallerKey {
    CallerKey::Caller {
        role: Role::Patient,
        patient_id: Some(id.to_owned()),
    }
}

#[test]
fn a_caller_past_its_budget_is_refused_and_others_are_not() {
    let budget = Arc::new(AnswerBudget::new(100, 250));
    let mut a = reservation(&budget, patient("a"));
    a.grow(60).unwrap();
    let mut a2 = reservation(&budget, patient("a"));
    assert!(matches!(
        a2.grow(41),
        Err(Error::AnswerBudget {
            scope: BudgetScope::Caller,
            max: 100
        })
    ));
    a2.grow(40).unwrap();
    let mut b = reservation(&budget, patient("b"));
    b.grow(100).unwrap();
    let mut c = reservation(&budget, patient("c"));
    assert!(matches!(
        c.grow(51),
        Err(Error::AnswerBudget {
            scope: BudgetScope::Server,
            max: 250
        })
    ));
    assert_eq!(budget.in_use(), 200);
    drop(a);
    drop(a2);
    drop(b);
    assert_eq!(budget.in_use(), 0);
    c.grow(100).unwrap();
}

#[test]
fn a_permit_releases_when_its_last_clone_goes() {
    let budget = Arc::new(AnswerBudget::new(100, 100));
    let mut r = reservation(&budget, CallerKey::Unknown);
    r.grow(100).unwrap();
    let response = r.attach(tonic::Response::new(()));
    let permit = response
        .extensions()
        .get::<AnswerPermit>()
        .cloned()
        .unwrap();
    drop(response);
    assert_eq!(budget.in_use(), 100);
    drop(permit);
    assert_eq!(budget.in_use(), 0);
}

//! The load tool's authorize, cohort and AuthZEN workloads against the real server: every call succeeds, receipts
//! verify, and its consent writes leave the patients' consent records the size setup made them
//! (a workload that grew them would make every later decision slower, and measure that).

use std::{sync::Arc, time::Duration};

use akashi::auth::Role;
use tools::load::{
    self, LoadOptions,
    authorize::{AuthorizeOptions, AuthorizeWorkload},
    authzen::AuthZenWorkload,
    cohort::CohortWorkload,
};

use crate::{api::Api, harness::TestServer};

#[tokio::test]
async fn the_authorize_workload_runs_clean_and_keeps_consent_records_bounded() {
    let server = TestServer::start().await;
    let workload = AuthorizeWorkload::setup(
        server.channel().await,
        AuthorizeOptions {
            token: server.token(Role::Platform, None),
            patients: 8,
            write_percent: 5,
            verify_every: 10,
            vkey: None,
        },
    )
    .await
    .unwrap();
    let workload = Arc::new(workload);
    let options = LoadOptions {
        target: format!("http://{}", server.grpc_addr),
        connections: 1,
        in_flight: 4,
        duration: Duration::from_secs(120),
        requests: Some(2000),
        rate: None,
        interval: Some(Duration::from_millis(100)),
    };
    let report = load::run(&options, workload.clone()).await.unwrap();
    // The per-interval time series accounts for every call and every failure once.
    assert!(!report.intervals.is_empty());
    assert_eq!(
        report.intervals.iter().map(|i| i.requests).sum::<u64>(),
        2000
    );
    assert_eq!(report.intervals.iter().map(|i| i.errors).sum::<u64>(), 0);
    assert_eq!(
        (report.requests, report.ok),
        (2000, 2000),
        "{:?}",
        report.errors
    );
    assert_eq!(report.checks.get("receipts_invalid"), Some(&0));
    assert!(
        report
            .checks
            .get("receipts_verified")
            .is_some_and(|n| *n > 0)
    );

    // Setup granted 10 consents to patients 0..8 (research to all but every fourth, treatment
    // to the even ones); the run's 100 writes alternate grant and revoke.
    let api = Api::new(&server, Role::Platform, None).await;
    let mut active = 0;
    for i in 0..8 {
        let state = api.consent_state(&format!("load-patient-{i}")).await;
        active += state.consents.len();
    }
    let outstanding = workload.outstanding_grants();
    assert_eq!(active, 10 + outstanding);
    // At most about one grant per caller is left unrevoked (the old schedule, 3 grants per 2
    // revocations, left 24 here).
    assert!(outstanding <= 8, "{outstanding} grants left unrevoked");
    server.stop().await;
}

#[tokio::test]
async fn the_cohort_workload_logs_one_checked_decision_per_patient() {
    let server = TestServer::start().await;
    let setup = AuthorizeWorkload::setup(
        server.channel().await,
        AuthorizeOptions {
            token: server.token(Role::Platform, None),
            patients: 40,
            write_percent: 0,
            verify_every: 0,
            vkey: None,
        },
    )
    .await
    .unwrap();
    let api = Api::new(&server, Role::Platform, None).await;
    let before = api.size().await;
    let workload = Arc::new(CohortWorkload::new(setup, 40, 25).unwrap());
    let options = LoadOptions {
        target: format!("http://{}", server.grpc_addr),
        connections: 1,
        in_flight: 2,
        duration: Duration::from_secs(120),
        requests: Some(20),
        rate: None,
        interval: None,
    };
    let report = load::run(&options, workload).await.unwrap();
    assert_eq!(
        (report.requests, report.ok),
        (20, 20),
        "{:?}",
        report.errors
    );
    assert_eq!(report.checks.get("decisions_logged"), Some(&500));
    assert_eq!(report.checks.get("checkpoints_verified"), Some(&20));
    // Three patients in four hold a research consent to the university.
    let allowed = report.checks.get("decisions_allow").copied().unwrap();
    assert!((300..=400).contains(&allowed), "{allowed} allowed");
    assert_eq!(api.size().await, before + 500);
    assert!(
        CohortWorkload::new(
            AuthorizeWorkload::setup(
                server.channel().await,
                AuthorizeOptions {
                    token: server.token(Role::Platform, None),
                    patients: 1,
                    write_percent: 0,
                    verify_every: 0,
                    vkey: None,
                },
            )
            .await
            .unwrap(),
            1,
            2
        )
        .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn the_authzen_workload_logs_one_checked_decision_per_evaluation() {
    let server = TestServer::start().await;
    let token = server.token(Role::Platform, None);
    let setup = || async {
        AuthorizeWorkload::setup(
            server.channel().await,
            AuthorizeOptions {
                token: token.clone(),
                patients: 40,
                write_percent: 0,
                verify_every: 0,
                vkey: None,
            },
        )
        .await
        .unwrap()
    };
    let api = Api::new(&server, Role::Platform, None).await;
    let target = format!("http://{}", server.authzen_addr);
    let options = LoadOptions {
        target: format!("http://{}", server.grpc_addr),
        connections: 1,
        in_flight: 2,
        duration: Duration::from_secs(120),
        requests: Some(10),
        rate: None,
        interval: None,
    };
    // Batches of 20 on `/access/v1/evaluations`, then single questions on `/evaluation`.
    for (items, logged) in [(20, 200), (1, 10)] {
        let workload = AuthZenWorkload::new(setup().await, &target, &token, 40, items).unwrap();
        let before = api.size().await;
        let report = load::run(&options, Arc::new(workload)).await.unwrap();
        assert_eq!(
            (report.requests, report.ok),
            (10, 10),
            "{:?}",
            report.errors
        );
        assert_eq!(report.checks.get("decisions_logged"), Some(&logged));
        assert_eq!(report.checks.get("checkpoints_verified"), Some(&10));
        assert!(report.checks.get("decisions_allow").is_some_and(|n| *n > 0));
        assert_eq!(api.size().await, before + logged);
    }
    // A bad token is counted as the HTTP status it gets, never as a success.
    let workload = AuthZenWorkload::new(setup().await, &target, "not-a-token", 40, 5).unwrap();
    let report = load::run(&options, Arc::new(workload)).await.unwrap();
    assert_eq!(report.ok, 0);
    assert_eq!(report.errors.get("HTTP_401"), Some(&10));
    assert!(AuthZenWorkload::new(setup().await, "http://192.0.2.1:8081", &token, 40, 5).is_err());
    server.stop().await;
}

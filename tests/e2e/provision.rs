//! `akashi-audit provision-records` against the real server: the records of third-party
//! provision of a period are exactly the allowed releases to another organisation, each citing
//! its decision's leaf index and its basis (the consent and the leaf of its grant, or the opt-out
//! path), read from a verified replay; one recipient's rows are its confirmation record; CSV and
//! JSON say the same.

use akashi::auth::Role;
use auditor::cli::{ReplayConfig, replay_recording};
use auditor::exit::AuditExitCode;
use auditor::provision::ProvisionWindow;
use ledger::note::NoteVerifier;
use proto::pb;

use crate::{
    api::{Api, ask, grant},
    harness::TestServer,
    witness::audit_online,
};

#[tokio::test]
async fn provision_records_are_the_allowed_releases_each_with_its_basis_and_leaf() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    // A display name a spreadsheet would run as a formula, with a comma in it.
    api.directory()
        .upsert_organization(api.req(pb::UpsertOrganizationRequest {
            request_id: String::new(),
            id: "uni".into(),
            name: "=Uni, Tokyo".into(),
            recipient_class: "university".into(),
        }))
        .await
        .unwrap();
    api.org("insurer", "private_insurer").await;
    api.facility("hosp-a", "", &[], &[]).await;
    api.facility("hosp-b", "", &[], &[]).await;
    api.clinician("dr-b", "hosp-b", "internal", "doctor").await;
    api.clinician("im-a", "hosp-a", "records", "information_manager")
        .await;
    let granted = api
        .consent()
        .grant_consent(api.req(grant(
            "alice",
            &["research"],
            &["lab_result"],
            &["uni"],
            &[],
            "PSEUDONYMIZED",
        )))
        .await
        .unwrap()
        .into_inner();
    let grant_index = granted.receipt.unwrap().leaf_index;
    api.grant(grant(
        "alice",
        &["treatment"],
        &["clinical"],
        &["hosp-b"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    let from_a = |r: pb::AuthorizeRequest| pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        ..r
    };
    let org = |who: &str, patient: &str, purpose: &str, level: &str| {
        from_a(ask(
            "Organization",
            who,
            "secondary_use",
            patient,
            "lab_result",
            purpose,
            level,
        ))
    };
    let view = |who: &str| {
        from_a(ask(
            "Clinician",
            who,
            "view_record",
            "alice",
            "diagnosis",
            "treatment",
            "IDENTIFIED",
        ))
    };
    // Provisions: opt-in to the university, anonymised on the opt-out path, a doctor of another
    // facility. Not provisions: a denial, the facility's own information manager, statistics.
    let opt_in = api
        .authorize(org("uni", "alice", "research", "PSEUDONYMIZED"))
        .await;
    let opt_out = api
        .authorize(org("uni", "bob", "research", "ANONYMIZED"))
        .await;
    let denied = api
        .authorize(org("insurer", "alice", "insurance", "PSEUDONYMIZED"))
        .await;
    let other_doctor = api.authorize(view("dr-b")).await;
    let own_doctor = api.authorize(view("im-a")).await;
    // A doctor of another facility using records for research (anonymised, opt-out path): a
    // provision to the doctor's facility. The facility holding the records using them itself:
    // not one.
    let doctor_research = api
        .authorize(from_a(ask(
            "Clinician",
            "dr-b",
            "secondary_use",
            "carol",
            "lab_result",
            "research",
            "ANONYMIZED",
        )))
        .await;
    let own_facility = api
        .authorize(org("hosp-a", "carol", "research", "ANONYMIZED"))
        .await;
    let statistics = api
        .authorize(pb::AuthorizeRequest {
            cohort_size: 20,
            ..from_a(ask(
                "Organization",
                "uni",
                "export_statistics",
                "",
                "lab_result",
                "research",
                "STATISTICAL",
            ))
        })
        .await;
    for (name, d, allowed) in [
        ("opt-in", &opt_in, true),
        ("opt-out", &opt_out, true),
        ("denied", &denied, false),
        ("other doctor", &other_doctor, true),
        ("own doctor", &own_doctor, true),
        ("doctor's research", &doctor_research, true),
        ("own facility", &own_facility, true),
        ("statistics", &statistics, true),
    ] {
        assert_eq!(
            d.decision == pb::Decision::Allow as i32,
            allowed,
            "{name}: {:?}",
            d.reasons
        );
    }
    let index = |d: &pb::AuthorizeResponse| d.receipt.as_ref().unwrap().leaf_index;

    let config = ReplayConfig {
        tls: Default::default(),
        verifier: NoteVerifier::from_vkey(&server.vkey).unwrap(),
        grpc: format!("http://{}", server.grpc_addr),
        token: server.token(Role::Regulator, None),
    };
    // Yesterday to today: the decisions above may fall either side of midnight UTC.
    let today = policy::domain::Timestamp::now().day();
    let yesterday = policy::domain::Timestamp::from_unix_millis(
        policy::domain::Timestamp::now().unix_millis() - 86_400_000,
    )
    .unwrap()
    .day();
    let window = ProvisionWindow::new(&yesterday, &today, None).unwrap();
    let (report, records) = replay_recording(&config, false, window).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let rows = records.into_rows();
    let indices: Vec<u64> = rows.iter().map(|r| r.leaf_index).collect();
    assert_eq!(
        indices,
        vec![
            index(&opt_in),
            index(&opt_out),
            index(&other_doctor),
            index(&doctor_research)
        ]
    );
    let (a, b, c, d) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert_eq!(
        (
            a.recipient_id.as_str(),
            a.recipient_name.as_str(),
            a.recipient_class.as_str()
        ),
        ("uni", "=Uni, Tokyo", "university")
    );
    assert_eq!(
        (a.basis.as_str(), a.level.as_str()),
        ("opt_in", "PSEUDONYMIZED")
    );
    assert_eq!(
        a.consents,
        vec![format!("{}@{grant_index}", granted.consent_id)]
    );
    assert_eq!(a.source_facility, "hosp-a");
    assert_eq!(a.patient.len(), 64, "the pseudonym, never the patient id");
    assert_ne!(a.patient, "alice");
    assert_eq!((b.basis.as_str(), b.consents.len()), ("opt_out", 0));
    assert_eq!(
        (
            c.recipient_id.as_str(),
            c.principal.as_str(),
            c.basis.as_str()
        ),
        ("hosp-b", "Clinician dr-b", "opt_in")
    );
    assert_eq!(
        (d.recipient_id.as_str(), d.action.as_str(), d.basis.as_str()),
        ("hosp-b", "secondary_use", "opt_out")
    );

    // The command line: one recipient's rows (its confirmation record), as CSV and as JSON.
    let args = |format: &str| {
        [
            "provision-records",
            "--vkey",
            &server.vkey,
            "--grpc",
            &config.grpc,
            "--token",
            &config.token,
            "--from",
            &yesterday,
            "--to",
            &today,
            "--recipient",
            "uni",
            "--format",
            format,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let (code, csv) = audit_online(args("csv")).await;
    assert_eq!(code, AuditExitCode::Valid, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("\u{feff}leaf_index,time,recipient_id,"),
        "{csv}"
    );
    // Quoted for its comma, guarded against running as a formula.
    assert!(lines[1].contains(",\"'=Uni, Tokyo\",university,"), "{csv}");
    assert_eq!(lines.len(), 4, "header, two rows, summary: {csv}");
    assert!(
        lines[1].starts_with(&format!("{},", index(&opt_in))),
        "{csv}"
    );
    assert!(lines[3].contains("2 provision records"), "{csv}");
    let (code, json) = audit_online(args("json")).await;
    assert_eq!(code, AuditExitCode::Valid, "{json}");
    let end = json.rfind(']').unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json[..=end]).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
    assert_eq!(parsed[1]["basis"], "opt_out");
    // A period with nothing in it, and a bad one.
    let (code, empty) = audit_online(
        [
            "provision-records",
            "--vkey",
            &server.vkey,
            "--grpc",
            &config.grpc,
            "--token",
            &config.token,
            "--from",
            "2020-01-01",
            "--to",
            "2020-12-31",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    assert_eq!(code, AuditExitCode::Valid, "{empty}");
    assert!(empty.contains("0 provision records"), "{empty}");
    let bad = ProvisionWindow::new("2026-12-31", "2026-01-01", None);
    assert!(bad.is_err());
    // The platform does not read the audit log.
    let (code, refused) = audit_online({
        let mut a = args("csv");
        a[6] = server.token(Role::Platform, None);
        a
    })
    .await;
    assert_eq!(code, AuditExitCode::Error, "{refused}");
    server.stop().await;
}

//! The directory through the real server: a facility is an organisation, reads page through
//! every record, deactivation takes effect at the next decision, facility leaves carry no
//! patient count, and only the platform role reaches any of it.

use akashi::auth::Role;
use proto::pb;
use tonic::Code;

use crate::{
    api::{Api, allowed, ask, grant, verify_receipt},
    harness::{TestServer, expect_status},
};

/// A facility registered with UpsertFacility alone (no UpsertOrganization).
async fn facility(api: &Api, id: &str, class: &str, patients: &[&str]) -> pb::Receipt {
    api.directory()
        .upsert_facility(api.req(pb::UpsertFacilityRequest {
            id: id.into(),
            name: format!("{id} hospital"),
            excluded_patients: patients.iter().map(|p| (*p).into()).collect(),
            recipient_class: class.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap()
}

/// A doctor of `who`'s facility viewing `patient`'s records held by hosp-a.
fn view(who: &str, patient: &str) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        source_facility: "hosp-a".into(),
        ..ask(
            "Clinician",
            who,
            "view_record",
            patient,
            "diagnosis",
            "treatment",
            "IDENTIFIED",
        )
    }
}

#[tokio::test]
async fn a_facility_is_an_organisation_of_class_hospital_or_checkup_center() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    facility(&api, "hosp-a", "", &[]).await;
    facility(&api, "hosp-b", "", &[]).await;
    facility(&api, "chk-c", "checkup_center", &[]).await;
    api.clinician("dr-b", "hosp-b", "internal", "doctor").await;

    let get = |id: &str| {
        let api = api.clone();
        let id = id.to_owned();
        async move {
            api.directory()
                .get_organization(api.req(pb::GetOrganizationRequest { id }))
                .await
                .unwrap()
                .into_inner()
                .organization
                .unwrap()
        }
    };
    assert_eq!(get("hosp-b").await.recipient_class, "hospital");
    assert_eq!(get("chk-c").await.recipient_class, "checkup_center");
    assert_eq!(get("chk-c").await.name, "chk-c hospital");

    // A consent naming the facility is accepted (it was NOT_FOUND while a facility was not an
    // organisation)...
    api.grant(grant(
        "p1",
        &["treatment"],
        &["clinical"],
        &["chk-c"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    // ...and a consent to class `hospital` covers the facility's doctors.
    assert!(!allowed(&api.authorize(view("dr-b", "p2")).await));
    api.grant(grant(
        "p2",
        &["treatment"],
        &["clinical"],
        &[],
        &["hospital"],
        "IDENTIFIED",
    ))
    .await;
    let d = api.authorize(view("dr-b", "p2")).await;
    assert!(allowed(&d), "{:?}", d.reasons);

    // Other classes are refused, naming the field.
    let refused = api
        .directory()
        .upsert_facility(api.req(pb::UpsertFacilityRequest {
            id: "uni-hosp".into(),
            name: "University hospital".into(),
            recipient_class: "university".into(),
            ..Default::default()
        }))
        .await;
    expect_status(
        "facility of class university",
        refused,
        Code::InvalidArgument,
        "recipient_class",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_clinician_who_left_loses_access_at_once() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    facility(&api, "hosp-a", "", &[]).await;
    facility(&api, "hosp-b", "", &[]).await;
    api.clinician("dr-x", "hosp-b", "internal", "doctor").await;
    api.grant(grant(
        "p1",
        &["treatment"],
        &["clinical"],
        &["hosp-b"],
        &[],
        "IDENTIFIED",
    ))
    .await;
    let d = api.authorize(view("dr-x", "p1")).await;
    assert!(allowed(&d), "{:?}", d.reasons);

    let receipt = api
        .directory()
        .deactivate_clinician(api.req(pb::DeactivateClinicianRequest {
            request_id: String::new(),
            id: "dr-x".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    verify_receipt(&receipt, &server.vkey);
    let at = receipt.leaf_index;

    // The very next request is denied, saying why.
    let d = api.authorize(view("dr-x", "p1")).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.reasons,
        vec![format!("clinician `dr-x` was deactivated at entry {at}")]
    );
    let record = api
        .directory()
        .get_clinician(api.req(pb::GetClinicianRequest { id: "dr-x".into() }))
        .await
        .unwrap()
        .into_inner()
        .clinician
        .unwrap();
    assert_eq!(record.deactivated_at, Some(at));
    assert_eq!(record.facility, "hosp-b");

    // Deactivating again is a failed precondition; an unknown clinician is not found.
    let again = api
        .directory()
        .deactivate_clinician(api.req(pb::DeactivateClinicianRequest {
            request_id: String::new(),
            id: "dr-x".into(),
        }))
        .await;
    expect_status(
        "twice",
        again,
        Code::FailedPrecondition,
        "already deactivated",
    );
    let unknown = api
        .directory()
        .deactivate_clinician(api.req(pb::DeactivateClinicianRequest {
            request_id: String::new(),
            id: "dr-nobody".into(),
        }))
        .await;
    expect_status("unknown", unknown, Code::NotFound, "dr-nobody");

    // Registering the clinician again reactivates them.
    api.clinician("dr-x", "hosp-b", "internal", "doctor").await;
    assert!(allowed(&api.authorize(view("dr-x", "p1")).await));

    // A deactivated facility takes its clinicians and its organisation with it.
    let receipt = api
        .directory()
        .deactivate_facility(api.req(pb::DeactivateFacilityRequest {
            request_id: String::new(),
            id: "hosp-b".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let d = api.authorize(view("dr-x", "p1")).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.reasons,
        vec![format!(
            "facility `hosp-b` of the clinician was deactivated at entry {}",
            receipt.leaf_index
        )]
    );
    let org = api
        .directory()
        .get_organization(api.req(pb::GetOrganizationRequest {
            id: "hosp-b".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(org.deactivated_at, Some(receipt.leaf_index));
    server.stop().await;
}

#[tokio::test]
async fn consents_naming_a_deactivated_organisation_stop_covering_it() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    api.grant(grant(
        "p1",
        &["research"],
        &["clinical"],
        &["uni"],
        &[],
        "ANONYMIZED",
    ))
    .await;
    let research = ask(
        "Organization",
        "uni",
        "secondary_use",
        "p1",
        "lab_result",
        "research",
        "ANONYMIZED",
    );
    assert!(allowed(&api.authorize(research.clone()).await));
    let receipt = api
        .directory()
        .deactivate_organization(api.req(pb::DeactivateOrganizationRequest {
            request_id: String::new(),
            id: "uni".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    let d = api.authorize(research.clone()).await;
    assert!(!allowed(&d));
    assert_eq!(
        d.reasons,
        vec![format!(
            "organisation `uni` was deactivated at entry {}",
            receipt.leaf_index
        )]
    );
    // UpsertOrganization reactivates it.
    api.org("uni", "university").await;
    assert!(allowed(&api.authorize(research).await));
    server.stop().await;
}

#[tokio::test]
async fn directory_lists_page_through_every_record_in_id_order() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    let mut expected = Vec::new();
    for n in 0..7 {
        let id = format!("org-{n}");
        api.org(&id, "university").await;
        expected.push(id);
    }
    facility(&api, "hosp-a", "", &["p1"]).await;
    expected.insert(0, "hosp-a".to_owned());

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .directory()
            .list_organizations(api.req(pb::ListOrganizationsRequest {
                page_size: 3,
                page_token: token.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.organizations.len() <= 3);
        seen.extend(page.organizations.into_iter().map(|o| o.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
    // No page size is the default page; a huge one is capped, not refused.
    for page_size in [0, u32::MAX] {
        let all = api
            .directory()
            .list_organizations(api.req(pb::ListOrganizationsRequest {
                page_size,
                page_token: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.organizations.len(), 8);
        assert!(all.next_page_token.is_empty());
    }
    let bad = api
        .directory()
        .list_organizations(api.req(pb::ListOrganizationsRequest {
            page_size: 3,
            page_token: "not a token".into(),
        }))
        .await;
    expect_status("bad token", bad, Code::InvalidArgument, "page_token");

    // Facilities, groups and clinicians list the same way; reads never show patients.
    api.directory()
        .upsert_facility_group(api.req(pb::UpsertFacilityGroupRequest {
            request_id: String::new(),
            id: "grp".into(),
            excluded_departments: vec!["genetics".into()],
            excluded_patients: vec!["p2".into()],
        }))
        .await
        .unwrap();
    api.clinician("dr-a", "hosp-a", "internal", "doctor").await;
    let facilities = api
        .directory()
        .list_facilities(api.req(pb::ListFacilitiesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(facilities.facilities.len(), 1);
    let hosp = &facilities.facilities[0];
    assert_eq!(
        (hosp.id.as_str(), hosp.recipient_class.as_str()),
        ("hosp-a", "hospital")
    );
    assert_eq!(hosp.deactivated_at, None);
    let groups = api
        .directory()
        .list_facility_groups(api.req(pb::ListFacilityGroupsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(groups.facility_groups[0].excluded_departments, ["genetics"]);
    let clinicians = api
        .directory()
        .list_clinicians(api.req(pb::ListCliniciansRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clinicians.clinicians[0].id, "dr-a");
    let group = api
        .directory()
        .get_facility_group(api.req(pb::GetFacilityGroupRequest { id: "grp".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.facility_group.unwrap().id, "grp");
    let missing = api
        .directory()
        .get_facility(api.req(pb::GetFacilityRequest {
            id: "nowhere".into(),
        }))
        .await;
    expect_status("unknown facility", missing, Code::NotFound, "nowhere");
    server.stop().await;
}

#[tokio::test]
async fn directory_reads_and_deactivations_are_for_the_platform_only() {
    let server = TestServer::start().await;
    let platform = Api::new(&server, Role::Platform, None).await;
    platform.org("uni", "university").await;
    for (role, patient) in [
        (Role::Patient, Some("p1")),
        (Role::Regulator, None),
        (Role::Auditor, None),
    ] {
        let api = Api::new(&server, role, patient).await;
        let mut directory = api.directory();
        expect_status(
            "get",
            directory
                .get_organization(api.req(pb::GetOrganizationRequest { id: "uni".into() }))
                .await,
            Code::PermissionDenied,
            "",
        );
        expect_status(
            "list",
            directory
                .list_clinicians(api.req(pb::ListCliniciansRequest::default()))
                .await,
            Code::PermissionDenied,
            "",
        );
        expect_status(
            "deactivate",
            directory
                .deactivate_organization(api.req(pb::DeactivateOrganizationRequest {
                    request_id: String::new(),
                    id: "uni".into(),
                }))
                .await,
            Code::PermissionDenied,
            "",
        );
    }
    // Nothing was deactivated.
    let org = platform
        .directory()
        .get_organization(platform.req(pb::GetOrganizationRequest { id: "uni".into() }))
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    assert_eq!(org.deactivated_at, None);
    server.stop().await;
}

#[tokio::test]
async fn facility_and_group_leaves_say_nothing_about_excluded_patients() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.directory()
        .upsert_facility_group(api.req(pb::UpsertFacilityGroupRequest {
            request_id: String::new(),
            id: "grp".into(),
            excluded_departments: vec![],
            excluded_patients: vec!["p1".into(), "p2".into()],
        }))
        .await
        .unwrap();
    let receipt = facility(&api, "hosp-a", "", &["p1"]).await;
    let leaves = api
        .transparency()
        .get_leaves(pb::GetLeavesRequest {
            start: 0,
            count: receipt.leaf_index + 1,
        })
        .await
        .unwrap()
        .into_inner()
        .leaves;
    let text: Vec<String> = leaves
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    let group = text
        .iter()
        .find(|l| l.starts_with("akashi/v1 directory.facility_group\n"))
        .unwrap();
    let facility = text.last().unwrap();
    assert!(
        facility.starts_with("akashi/v1 directory.facility\n"),
        "{facility}"
    );
    for leaf in [group, facility] {
        assert!(leaf.contains("\nheader 2\n"), "{leaf}");
        assert!(!leaf.contains("excluded_patients"), "{leaf}");
    }
    assert!(
        facility.contains("\nrecipient_class hospital\n"),
        "{facility}"
    );
    server.stop().await;
}

use prost::Message as _;

use super::{FILE_DESCRIPTOR_SET, pb};

#[test]
fn descriptor_set_names_the_api_services() {
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut services: Vec<String> = fds
        .file
        .iter()
        .filter(|f| f.package() == "akashi.v1")
        .flat_map(|f| f.service.iter().map(|s| format!("akashi.v1.{}", s.name())))
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "akashi.v1.AccessService",
            "akashi.v1.AuditService",
            "akashi.v1.ConsentService",
            "akashi.v1.DirectoryService",
            "akashi.v1.ErasureService",
            "akashi.v1.HistoryService",
            "akashi.v1.PolicyService",
            "akashi.v1.TransparencyService",
        ]
    );
}

#[test]
fn service_names_match_generated_servers() {
    assert_eq!(
        pb::access_service_server::SERVICE_NAME,
        "akashi.v1.AccessService"
    );
    assert_eq!(
        pb::consent_service_server::SERVICE_NAME,
        "akashi.v1.ConsentService"
    );
    assert_eq!(
        pb::directory_service_server::SERVICE_NAME,
        "akashi.v1.DirectoryService"
    );
    assert_eq!(
        pb::history_service_server::SERVICE_NAME,
        "akashi.v1.HistoryService"
    );
    assert_eq!(
        pb::policy_service_server::SERVICE_NAME,
        "akashi.v1.PolicyService"
    );
    assert_eq!(
        pb::transparency_service_server::SERVICE_NAME,
        "akashi.v1.TransparencyService"
    );
}

#[test]
fn decision_enum_uses_api_names() {
    assert_eq!(pb::Decision::Allow.as_str_name(), "ALLOW");
    assert_eq!(pb::Decision::Deny.as_str_name(), "DENY");
    assert_eq!(
        pb::Decision::try_from(0).unwrap(),
        pb::Decision::Unspecified
    );
}

#[test]
fn receipt_round_trips() {
    let receipt = pb::Receipt {
        leaf_index: 7,
        leaf_hash: vec![1; 32],
        checkpoint: "akashi.dev/log\n8\nAAAA\n".to_owned(),
        inclusion_proof: vec![vec![2; 32], vec![3; 32]],
        tree_size: 8,
        leaf: b"akashi/v1 test\n".to_vec(),
    };
    let decoded = pb::Receipt::decode(receipt.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, receipt);
}

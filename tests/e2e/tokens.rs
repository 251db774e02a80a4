//! Tokens minted for a data dir verify against the server's issuer key, for each role.

use std::time::SystemTime;

use akashi::{auth::Role, keys::load_token_issuer};

use crate::harness::TestServer;

#[tokio::test]
async fn minted_tokens_verify_with_the_data_dir_issuer() {
    let server = TestServer::start().await;
    let verifier = load_token_issuer(&server.data_dir()).unwrap().verifier();
    for role in [Role::Auditor, Role::Platform, Role::Regulator] {
        let caller = verifier
            .verify(&server.token(role, None), SystemTime::now())
            .unwrap();
        assert_eq!(caller.role, role);
        assert_eq!(caller.patient_id, None);
    }
    let caller = verifier
        .verify(
            &server.token(Role::Patient, Some("p-42")),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(caller.role, Role::Patient);
    assert_eq!(caller.patient_id.as_deref(), Some("p-42"));
    server.stop().await;
}

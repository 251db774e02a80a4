//! Entries that recovery finds durable but never acknowledged are marked in the patient's
//! history: the anchor holds the newest acknowledged checkpoint, so a store ahead of it (a crash
//! or a failed sync after a batch reached the disk, before its callers were answered) tells which
//! entries no caller ever heard of.

use std::fs;

use akashi::auth::Role;

use crate::{
    api::{Api, grant},
    harness::TestServer,
};

const ANCHOR: &str = "ledger.anchor";

#[tokio::test]
async fn history_marks_entries_recovery_found_durable_but_never_acknowledged() {
    let server = TestServer::start().await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.org("uni", "university").await;
    let research = || {
        grant(
            "alice",
            &["research"],
            &["clinical"],
            &["uni"],
            &[],
            "PSEUDONYMIZED",
        )
    };
    api.grant(research()).await;
    let dir = server.stop().await;
    // The anchor as it stood with the first grant acknowledged.
    let anchor_path = dir.path().join("data").join(ANCHOR);
    let acknowledged_anchor = fs::read(&anchor_path).unwrap();

    let server = TestServer::start_in(dir).await;
    let api = Api::new(&server, Role::Platform, None).await;
    api.grant(research()).await;
    api.grant(research()).await;
    let dir = server.stop().await;
    // As if the process had died after the last two grants' batches were synced and before the
    // anchor advanced: their callers were never answered.
    fs::write(&anchor_path, &acknowledged_anchor).unwrap();

    let server = TestServer::start_in(dir).await;
    let regulator = Api::new(&server, Role::Regulator, None).await;
    let history = regulator.subject_history("alice").await.unwrap();
    let marks: Vec<bool> = history.entries.iter().map(|e| e.unacknowledged).collect();
    assert_eq!(marks, [false, true, true], "{history:?}");

    // Entries written after the recovery are acknowledged as usual; the marks stay.
    let api = Api::new(&server, Role::Platform, None).await;
    api.grant(research()).await;
    let history = regulator.subject_history("alice").await.unwrap();
    let marks: Vec<bool> = history.entries.iter().map(|e| e.unacknowledged).collect();
    assert_eq!(marks, [false, true, true, false]);
    server.stop().await;
}

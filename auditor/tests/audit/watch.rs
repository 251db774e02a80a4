//! The witness over HTTP tiles and over gRPC: consistent growth is accepted (sizes on and off
//! tile boundaries), a fork (a copy of the log with other entries appended, served in its place)
//! and a rollback are caught with both sizes and roots, and the state file is what is trusted.

use std::path::Path;

use auditor::cli::{LogSource, WatchConfig, WatchStep, watch_once};
use auditor::trust::{Advance, TrustError};
use ledger::hash::TreeSize;

use crate::support::{self, Served, append_plain, plain_log};

fn config(source: LogSource, state: &Path) -> WatchConfig {
    WatchConfig {
        tls: Default::default(),
        verifier: support::signer().verifier(),
        source,
        state: Some(state.to_owned()),
        witnesses: Default::default(),
    }
}

async fn accepted(config: &WatchConfig) -> Advance {
    match watch_once(config).await.unwrap() {
        WatchStep::Accepted { advance, .. } => advance,
        WatchStep::Inconsistent(err) => panic!("{err}"),
    }
}

async fn inconsistent(config: &WatchConfig) -> TrustError {
    match watch_once(config).await.unwrap() {
        WatchStep::Accepted { advance, .. } => panic!("accepted {advance:?}"),
        WatchStep::Inconsistent(err) => err,
    }
}

/// Runs the whole story against a server of `served` at `source`.
async fn story(served: Served, source: LogSource) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("trusted");
    let log = plain_log(300, 7, "a");
    served.switch(log.clone());
    let config = config(source, &state);

    assert_eq!(
        accepted(&config).await,
        Advance::First {
            size: TreeSize(300)
        }
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        log.checkpoint().note()
    );
    // Growth across tile boundaries, to sizes on and off them.
    for (from, to) in [(300, 512), (512, 513), (513, 700), (700, 768)] {
        append_plain(&log, from..to, 7, "a");
        assert_eq!(
            accepted(&config).await,
            Advance::Grown {
                from: TreeSize(from),
                to: TreeSize(to)
            }
        );
    }
    assert_eq!(
        accepted(&config).await,
        Advance::Unchanged {
            size: TreeSize(768)
        }
    );

    // A copy of the log up to 600 with other entries appended, served in its place.
    let fork = plain_log(600, 7, "a");
    append_plain(&fork, 600..768, 7, "b");
    served.switch(fork.clone());
    let err = inconsistent(&config).await;
    let TrustError::Fork(d) = &err else {
        panic!("{err}")
    };
    assert_eq!((d.trusted_size, d.new_size), (TreeSize(768), TreeSize(768)));
    assert_ne!(d.trusted_root, d.new_root);
    // The trusted state did not move.
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        log.checkpoint().note()
    );

    // The fork grows: its consistency proof from the trusted size does not connect.
    append_plain(&fork, 768..1000, 7, "b");
    let err = inconsistent(&config).await;
    let TrustError::Fork(d) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (d.trusted_size, d.new_size),
        (TreeSize(768), TreeSize(1000))
    );
    assert!(d.proof_error.is_some());

    // A log that lost entries: a rollback.
    served.switch(plain_log(500, 7, "a"));
    let err = inconsistent(&config).await;
    let TrustError::Rollback(d) = &err else {
        panic!("{err}")
    };
    assert_eq!((d.trusted_size, d.new_size), (TreeSize(768), TreeSize(500)));

    // A watcher that trusted the shared prefix accepts the fork's growth: it extends what
    // that watcher saw, and a fork is always relative to what was seen.
    let other_state = dir.path().join("other");
    std::fs::write(&other_state, plain_log(600, 7, "a").checkpoint().note()).unwrap();
    served.switch(fork);
    let other = WatchConfig {
        tls: Default::default(),
        state: Some(other_state),
        ..config.clone()
    };
    assert!(matches!(accepted(&other).await, Advance::Grown { .. }));
}

#[tokio::test]
async fn witness_over_http_tiles() {
    let served = Served::new(plain_log(0, 1, "x"));
    let url = support::start_http(served.clone());
    story(served, LogSource::Http(url)).await;
}

#[tokio::test]
async fn witness_over_grpc() {
    let served = Served::new(plain_log(0, 1, "x"));
    let addr = support::start_grpc(served.clone()).await;
    story(served, LogSource::Grpc(addr.to_string())).await;
}

#[tokio::test]
async fn a_bad_state_file_is_an_error_and_a_forged_checkpoint_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("trusted");
    std::fs::write(&state, "not a checkpoint\n").unwrap();
    let served = Served::new(plain_log(10, 3, "a"));
    let url = support::start_http(served.clone());
    let err = watch_once(&config(LogSource::Http(url.clone()), &state))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("trusted checkpoint"), "{err:#}");

    let other_key = WatchConfig {
        tls: Default::default(),
        verifier: ledger::note::NoteSigner::from_seed(
            ledger::note::KeyName::new(support::ORIGIN).unwrap(),
            &[9; 32],
        )
        .verifier(),
        source: LogSource::Http(url),
        state: None,
        witnesses: Default::default(),
    };
    let err = inconsistent(&other_key).await;
    assert!(matches!(err, TrustError::BadCheckpoint(_)), "{err}");

    let unreachable = config(LogSource::Http("http://127.0.0.1:1".to_owned()), &state);
    assert!(watch_once(&unreachable).await.is_err());
}

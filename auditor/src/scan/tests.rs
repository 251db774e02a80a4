use ledger::chunk::Record;
use ledger::log::Log;
use ledger::{
    checkpoint::{Checkpoint, SignedCheckpoint},
    hash::{LeafIndex, TreeSize},
};

use super::{LogScan, ScanError};
use crate::report::Finding;
use crate::testing;

/// An entry's leaf and body (none when erased).
type Entry = (Vec<u8>, Option<Vec<u8>>);

/// Everything a regulator would fetch: entries with bodies, and every checkpoint.
fn fetch(log: &Log) -> (Vec<Entry>, Vec<String>) {
    let size = log.size().get();
    let mut entries = Vec::new();
    while (entries.len() as u64) < size {
        let start = LeafIndex(entries.len() as u64);
        let leaves = log.leaves(start, 1024).unwrap();
        let bodies = log.bodies(start, 1024).unwrap();
        for (leaf, body) in leaves.into_iter().zip(bodies) {
            let body = match body {
                Record::Present(b) => Some(b),
                Record::Redacted => None,
            };
            entries.push((leaf, body));
        }
    }
    let checkpoints = log
        .checkpoints(TreeSize(0), TreeSize(size + 1), usize::MAX)
        .unwrap();
    (entries, checkpoints)
}

fn scan_all(entries: &[Entry], checkpoints: &[String]) -> crate::report::Report {
    let mut scan = LogScan::new(testing::signer().verifier());
    for note in checkpoints {
        scan.add_checkpoint(note).unwrap();
    }
    for (i, (leaf, body)) in entries.iter().enumerate() {
        scan.push(LeafIndex(i as u64), leaf, body.as_deref())
            .unwrap();
    }
    scan.finish()
}

#[test]
fn an_honest_log_scans_clean_with_every_checkpoint_checked() {
    let log = testing::log(700, 37);
    let (entries, checkpoints) = fetch(&log);
    // One checkpoint per batch, plus the empty tree's.
    assert_eq!(checkpoints.len(), 1 + 700usize.div_ceil(37));
    let report = scan_all(&entries, &checkpoints);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.entries, 700);
    assert_eq!(report.checkpoints_checked, checkpoints.len() as u64);
    assert_eq!(report.root, log.checkpoint().checkpoint().root.to_hex());
}

#[test]
fn redacted_bodies_are_counted_and_proofs_still_hold() {
    let log = testing::log(10, 10);
    log.redact_body(LeafIndex(3)).unwrap();
    let (entries, checkpoints) = fetch(&log);
    assert!(entries[3].1.is_none());
    let report = scan_all(&entries, &checkpoints);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.redacted, 1);
}

#[test]
fn an_entry_dated_before_an_earlier_one_is_reported_once() {
    let log = Log::open(
        std::sync::Arc::new(ledger::store::MemoryStore::new()),
        testing::signer(),
    )
    .unwrap();
    let dated = |i: u64, day: &str| {
        let mut entry = testing::entry(i, "a");
        entry.leaf.day = ledger::entry::Day::parse(day).unwrap();
        entry
    };
    log.append_batch(
        &[
            dated(0, "2026-11-20"),
            dated(1, "2026-11-24"),
            dated(2, "2026-11-24"),
            // Backdated: before entry 1's day.
            dated(3, "2026-11-21"),
            dated(4, "2026-11-24"),
            dated(5, "2026-11-25"),
        ],
        Vec::new(),
    )
    .unwrap();
    let (entries, checkpoints) = fetch(&log);
    let report = scan_all(&entries, &checkpoints);
    assert_eq!(
        report.findings,
        vec![Finding::DayNotAscending {
            index: 3,
            day: "2026-11-21".to_owned(),
            previous: 1,
            previous_day: "2026-11-24".to_owned(),
        }]
    );
}

#[test]
fn a_changed_body_is_a_bad_commitment() {
    let log = testing::log(10, 5);
    let (mut entries, checkpoints) = fetch(&log);
    entries[7].1.as_mut().unwrap()[20] ^= 1;
    let report = scan_all(&entries, &checkpoints);
    assert_eq!(report.findings, vec![Finding::BadCommitment { index: 7 }]);
}

#[test]
fn a_changed_leaf_breaks_every_later_checkpoint() {
    let log = testing::log(12, 4);
    let (mut entries, checkpoints) = fetch(&log);
    // A different but well-formed leaf at index 5: its body then no longer matches either.
    entries[5] = {
        let other = testing::entry(5, "other");
        (other.leaf.encode(), Some(other.body.encode()))
    };
    let report = scan_all(&entries, &checkpoints);
    let sizes: Vec<u64> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::CheckpointMismatch { size, .. } => Some(*size),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![8, 12]);
    assert_eq!(report.checkpoints_checked, 4);
}

#[test]
fn missing_entries_bad_leaves_and_bad_checkpoints_are_findings() {
    let log = testing::log(8, 4);
    let (mut entries, mut checkpoints) = fetch(&log);
    entries.truncate(6);
    entries[1].0 = b"not a leaf".to_vec();
    checkpoints.push("garbage".to_owned());
    let forged = SignedCheckpoint::sign(
        Checkpoint::new(testing::ORIGIN, TreeSize(2), ledger::hash::empty_root()),
        &testing::other_signer(),
    )
    .unwrap();
    checkpoints.push(forged.into_note());
    let report = scan_all(&entries, &checkpoints);
    let kinds: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert!(
        matches!(
            report.findings[0],
            Finding::BadCheckpoint { position: 3, .. }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(
            report.findings[1],
            Finding::BadCheckpoint { position: 4, .. }
        ),
        "{kinds:?}"
    );
    assert!(
        matches!(report.findings[2], Finding::BadLeaf { index: 1, .. }),
        "{kinds:?}"
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::CheckpointMismatch { size: 4, .. })),
        "{kinds:?}"
    );
    assert_eq!(
        report.findings.last(),
        Some(&Finding::CheckpointBeyondLog {
            size: 8,
            entries: 6
        })
    );
}

#[test]
fn out_of_order_input_is_an_error() {
    let log = testing::log(4, 2);
    let (entries, checkpoints) = fetch(&log);
    let mut scan = LogScan::new(testing::signer().verifier());
    assert_eq!(
        scan.push(LeafIndex(1), &entries[1].0, None).unwrap_err(),
        ScanError::OutOfOrder {
            expected: LeafIndex(0),
            got: LeafIndex(1)
        }
    );
    scan.push(LeafIndex(0), &entries[0].0, None).unwrap();
    scan.push(LeafIndex(1), &entries[1].0, None).unwrap();
    scan.push(LeafIndex(2), &entries[2].0, None).unwrap();
    assert!(matches!(
        scan.add_checkpoint(&checkpoints[1]),
        Err(ScanError::LateCheckpoint { .. })
    ));
}

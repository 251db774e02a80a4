//! Replay throughput on a large log of real policy events: the scan alone (tree, checkpoints,
//! commitments), the full in-process replay (plus events, headers, re-decided decisions), and
//! the `akashi-audit replay` path over gRPC on loopback. Prints entries per second and the
//! resident memory growth of each run, and asserts that every run found the log clean.
//!
//! `cargo bench -p auditor --bench replay` (100 000 entries; `AKASHI_REPLAY_ENTRIES=N` to change).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub,
    reason = "bench code"
)]

#[path = "../tests/audit/support.rs"]
#[allow(dead_code, reason = "shared with the tests; the bench uses part of it")]
mod support;

use std::time::Instant;

use auditor::cli::{ReplayConfig, replay};
use auditor::replay::Replay;
use auditor::scan::LogScan;
use ledger::chunk::Record;
use ledger::hash::{LeafIndex, TreeSize};
use ledger::log::Log;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Feeds the whole log to `push`/`checkpoint`, as the CLI does, page by page.
fn feed(
    log: &Log,
    mut checkpoint: impl FnMut(&str),
    mut push: impl FnMut(u64, &[u8], Option<&[u8]>),
) {
    let size = log.size().get();
    let mut listed = 0;
    let mut next = 0;
    while next < size {
        let end = (next + 1024).min(size);
        while listed <= end {
            let page = log
                .checkpoints(TreeSize(listed), TreeSize(end + 1), 1024)
                .unwrap();
            if page.is_empty() {
                break;
            }
            for note in &page {
                checkpoint(note);
            }
            listed = ledger::note::parse_note(page.last().unwrap())
                .ok()
                .and_then(|n| ledger::checkpoint::Checkpoint::parse(&n.text).ok())
                .map_or(end + 1, |c| c.size.get() + 1);
        }
        let leaves = log.leaves(LeafIndex(next), end - next).unwrap();
        let bodies = log.bodies(LeafIndex(next), end - next).unwrap();
        for (leaf, body) in leaves.iter().zip(bodies) {
            let body = match body {
                Record::Present(b) => Some(b),
                Record::Redacted => None,
            };
            push(next, leaf, body.as_deref());
            next += 1;
        }
    }
}

fn report(what: &str, entries: u64, seconds: f64, rss_before: u64) {
    println!(
        "{what:<28} {entries:>9} entries {seconds:>7.2} s {:>9.0} entries/s  rss +{} MiB",
        entries as f64 / seconds,
        rss_kib().saturating_sub(rss_before) / 1024
    );
}

fn main() {
    let entries: u64 = std::env::var("AKASHI_REPLAY_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let started = Instant::now();
    let mut world = support::World::new();
    world.grow_realistic(entries, 256);
    let log = world.log.clone();
    let size = log.size().get();
    println!(
        "built a log of {size} entries ({} checkpoints) in {:.1} s",
        log.checkpoints(TreeSize(0), TreeSize(size + 1), usize::MAX)
            .unwrap()
            .len(),
        started.elapsed().as_secs_f64()
    );
    let verifier = support::signer().verifier();

    let rss = rss_kib();
    let t = Instant::now();
    let mut scan = LogScan::new(verifier.clone());
    let scan_cell = std::cell::RefCell::new(&mut scan);
    feed(
        &log,
        |note| scan_cell.borrow_mut().add_checkpoint(note).unwrap(),
        |i, leaf, body| {
            std::hint::black_box(
                scan_cell
                    .borrow_mut()
                    .push(LeafIndex(i), leaf, body)
                    .unwrap(),
            );
        },
    );
    let scanned = scan.finish();
    report(
        "scan (tree, checkpoints)",
        size,
        t.elapsed().as_secs_f64(),
        rss,
    );
    assert!(scanned.is_clean(), "{scanned}");

    let rss = rss_kib();
    let t = Instant::now();
    let replay_cell = std::cell::RefCell::new(Replay::new(verifier.clone()));
    feed(
        &log,
        |note| replay_cell.borrow_mut().add_checkpoint(note).unwrap(),
        |i, leaf, body| {
            replay_cell
                .borrow_mut()
                .push(LeafIndex(i), leaf, body)
                .unwrap()
        },
    );
    let replayed = replay_cell.into_inner().finish();
    report("replay in-process", size, t.elapsed().as_secs_f64(), rss);
    assert!(replayed.is_clean(), "{replayed}");
    assert!(replayed.decisions_checked > size / 2);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss = rss_kib();
    let t = Instant::now();
    let over_grpc = runtime.block_on(async {
        let addr = support::start_grpc(support::Served::new(log.clone())).await;
        let config = ReplayConfig {
            tls: Default::default(),
            verifier,
            grpc: addr.to_string(),
            token: support::REGULATOR_TOKEN.to_owned(),
        };
        replay(&config, false).await.unwrap()
    });
    report(
        "akashi-audit replay (gRPC)",
        size,
        t.elapsed().as_secs_f64(),
        rss,
    );
    assert!(over_grpc.is_clean(), "{over_grpc}");
    assert_eq!(over_grpc.decisions_checked, replayed.decisions_checked);
}

//! The public disclosure statistics: the cost of folding one public leaf header into the tally
//! (what the server pays per new entry), and of publishing the statistics of a year of decisions
//! by 100 recipients (what it pays once per refresh, whatever the log's length).
//!
//! Run with `cargo bench -p policy --bench disclosure`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "bench code"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use policy::disclosure::{Header, Tally};
use policy::domain::{DataCategory, Level, Purpose, RecipientClass};

/// Leaves folded per iteration of the fold benchmark.
const LEAVES: u64 = 100_000;

/// One of a spread of decision headers: 100 recipients, every purpose, level and category,
/// over twelve months.
fn header_parts(i: u64) -> (String, Vec<(&'static str, String)>) {
    let pick = |n: usize| usize::try_from(i).unwrap() % n;
    let day = format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1);
    let attributes = vec![
        ("header", "2".to_owned()),
        ("action", "secondary_use".to_owned()),
        ("principal_type", "Organization".to_owned()),
        ("recipient", format!("org-{}", i % 100)),
        (
            "recipient_class",
            RecipientClass::ALL[pick(RecipientClass::ALL.len())].to_string(),
        ),
        (
            "purpose",
            Purpose::ALL[pick(Purpose::ALL.len())].to_string(),
        ),
        ("level", Level::ALL[pick(Level::ALL.len())].to_string()),
        (
            "category",
            DataCategory::ALL[pick(DataCategory::ALL.len())].to_string(),
        ),
        (
            "decision",
            if i.is_multiple_of(3) { "DENY" } else { "ALLOW" }.to_owned(),
        ),
        ("policy_set", "ab".repeat(32)),
        ("review", i.is_multiple_of(17).to_string()),
    ];
    (day, attributes)
}

fn fold(tally: &mut Tally, parts: &[(String, Vec<(&'static str, String)>)]) {
    for (day, attributes) in parts {
        let attributes: Vec<(&str, &str)> =
            attributes.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let header = Header {
            kind: "access.decision",
            day,
            attributes: &attributes,
        };
        tally.add(tally.size(), &header).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let parts: Vec<_> = (0..LEAVES).map(header_parts).collect();
    let mut group = c.benchmark_group("disclosure");
    group.throughput(Throughput::Elements(LEAVES));
    group.sample_size(10);
    group.bench_function("fold 100k decision headers", |b| {
        b.iter(|| {
            let mut tally = Tally::new();
            fold(&mut tally, &parts);
            black_box(tally.size())
        });
    });
    group.finish();
    let mut tally = Tally::new();
    fold(&mut tally, &parts);
    let cells = tally
        .statistics(10)
        .unwrap()
        .tables
        .iter()
        .map(|t| t.rows.len())
        .sum::<usize>();
    let mut group = c.benchmark_group("disclosure");
    group.sample_size(10);
    group.bench_function(format!("statistics of a year ({cells} cells)"), |b| {
        b.iter(|| black_box(tally.statistics(10).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

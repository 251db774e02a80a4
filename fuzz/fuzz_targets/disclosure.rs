//! Public leaves from outside, as an entry bundle: the disclosure statistics never panic on
//! them, and with nothing hidden every decision table adds up to the monthly totals, and every
//! hidden count of the published statistics is a real one.
#![no_main]
use std::collections::BTreeMap;

use policy::disclosure::{DECISIONS_BY_MONTH, Header, Statistics, Tally, compare};

fn totals(stats: &Statistics, table: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for row in &stats.table(table).expect("every table is published").rows {
        let key = (row.key[0].clone(), row.key[row.key.len() - 1].clone());
        *out.entry(key).or_default() += row.count.expect("threshold 1 hides nothing");
    }
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&threshold, bundle)) = data.split_first() else {
        return;
    };
    let Ok(leaves) = ledger::tile::decode_entry_bundle(bundle) else {
        return;
    };
    let mut tally = Tally::new();
    for leaf in leaves {
        let Ok(leaf) = ledger::entry::Leaf::decode(leaf) else {
            continue;
        };
        let day = leaf.day.to_string();
        let attributes = leaf.attribute_texts();
        let header = Header {
            kind: leaf.kind.as_str(),
            day: &day,
            attributes: &attributes,
        };
        tally.add(tally.size(), &header).expect("in order, valid day");
    }
    let exact = tally.statistics(1).expect("1 is a valid threshold");
    let months = totals(&exact, DECISIONS_BY_MONTH);
    for table in exact.tables.iter().filter(|t| t.name.starts_with("decisions_by_")) {
        assert_eq!(totals(&exact, &table.name), months, "{}", table.name);
    }
    let published = tally
        .statistics(u64::from(threshold).max(1))
        .expect("a valid threshold");
    assert!(compare(&published, &published).is_empty());
    for (shown, real) in published.tables.iter().zip(&exact.tables) {
        assert_eq!(shown.rows.len(), real.rows.len());
        for (s, r) in shown.rows.iter().zip(&real.rows) {
            assert_eq!(s.key, r.key);
            assert!(s.count.is_none() || s.count == r.count);
        }
    }
});

use std::collections::BTreeMap;

use policy::disclosure::{Header, PinnedCheckpoint, Tally};

use super::*;

#[test]
fn accept_language_picks_the_preferred_of_ours() {
    assert_eq!(Lang::negotiate("en-US,en;q=0.9,ja;q=0.8"), Lang::En);
    assert_eq!(Lang::negotiate("ja,en-US;q=0.9"), Lang::Ja);
    assert_eq!(Lang::negotiate("fr-FR, en;q=0.5"), Lang::En);
    assert_eq!(Lang::negotiate("fr-FR"), Lang::Ja);
    assert_eq!(Lang::negotiate(""), Lang::Ja);
    assert_eq!(Lang::negotiate("en;q=0, ja;q=0"), Lang::Ja);
    assert_eq!(Lang::negotiate("ja;q=0.1,EN;q=0.2"), Lang::En);
    assert_eq!(Lang::negotiate("en;q=1.5,ja;q=0.3"), Lang::Ja);
    assert_eq!(Lang::negotiate("en;q=0.1234"), Lang::Ja);
    assert_eq!(parse_weight("0.5"), 500);
    assert_eq!(parse_weight("1"), 1000);
    assert_eq!(parse_weight("1.000"), 1000);
    assert_eq!(parse_weight("0.05"), 50);
    assert_eq!(parse_weight("x"), 0);
}

fn document(threshold: u64) -> Document {
    let mut tally = Tally::new();
    let mut add = |kind: &str, day: &str, attributes: &[(&str, &str)]| {
        let index = tally.size();
        tally
            .add(
                index,
                &Header {
                    kind,
                    day,
                    attributes,
                },
            )
            .unwrap();
    };
    add(
        "policy.activate",
        "2026-11-01",
        &[("policy_set", &"ab".repeat(32))],
    );
    let decision = |recipient: &'static str, purpose: &'static str, effect: &'static str| {
        vec![
            ("header", "2"),
            ("recipient", recipient),
            ("recipient_class", "university"),
            ("purpose", purpose),
            ("level", "PSEUDONYMIZED"),
            ("category", "lab_result"),
            ("decision", effect),
            ("review", "false"),
        ]
    };
    for _ in 0..1234 {
        add(
            "access.decision",
            "2026-11-20",
            &decision("univ-a", "research", "ALLOW"),
        );
    }
    for _ in 0..3 {
        add(
            "access.decision",
            "2026-12-01",
            &decision("<script>", "research", "DENY"),
        );
    }
    for _ in 0..40 {
        add(
            "access.decision",
            "2026-12-02",
            &decision("univ-a", "research", "ALLOW"),
        );
    }
    Document {
        format: policy::disclosure::FORMAT.to_owned(),
        checkpoint: PinnedCheckpoint {
            origin: "akashi.dev/log".to_owned(),
            size: tally.size(),
            root_hash: "AAAA".to_owned(),
            note: String::new(),
        },
        statistics: tally.statistics(threshold).unwrap(),
    }
}

#[test]
fn the_page_shows_the_month_in_either_language_and_escapes_everything() {
    let document = document(10);
    let ja = page::render(&document, Lang::Ja, "2026-12");
    assert!(ja.starts_with("<!DOCTYPE html>\n<html lang=\"ja\">"));
    assert!(ja.contains("2026年12月の概要"));
    assert!(ja.contains("<dd id=\"summary-allowed\">40</dd>"));
    // 3 denials are below the threshold: hidden, never shown.
    assert!(ja.contains("<dd id=\"summary-denied\"><span class=\"hidden\">秘匿</span></dd>"));
    assert!(!ja.contains("<script"));
    assert!(ja.contains("&lt;script&gt;"));
    assert!(ja.contains("学術研究"));
    assert!(ja.contains(&format!("/policy/{}", "ab".repeat(32))));
    let en = page::render(&document, Lang::En, "2026-11");
    assert!(en.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(en.contains("Summary for November 2026"));
    assert!(en.contains("1,234"));
    assert!(en.contains("href=\"/disclosure?lang=ja&amp;month=2026-11\" lang=\"ja\""));
    // Every table has a header row of scoped column headings.
    assert_eq!(en.matches("<table").count(), en.matches("<thead>").count());
    let empty = Document {
        statistics: Tally::new().statistics(10).unwrap(),
        ..document.clone()
    };
    let page = page::render(&empty, Lang::En, "");
    assert!(page.contains("No records for this month."));
}

#[test]
fn pages_are_cached_per_language_and_month_and_unknown_months_are_none() {
    let snapshot = Snapshot::new(document(10)).unwrap();
    let latest = snapshot.page(Lang::Ja, None).unwrap();
    assert_eq!(snapshot.page(Lang::Ja, Some("2026-12")), Some(latest));
    assert!(snapshot.page(Lang::En, Some("2026-10")).is_none());
    let json: Document = serde_json::from_slice(&snapshot.json()).unwrap();
    assert_eq!(json, *snapshot.document());
    let csv = snapshot.csv("decisions_by_month").unwrap();
    assert!(csv.starts_with(b"month,outcome,count,suppressed\r\n"));
    assert!(snapshot.csv("nope").is_none());
    let cached: BTreeMap<_, _> = snapshot
        .pages
        .lock()
        .unwrap()
        .keys()
        .map(|(l, m)| (l.tag(), m.clone()))
        .collect();
    assert_eq!(cached.len(), 1);
}

use super::*;

struct Log {
    tally: Tally,
}

impl Log {
    fn new() -> Self {
        Self {
            tally: Tally::new(),
        }
    }

    fn add(&mut self, kind: &str, day: &str, attributes: &[(&str, &str)]) {
        let index = self.tally.size();
        self.tally
            .add(
                index,
                &Header {
                    kind,
                    day,
                    attributes,
                },
            )
            .unwrap();
    }

    /// `times` decision leaves of the second format.
    #[allow(clippy::too_many_arguments, reason = "one argument per public field")]
    fn decide(
        &mut self,
        day: &str,
        recipient: &str,
        class: &str,
        purpose: &str,
        level: &str,
        category: &str,
        effect: &str,
        review: &str,
        times: u64,
    ) {
        for _ in 0..times {
            let attrs = [
                ("header", "2"),
                ("action", "secondary_use"),
                ("principal_type", "Organization"),
                ("recipient", recipient),
                ("recipient_class", class),
                ("purpose", purpose),
                ("level", level),
                ("category", category),
                ("decision", effect),
                ("policy_set", "ab"),
                ("review", review),
            ];
            self.add("access.decision", day, &attrs);
        }
    }
}

fn count(stats: &Statistics, table: &str, key: &[&str]) -> Option<Option<u64>> {
    stats
        .table(table)
        .unwrap()
        .rows
        .iter()
        .find(|row| row.key == key)
        .map(|row| row.count)
}

#[test]
fn decisions_are_counted_by_every_public_field_and_month() {
    let mut log = Log::new();
    log.add("policy.activate", "2026-11-01", &[("policy_set", "ab")]);
    log.decide(
        "2026-11-03",
        "univ-a",
        "university",
        "research",
        "PSEUDONYMIZED",
        "lab_result",
        "ALLOW",
        "false",
        12,
    );
    log.decide(
        "2026-11-04",
        "univ-a",
        "university",
        "research",
        "PSEUDONYMIZED",
        "genomic",
        "DENY",
        "false",
        15,
    );
    log.decide(
        "2026-12-01",
        "hosp-b",
        "hospital",
        "emergency",
        "IDENTIFIED",
        "clinical",
        "ALLOW",
        "true",
        11,
    );
    // A decision leaf of the first format has no category.
    for _ in 0..10 {
        log.add(
            "access.decision",
            "2026-12-02",
            &[
                ("action", "secondary_use"),
                ("recipient", "univ-a"),
                ("recipient_class", "university"),
                ("purpose", "research"),
                ("level", "ANONYMIZED"),
                ("decision", "ALLOW"),
                ("review", "false"),
            ],
        );
    }
    // Directory entries count only towards the size.
    log.add("directory.organization", "2026-12-02", &[("org", "univ-a")]);
    let stats = log.tally.statistics(10).unwrap();
    assert_eq!(stats.size, 1 + 12 + 15 + 11 + 10 + 1);
    assert_eq!(stats.months, ["2026-11", "2026-12"]);
    let by_month = DECISIONS_BY_MONTH;
    assert_eq!(
        count(&stats, by_month, &["2026-11", "allowed"]),
        Some(Some(12))
    );
    assert_eq!(
        count(&stats, by_month, &["2026-11", "denied"]),
        Some(Some(15))
    );
    assert_eq!(
        count(&stats, by_month, &["2026-12", "allowed_flagged"]),
        Some(Some(11))
    );
    assert_eq!(
        count(&stats, by_month, &["2026-12", "allowed"]),
        Some(Some(10))
    );
    assert_eq!(
        count(
            &stats,
            DECISIONS_BY_RECIPIENT,
            &["2026-11", "univ-a", "university", "denied"]
        ),
        Some(Some(15))
    );
    assert_eq!(
        count(
            &stats,
            DECISIONS_BY_RECIPIENT_CLASS,
            &["2026-12", "hospital", "allowed_flagged"]
        ),
        Some(Some(11))
    );
    assert_eq!(
        count(
            &stats,
            DECISIONS_BY_PURPOSE,
            &["2026-11", "research", "allowed"]
        ),
        Some(Some(12))
    );
    assert_eq!(
        count(
            &stats,
            DECISIONS_BY_LEVEL,
            &["2026-12", "ANONYMIZED", "allowed"]
        ),
        Some(Some(10))
    );
    assert_eq!(
        count(
            &stats,
            DECISIONS_BY_CATEGORY,
            &["2026-11", "genomic", "denied"]
        ),
        Some(Some(15))
    );
    assert_eq!(
        count(
            &stats,
            DECISIONS_BY_CATEGORY,
            &["2026-12", UNRECORDED, "allowed"]
        ),
        Some(Some(10))
    );
    assert_eq!(
        stats.policy_sets,
        [PolicySetInForce {
            hash: "ab".to_owned(),
            from_index: 0,
            from_day: "2026-11-01".to_owned(),
            until_index: None,
        }]
    );
    assert_eq!(stats.tables.len(), TABLES.len());
    for (table, name) in stats.tables.iter().zip(TABLES) {
        assert_eq!(table.name, name);
        assert!(table.rows.windows(2).all(|w| w[0].key < w[1].key));
        assert!(
            table
                .rows
                .iter()
                .all(|r| r.key.len() == table.columns.len())
        );
    }
}

#[test]
fn small_counts_are_hidden_and_so_is_the_cell_that_would_reveal_one() {
    let mut log = Log::new();
    let day = "2026-12-01";
    log.decide(
        day,
        "a",
        "university",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        30,
    );
    log.decide(
        day,
        "b",
        "pharma",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        12,
    );
    log.decide(
        day,
        "c",
        "ai_vendor",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        20,
    );
    log.decide(
        day,
        "d",
        "insurer",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        3,
    );
    let stats = log.tally.statistics(10).unwrap();
    let t = DECISIONS_BY_RECIPIENT;
    // 3 is below the threshold; 12, the smallest other count of the month and outcome, goes too:
    // otherwise 65 - 30 - 12 - 20 would give it away.
    assert_eq!(
        count(&stats, t, &["2026-12", "d", "insurer", "allowed"]),
        Some(None)
    );
    assert_eq!(
        count(&stats, t, &["2026-12", "b", "pharma", "allowed"]),
        Some(None)
    );
    assert_eq!(
        count(&stats, t, &["2026-12", "a", "university", "allowed"]),
        Some(Some(30))
    );
    assert_eq!(
        count(&stats, t, &["2026-12", "c", "ai_vendor", "allowed"]),
        Some(Some(20))
    );
    // The totals table has nothing to be subtracted from.
    assert_eq!(
        count(&stats, DECISIONS_BY_MONTH, &["2026-12", "allowed"]),
        Some(Some(65))
    );
    // Threshold 1 hides nothing; 4 hides only the 3 and its partner.
    let all = log.tally.statistics(1).unwrap();
    assert!(
        all.tables
            .iter()
            .all(|t| t.rows.iter().all(|r| r.count.is_some()))
    );
    // Two hidden cells in a slice need no partner.
    let mut log2 = Log::new();
    log2.decide(
        day,
        "a",
        "university",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        30,
    );
    log2.decide(
        day,
        "b",
        "pharma",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        2,
    );
    log2.decide(
        day,
        "c",
        "insurer",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        5,
    );
    let stats = log2.tally.statistics(10).unwrap();
    assert_eq!(
        count(&stats, t, &["2026-12", "a", "university", "allowed"]),
        Some(Some(30))
    );
    assert_eq!(
        log.tally.statistics(0),
        Err(DisclosureError::BadThreshold { threshold: 0 })
    );
}

#[test]
fn consent_activity_counts_entries_and_each_purpose_named() {
    let mut log = Log::new();
    log.add(
        "consent.grant",
        "2026-12-01",
        &[
            ("purposes", "research,public_health"),
            ("recipients", "univ-a"),
            ("recipient_classes", "none"),
            ("max_level", "PSEUDONYMIZED"),
        ],
    );
    log.add(
        "consent.opt_out",
        "2026-12-02",
        &[("purposes", "marketing")],
    );
    log.add("consent.revoke", "2026-12-03", &[]);
    log.add("consent.grant", "2027-01-01", &[("purposes", "none")]);
    let stats = log.tally.statistics(1).unwrap();
    let by_month = CONSENT_BY_MONTH;
    assert_eq!(
        count(&stats, by_month, &["2026-12", "grant"]),
        Some(Some(1))
    );
    assert_eq!(
        count(&stats, by_month, &["2026-12", "opt_out"]),
        Some(Some(1))
    );
    assert_eq!(
        count(&stats, by_month, &["2026-12", "revoke"]),
        Some(Some(1))
    );
    assert_eq!(
        count(&stats, by_month, &["2027-01", "grant"]),
        Some(Some(1))
    );
    let by_purpose = CONSENT_BY_PURPOSE;
    assert_eq!(
        count(&stats, by_purpose, &["2026-12", "grant", "research"]),
        Some(Some(1))
    );
    assert_eq!(
        count(&stats, by_purpose, &["2026-12", "grant", "public_health"]),
        Some(Some(1))
    );
    assert_eq!(
        count(&stats, by_purpose, &["2026-12", "opt_out", "marketing"]),
        Some(Some(1))
    );
    assert_eq!(stats.table(by_purpose).unwrap().rows.len(), 3);
    assert_eq!(stats.months, ["2026-12", "2027-01"]);
}

#[test]
fn leaves_are_taken_in_order_once() {
    let mut tally = Tally::new();
    let header = Header {
        kind: "consent.revoke",
        day: "2026-12-01",
        attributes: &[],
    };
    assert_eq!(
        tally.add(1, &header),
        Err(DisclosureError::OutOfOrder { got: 1, want: 0 })
    );
    tally.add(0, &header).unwrap();
    assert_eq!(
        tally.add(0, &header),
        Err(DisclosureError::OutOfOrder { got: 0, want: 1 })
    );
    let bad = Header {
        day: "2026-1201",
        ..header
    };
    assert_eq!(tally.add(1, &bad), Err(DisclosureError::BadDay));
    assert_eq!(tally.size(), 1);
}

#[test]
fn policy_sets_in_force_end_where_the_next_begins() {
    let mut log = Log::new();
    log.add("policy.activate", "2026-11-01", &[("policy_set", "aa")]);
    log.add("consent.revoke", "2026-11-02", &[]);
    log.add("policy.activate", "2026-12-01", &[("policy_set", "bb")]);
    let stats = log.tally.statistics(10).unwrap();
    assert_eq!(stats.policy_sets.len(), 2);
    assert_eq!(stats.policy_sets[0].until_index, Some(2));
    assert_eq!(stats.policy_sets[1].from_index, 2);
    assert_eq!(stats.policy_sets[1].until_index, None);
}

#[test]
fn compare_names_every_cell_that_differs() {
    let mut log = Log::new();
    log.decide(
        "2026-12-01",
        "a",
        "university",
        "research",
        "ANONYMIZED",
        "clinical",
        "ALLOW",
        "false",
        20,
    );
    log.decide(
        "2026-12-01",
        "b",
        "pharma",
        "research",
        "ANONYMIZED",
        "clinical",
        "DENY",
        "false",
        11,
    );
    let stats = log.tally.statistics(10).unwrap();
    assert_eq!(compare(&stats, &stats), []);
    // A JSON round trip changes nothing.
    let json = serde_json::to_string(&stats).unwrap();
    let back: Statistics = serde_json::from_str(&json).unwrap();
    assert_eq!(compare(&back, &stats), []);

    let mut tampered = stats.clone();
    let purposes = tampered
        .tables
        .iter_mut()
        .find(|t| t.name == DECISIONS_BY_PURPOSE)
        .unwrap();
    purposes.rows[0].count = Some(19);
    purposes.rows.pop();
    let differences = compare(&tampered, &stats);
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert_eq!(
        differences[0].to_string(),
        "decisions_by_purpose [month=2026-12 purpose=research outcome=allowed]: published 19, recomputed 20"
    );
    assert_eq!(
        differences[1].to_string(),
        "decisions_by_purpose [month=2026-12 purpose=research outcome=denied]: published no such row, recomputed 11"
    );

    let mut hidden = stats.clone();
    hidden.tables[0].rows[0].count = None;
    hidden.threshold = 5;
    hidden.policy_sets.push(PolicySetInForce {
        hash: "cc".to_owned(),
        from_index: 0,
        from_day: "2026-12-01".to_owned(),
        until_index: None,
    });
    let differences = compare(&hidden, &stats);
    assert!(matches!(differences[0], Difference::Parameters { .. }));
    assert!(
        differences
            .iter()
            .any(|d| d.to_string().ends_with("published hidden, recomputed 20"))
    );
    assert_eq!(differences.last(), Some(&Difference::PolicySets));

    let mut missing = stats.clone();
    missing.tables.remove(3);
    assert!(
        compare(&missing, &stats)
            .iter()
            .any(|d| matches!(d, Difference::Table { name } if name == DECISIONS_BY_PURPOSE))
    );
}

#[test]
fn csv_has_a_header_and_quotes_what_needs_it() {
    let table = Table {
        name: "t".to_owned(),
        columns: vec!["month".to_owned(), "recipient".to_owned()],
        rows: vec![
            Row {
                key: vec!["2026-12".to_owned(), "a,b".to_owned()],
                count: Some(12),
            },
            Row {
                key: vec!["2026-12".to_owned(), "say \"x\"".to_owned()],
                count: None,
            },
        ],
    };
    assert_eq!(
        table.to_csv(),
        "month,recipient,count,suppressed\r\n2026-12,\"a,b\",12,false\r\n2026-12,\"say \"\"x\"\"\",,true\r\n"
    );
}

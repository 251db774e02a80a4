//! Public disclosure statistics: who used which kind of data, for what, under which rules, month
//! by month — counted from the public leaf headers alone, so that anyone holding the log's
//! public leaves can recompute every number and catch an operator who publishes others.
//!
//! [`Tally`] folds public headers in log order (the server keeps one and adds only the entries
//! appended since its last fold; `akashi-audit disclosure` builds its own from the tiles), and
//! [`Tally::statistics`] turns it into [`Statistics`]: tables of counts with small cells hidden
//! (see [`Statistics::threshold`]) and the policy sets in force. [`compare`] names
//! every cell where two sets of statistics differ.
//!
//! The module reads only the attribute names that [`crate::event::Event::public_attributes`]
//! writes, never a private body: a decision's recipient organisation and its class, purpose,
//! de-identification level, data category (in leaves of the second format; older ones count it
//! as [`UNRECORDED`]) and outcome; a consent grant's or opt-out's purposes; the fact of a
//! revocation; a policy set's hash. Nothing it publishes is about one patient.
//!
//! Hiding small cells is presentation, not secrecy: the leaves are public and name no patient,
//! so anyone can count them exactly. The statistics hide counts below the threshold so that a
//! page does not point at the one person behind a rare combination, and hide a second cell
//! where one hidden cell could be worked out from the monthly totals by subtraction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The format name of the statistics document.
pub const FORMAT: &str = "akashi-disclosure/1";

/// The default threshold: counts from 1 to 9 are hidden (as rule 4 does for statistics).
pub const DEFAULT_THRESHOLD: u64 = 10;

/// The largest threshold accepted.
pub const MAX_THRESHOLD: u64 = 1_000_000;

/// The value of a field that a leaf does not carry (a decision leaf of the first format has no
/// data category; a revocation names no purpose).
pub const UNRECORDED: &str = "unrecorded";

/// The value of an attribute that a leaf gives as absent (`none`), e.g. no recipient class.
pub const NONE: &str = "none";

/// Names of the tables, in the order they are published.
pub const TABLES: [&str; 8] = [
    DECISIONS_BY_MONTH,
    DECISIONS_BY_RECIPIENT_CLASS,
    DECISIONS_BY_RECIPIENT,
    DECISIONS_BY_PURPOSE,
    DECISIONS_BY_LEVEL,
    DECISIONS_BY_CATEGORY,
    CONSENT_BY_MONTH,
    CONSENT_BY_PURPOSE,
];

/// Decisions per month and outcome: the totals the other decision tables add up to.
pub const DECISIONS_BY_MONTH: &str = "decisions_by_month";
/// Decisions per month, recipient class and outcome.
pub const DECISIONS_BY_RECIPIENT_CLASS: &str = "decisions_by_recipient_class";
/// Decisions per month, recipient organisation (and its class) and outcome.
pub const DECISIONS_BY_RECIPIENT: &str = "decisions_by_recipient";
/// Decisions per month, purpose and outcome.
pub const DECISIONS_BY_PURPOSE: &str = "decisions_by_purpose";
/// Decisions per month, de-identification level and outcome.
pub const DECISIONS_BY_LEVEL: &str = "decisions_by_level";
/// Decisions per month, data category and outcome.
pub const DECISIONS_BY_CATEGORY: &str = "decisions_by_category";
/// Consent entries per month and activity (grant, revocation, opt-out).
pub const CONSENT_BY_MONTH: &str = "consent_by_month";
/// Consent grants and opt-outs per month and purpose (an entry naming several purposes counts
/// once under each).
pub const CONSENT_BY_PURPOSE: &str = "consent_by_purpose";

/// What became of a decision, as the public leaf tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Allowed.
    Allowed,
    /// Allowed under break-glass or another rule that asks for review, and flagged for it.
    AllowedFlagged,
    /// Denied.
    Denied,
    /// The leaf does not say (not a decision leaf akashi wrote).
    Unrecorded,
}

impl Outcome {
    /// Every outcome, in the order tables list them.
    pub const ALL: [Self; 4] = [
        Self::Allowed,
        Self::AllowedFlagged,
        Self::Denied,
        Self::Unrecorded,
    ];

    /// The outcome's name in tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::AllowedFlagged => "allowed_flagged",
            Self::Denied => "denied",
            Self::Unrecorded => UNRECORDED,
        }
    }

    fn of(decision: Option<&str>, review: Option<&str>) -> Self {
        match (decision, review) {
            (Some("ALLOW"), Some("true")) => Self::AllowedFlagged,
            (Some("ALLOW"), _) => Self::Allowed,
            (Some("DENY"), _) => Self::Denied,
            _ => Self::Unrecorded,
        }
    }
}

/// A consent activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Activity {
    /// A consent was granted.
    Grant,
    /// A consent was revoked.
    Revoke,
    /// A patient opted out of purposes.
    OptOut,
}

impl Activity {
    /// The activity's name in tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::OptOut => "opt_out",
        }
    }
}

/// One public leaf header, as the tally reads it: the entry's kind, its day (`YYYY-MM-DD`) and
/// its public attributes in order.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// The entry kind, e.g. `access.decision`.
    pub kind: &'a str,
    /// The day the entry was made, `YYYY-MM-DD`.
    pub day: &'a str,
    /// The public attributes.
    pub attributes: &'a [(&'a str, &'a str)],
}

impl Header<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn month(&self) -> Result<String, DisclosureError> {
        // `YYYY-MM-DD`: the month is what comes before the second dash.
        let mut parts = self.day.splitn(3, '-');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(year), Some(month), Some(day))
                if year.len() == 4
                    && month.len() == 2
                    && day.len() == 2
                    && self
                        .day
                        .bytes()
                        .filter(|b| *b != b'-')
                        .all(|b| b.is_ascii_digit()) =>
            {
                Ok(format!("{year}-{month}"))
            }
            _ => Err(DisclosureError::BadDay),
        }
    }
}

/// The tally could not take a leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DisclosureError {
    /// Leaves must be added in log order, each once.
    #[error("leaf {got} added where leaf {want} was expected")]
    OutOfOrder {
        /// The index given.
        got: u64,
        /// The next index the tally expects.
        want: u64,
    },
    /// The header's day is not `YYYY-MM-DD`.
    #[error("a leaf's day is not a date")]
    BadDay,
    /// The threshold is outside 1 to [`MAX_THRESHOLD`].
    #[error("the suppression threshold {threshold} is outside 1 to {MAX_THRESHOLD}")]
    BadThreshold {
        /// The threshold given.
        threshold: u64,
    },
}

/// The decision tables and their key columns, in the order they are published.
const DECISION_TABLES: [(&str, &[&str]); 6] = [
    (DECISIONS_BY_MONTH, &["month", "outcome"]),
    (
        DECISIONS_BY_RECIPIENT_CLASS,
        &["month", "recipient_class", "outcome"],
    ),
    (
        DECISIONS_BY_RECIPIENT,
        &["month", "recipient", "recipient_class", "outcome"],
    ),
    (DECISIONS_BY_PURPOSE, &["month", "purpose", "outcome"]),
    (DECISIONS_BY_LEVEL, &["month", "level", "outcome"]),
    (DECISIONS_BY_CATEGORY, &["month", "category", "outcome"]),
];

/// A decision's public fields, as counted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DecisionCell {
    month: String,
    recipient: String,
    recipient_class: String,
    purpose: String,
    level: String,
    category: String,
    outcome: Outcome,
}

impl DecisionCell {
    /// Its key in each decision table, in the order of [`DECISION_TABLES`].
    fn keys(self) -> [Vec<String>; DECISION_TABLES.len()] {
        let outcome = self.outcome.as_str().to_owned();
        let month = self.month;
        [
            vec![month.clone(), outcome.clone()],
            vec![month.clone(), self.recipient_class.clone(), outcome.clone()],
            vec![
                month.clone(),
                self.recipient,
                self.recipient_class,
                outcome.clone(),
            ],
            vec![month.clone(), self.purpose, outcome.clone()],
            vec![month.clone(), self.level, outcome.clone()],
            vec![month, self.category, outcome],
        ]
    }
}

/// A policy set in force from one log entry on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySetInForce {
    /// Its hash (SHA-256 of the canonical text), 64 lowercase hex characters.
    pub hash: String,
    /// The index of the entry that activated it.
    pub from_index: u64,
    /// The day of that entry.
    pub from_day: String,
    /// The index of the entry that activated the next set, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_index: Option<u64>,
}

/// Exact counts of the public headers of leaves `0..size`, folded in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    size: u64,
    /// One map per decision table (in the order of [`DECISION_TABLES`]): the published
    /// marginals themselves, so memory grows with the cells published, not with every
    /// combination of fields.
    decisions: [BTreeMap<Vec<String>, u64>; DECISION_TABLES.len()],
    consent: BTreeMap<(String, Activity), u64>,
    consent_purposes: BTreeMap<(String, Activity, String), u64>,
    policy_sets: Vec<PolicySetInForce>,
    months: BTreeSet<String>,
}

impl Tally {
    /// An empty tally (of no leaves).
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves it has counted: leaves `0..size`.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Counts leaf `index`, which must be the next one ([`Tally::size`]). Entries of kinds the
    /// statistics do not cover (directory changes) count only towards the size.
    ///
    /// # Errors
    ///
    /// [`DisclosureError::OutOfOrder`] for any other index, [`DisclosureError::BadDay`] for a
    /// day that is not a date (the ledger never writes one); the tally is unchanged.
    pub fn add(&mut self, index: u64, header: &Header<'_>) -> Result<(), DisclosureError> {
        if index != self.size {
            return Err(DisclosureError::OutOfOrder {
                got: index,
                want: self.size,
            });
        }
        match header.kind {
            "access.decision" => {
                let month = header.month()?;
                let field = |name| header.get(name).unwrap_or(UNRECORDED).to_owned();
                let cell = DecisionCell {
                    month: month.clone(),
                    recipient: field("recipient"),
                    recipient_class: field("recipient_class"),
                    purpose: field("purpose"),
                    level: field("level"),
                    category: field("category"),
                    outcome: Outcome::of(header.get("decision"), header.get("review")),
                };
                for (table, key) in self.decisions.iter_mut().zip(cell.keys()) {
                    *table.entry(key).or_default() += 1;
                }
                self.months.insert(month);
            }
            "consent.grant" | "consent.opt_out" | "consent.revoke" => {
                let month = header.month()?;
                let activity = match header.kind {
                    "consent.grant" => Activity::Grant,
                    "consent.opt_out" => Activity::OptOut,
                    _ => Activity::Revoke,
                };
                *self.consent.entry((month.clone(), activity)).or_default() += 1;
                if let Some(purposes) = header.get("purposes") {
                    // A list is comma separated; `none` is the empty list.
                    let purposes: BTreeSet<&str> = purposes
                        .split(',')
                        .filter(|p| !p.is_empty() && *p != NONE)
                        .collect();
                    for purpose in purposes {
                        *self
                            .consent_purposes
                            .entry((month.clone(), activity, purpose.to_owned()))
                            .or_default() += 1;
                    }
                }
                self.months.insert(month);
            }
            // An approved proposal (two-person rule) activates its set as a direct activation
            // does; a proposal changes nothing in force.
            "policy.activate" | "policy.approve" => {
                if let Some(previous) = self.policy_sets.last_mut() {
                    previous.until_index = Some(index);
                }
                self.policy_sets.push(PolicySetInForce {
                    hash: header.get("policy_set").unwrap_or(UNRECORDED).to_owned(),
                    from_index: index,
                    from_day: header.day.to_owned(),
                    until_index: None,
                });
            }
            _ => {}
        }
        self.size += 1;
        Ok(())
    }

    /// The statistics as published: every table, cells below `threshold` hidden.
    ///
    /// # Errors
    ///
    /// [`DisclosureError::BadThreshold`] for a threshold outside 1 to [`MAX_THRESHOLD`].
    pub fn statistics(&self, threshold: u64) -> Result<Statistics, DisclosureError> {
        if !(1..=MAX_THRESHOLD).contains(&threshold) {
            return Err(DisclosureError::BadThreshold { threshold });
        }
        let decisions = DECISION_TABLES
            .iter()
            .zip(&self.decisions)
            .map(|((name, columns), counts)| (*name, (columns.to_vec(), counts.clone())));
        let consent = [
            (
                CONSENT_BY_MONTH,
                (
                    vec!["month", "activity"],
                    self.consent
                        .iter()
                        .map(|((month, activity), count)| {
                            (vec![month.clone(), activity.as_str().to_owned()], *count)
                        })
                        .collect(),
                ),
            ),
            (
                CONSENT_BY_PURPOSE,
                (
                    vec!["month", "activity", "purpose"],
                    self.consent_purposes
                        .iter()
                        .map(|((month, activity, purpose), count)| {
                            (
                                vec![month.clone(), activity.as_str().to_owned(), purpose.clone()],
                                *count,
                            )
                        })
                        .collect(),
                ),
            ),
        ];
        let tables = decisions
            .chain(consent)
            .map(|(name, (columns, counts))| Table::suppressed(name, &columns, counts, threshold))
            .collect();
        Ok(Statistics {
            threshold,
            size: self.size,
            months: self.months.iter().cloned().collect(),
            tables,
            policy_sets: self.policy_sets.clone(),
        })
    }
}

/// The statistics document as published (`GET /disclosure.json`): the statistics and the signed
/// checkpoint they are pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// [`FORMAT`].
    pub format: String,
    /// The checkpoint whose tree the statistics count.
    pub checkpoint: PinnedCheckpoint,
    /// The statistics.
    pub statistics: Statistics,
}

/// The signed checkpoint statistics are pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedCheckpoint {
    /// The log's origin line.
    pub origin: String,
    /// The tree size: the statistics count leaves `0..size`.
    pub size: u64,
    /// The tree's root hash, base64 as in the checkpoint.
    pub root_hash: String,
    /// The whole signed checkpoint note, to be verified with the log's key.
    pub note: String,
}

/// The published statistics of leaves `0..size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistics {
    /// Counts from 1 to `threshold - 1` are hidden, and so is the smallest other count of a
    /// month and outcome (or month and activity) in which exactly one count is hidden, so that
    /// the hidden one cannot be worked out from the monthly totals.
    pub threshold: u64,
    /// The leaves counted: `0..size`.
    pub size: u64,
    /// Every month that has a decision or a consent entry, oldest first (`YYYY-MM`).
    pub months: Vec<String>,
    /// The tables, in the order of [`TABLES`].
    pub tables: Vec<Table>,
    /// Every policy set activated, oldest first; the last is in force.
    pub policy_sets: Vec<PolicySetInForce>,
}

impl Statistics {
    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// One table of counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Its name (one of [`TABLES`]).
    pub name: String,
    /// The names of the key columns, in order (the count comes after them).
    pub columns: Vec<String>,
    /// One row per combination that occurred, in key order.
    pub rows: Vec<Row>,
}

/// One cell of a table: its key and its count, or none when hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The key, one value per column.
    pub key: Vec<String>,
    /// The count, or none when it is hidden.
    pub count: Option<u64>,
}

impl Table {
    fn suppressed(
        name: &str,
        columns: &[&str],
        counts: BTreeMap<Vec<String>, u64>,
        threshold: u64,
    ) -> Self {
        let mut rows: Vec<Row> = counts
            .into_iter()
            .map(|(key, count)| Row {
                key,
                count: (count >= threshold).then_some(count),
            })
            .collect();
        // The slice whose total is published elsewhere: month and outcome for decisions (the
        // monthly totals), month and activity for consent by purpose. The totals tables have
        // none: nothing sums to them.
        let slice = match name {
            DECISIONS_BY_MONTH | CONSENT_BY_MONTH => None,
            CONSENT_BY_PURPOSE => Some(Slice::FirstTwo),
            _ => Some(Slice::FirstAndLast),
        };
        if let Some(slice) = slice {
            secondary_suppression(&mut rows, slice);
        }
        Self {
            name: name.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows,
        }
    }

    /// The table as CSV: a header line of the key columns and `count`, then one line per row;
    /// a hidden count is empty and `suppressed` says `true`.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<&str> = self
            .columns
            .iter()
            .map(String::as_str)
            .chain(["count", "suppressed"])
            .collect();
        push_csv_line(&mut out, &header);
        for row in &self.rows {
            let count = row.count.map(|c| c.to_string()).unwrap_or_default();
            let suppressed = if row.count.is_none() { "true" } else { "false" };
            let fields: Vec<&str> = row
                .key
                .iter()
                .map(String::as_str)
                .chain([count.as_str(), suppressed])
                .collect();
            push_csv_line(&mut out, &fields);
        }
        out
    }
}

/// The key columns that pick out the cells whose sum is published as a total elsewhere.
#[derive(Debug, Clone, Copy)]
enum Slice {
    /// Month and outcome (the first and last columns): `decisions_by_month` has their total.
    FirstAndLast,
    /// Month and activity (the first two): `consent_by_month` has their total.
    FirstTwo,
}

impl Slice {
    fn of(self, key: &[String]) -> (Option<&String>, Option<&String>) {
        match self {
            Self::FirstAndLast => (key.first(), key.last()),
            Self::FirstTwo => (key.first(), key.get(1)),
        }
    }
}

/// Per slice: how many cells are hidden, and the smallest shown count with its row.
type SliceState = (usize, Option<(u64, usize)>);

/// Hides a second cell in every slice where exactly one cell is hidden and others are shown:
/// the smallest shown count (the first in key order among equals).
fn secondary_suppression(rows: &mut [Row], slice: Slice) {
    let mut slices: BTreeMap<(Option<&String>, Option<&String>), SliceState> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let (hidden, smallest) = slices.entry(slice.of(&row.key)).or_default();
        match row.count {
            None => *hidden += 1,
            Some(count) => {
                if smallest.is_none_or(|(least, _)| count < least) {
                    *smallest = Some((count, i));
                }
            }
        }
    }
    let second: Vec<usize> = slices
        .into_values()
        .filter_map(|(hidden, smallest)| (hidden == 1).then_some(smallest?.1))
        .collect();
    for i in second {
        if let Some(row) = rows.get_mut(i) {
            row.count = None;
        }
    }
}

/// RFC 4180 quoting: a field with a comma, quote or line break is quoted, quotes doubled.
fn push_csv_line(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push_str("\r\n");
}

/// Where published statistics and recomputed ones differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The threshold or the number of leaves counted differ.
    Parameters {
        /// What the publisher says: (threshold, size).
        published: (u64, u64),
        /// What was recomputed.
        recomputed: (u64, u64),
    },
    /// A table is missing from one side or has other columns.
    Table {
        /// The table.
        name: String,
    },
    /// A cell differs, or is on one side only (`None`: no such row; `Some(None)`: hidden).
    Cell {
        /// The table.
        table: String,
        /// `column=value` pairs naming the cell.
        key: Vec<(String, String)>,
        /// The published count.
        published: Option<Option<u64>>,
        /// The recomputed count.
        recomputed: Option<Option<u64>>,
    },
    /// The policy sets in force differ.
    PolicySets,
    /// The months listed differ.
    Months,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn count(value: Option<Option<u64>>) -> String {
            match value {
                None => "no such row".to_owned(),
                Some(None) => "hidden".to_owned(),
                Some(Some(n)) => n.to_string(),
            }
        }
        match self {
            Self::Parameters {
                published,
                recomputed,
            } => write!(
                f,
                "parameters: published threshold {} over {} leaves, recomputed threshold {} over {} leaves",
                published.0, published.1, recomputed.0, recomputed.1
            ),
            Self::Table { name } => write!(f, "table `{name}` differs in its columns or presence"),
            Self::Cell {
                table,
                key,
                published,
                recomputed,
            } => {
                let key: Vec<String> = key.iter().map(|(c, v)| format!("{c}={v}")).collect();
                write!(
                    f,
                    "{table} [{}]: published {}, recomputed {}",
                    key.join(" "),
                    count(*published),
                    count(*recomputed)
                )
            }
            Self::PolicySets => f.write_str("the policy sets in force differ"),
            Self::Months => f.write_str("the months listed differ"),
        }
    }
}

/// Every difference between `published` and `recomputed` statistics, cell by cell.
pub fn compare(published: &Statistics, recomputed: &Statistics) -> Vec<Difference> {
    let mut out = Vec::new();
    if (published.threshold, published.size) != (recomputed.threshold, recomputed.size) {
        out.push(Difference::Parameters {
            published: (published.threshold, published.size),
            recomputed: (recomputed.threshold, recomputed.size),
        });
    }
    if published.months != recomputed.months {
        out.push(Difference::Months);
    }
    let names: BTreeSet<&str> = published
        .tables
        .iter()
        .chain(&recomputed.tables)
        .map(|t| t.name.as_str())
        .collect();
    for name in names {
        let (Some(p), Some(r)) = (published.table(name), recomputed.table(name)) else {
            out.push(Difference::Table {
                name: name.to_owned(),
            });
            continue;
        };
        if p.columns != r.columns || published.tables.iter().filter(|t| t.name == name).count() > 1
        {
            out.push(Difference::Table {
                name: name.to_owned(),
            });
            continue;
        }
        let rows = |t: &Table| -> BTreeMap<Vec<String>, Option<u64>> {
            t.rows
                .iter()
                .map(|row| (row.key.clone(), row.count))
                .collect()
        };
        let (p_rows, r_rows) = (rows(p), rows(r));
        if p_rows.len() != p.rows.len() {
            // The same key twice: the table is malformed.
            out.push(Difference::Table {
                name: name.to_owned(),
            });
            continue;
        }
        let keys: BTreeSet<&Vec<String>> = p_rows.keys().chain(r_rows.keys()).collect();
        for key in keys {
            let (a, b) = (p_rows.get(key).copied(), r_rows.get(key).copied());
            if a != b {
                out.push(Difference::Cell {
                    table: name.to_owned(),
                    key: p.columns.iter().cloned().zip(key.iter().cloned()).collect(),
                    published: a,
                    recomputed: b,
                });
            }
        }
    }
    if published.policy_sets != recomputed.policy_sets {
        out.push(Difference::PolicySets);
    }
    out
}

#[cfg(test)]
mod tests;

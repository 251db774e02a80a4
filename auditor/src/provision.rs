//! Records of third-party provision (APPI 29条, and for one recipient its confirmation record of
//! 30条), made from a verified replay of the log rather than from the operator's word.
//!
//! A row is an **allowed decision that released a patient's data to an organisation other than
//! the facility holding it**: `secondary_use`, `view_record` or `emergency_view` whose logged
//! recipient (the organisation, or the clinician's facility) is not the request's source facility
//! — a facility of the same facility group counts as another organisation (groups share
//! disclosure settings, not data). A release that names no source facility is kept, with an
//! empty provider. Anonymised releases are included on purpose (the record then shows the level).
//! Not rows: denials; a patient viewing their own records; a facility's own staff or the facility
//! itself using its own records; statistics (`export_statistics`: aggregates are not personal
//! data); decisions the replay could not re-derive (those are findings of the replay instead).
//! Each row states the date and time (UTC), the recipient (id, name and class as the directory
//! held them at that moment), the provider (the source facility, and department), the patient
//! (the log's pseudonym: the operator holds the mapping to patient ids), the data items (category
//! and level), the purpose, and the basis: the consents that covered the request and were the
//! patient's latest word on its purpose, each with the leaf index of its grant (`opt_in`), or the
//! opt-out path for anonymised data (`opt_out`), or for viewing the policies that allowed it.
//! Every row cites its decision's leaf index, so it can be checked against the log with an
//! inclusion proof, and it was read from a body whose commitment the replay verified.
//!
//! The basis is read from the replayed state at the decision, the state it was made against
//! ([`policy::replay::Replayer::provision_basis`]); which kind of basis it was comes from the
//! policies that allowed it: the default set's consent permits (`opt_in`, with the consents), its
//! anonymised opt-out permit (`opt_out`), or any other policy (`policy`: see
//! `determining_policies`). `akashi-audit provision-records` streams the rows out as the replay
//! makes them ([`ProvisionRecords::streaming`]), so memory stays flat in the period's length.

use std::fmt::Write as _;

use policy::{
    decision::{Decision, Recipient, Request},
    domain::{Action, Effect, Principal, Timestamp},
    replay::Replayer,
};

/// The default set's permits whose ground is the patient's consent.
const CONSENT_PERMITS: [&str; 2] = ["secondary-use.opt-in-consent", "ehr.inter-facility-consent"];
/// The default set's permit of anonymised use on the opt-out path.
const OPT_OUT_PERMIT: &str = "secondary-use.anonymized-opt-out";
use serde::Serialize;

/// Which decisions become rows: a window of UTC days and, optionally, one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionWindow {
    /// First day (`YYYY-MM-DD`, UTC), inclusive.
    pub from: String,
    /// Last day, inclusive.
    pub to: String,
    /// Only this recipient organisation's rows.
    pub recipient: Option<String>,
}

impl ProvisionWindow {
    /// A window from `from` to `to` (inclusive `YYYY-MM-DD` days).
    ///
    /// # Errors
    ///
    /// When a day is not a valid `YYYY-MM-DD` date or `from` is after `to`.
    pub fn new(from: &str, to: &str, recipient: Option<String>) -> Result<Self, String> {
        for (name, day) in [("--from", from), ("--to", to)] {
            let valid =
                day.len() == 10 && Timestamp::parse("day", &format!("{day}T00:00:00Z")).is_ok();
            if !valid {
                return Err(format!("{name} `{day}` is not a date (YYYY-MM-DD)"));
            }
        }
        if from > to {
            return Err(format!("--from {from} is after --to {to}"));
        }
        Ok(Self {
            from: from.to_owned(),
            to: to.to_owned(),
            recipient,
        })
    }

    fn contains(&self, time: Timestamp) -> bool {
        let day = time.day();
        day.as_str() >= self.from.as_str() && day.as_str() <= self.to.as_str()
    }
}

/// One record of provision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvisionRow {
    /// The decision's leaf index.
    pub leaf_index: u64,
    /// When it was decided (RFC 3339, UTC).
    pub time: String,
    /// The recipient organisation.
    pub recipient_id: String,
    /// Its display name, as the directory held it then.
    pub recipient_name: String,
    /// Its recipient class.
    pub recipient_class: String,
    /// Who asked: `Organization` or `Clinician`, and its id.
    pub principal: String,
    /// The facility that holds the records (the provider); empty when the request named none.
    pub source_facility: String,
    /// The department within it, when named.
    pub source_department: String,
    /// The patient's pseudonym in the log.
    pub patient: String,
    /// `secondary_use`, `view_record` or `emergency_view`.
    pub action: String,
    /// The purpose.
    pub purpose: String,
    /// The data category.
    pub data_category: String,
    /// The level of identifiability released.
    pub level: String,
    /// `opt_in` (consents), `opt_out` (anonymised use on the opt-out path) or `policy`.
    pub basis: String,
    /// The covering consents, `consent-id@grant-leaf-index` (the index when known).
    pub consents: Vec<String>,
    /// The policies that allowed it.
    pub determining_policies: Vec<String>,
    /// Whether the access must be reviewed afterwards (break-glass).
    pub review_required: bool,
}

/// Collects rows during a replay.
#[derive(Debug)]
pub struct ProvisionRecords {
    window: ProvisionWindow,
    rows: Vec<ProvisionRow>,
    /// Where rows go as they are made, when set (instead of `rows`): memory stays flat however
    /// long the period.
    sink: Option<std::sync::mpsc::SyncSender<ProvisionRow>>,
    /// Rows made so far.
    pub count: u64,
    /// Decisions of the window whose basis could not be read (a state error).
    pub unreadable: u64,
}

impl ProvisionRecords {
    /// An empty collection for `window`.
    pub fn new(window: ProvisionWindow) -> Self {
        Self {
            window,
            rows: Vec::new(),
            sink: None,
            count: 0,
            unreadable: 0,
        }
    }

    /// A collection for `window` that sends each row to `sink` as it is made rather than
    /// keeping it (a row the receiver no longer takes is dropped).
    pub fn streaming(
        window: ProvisionWindow,
        sink: std::sync::mpsc::SyncSender<ProvisionRow>,
    ) -> Self {
        Self {
            sink: Some(sink),
            ..Self::new(window)
        }
    }

    /// Looks at decision `index`, which `replayer` has just re-derived, and keeps a row when it
    /// is a provision in the window.
    pub fn observe(
        &mut self,
        replayer: &Replayer,
        index: u64,
        request: &Request,
        time: Timestamp,
        decision: &Decision,
        recipient: Option<&Recipient>,
    ) {
        if decision.effect != Effect::Allow || !self.window.contains(time) {
            return;
        }
        let Some(recipient) = recipient else {
            return;
        };
        if let Some(only) = &self.window.recipient
            && only != recipient.id.as_str()
        {
            return;
        }
        if !matches!(
            request.action,
            Action::SecondaryUse | Action::ViewRecord | Action::EmergencyView
        ) {
            return;
        }
        // The facility holding the records, or its own staff, using them is no provision.
        if request
            .source_facility
            .as_ref()
            .is_some_and(|source| source.as_str() == recipient.id.as_str())
        {
            return;
        }
        let principal = match &request.principal {
            Principal::Organization(id) => format!("Organization {}", id.as_str()),
            Principal::Clinician(id) => format!("Clinician {}", id.as_str()),
            Principal::Patient(_) => return,
        };
        let Some(subject) = &request.subject else {
            return;
        };
        let basis = match replayer.provision_basis(request, &recipient.id, time) {
            Ok(basis) => basis,
            Err(_) => {
                self.unreadable += 1;
                return;
            }
        };
        let allowed_by = |ids: &[&str]| {
            decision
                .determining_policies
                .iter()
                .any(|p| ids.contains(&p.as_str()))
        };
        let (kind, consents) = if allowed_by(&CONSENT_PERMITS) {
            ("opt_in", basis.consents)
        } else if allowed_by(&[OPT_OUT_PERMIT]) {
            ("opt_out", Vec::new())
        } else {
            ("policy", Vec::new())
        };
        let row = ProvisionRow {
            leaf_index: index,
            time: time.to_rfc3339(),
            recipient_id: recipient.id.as_str().to_owned(),
            recipient_name: basis.recipient_name.unwrap_or_default(),
            recipient_class: recipient
                .class
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            principal,
            source_facility: request
                .source_facility
                .as_ref()
                .map(|f| f.as_str().to_owned())
                .unwrap_or_default(),
            source_department: request
                .source_department
                .as_ref()
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            patient: subject.as_str().to_owned(),
            action: request.action.as_str().to_owned(),
            purpose: request.purpose.as_str().to_owned(),
            data_category: request.data_category.as_str().to_owned(),
            level: request.level.as_str().to_owned(),
            basis: kind.to_owned(),
            consents: consents
                .iter()
                .map(|(id, index)| match index {
                    Some(index) => format!("{}@{index}", id.as_str()),
                    None => id.as_str().to_owned(),
                })
                .collect(),
            determining_policies: decision.determining_policies.clone(),
            review_required: decision.review_required,
        };
        self.count += 1;
        match &self.sink {
            Some(sink) => {
                let _ = sink.send(row);
            }
            None => self.rows.push(row),
        }
    }

    /// Stops streaming: drops the sending end, so the receiver sees the end of the rows.
    pub fn close(&mut self) {
        self.sink = None;
    }

    /// The rows kept, in log order (none when streaming).
    pub fn into_rows(self) -> Vec<ProvisionRow> {
        self.rows
    }
}

/// The rows as CSV (RFC 4180: a header line, fields quoted when they hold a comma, quote or
/// line break; lists joined with `;`), UTF-8 with a byte-order mark so that spreadsheet programs
/// read Japanese names right.
pub fn to_csv(rows: &[ProvisionRow]) -> String {
    let mut out = String::from(CSV_HEADER);
    for row in rows {
        out.push_str(&csv_row(row));
    }
    out
}

/// The header line of [`to_csv`], byte-order mark included.
pub const CSV_HEADER: &str = "\u{feff}leaf_index,time,recipient_id,recipient_name,\
    recipient_class,principal,source_facility,source_department,patient,action,purpose,\
    data_category,level,basis,consents,determining_policies,review_required\r\n";

/// One row of [`to_csv`].
pub fn csv_row(row: &ProvisionRow) -> String {
    {
        let fields = [
            row.leaf_index.to_string(),
            row.time.clone(),
            row.recipient_id.clone(),
            row.recipient_name.clone(),
            row.recipient_class.clone(),
            row.principal.clone(),
            row.source_facility.clone(),
            row.source_department.clone(),
            row.patient.clone(),
            row.action.clone(),
            row.purpose.clone(),
            row.data_category.clone(),
            row.level.clone(),
            row.basis.clone(),
            row.consents.join(";"),
            row.determining_policies.join(";"),
            row.review_required.to_string(),
        ];
        csv_line(&fields)
    }
}

/// One CSV line of `fields` (RFC 4180), ending in CRLF.
pub fn csv_line(fields: &[String]) -> String {
    let mut out = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(field));
    }
    out.push_str("\r\n");
    out
}

/// A CSV field, quoted when it must be. A field starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'` so that a spreadsheet does not run it as a formula (a
/// display name is the operator's text).
fn csv_field(field: &str) -> String {
    let guarded = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if guarded.contains([',', '"', '\r', '\n']) {
        let mut quoted = String::with_capacity(guarded.len() + 2);
        quoted.push('"');
        for c in guarded.chars() {
            if c == '"' {
                quoted.push('"');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    } else {
        guarded
    }
}

/// A one-line summary for stderr: `count` records of `window`.
pub fn summary(count: u64, window: &ProvisionWindow) -> String {
    let mut text = format!(
        "{count} provision records from {} to {}",
        window.from, window.to
    );
    if let Some(recipient) = &window.recipient {
        let _ = write!(text, " for recipient {recipient}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_checked_and_csv_is_quoted_and_guarded() {
        assert!(ProvisionWindow::new("2026-12-01", "2026-12-31", None).is_ok());
        assert!(ProvisionWindow::new("2026-12-31", "2026-12-01", None).is_err());
        assert!(ProvisionWindow::new("2026-13-01", "2026-12-31", None).is_err());
        assert!(ProvisionWindow::new("20261201", "2026-12-31", None).is_err());
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        let window = ProvisionWindow::new("2026-12-01", "2026-12-02", None).unwrap();
        let day = |s: &str| Timestamp::parse("t", s).unwrap();
        assert!(window.contains(day("2026-12-01T00:00:00Z")));
        assert!(window.contains(day("2026-12-02T23:59:59Z")));
        assert!(!window.contains(day("2026-12-03T00:00:00Z")));
        assert!(!window.contains(day("2026-11-30T23:59:59Z")));
    }
}

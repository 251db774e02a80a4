//! A patient's verified history as they can keep it or show it (APPI 33条5項: the records of
//! provision about them, with the rest of what the log holds about them): CSV or a standalone
//! HTML page, in Japanese or English.
//!
//! Words of the domain (purposes, kinds of data, levels, actions, outcomes, kinds of entry) are
//! shown with the labels the public disclosure page uses ([`policy::labels`]); recipients as the
//! log names them (an organisation's directory id, or for a consent its ids and recipient
//! classes, as written). Every row keeps its leaf index, so it can be checked against the log, and says whether
//! it verified. Nothing here decides validity: the [`History`] passed in was verified already.

use std::fmt::Write as _;

use super::{Completeness, History, HistoryRow};

/// The language of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Japanese.
    Ja,
    /// English.
    En,
}

impl Lang {
    /// `ja` or `en`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }

    fn pick(self, ja: &'static str, en: &'static str) -> &'static str {
        match self {
            Self::Ja => ja,
            Self::En => en,
        }
    }
}

/// A value for a person: each comma-separated word with its label, or as it is.
fn words(lang: Lang, value: Option<&str>) -> String {
    let Some(value) = value else {
        return String::new();
    };
    value
        .split(',')
        .map(|word| {
            // `ALLOW review`: the outcome, flagged.
            let (word, review) = match word.strip_suffix(" review") {
                Some(outcome) => (outcome, true),
                None => (word, false),
            };
            let mut text = policy::labels::label(word)
                .map_or_else(|| word.to_owned(), |(ja, en)| lang.pick(ja, en).to_owned());
            if review {
                text.push_str(lang.pick("（事後確認の対象）", " (reviewed afterwards)"));
            }
            text
        })
        .collect::<Vec<_>>()
        .join(lang.pick("、", ", "))
}

const COLUMNS: usize = 10;

fn headers(lang: Lang) -> [&'static str; COLUMNS] {
    match lang {
        Lang::Ja => [
            "記録番号",
            "日付（UTC）",
            "種類",
            "利用の内容",
            "提供先",
            "利用目的",
            "データの種類",
            "加工の程度",
            "判断",
            "検証",
        ],
        Lang::En => [
            "Entry",
            "Day (UTC)",
            "Kind",
            "Use",
            "Recipient",
            "Purpose",
            "Kind of data",
            "Level",
            "Decision",
            "Verified",
        ],
    }
}

fn cells(lang: Lang, row: &HistoryRow) -> [String; COLUMNS] {
    let verified = if row.erased {
        lang.pick("消去済み（証明は有効）", "erased (proof valid)")
    } else if row.verified {
        lang.pick("検証済み", "verified")
    } else {
        lang.pick("検証できず", "did not verify")
    };
    [
        row.index.to_string(),
        row.day.clone(),
        words(lang, Some(&row.kind)),
        words(lang, row.action.as_deref()),
        row.recipient.clone().unwrap_or_default(),
        words(lang, row.purpose.as_deref()),
        words(lang, row.data_category.as_deref()),
        words(lang, row.level.as_deref()),
        words(lang, row.decision.as_deref()),
        verified.to_owned(),
    ]
}

/// The history as CSV (RFC 4180, a header line, UTF-8 with a byte-order mark so that
/// spreadsheet programs read the Japanese right).
pub fn to_csv(history: &History, lang: Lang) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str(&crate::provision::csv_line(
        &headers(lang).map(str::to_owned),
    ));
    for row in &history.rows {
        out.push_str(&crate::provision::csv_line(&cells(lang, row)));
    }
    out
}

/// One line saying whether the history is whole and valid.
fn verdict(history: &History, lang: Lang) -> String {
    let findings = history.findings.len();
    match (history.completeness, findings) {
        (Completeness::Complete { entries, tree_size }, 0) => match lang {
            Lang::Ja => format!(
                "検証済み: ログの先頭から{tree_size}件目までに、あなたについての記録はこの{entries}件ですべてです。"
            ),
            Lang::En => format!(
                "Verified: up to entry {tree_size} the log holds exactly these {entries} entries about you."
            ),
        },
        (_, 0) => lang
            .pick(
                "各記録は検証できましたが、これですべてであることは証明できませんでした。",
                "Each entry verified, but the log did not prove that these are all of them.",
            )
            .to_owned(),
        (_, n) => match lang {
            Lang::Ja => format!(
                "{n}件の問題が見つかりました（akashi-audit history で詳細を確認してください）。"
            ),
            Lang::En => {
                format!("{n} problems were found (run akashi-audit history for the details).")
            }
        },
    }
}

/// The history as a standalone HTML page (no scripts, no outside resources).
pub fn to_html(history: &History, lang: Lang) -> String {
    let title = lang.pick(
        "あなたの医療データの利用と同意の記録",
        "The record of your consents and of the use of your health data",
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;width:100%}}\
         th,td{{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}}\
         th{{background:#f3f3f3}}</style>\n</head>\n<body>\n<h1>{title}</h1>\n",
        lang.as_str()
    );
    let _ = writeln!(out, "<p>{}</p>", escape(&verdict(history, lang)));
    let _ = writeln!(
        out,
        "<p>{} {} ({}: {})</p>",
        escape(lang.pick(
            "この記録は、運営者を信頼せずに検証できる公開の台帳から取り出したものです。",
            "These entries come from a public log that can be verified without trusting its operator.",
        )),
        escape(lang.pick(
            "記録番号で、各記録を台帳と照合できます。",
            "Each entry number can be checked against the log.",
        )),
        escape(lang.pick("ツリーの大きさ", "tree size")),
        history.tree_size
    );
    out.push_str("<table>\n<thead><tr>");
    for header in headers(lang) {
        let _ = write!(out, "<th>{}</th>", escape(header));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &history.rows {
        out.push_str("<tr>");
        for cell in cells(lang, row) {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

/// HTML-escapes text for element content.
fn escape(text: &str) -> String {
    policy::labels::escape_html(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> HistoryRow {
        HistoryRow {
            index: 7,
            day: "2026-12-03".into(),
            kind: "access.decision".into(),
            action: Some("secondary_use".into()),
            recipient: Some("uni<x>".into()),
            purpose: Some("research".into()),
            decision: Some("ALLOW review".into()),
            data_category: Some("lab_result,medication".into()),
            level: Some("PSEUDONYMIZED".into()),
            verified: true,
            erased: false,
        }
    }

    fn history() -> History {
        History {
            tree_size: 9,
            root: String::new(),
            rows: vec![row()],
            findings: Vec::new(),
            completeness: Completeness::Complete {
                entries: 1,
                tree_size: 9,
            },
            witnessed: None,
        }
    }

    #[test]
    fn labels_in_both_languages_escaped_and_quoted() {
        let ja = to_csv(&history(), Lang::Ja);
        assert!(ja.starts_with('\u{feff}'));
        assert!(ja.contains("学術研究"), "{ja}");
        assert!(
            ja.contains("\"検査結果、投薬\"") || ja.contains("検査結果、投薬"),
            "{ja}"
        );
        assert!(ja.contains("許可（事後確認の対象）"), "{ja}");
        let en = to_csv(&history(), Lang::En);
        assert!(
            en.contains("Research") && en.contains("\"Lab results, Medication\""),
            "{en}"
        );
        let html = to_html(&history(), Lang::En);
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("uni&lt;x&gt;"), "the recipient is escaped");
        assert!(html.contains("exactly these 1 entries"), "{html}");
        assert!(to_html(&history(), Lang::Ja).contains("<html lang=\"ja\">"));
    }
}

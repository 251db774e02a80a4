//! The disclosure page: one month of the statistics as HTML a non-programmer can read, in
//! Japanese or English — semantic tables, bar charts drawn with plain CSS (each bar carries its
//! number, and outcomes are told apart by column, never by colour alone), the checkpoint the
//! numbers are pinned to, the policy sets in force, and how to check it all.
//!
//! No script: the page works with JavaScript off. Every value from the statistics is escaped;
//! vocabulary words (purposes, levels, kinds of recipient and of data, outcomes) are shown by
//! their label in the page's language, anything else as it is.

use std::fmt::Write as _;

use policy::disclosure::{
    CONSENT_BY_MONTH, CONSENT_BY_PURPOSE, DECISIONS_BY_CATEGORY, DECISIONS_BY_LEVEL,
    DECISIONS_BY_MONTH, DECISIONS_BY_PURPOSE, DECISIONS_BY_RECIPIENT, DECISIONS_BY_RECIPIENT_CLASS,
    Document, Outcome, Row, Statistics, Table,
};

use super::Lang;

/// The months shown in the per-month chart.
const CHART_MONTHS: usize = 12;

/// Fixed words of the page.
struct Words {
    title: &'static str,
    heading: &'static str,
    intro: &'static str,
    pinned: &'static str,
    size: &'static str,
    root: &'static str,
    summary: &'static str,
    chart_months: &'static str,
    by_class: &'static str,
    by_purpose: &'static str,
    by_recipient: &'static str,
    by_level: &'static str,
    by_category: &'static str,
    consent: &'static str,
    consent_purposes: &'static str,
    policies: &'static str,
    policies_intro: &'static str,
    verify: &'static str,
    verify_text: &'static str,
    privacy: &'static str,
    privacy_can: &'static str,
    privacy_cannot: &'static str,
    other_months: &'static str,
    no_records: &'static str,
    hidden: &'static str,
    hidden_note: &'static str,
    month: &'static str,
    recipient: &'static str,
    class: &'static str,
    purpose: &'static str,
    level: &'static str,
    category: &'static str,
    activity: &'static str,
    count: &'static str,
    hash: &'static str,
    from: &'static str,
    until: &'static str,
    text: &'static str,
    in_force: &'static str,
    machine: &'static str,
    /// The language's own name, on the link to it from the other one.
    switch: &'static str,
}

const JA: Words = Words {
    title: "医療データ利用の公開情報 — akashi",
    heading: "医療データは、だれが、何のために使ったか",
    intro: "この頁は、akashi の透明性ログに記録されたすべてのアクセス判断と同意の記録を、月ごとに数えたものです。数字はすべて、患者を特定する情報を含まない公開ログの記録だけから計算されており、だれでも再計算して確かめられます。",
    pinned: "署名付きチェックポイントの時点の集計",
    size: "ログの件数",
    root: "ルートハッシュ",
    summary: "の概要",
    chart_months: "月ごとの判断件数（直近12か月）",
    by_class: "受け取る組織の種別ごと",
    by_purpose: "利用目的ごと",
    by_recipient: "受け取る組織ごと",
    by_level: "加工の程度ごと",
    by_category: "データの種類ごと",
    consent: "同意の記録",
    consent_purposes: "目的ごとの同意とオプトアウト（1件が複数の目的を含むことがあります）",
    policies: "適用されたルール（ポリシーセット）",
    policies_intro: "すべての判断は、その時点で有効なポリシーセットによって行われます。ポリシーセットの有効化もログに記録され、本文はだれでも読めます。",
    verify: "確かめ方",
    verify_text: "この頁の数字は、公開ログ（タイルとエントリ）だけから、独立した検証ツール akashi-audit で再計算できます。ひとつでも違えば、検証ツールはその箇所を示し、終了コード 2 で終わります。ログの検証鍵は、運営者がこのサーバーとは別の経路で公表しているものを使ってください。",
    privacy: "この頁からわかること、わからないこと",
    privacy_can: "わかること：どの組織（大学、製薬企業、保険会社、病院など）が、どの目的で、どの程度加工した、どの種類のデータの利用を求め、許可されたか拒否されたか。緊急時の閲覧など、事後確認の対象になった件数。同意、同意の撤回、オプトアウトの件数。どのルールが適用されていたか。",
    privacy_cannot: "わからないこと：個々の患者がだれか、患者の医療情報の中身、ある患者について何件の記録があるか。公開ログには患者を特定する情報は含まれません。少ない件数は伏せてあります。",
    other_months: "他の月",
    no_records: "この月の記録はありません。",
    hidden: "秘匿",
    hidden_note: "「秘匿」は、{k}件未満の数、または引き算でそれが割り出せないように伏せた数です。",
    month: "月",
    recipient: "組織",
    class: "種別",
    purpose: "目的",
    level: "加工の程度",
    category: "データの種類",
    activity: "記録",
    count: "件数",
    hash: "ハッシュ（SHA-256）",
    from: "有効になったエントリ",
    until: "終了したエントリ",
    text: "本文",
    in_force: "現在有効",
    machine: "機械可読なデータ",
    switch: "日本語",
};

const EN: Words = Words {
    title: "Public disclosure of medical data use — akashi",
    heading: "Who used medical data, and for what",
    intro: "This page counts, month by month, every access decision and consent record in akashi's transparency log. Every number is computed from the public log entries alone, which never identify a patient, and anyone can recompute it.",
    pinned: "As of the signed checkpoint",
    size: "Log size",
    root: "Root hash",
    summary: "Summary for",
    chart_months: "Decisions per month (last 12 months)",
    by_class: "By kind of recipient",
    by_purpose: "By purpose",
    by_recipient: "By recipient organisation",
    by_level: "By de-identification level",
    by_category: "By kind of data",
    consent: "Consent records",
    consent_purposes: "Consents and opt-outs per purpose (one record may name several purposes)",
    policies: "Rules in force (policy sets)",
    policies_intro: "Every decision is made by the policy set in force at the time. Activating a policy set is itself a log entry, and anyone can read its text.",
    verify: "How to verify",
    verify_text: "Every number on this page can be recomputed from the public log (tiles and entries) alone with the independent verifier akashi-audit. If any number differs, it names the cell and exits with status 2. Use the log's verifier key as the operator publishes it elsewhere, not as this server serves it.",
    privacy: "What this page can and cannot tell you",
    privacy_can: "It tells you which organisations (universities, pharma, insurers, hospitals, ...) asked to use which kind of data, for what purpose, de-identified to what level, and whether they were allowed or denied; how many allowances were break-glass views flagged for review; how many consents, revocations and opt-outs were recorded; and which rules were in force.",
    privacy_cannot: "It cannot tell you who any patient is, anything about a patient's medical records, or how many entries concern one patient. The public log carries nothing that identifies a patient, and small counts are hidden.",
    other_months: "Other months",
    no_records: "No records for this month.",
    hidden: "hidden",
    hidden_note: "“hidden” marks a count below {k}, or one hidden so that such a count cannot be worked out by subtraction.",
    month: "Month",
    recipient: "Organisation",
    class: "Kind",
    purpose: "Purpose",
    level: "Level",
    category: "Kind of data",
    activity: "Record",
    count: "Count",
    hash: "Hash (SHA-256)",
    from: "From entry",
    until: "Until entry",
    text: "Text",
    in_force: "in force",
    machine: "Machine-readable data",
    switch: "English",
};

fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Ja => &JA,
        Lang::En => &EN,
    }
}

/// The label of a vocabulary word in `lang`; `None` for anything else (shown as it is).
fn vocabulary(lang: Lang, word: &str) -> Option<&'static str> {
    let (ja, en) = match word {
        // Outcomes.
        "allowed" => ("許可", "Allowed"),
        "allowed_flagged" => (
            "許可（緊急時など・事後確認の対象）",
            "Allowed, flagged for review",
        ),
        "denied" => ("不許可", "Denied"),
        "unrecorded" => ("記録なし", "Not recorded"),
        "other" => ("その他", "Other"),
        // Consent activity.
        "grant" => ("同意", "Consents granted"),
        "revoke" => ("同意の撤回", "Consents revoked"),
        "opt_out" => ("オプトアウト（利用の拒否）", "Opt-outs"),
        _ => policy::labels::label(word)?,
    };
    Some(match lang {
        Lang::Ja => ja,
        Lang::En => en,
    })
}

/// `word`'s label, escaped.
fn label(lang: Lang, word: &str) -> String {
    vocabulary(lang, word).map_or_else(|| escape(word), escape)
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    policy::labels::escape_html(text)
}

/// A count with thousands separators.
fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A month `YYYY-MM` in words.
fn month_name(lang: Lang, month: &str) -> String {
    const EN_MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let parsed = month
        .split_once('-')
        .and_then(|(y, m)| Some((y, m.parse::<usize>().ok()?)))
        .filter(|(_, m)| (1..=12).contains(m));
    match (parsed, lang) {
        (Some((year, m)), Lang::Ja) => format!("{}年{m}月", escape(year)),
        (Some((year, m)), Lang::En) => match EN_MONTHS.get(m - 1) {
            Some(name) => format!("{name} {}", escape(year)),
            None => escape(month),
        },
        (None, _) => escape(month),
    }
}

/// One pivoted row: the key without month and outcome, and a count per outcome.
struct Pivot {
    key: Vec<String>,
    counts: Vec<(Outcome, Option<u64>)>,
}

/// The rows of a decisions table for `month`, outcomes as columns, in key order.
fn pivot(table: Option<&Table>, month: &str) -> Vec<Pivot> {
    let mut out: Vec<Pivot> = Vec::new();
    let Some(table) = table else {
        return out;
    };
    for row in table
        .rows
        .iter()
        .filter(|r| r.key.first().is_some_and(|m| m == month))
    {
        let Some((outcome, middle)) = row.key.get(1..).and_then(<[String]>::split_last) else {
            continue;
        };
        let Some(outcome) = Outcome::ALL.into_iter().find(|o| o.as_str() == outcome) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.key == middle => last.counts.push((outcome, row.count)),
            _ => out.push(Pivot {
                key: middle.to_vec(),
                counts: vec![(outcome, row.count)],
            }),
        }
    }
    out
}

/// The outcomes that occur in `rows`, in table order (unrecorded only when present).
fn outcomes(rows: &[Pivot]) -> Vec<Outcome> {
    Outcome::ALL
        .into_iter()
        .filter(|o| {
            *o != Outcome::Unrecorded || rows.iter().any(|r| r.counts.iter().any(|c| c.0 == *o))
        })
        .collect()
}

fn count_of(row: &Pivot, outcome: Outcome) -> Option<Option<u64>> {
    row.counts.iter().find(|c| c.0 == outcome).map(|c| c.1)
}

/// A count cell: the number, `0` when the row has no such outcome, or “hidden”.
fn count_cell(w: &Words, count: Option<Option<u64>>) -> String {
    match count {
        None => "0".to_owned(),
        Some(None) => format!("<span class=\"hidden\">{}</span>", w.hidden),
        Some(Some(n)) => number(n),
    }
}

/// A cell with a bar as long as `count` is against `max` (at most [`BAR_REM`]) and the count
/// beside it. A hidden count has no bar.
fn bar_cell(w: &Words, outcome: Outcome, count: Option<Option<u64>>, max: u64) -> String {
    let tenths = match count {
        Some(Some(n)) if max > 0 => {
            (u128::from(n) * u128::from(BAR_REM) * 10 / u128::from(max)).max(1)
        }
        _ => 0,
    };
    if tenths == 0 {
        return format!("<td class=\"num\">{}</td>", count_cell(w, count));
    }
    format!(
        "<td class=\"num\"><span class=\"bar {}\" style=\"width:{}.{}rem\"></span> {}</td>",
        outcome.as_str(),
        tenths / 10,
        tenths % 10,
        count_cell(w, count)
    )
}

/// The longest bar, in rem.
const BAR_REM: u64 = 10;

/// Renders `document` for `month` in `lang`.
pub fn render(document: &Document, lang: Lang, month: &str) -> String {
    let w = words(lang);
    let stats = &document.statistics;
    let mut html = String::with_capacity(32 * 1024);
    let other = match lang {
        Lang::Ja => Lang::En,
        Lang::En => Lang::Ja,
    };
    let query = |lang: Lang, month: &str| {
        if month.is_empty() {
            format!("/disclosure?lang={}", lang.tag())
        } else {
            format!(
                "/disclosure?lang={}&amp;month={}",
                lang.tag(),
                escape(month)
            )
        }
    };
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<link rel=\"alternate\" type=\"application/json\" href=\"/disclosure.json\">\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<header>\n<p class=\"switch\"><a href=\"{switch_href}\" lang=\"{other}\" hreflang=\"{other}\">{switch}</a></p>\n\
         <h1>{heading}</h1>\n<p>{intro}</p>\n",
        lang = lang.tag(),
        title = w.title,
        switch_href = query(other, month),
        other = other.tag(),
        switch = words(other).switch,
        heading = w.heading,
        intro = w.intro,
    );
    let checkpoint = &document.checkpoint;
    let _ = write!(
        html,
        "<p class=\"pinned\">{pinned}: <a href=\"/checkpoint\">{origin}</a> — {size_label} <strong id=\"tree-size\">{size}</strong>, \
         {root_label} <code>{root}</code></p>\n</header>\n<main>\n",
        pinned = w.pinned,
        origin = escape(&checkpoint.origin),
        size_label = w.size,
        size = number(checkpoint.size),
        root_label = w.root,
        root = escape(&checkpoint.root_hash),
    );
    if month.is_empty() {
        let _ = writeln!(html, "<p>{}</p>", w.no_records);
    } else {
        summary(&mut html, w, lang, stats, month);
        month_chart(&mut html, w, lang, stats, month);
        decisions_section(
            &mut html,
            w,
            lang,
            stats,
            month,
            "by-class",
            w.by_class,
            DECISIONS_BY_RECIPIENT_CLASS,
            &[w.class],
            true,
        );
        decisions_section(
            &mut html,
            w,
            lang,
            stats,
            month,
            "by-purpose",
            w.by_purpose,
            DECISIONS_BY_PURPOSE,
            &[w.purpose],
            true,
        );
        decisions_section(
            &mut html,
            w,
            lang,
            stats,
            month,
            "by-recipient",
            w.by_recipient,
            DECISIONS_BY_RECIPIENT,
            &[w.recipient, w.class],
            false,
        );
        decisions_section(
            &mut html,
            w,
            lang,
            stats,
            month,
            "by-level",
            w.by_level,
            DECISIONS_BY_LEVEL,
            &[w.level],
            false,
        );
        decisions_section(
            &mut html,
            w,
            lang,
            stats,
            month,
            "by-category",
            w.by_category,
            DECISIONS_BY_CATEGORY,
            &[w.category],
            false,
        );
        consent_section(&mut html, w, lang, stats, month);
        let _ = writeln!(
            html,
            "<p class=\"note\">{}</p>",
            w.hidden_note.replace("{k}", &number(stats.threshold))
        );
    }
    policies_section(&mut html, w, stats);
    verify_section(&mut html, w, stats);
    let _ = writeln!(
        html,
        "<section id=\"privacy\">\n<h2>{}</h2>\n<p>{}</p>\n<p>{}</p>\n</section>",
        w.privacy, w.privacy_can, w.privacy_cannot
    );
    if stats.months.len() > 1 {
        let _ = writeln!(
            html,
            "<nav aria-labelledby=\"months-heading\">\n<h2 id=\"months-heading\">{}</h2>\n<ul class=\"months\">",
            w.other_months
        );
        for m in stats.months.iter().rev() {
            if m == month {
                let _ = writeln!(
                    html,
                    "<li aria-current=\"page\">{}</li>",
                    month_name(lang, m)
                );
            } else {
                let _ = writeln!(
                    html,
                    "<li><a href=\"{}\">{}</a></li>",
                    query(lang, m),
                    month_name(lang, m)
                );
            }
        }
        html.push_str("</ul>\n</nav>\n");
    }
    html.push_str("</main>\n<footer><p>akashi（証）</p></footer>\n</body>\n</html>\n");
    html
}

fn summary(html: &mut String, w: &Words, lang: Lang, stats: &Statistics, month: &str) {
    let rows = pivot(stats.table(DECISIONS_BY_MONTH), month);
    let heading = match lang {
        Lang::Ja => format!("{}{}", month_name(lang, month), w.summary),
        Lang::En => format!("{} {}", w.summary, month_name(lang, month)),
    };
    let _ = write!(
        html,
        "<section id=\"summary\">\n<h2>{heading}</h2>\n<dl class=\"summary\">\n"
    );
    let row = rows.first();
    for outcome in [Outcome::Allowed, Outcome::AllowedFlagged, Outcome::Denied] {
        let count = row.and_then(|r| count_of(r, outcome));
        let _ = writeln!(
            html,
            "<div><dt>{}</dt><dd id=\"summary-{}\">{}</dd></div>",
            label(lang, outcome.as_str()),
            outcome.as_str(),
            count_cell(w, count)
        );
    }
    html.push_str("</dl>\n</section>\n");
}

fn month_chart(html: &mut String, w: &Words, lang: Lang, stats: &Statistics, month: &str) {
    let table = stats.table(DECISIONS_BY_MONTH);
    let shown: Vec<&String> = stats
        .months
        .iter()
        .filter(|m| m.as_str() <= month)
        .rev()
        .take(CHART_MONTHS)
        .collect();
    let rows: Vec<(&String, Pivot)> = shown
        .into_iter()
        .rev()
        .map(|m| {
            let row = pivot(table, m).into_iter().next().unwrap_or(Pivot {
                key: Vec::new(),
                counts: Vec::new(),
            });
            (m, row)
        })
        .collect();
    let all: Vec<Pivot> = rows
        .iter()
        .map(|(_, r)| Pivot {
            key: Vec::new(),
            counts: r.counts.clone(),
        })
        .collect();
    let columns = outcomes(&all);
    let max = max_count(&all);
    let _ = write!(
        html,
        "<section id=\"per-month\">\n<h2>{}</h2>\n<figure>\n<table class=\"chart\">\n<caption>{}</caption>\n<thead><tr><th scope=\"col\">{}</th>",
        w.chart_months, w.chart_months, w.month
    );
    for outcome in &columns {
        let _ = write!(
            html,
            "<th scope=\"col\">{}</th>",
            label(lang, outcome.as_str())
        );
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for (m, row) in &rows {
        let _ = write!(html, "<tr><th scope=\"row\">{}</th>", month_name(lang, m));
        for outcome in &columns {
            html.push_str(&bar_cell(w, *outcome, count_of(row, *outcome), max));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n</figure>\n</section>\n");
}

fn max_count(rows: &[Pivot]) -> u64 {
    rows.iter()
        .flat_map(|r| r.counts.iter().filter_map(|c| c.1))
        .max()
        .unwrap_or(0)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one section of the page, described by its parts"
)]
fn decisions_section(
    html: &mut String,
    w: &Words,
    lang: Lang,
    stats: &Statistics,
    month: &str,
    id: &str,
    heading: &str,
    table: &str,
    key_columns: &[&str],
    chart: bool,
) {
    let rows = pivot(stats.table(table), month);
    let _ = write!(html, "<section id=\"{id}\">\n<h2>{heading}</h2>\n");
    if rows.is_empty() {
        let _ = writeln!(html, "<p>{}</p>\n</section>", w.no_records);
        return;
    }
    let columns = outcomes(&rows);
    let max = max_count(&rows);
    let _ = write!(
        html,
        "<table class=\"{}\" id=\"table-{table}\">\n<caption>{heading} — {}</caption>\n<thead><tr>",
        if chart { "chart" } else { "counts" },
        month_name(lang, month)
    );
    for column in key_columns {
        let _ = write!(html, "<th scope=\"col\">{column}</th>");
    }
    for outcome in &columns {
        let _ = write!(
            html,
            "<th scope=\"col\">{}</th>",
            label(lang, outcome.as_str())
        );
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in &rows {
        html.push_str("<tr>");
        for (i, value) in row.key.iter().enumerate() {
            let cell = if i == 0 { "th scope=\"row\"" } else { "td" };
            let end = if i == 0 { "th" } else { "td" };
            let _ = write!(html, "<{cell}>{}</{end}>", label(lang, value));
        }
        for outcome in &columns {
            let count = count_of(row, *outcome);
            if chart {
                html.push_str(&bar_cell(w, *outcome, count, max));
            } else {
                let _ = write!(html, "<td class=\"num\">{}</td>", count_cell(w, count));
            }
        }
        html.push_str("</tr>\n");
    }
    let _ = write!(
        html,
        "</tbody>\n</table>\n<p class=\"csv\"><a href=\"/disclosure/{table}.csv\">CSV</a></p>\n</section>\n"
    );
}

fn consent_section(html: &mut String, w: &Words, lang: Lang, stats: &Statistics, month: &str) {
    let _ = writeln!(html, "<section id=\"consent\">\n<h2>{}</h2>", w.consent);
    let entries: Vec<_> = stats
        .table(CONSENT_BY_MONTH)
        .map(|t| in_month(t, month))
        .unwrap_or_default();
    if entries.is_empty() {
        let _ = writeln!(html, "<p>{}</p>\n</section>", w.no_records);
        return;
    }
    let _ = writeln!(
        html,
        "<table class=\"counts\" id=\"table-{CONSENT_BY_MONTH}\">\n<caption>{} — {}</caption>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
        w.consent,
        month_name(lang, month),
        w.activity,
        w.count
    );
    for row in entries {
        let _ = writeln!(
            html,
            "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td></tr>",
            label(lang, key(row, 1)),
            count_cell(w, Some(row.count))
        );
    }
    html.push_str("</tbody>\n</table>\n");
    let by_purpose: Vec<_> = stats
        .table(CONSENT_BY_PURPOSE)
        .map(|t| in_month(t, month))
        .unwrap_or_default();
    if !by_purpose.is_empty() {
        let _ = writeln!(
            html,
            "<table class=\"counts\" id=\"table-{CONSENT_BY_PURPOSE}\">\n<caption>{}</caption>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
            w.consent_purposes, w.purpose, w.activity, w.count
        );
        for row in by_purpose {
            let _ = writeln!(
                html,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"num\">{}</td></tr>",
                label(lang, key(row, 2)),
                label(lang, key(row, 1)),
                count_cell(w, Some(row.count))
            );
        }
        html.push_str("</tbody>\n</table>\n");
    }
    let _ = write!(
        html,
        "<p class=\"csv\"><a href=\"/disclosure/{CONSENT_BY_MONTH}.csv\">CSV</a> · <a href=\"/disclosure/{CONSENT_BY_PURPOSE}.csv\">CSV</a></p>\n</section>\n"
    );
}

/// The rows of `table` in `month`.
fn in_month<'a>(table: &'a Table, month: &str) -> Vec<&'a Row> {
    table
        .rows
        .iter()
        .filter(|r| r.key.first().is_some_and(|m| m == month))
        .collect()
}

/// Column `i` of a row's key (empty if the table has fewer columns).
fn key(row: &Row, i: usize) -> &str {
    row.key.get(i).map_or("", String::as_str)
}

fn policies_section(html: &mut String, w: &Words, stats: &Statistics) {
    let _ = writeln!(
        html,
        "<section id=\"policies\">\n<h2>{}</h2>\n<p>{}</p>\n<table class=\"counts\">\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead>\n<tbody>",
        w.policies, w.policies_intro, w.hash, w.from, w.until, w.text
    );
    for set in stats.policy_sets.iter().rev() {
        let hash = escape(&set.hash);
        let until = set
            .until_index
            .map_or_else(|| format!("<strong>{}</strong>", w.in_force), number);
        let _ = writeln!(
            html,
            "<tr><th scope=\"row\"><code>{hash}</code></th><td class=\"num\">{} ({})</td><td class=\"num\">{until}</td><td><a href=\"/policy/{hash}\">{}</a></td></tr>",
            number(set.from_index),
            escape(&set.from_day),
            w.text
        );
    }
    html.push_str("</tbody>\n</table>\n</section>\n");
}

fn verify_section(html: &mut String, w: &Words, stats: &Statistics) {
    let _ = write!(
        html,
        "<section id=\"verify\">\n<h2>{}</h2>\n<p>{}</p>\n<pre><code>akashi-audit disclosure --vkey \"$LOG_VKEY\" --http http://this-server</code></pre>\n\
         <h3>{}</h3>\n<ul>\n<li><a href=\"/disclosure.json\">disclosure.json</a></li>\n",
        w.verify, w.verify_text, w.machine
    );
    for table in &stats.tables {
        let name = escape(&table.name);
        let _ = writeln!(
            html,
            "<li><a href=\"/disclosure/{name}.csv\">{name}.csv</a></li>"
        );
    }
    html.push_str(
        "<li><a href=\"/checkpoint\">checkpoint</a></li>\n<li><a href=\"/vkey\">vkey</a></li>\n</ul>\n</section>\n",
    );
}

/// The page's style sheet: readable without colour (bars sit beside their numbers in labelled
/// columns; hidden counts are written out), and wide tables scroll on small screens.
const STYLE: &str = "body{font-family:system-ui,'Hiragino Sans','Noto Sans CJK JP',sans-serif;max-width:60rem;margin:0 auto;padding:1rem;line-height:1.6;color:#1a1a1a;background:#fff}\
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5rem 0;display:block;overflow-x:auto}\
caption{text-align:left;font-weight:bold;padding:.25rem 0}\
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}\
td.num{text-align:right;white-space:nowrap;min-width:9rem}\
.bar{display:inline-block;height:.8rem;vertical-align:middle;border:1px solid #333}\
.bar.allowed{background:#4a7ebb}.bar.allowed_flagged{background:repeating-linear-gradient(45deg,#e0a030 0 3px,#fff 3px 6px)}\
.bar.denied{background:#999}.bar.unrecorded{background:#ddd}\
table.chart td.num{min-width:15rem}\
.hidden{font-style:italic}\
dl.summary{display:flex;gap:1rem;flex-wrap:wrap}dl.summary div{border:1px solid #bbb;padding:.5rem 1rem}\
dl.summary dd{font-size:1.5rem;margin:0}\
code{overflow-wrap:anywhere}.pinned{font-size:.9rem}.note{font-size:.9rem}\
ul.months{display:flex;flex-wrap:wrap;gap:.75rem;list-style:none;padding:0}\
.switch{text-align:right}figure{margin:0}";

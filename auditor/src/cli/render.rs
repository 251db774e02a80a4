//! What the CLI prints: one line saying `valid`, `invalid` or `error` first, then details, so that
//! a person and a script read the same verdict. Nothing here prints patient ids.

use std::fmt::Write as _;

use super::WatchStep;
use crate::history::{Completeness, History, HistoryError};
use crate::receipt::{AnswerCheck, ReceiptError, VerifiedReceipt};
use crate::report::error_chain;
use crate::trust::{Advance, TrustError};

/// The verdict on a receipt.
pub(super) fn receipt(result: &Result<VerifiedReceipt, ReceiptError>) -> String {
    let mut out = String::new();
    match result {
        Ok(verified) => {
            let cp = &verified.checkpoint().checkpoint();
            let _ = writeln!(
                out,
                "valid: entry {} is in the log `{}` at tree size {}",
                verified.leaf_index(),
                cp.origin,
                cp.size
            );
            let _ = writeln!(out, "  root       {}", cp.root);
            let _ = writeln!(out, "  leaf hash  {}", verified.leaf_hash());
            if let Some(leaf) = &verified.leaf() {
                let _ = writeln!(out, "  leaf       matches: {} on {}", leaf.kind, leaf.day);
            }
            if verified.body_checked() {
                let _ = writeln!(out, "  body       matches the leaf's commitment");
            }
            if let Some((answer, check)) = &verified.answer() {
                let review = if answer.review_required {
                    "review required"
                } else {
                    "no review"
                };
                let _ = writeln!(out, "  answer     {}, {review}: as logged", answer.decision);
                let policies = match answer.determining_policies.as_slice() {
                    [] => "none".to_owned(),
                    ids => ids.join(", "),
                };
                let _ = match check {
                    AnswerCheck::LeafAndBody => {
                        writeln!(
                            out,
                            "  policies   {policies}: as logged, and the reasons too"
                        )
                    }
                    AnswerCheck::Leaf => writeln!(
                        out,
                        "  policies   {policies}: not checked (they are in the private body: give `--body`)"
                    ),
                };
            }
        }
        Err(error) if error.is_invalid() => {
            let _ = writeln!(out, "invalid: {}", error_chain(error));
        }
        Err(error) => {
            let _ = writeln!(out, "error: {}", error_chain(error));
        }
    }
    out
}

/// One watcher check.
pub(super) fn watch(step: &WatchStep) -> String {
    match step {
        WatchStep::Accepted {
            advance,
            checkpoint,
        } => {
            let root = checkpoint.checkpoint().root;
            match advance {
                Advance::First { size } => {
                    format!("valid: trusting the first checkpoint seen, size {size} root {root}\n")
                }
                Advance::Grown { from, to } => {
                    format!("valid: size {from} -> {to} is consistent (root {root})\n")
                }
                Advance::Unchanged { size } => {
                    format!("valid: unchanged at size {size} (root {root})\n")
                }
            }
        }
        WatchStep::Inconsistent(error) => inconsistency(error),
    }
}

fn inconsistency(error: &TrustError) -> String {
    let (TrustError::Fork(d) | TrustError::Rollback(d)) = error else {
        return format!("invalid: {}\n", error_chain(error));
    };
    let what = match error {
        TrustError::Rollback(_) => "rollback: the log shows a smaller tree than it showed before",
        _ if d.trusted_size == d.new_size => "fork: two different trees of the same size",
        _ => "fork: the new tree does not extend the trusted one",
    };
    let mut out = format!("invalid: {what}\n");
    let _ = writeln!(
        out,
        "  trusted  size {} root {}",
        d.trusted_size, d.trusted_root
    );
    let _ = writeln!(out, "  new      size {} root {}", d.new_size, d.new_root);
    if let Some(proof_error) = d.proof_error {
        let _ = writeln!(out, "  proof    {proof_error}");
    }
    out
}

/// A patient's history as a table, then the verdict.
pub(super) fn history(result: &Result<History, HistoryError>) -> String {
    let history = match result {
        Ok(history) => history,
        Err(error) if error.exit_code() == crate::exit::AuditExitCode::Invalid => {
            return format!("invalid: {}\n", error_chain(error));
        }
        Err(error) => return format!("error: {}\n", error_chain(error)),
    };
    let header = [
        "INDEX",
        "DAY",
        "KIND",
        "ACTION",
        "RECIPIENT",
        "PURPOSE",
        "DECISION",
        "CHECK",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 8]> = history
        .rows
        .iter()
        .map(|row| {
            [
                row.index.to_string(),
                row.day.clone(),
                row.kind.clone(),
                row.action.clone().unwrap_or_else(dash),
                row.recipient.clone().unwrap_or_else(dash),
                row.purpose.clone().unwrap_or_else(dash),
                row.decision.clone().unwrap_or_else(dash),
                match (row.verified, row.erased) {
                    (false, _) => "FAILED".to_owned(),
                    (true, true) => "ok (body erased)".to_owned(),
                    (true, false) => "ok".to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:width$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    for finding in &history.findings {
        let _ = writeln!(out, "finding: {finding}");
    }
    let _ = writeln!(out, "{}", completeness(&history.completeness));
    if let Some(witnessed) = &history.witnessed {
        let _ = if witnessed.direct {
            writeln!(
                out,
                "witnessed: {} of the witnesses you trust cosigned the checkpoint at tree size {}, the one your history is proven complete at",
                witnessed.cosignatures, witnessed.tree_size
            )
        } else {
            writeln!(
                out,
                "witnessed: {} of the witnesses you trust cosigned the log at tree size {}, which contains the tree your history is proven at (its completeness record is signed by the log alone)",
                witnessed.cosignatures, witnessed.tree_size
            )
        };
    }
    let shown = history.rows.len() as u64;
    let _ = if history.is_valid() {
        writeln!(
            out,
            "valid: {}, each in the log at tree size {} (root {})",
            entries(shown),
            history.tree_size,
            history.root
        )
    } else if history.findings.is_empty() {
        writeln!(
            out,
            "not verified: the {} shown are each in the log at tree size {}, but not proven to be all",
            entries(shown),
            history.tree_size
        )
    } else {
        writeln!(out, "invalid: {} findings", history.findings.len())
    };
    out
}

/// The completeness verdict, in a patient's words.
fn completeness(verdict: &Completeness) -> String {
    match verdict {
        Completeness::Complete {
            entries: 0,
            tree_size,
        } => format!(
            "complete: the log says it holds nothing about you up to tree size {tree_size}"
        ),
        Completeness::Complete { entries: n, tree_size } => format!(
            "complete: the log holds exactly {} about you up to tree size {tree_size}",
            entries(*n)
        ),
        Completeness::Failed { tree_size } => format!(
            "incomplete: the entries shown are not all the log holds about you up to tree size {tree_size}, or the proof of it fails (see the findings)"
        ),
        Completeness::Uncommitted { .. } => "completeness cannot be checked: this log does not commit to per-patient completeness (no subject map in its checkpoint)".to_owned(),
    }
}

fn entries(n: u64) -> String {
    if n == 1 {
        "1 entry".to_owned()
    } else {
        format!("{n} entries")
    }
}

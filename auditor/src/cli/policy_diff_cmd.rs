//! `akashi-audit policy-diff`: what a candidate policy set would change among the logged
//! decisions, computed by the auditor from the log itself.
//!
//! It is a regulator's replay ([`replay_analysing`]) with an analysis of the candidate riding on
//! it: the tree, checkpoints and bodies are verified as `replay` verifies them, and every logged
//! decision of the window is re-decided with the candidate against the state in force when it
//! was made. The analysis and its id are the ones the server's `PolicyService/AnalyzePolicySet`
//! gives for the same window, so a regulator can check the analysis an approval names without
//! trusting the server (`--expect-id`). This module prints; the counting is `policy::whatif`'s.

use std::fmt;

use policy::whatif::Analysis;
use serde::Serialize;

use super::replay_cmd::{PolicyDiff, ReplayConfig, replay_analysing};
use crate::exit::AuditExitCode;
use crate::report::Report;

/// What `policy-diff` found: the replay's report and the analysis.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDiffReport {
    /// The analysis's id (64 lowercase hex).
    pub analysis_id: String,
    /// The analysis.
    pub analysis: Analysis,
    /// Whether the id is the one expected (`--expect-id`), when one was.
    pub expected_id_matches: Option<bool>,
    /// The replay's report (tree, checkpoints, bodies, decisions).
    pub replay: Report,
}

impl PolicyDiffReport {
    /// 0 when the log replays cleanly (and the id is the one expected), 2 otherwise.
    pub fn exit_code(&self) -> AuditExitCode {
        if self.expected_id_matches == Some(false) {
            AuditExitCode::Invalid
        } else {
            self.replay.exit_code()
        }
    }
}

/// Replays the log with an analysis of `diff`'s candidate, and compares the analysis id with
/// `expect_id` (lowercase hex) when given.
///
/// # Errors
///
/// As [`replay_analysing`].
pub async fn policy_diff(
    config: &ReplayConfig,
    diff: PolicyDiff,
    expect_id: Option<&str>,
    progress: bool,
) -> anyhow::Result<PolicyDiffReport> {
    let (replay, analysis) = replay_analysing(config, progress, Some(diff)).await?;
    let analysis = analysis.ok_or_else(|| anyhow::anyhow!("the replay lost its analysis"))?;
    let analysis_id = analysis.id().to_hex();
    Ok(PolicyDiffReport {
        expected_id_matches: expect_id.map(|id| id.trim().eq_ignore_ascii_case(&analysis_id)),
        analysis_id,
        analysis,
        replay,
    })
}

impl fmt::Display for PolicyDiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.analysis;
        writeln!(f, "analysis {}", self.analysis_id)?;
        writeln!(f, "candidate policy set {}", a.candidate)?;
        writeln!(
            f,
            "window entries {}..{}: {} logged decisions re-decided",
            a.from_index, a.to_index, a.decisions
        )?;
        writeln!(
            f,
            "would change {}: {} allowed then would be denied, {} denied then would be allowed",
            a.allow_to_deny + a.deny_to_allow,
            a.allow_to_deny,
            a.deny_to_allow
        )?;
        for group in &a.groups {
            let examples: Vec<String> = group.examples.iter().map(u64::to_string).collect();
            writeln!(
                f,
                "  {} rule {} purpose {}: {} (e.g. entries {})",
                group.direction.as_str(),
                group.rule,
                group.purpose,
                group.count,
                examples.join(", ")
            )?;
        }
        match self.expected_id_matches {
            Some(true) => writeln!(f, "the analysis id is the one expected")?,
            Some(false) => writeln!(
                f,
                "the analysis id differs from the one expected: the log, the window or the \
                 candidate is not what the expected analysis saw"
            )?,
            None => {}
        }
        write!(f, "{}", self.replay)
    }
}

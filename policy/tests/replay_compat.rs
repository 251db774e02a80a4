//! Replay compatibility: a log written by an earlier version of akashi still replays, and every
//! decision in it re-decides exactly as it was logged.
//!
//! `fixtures/log-2026-12-02.jsonl` holds, one per line, the JSON bodies of a log written with the
//! default policy set and the state machine as they were on 2026-12-02, before the rule corrections
//! of that month (a later opt-out winning over earlier consents, sensitive categories off the
//! opt-out path, purpose limits on privileged views, facilities as organisations, emergency
//! viewing across facilities, statistics bound by disclosure settings, the level order in one
//! rule). Its decisions include the cases those corrections decide differently today: each must
//! still replay as logged, because a regulator's replay judges every entry by the policy set and
//! events in force when it was written. The file is never regenerated: it stands for logs that
//! already exist.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "test code"
)]

use policy::replay::{Outcome, Replayer};
use policy::{domain::Effect, event::Event};

const LOG: &str = include_str!("fixtures/log-2026-12-02.jsonl");

#[test]
fn a_log_written_before_the_rule_corrections_replays_decision_for_decision() {
    let mut replayer = Replayer::new();
    let mut decisions = 0;
    let mut allows = 0;
    for (index, line) in LOG.lines().enumerate() {
        let event = Event::from_json(line.as_bytes())
            .unwrap_or_else(|e| panic!("entry {index} no longer decodes: {e}"));
        let outcome = replayer
            .step(index as u64, &event)
            .unwrap_or_else(|e| panic!("entry {index} no longer applies: {e}"));
        if let Event::Decision { decision, .. } = &event {
            decisions += 1;
            allows += usize::from(decision.effect == Effect::Allow);
            assert_eq!(
                outcome,
                Outcome::DecisionMatches,
                "entry {index} re-decides differently"
            );
        } else {
            assert_eq!(outcome, Outcome::Applied, "entry {index}");
        }
    }
    // The fixture is the whole log: a truncated file must not pass.
    assert_eq!((decisions, allows), (27, 17));
}

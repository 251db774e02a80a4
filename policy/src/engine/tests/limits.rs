//! Policies at the limits of `crate::limits` parse, validate and evaluate through a decision on
//! half of a tokio worker's 2 MiB stack (the server's own frames around a decision take part of
//! the other half), and policies just past them are refused naming the limit.

use super::*;
use crate::limits::{LimitError, MAX_EXPRESSION_TERMS, MAX_NESTING, PolicyName};

/// Half of tokio's default worker and blocking thread stack (2 MiB).
const STACK: usize = 1024 * 1024;

/// A permit of statistics for `gov` when `condition` holds; nests one level (`when {`) and has
/// one term of its own (the `==` of its action scope).
fn permit_when(condition: &str) -> String {
    format!(
        "@id(\"deep\")\n@reason(\"r\")\npermit (principal, action == Action::\"export_statistics\", resource)\nwhen {{ {condition} }};\n"
    )
}

/// Compiles, validates and decides `text` on a thread with [`STACK`]; the decision must be
/// the `deep` policy's allow, with no evaluation error.
fn allows_on_small_stack(text: String) {
    let handle = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            validate(&text).unwrap();
            let engine = PolicyEngine::new(&text).unwrap();
            let decision = decide(&engine, &stats_request(50));
            let copy = engine.clone();
            drop(engine);
            (decision, copy.policy_ids().len())
        })
        .unwrap();
    let (decision, policies) = handle.join().unwrap();
    assert_eq!(policies, 1);
    assert!(decision.errors.is_empty(), "{:?}", decision.errors);
    assert_eq!(decision.effect, Effect::Allow, "{decision:?}");
    assert_eq!(decision.determining_policies, vec!["deep"]);
}

/// The terms left to the condition of [`permit_when`].
const TERMS: usize = MAX_EXPRESSION_TERMS - 1;

/// `n` nested pairs of `open`/`close` around `inner`.
fn nest(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// A chain `first op item op item …` with `n` operators.
fn chain(first: &str, op: &str, item: &str, n: usize) -> String {
    let mut s = first.to_owned();
    for _ in 0..n {
        s.push_str(op);
        s.push_str(item);
    }
    s
}

fn limit_error(text: &str) -> LimitError {
    match PolicyEngine::new(text) {
        Err(PolicyError::Limit { source }) => source,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

// Nesting: `when {` is one level, so `MAX_NESTING - 1` more brackets reach the limit exactly.

#[test]
fn deepest_parentheses_allowed_evaluate() {
    allows_on_small_stack(permit_when(&nest("(", "true", ")", MAX_NESTING - 1)));
}

#[test]
fn deepest_sets_allowed_evaluate() {
    // Both sides reach the limit: `when {` + `.contains(` + the inner brackets.
    let outer = nest("[", "1", "]", MAX_NESTING - 1);
    let inner = nest("[", "1", "]", MAX_NESTING - 2);
    allows_on_small_stack(permit_when(&format!("{outer}.contains({inner})")));
}

#[test]
fn deepest_records_allowed_evaluate() {
    // `{a: {a: … 1}}.a.a… == 1`: records nest and the attribute chain is as long (well within
    // the terms).
    let depth = MAX_NESTING - 1;
    let record = nest("{a: ", "1", "}", depth);
    allows_on_small_stack(permit_when(&format!("{record}{} == 1", ".a".repeat(depth))));
}

// Operator chains: the `when` clause holds only the chain, so it may use every term.

#[test]
fn longest_sum_allowed_evaluates() {
    // `1 + 1 + … > 0`: the `>` is one term.
    allows_on_small_stack(permit_when(&format!(
        "{} > 0",
        chain("1", " + ", "1", TERMS - 1)
    )));
}

#[test]
fn longest_difference_and_product_allowed_evaluate() {
    allows_on_small_stack(permit_when(&format!(
        "{} < 1",
        chain("0", " - ", "0", TERMS - 1)
    )));
    allows_on_small_stack(permit_when(&format!(
        "{} == 1",
        chain("1", " * ", "1", TERMS - 1)
    )));
}

#[test]
fn longest_and_or_chains_allowed_evaluate() {
    allows_on_small_stack(permit_when(&chain("true", " && ", "true", TERMS)));
    let or = chain("false", " || ", "false", TERMS - 1);
    allows_on_small_stack(permit_when(&format!("{or} || true")));
}

#[test]
fn deepest_if_chains_allowed_evaluate() {
    // Each `if … then … else` is three terms.
    let n = TERMS / 3;
    let nested_then = format!(
        "{}true{}",
        "if true then ".repeat(n),
        " else false".repeat(n)
    );
    allows_on_small_stack(permit_when(&nested_then));
    let else_chain = format!("{}true", "if false then false else ".repeat(n));
    allows_on_small_stack(permit_when(&else_chain));
}

#[test]
fn deepest_nesting_with_longest_chain_inside_evaluates() {
    // Both limits at once: the chain sits in the innermost bracket.
    let sum = chain("1", " + ", "1", TERMS - 1);
    let inner = nest("(", &sum, ")", MAX_NESTING - 1);
    allows_on_small_stack(permit_when(&format!("{inner} > 0")));
    let n = TERMS / 3;
    let ifs = format!(
        "{}true{}",
        "if true then ".repeat(n),
        " else false".repeat(n)
    );
    allows_on_small_stack(permit_when(&nest("(", &ifs, ")", MAX_NESTING - 1)));
}

#[test]
fn one_bracket_too_deep_is_refused_naming_the_limit() {
    for (open, close) in [("(", ")"), ("[", "]"), ("{a: ", "}")] {
        let text = permit_when(&nest(open, "1", close, MAX_NESTING));
        let err = limit_error(&text);
        assert!(
            matches!(
                &err,
                LimitError::Nesting { policy: PolicyName::Id(id), found, max, .. }
                    if id == "deep" && *found == MAX_NESTING + 1 && *max == MAX_NESTING
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "policy `deep` nests brackets {} deep, at most {MAX_NESTING}",
                MAX_NESTING + 1
            )
        );
    }
}

#[test]
fn one_term_too_many_is_refused_naming_the_limit() {
    let cases = [
        chain("1", " + ", "1", TERMS) + " > 0",
        chain("true", " && ", "true", TERMS + 1),
        format!(
            "{}true{}",
            "if true then ".repeat(TERMS / 3 + 1),
            " else false".repeat(TERMS / 3 + 1)
        ),
    ];
    for condition in cases {
        let err = limit_error(&permit_when(&condition));
        let LimitError::ExpressionTerms {
            policy, found, max, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(policy, &PolicyName::Id("deep".to_owned()));
        assert!(*found > MAX_EXPRESSION_TERMS, "{found}");
        assert_eq!(*max, MAX_EXPRESSION_TERMS);
        assert_eq!(
            err.to_string(),
            format!(
                "policy `deep` has {found} operators and keywords, at most {MAX_EXPRESSION_TERMS}"
            )
        );
    }
}

#[test]
fn limit_errors_reach_validation_issues_with_location() {
    let text = format!(
        "{MINIMAL}\n{}",
        permit_when(&nest("(", "1", ")", MAX_NESTING))
    );
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    let issue = &found[0];
    assert_eq!(issue.policy.as_deref(), Some("deep"));
    assert_eq!(issue.line, Some(8));
    assert!(issue.message.contains("nests brackets"), "{issue}");
}

/// Tokio's default worker and blocking thread stack.
const PROBE_STACK: usize = 2 * 1024 * 1024;

/// Not a test of its own: with `AKASHI_STACK_PROBE=<kind>:<n>` set (`eval-<kind>:<n>` to decide
/// too), runs Cedar without the limits on one bomb on a 2 MiB stack, to measure where Cedar
/// itself overflows or stops (see the README of this crate). Without it, does nothing.
#[test]
fn stack_probe() {
    let Ok(probe) = std::env::var("AKASHI_STACK_PROBE") else {
        return;
    };
    let (kind, n) = probe.split_once(':').unwrap();
    let n: usize = n.parse().unwrap();
    let (evaluate, kind) = match kind.strip_prefix("eval-") {
        Some(kind) => (true, kind),
        None => (false, kind),
    };
    let condition = match kind {
        "paren" => nest("(", "true", ")", n),
        "set" => format!("{}.contains(1)", nest("[", "1", "]", n)),
        "sum" => chain("1", " + ", "1", n) + " > 0",
        "and" => chain("true", " && ", "true", n),
        "if" => format!(
            "{}true{}",
            "if true then ".repeat(n),
            " else false".repeat(n)
        ),
        "else" => format!("{}true", "if false then false else ".repeat(n)),
        "or" => chain("false", " || ", "false", n) + " || true",
        "mul" => chain("1", " * ", "1", n) + " == 1",
        "record" => format!("{}{} == 1", nest("{a: ", "1", "}", n), ".a".repeat(n)),
        other => panic!("unknown kind {other}"),
    };
    let text = permit_when(&condition);
    let handle = std::thread::Builder::new()
        .stack_size(PROBE_STACK)
        .spawn(move || {
            if evaluate {
                let engine = PolicyEngine::build(canonicalize(&text), compile_unchecked).unwrap();
                let decision = decide(&engine, &stats_request(50));
                return decision.effect == Effect::Allow && decision.errors.is_empty();
            }
            let statics = statics().unwrap();
            let compiled = compile_unchecked(&text, statics);
            let ok = compiled.is_ok();
            if let Ok((set, _)) = compiled {
                let copy = set.clone();
                drop(set);
                drop(copy);
            }
            ok
        })
        .unwrap();
    println!("probe {probe}: ok={}", handle.join().unwrap());
}

use super::*;

fn policy(condition: &str) -> String {
    format!(
        "@id(\"p3\")\n@reason(\"r\")\npermit (principal, action, resource)\nwhen {{ {condition} }};\n"
    )
}

#[test]
fn default_policies_fit_with_a_wide_margin() {
    check(crate::policy_set::DEFAULT_POLICIES).unwrap();
    let (depth, terms) = widest(crate::policy_set::DEFAULT_POLICIES);
    assert!(depth * 4 <= MAX_NESTING, "{depth}");
    assert!(terms * 4 <= MAX_EXPRESSION_TERMS, "{terms}");
}

/// The deepest nesting and the most terms of any policy in (balanced) `text`, counted with the
/// scan's own lexer.
fn widest(text: &str) -> (usize, usize) {
    let (mut depth, mut max_depth, mut terms, mut max_terms) = (0usize, 0, 0, 0);
    let mut tokens = Tokens::new(text.as_bytes());
    while let Some((token, _)) = tokens.next_token() {
        match token {
            Token::Open => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            Token::Close => depth -= 1,
            Token::Term => {
                terms += 1;
                max_terms = max_terms.max(terms);
            }
            Token::Semicolon if depth == 0 => terms = 0,
            _ => {}
        }
    }
    assert_eq!(depth, 0);
    (max_depth, max_terms)
}

#[test]
fn nesting_counts_all_brackets_together() {
    // `when {` is 1; brackets inside add up whatever their kind.
    let mixed = "([{a: (1)}])";
    assert_eq!(widest(&policy(mixed)).0, 5);
    let at_limit = format!(
        "{}1{}",
        "(".repeat(MAX_NESTING - 1),
        ")".repeat(MAX_NESTING - 1)
    );
    check(&policy(&at_limit)).unwrap();
    let over = format!("{}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
    let err = check(&policy(&over)).unwrap_err();
    assert_eq!(
        err,
        LimitError::Nesting {
            policy: PolicyName::Id("p3".to_owned()),
            found: MAX_NESTING + 1,
            max: MAX_NESTING,
            offset: policy("").find('{').unwrap() + 2 + MAX_NESTING - 1,
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "policy `p3` nests brackets {} deep, at most {MAX_NESTING}",
            MAX_NESTING + 1
        )
    );
}

#[test]
fn every_operator_and_keyword_counts() {
    let all = "a && b || c + d - e * f == g != h < i <= j > k >= !l.m \
               if x then y else z has w like \"*\" in v is u";
    // 11 binary operators, `!`, `.` and 7 keywords; `<=` and `>=` count once.
    assert_eq!(widest(&policy(all)).1, 20);
    let over = std::iter::repeat_n("1", MAX_EXPRESSION_TERMS + 2)
        .collect::<Vec<_>>()
        .join("+");
    let err = check(&policy(&over)).unwrap_err();
    assert!(
        matches!(
            &err,
            LimitError::ExpressionTerms { policy: PolicyName::Id(id), found, max, .. }
                if id == "p3" && *found == MAX_EXPRESSION_TERMS + 1 && *max == MAX_EXPRESSION_TERMS
        ),
        "{err:?}"
    );
    // `/` and `%`, which Cedar's parser refuses, count too; `//` starts a comment.
    assert_eq!(widest(&policy("1 / 2 % 3 // + + +\n")).1, 2);
    // Keywords are whole words: `iffy`, `this`, `in_force` and `isn` are identifiers.
    assert_eq!(widest(&policy("iffy && this && in_force && isn")).1, 3);
}

#[test]
fn strings_and_comments_are_skipped() {
    // Brackets and operators in strings and comments neither count nor hide what follows.
    let hidden = format!(
        "\"(((\\\" + + [[[\" == \"//\" // ((( + + \"\n && {}",
        "(".repeat(MAX_NESTING)
    );
    let err = check(&policy(&hidden)).unwrap_err();
    assert!(matches!(err, LimitError::Nesting { .. }), "{err:?}");
    assert_eq!(
        widest(&policy("\"((( && \\\\\" == \"x\" // ((( &&\n")),
        (1, 1)
    );
    // Cedar ends a comment at `\r` too: what follows it is code.
    let cr = format!("// note\r{}", "(".repeat(MAX_NESTING));
    assert!(matches!(
        check(&policy(&cr)),
        Err(LimitError::Nesting { .. })
    ));
    // An unterminated string runs to the end (Cedar refuses it).
    check(&format!("\"{}", "(".repeat(1000))).unwrap();
}

#[test]
fn limits_are_per_policy_and_name_it() {
    let half = std::iter::repeat_n("1", MAX_EXPRESSION_TERMS / 2 + 1)
        .collect::<Vec<_>>()
        .join("+");
    let two = format!("{}{}", policy(&half), policy(&half));
    check(&two).unwrap();
    // A `;` inside brackets does not end a policy.
    let inside = format!("{}(;{}", "(".repeat(MAX_NESTING - 2), "(".repeat(2));
    assert!(matches!(
        check(&policy(&inside)),
        Err(LimitError::Nesting { .. })
    ));
    // Without a plain `@id`, the policy is named by its position.
    let deep = "(".repeat(MAX_NESTING + 1);
    let text = format!(
        "{}permit (principal, action, resource) when {{ {deep} }};",
        policy("true")
    );
    let err = check(&text).unwrap_err();
    assert_eq!(err.policy(), &PolicyName::Position(2));
    assert!(
        err.to_string()
            .starts_with("policy number 2 nests brackets"),
        "{err}"
    );
    let odd = format!("@id(\"a b\") permit (principal, action, resource) when {{ {deep} }};");
    assert_eq!(check(&odd).unwrap_err().policy(), &PolicyName::Position(1));
    // `@id` inside a condition is not an annotation.
    let fake = format!("permit (principal, action, resource) when {{ @id(\"x\") {deep} }};");
    assert_eq!(check(&fake).unwrap_err().policy(), &PolicyName::Position(1));
}

#[test]
fn bombs_from_the_issue_are_refused() {
    let parens = policy(&format!("{}true{}", "(".repeat(160), ")".repeat(160)));
    assert!(matches!(
        check(&parens),
        Err(LimitError::Nesting { found: 161, .. })
    ));
    let sets = policy(&format!("{}1{}", "[".repeat(200), "]".repeat(200)));
    assert!(matches!(
        check(&sets),
        Err(LimitError::Nesting { found: 201, .. })
    ));
    let ifs = policy(&format!(
        "{}true{}",
        "if true then ".repeat(2000),
        " else false".repeat(2000)
    ));
    assert!(matches!(
        check(&ifs),
        Err(LimitError::ExpressionTerms { found: 6000, .. })
    ));
    let sum = policy(&format!("{} > 0", vec!["1"; 60_000].join(" + ")));
    assert!(matches!(
        check(&sum),
        Err(LimitError::ExpressionTerms { found: 60_000, .. })
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let nasty = [
        "",
        "\"",
        "\\",
        "\"\\",
        "//",
        "@",
        "@id",
        "@id(",
        "@id(\"",
        ")))]]]}}}",
        ";;;",
        "é(ü",
    ];
    for text in nasty {
        let _ = check(text);
    }
}

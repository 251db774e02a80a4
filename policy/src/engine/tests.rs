use super::*;

#[test]
fn default_set_validates() {
    if let Err(issues) = validate(DEFAULT_POLICIES) {
        for i in &issues {
            eprintln!("{i}");
        }
        panic!("{} issues", issues.len());
    }
    let engine = PolicyEngine::default_set().unwrap();
    assert_eq!(engine.text(), canonicalize(DEFAULT_POLICIES));
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
//! Every rule's own examples, from its TOML file: positives must be found by the rule (and by
//! the whole detector), negatives must not be found by the rule.

use sequester_detect::Detector;

#[test]
fn every_rule_finds_its_examples_and_not_its_negatives() {
    let d = Detector::builtin();
    let mut failures = Vec::new();
    for rule in d.rules() {
        if rule.examples().is_empty() {
            failures.push(format!("{}: has no positive examples", rule.id()));
        }
        for (i, ex) in rule.examples().iter().enumerate() {
            let own = d.detect_with_rule(rule.id(), ex.as_bytes());
            if own.is_empty() {
                failures.push(format!("{}: positive example #{i} not found by the rule", rule.id()));
                continue;
            }
            let all = d.detect(ex.as_bytes());
            let reported = all.iter().any(|f| f.rule_id() == rule.id());
            if !reported && !rule.is_generic() {
                let by: Vec<&str> = all.iter().map(|f| f.rule_id()).collect();
                failures.push(format!(
                    "{}: positive example #{i} reported by {by:?} instead",
                    rule.id()
                ));
            }
            if all.is_empty() {
                failures.push(format!("{}: positive example #{i} not found by the detector", rule.id()));
            }
        }
        for (i, ex) in rule.negative_examples().iter().enumerate() {
            if !d.detect_with_rule(rule.id(), ex.as_bytes()).is_empty() {
                failures.push(format!("{}: negative example #{i} was found", rule.id()));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_rule_has_a_provider_and_hosts_parse() {
    let d = Detector::builtin();
    for rule in d.rules() {
        assert!(!rule.provider().is_empty(), "{}", rule.id());
        assert!(!rule.keywords().is_empty(), "{}", rule.id());
    }
}

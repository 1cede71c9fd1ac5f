#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
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
                failures.push(format!(
                    "{}: positive example #{i} not found by the rule",
                    rule.id()
                ));
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
                failures.push(format!(
                    "{}: positive example #{i} not found by the detector",
                    rule.id()
                ));
            }
        }
        for (i, ex) in rule.negative_examples().iter().enumerate() {
            if !d.detect_with_rule(rule.id(), ex.as_bytes()).is_empty() {
                failures.push(format!("{}: negative example #{i} was found", rule.id()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_rule_has_a_provider_and_hosts_parse() {
    let d = Detector::builtin();
    for rule in d.rules() {
        assert!(!rule.provider().is_empty(), "{}", rule.id());
        assert!(!rule.keywords().is_empty(), "{}", rule.id());
    }
}

#[test]
fn users_can_add_rules_and_errors_have_stable_codes() {
    let d = Detector::builtin();
    let extra = r#"
        [[rules]]
        id = "acme-api-key"
        name = "Acme API key"
        provider = "acme"
        keywords = ["acme_"]
        pattern = '''\b(?P<secret>acme_[A-Za-z0-9]{32})\b'''
        confidence = "high"
        suggested_hosts = ["api.acme.example", "*.acme.example"]
        examples = ["ACME=acme_Q8fZ2LwX0pVn7RkYt3HsQ8fZ2LwX0pVn"]
        negative_examples = ["acme_short"]
    "#;
    let with = d.with_extra_rules(extra).unwrap();
    assert_eq!(with.rules().len(), d.rules().len() + 1);
    let f = with.detect(b"key: acme_Q8fZ2LwX0pVn7RkYt3HsQ8fZ2LwX0pVn\n");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule_id(), "acme-api-key");
    assert_eq!(f[0].provider(), "acme");
    assert_eq!(f[0].suggested_hosts().len(), 2);

    let dup = d.with_extra_rules(&extra.replace("acme-api-key", "github-pat-classic"));
    assert_eq!(dup.unwrap_err().code(), "duplicate_rule");
    let bad_regex = d.with_extra_rules(&extra.replace("{32}", "{32"));
    assert_eq!(bad_regex.unwrap_err().code(), "invalid_rule_pattern");
    let unbounded = d.with_extra_rules(&extra.replace("{32}", "+"));
    assert_eq!(unbounded.unwrap_err().code(), "invalid_rule_pattern");
    let short_kw = d.with_extra_rules(&extra.replace("[\"acme_\"]", "[\"ac\"]"));
    assert_eq!(short_kw.unwrap_err().code(), "invalid_rule");
    let bad_host =
        d.with_extra_rules(&extra.replace("api.acme.example", "https://api.acme.example"));
    assert_eq!(bad_host.unwrap_err().code(), "invalid_rule");
    let unknown_field = d.with_extra_rules(&extra.replace("confidence", "confidance"));
    assert_eq!(unknown_field.unwrap_err().code(), "invalid_rule");
    let validator =
        d.with_extra_rules(&extra.replace("confidence = \"high\"", "validator = \"nope\""));
    assert_eq!(validator.unwrap_err().code(), "unknown_validator");

    // A pattern that can match without any keyword would miss such matches silently: the
    // rule is refused, and the message shows the shortest such text.
    let optional_prefix = extra.replace(
        "(?P<secret>acme_[A-Za-z0-9]{32})",
        "(?P<secret>(?:acme_|acme-)[A-Za-z0-9]{32})",
    );
    let err = d.with_extra_rules(&optional_prefix).unwrap_err();
    assert_eq!(err.code(), "invalid_rule");
    let message = err.to_string();
    assert!(message.contains("acme-api-key"), "{message}");
    assert!(
        message.contains("\"acme-00000000000000000000000000000000\""),
        "{message}"
    );
    assert_eq!(
        Detector::from_rules(&optional_prefix).unwrap_err().code(),
        "invalid_rule"
    );
    // Listing the other form as a keyword makes the rule acceptable.
    let both = optional_prefix.replace("[\"acme_\"]", "[\"acme_\", \"acme-\"]");
    assert!(d.with_extra_rules(&both).is_ok());
}

#[test]
fn builtin_rules_cover_the_required_providers() {
    let d = Detector::builtin();
    let providers: std::collections::BTreeSet<&str> = d.rules().map(|r| r.provider()).collect();
    for p in [
        "github",
        "gitlab",
        "openai",
        "anthropic",
        "aws",
        "google",
        "azure",
        "stripe",
        "slack",
        "twilio",
        "sendgrid",
        "npm",
        "pypi",
        "huggingface",
        "discord",
        "telegram",
        "jwt",
        "private-key",
        "postgres",
        "mysql",
        "mongodb",
        "redis",
        "amqp",
        "generic",
        "sequester",
    ] {
        assert!(providers.contains(p), "no rule for {p}");
    }
    // Every builtin rule runs anchored at its keywords or is one of the few windowed ones.
    println!("{} rules, {} providers", d.rules().len(), providers.len());
}

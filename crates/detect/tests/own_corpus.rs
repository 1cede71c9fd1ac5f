#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
//! Precision and recall on our own labelled corpus (`tests/corpus/own.jsonl`): realistic
//! chat, logs, code and configuration with generated fakes, and hard negatives.

mod fakes;

use std::path::Path;

use sequester_detect::{
    Confidence, Detector, DetectorOptions, Validation, scan_bytes, write_json_lines, write_sarif,
};

#[test]
fn own_corpus_precision_and_recall() {
    let text = include_str!("corpus/own.jsonl");
    let d = Detector::builtin();
    let (mut pos, mut found, mut neg, mut flagged) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let sample = fakes::expand(v["text"].as_str().unwrap(), i as u64 + 1);
        let findings = d.detect(sample.as_bytes());
        if v["label"] == "positive" {
            pos += 1;
            if findings.is_empty() {
                failures.push(format!("line {}: positive missed", i + 1));
            } else {
                found += 1;
            }
        } else {
            neg += 1;
            if !findings.is_empty() {
                flagged += 1;
                let rules: Vec<&str> = findings.iter().map(|f| f.rule_id()).collect();
                failures.push(format!("line {}: negative flagged by {rules:?}", i + 1));
            }
        }
    }
    let recall = found as f64 / pos as f64;
    let flagged_share = flagged as f64 / neg as f64;
    println!(
        "own corpus: {pos} positives, recall {recall:.3}; {neg} negatives, {:.1}% flagged",
        100.0 * flagged_share
    );
    for f in &failures {
        println!("  {f}");
    }
    assert!(recall >= 1.0, "recall {recall:.3}: {failures:?}");
    assert!(flagged_share <= 0.0, "negatives flagged: {failures:?}");
}

/// A run (`111111`) is the only stop-list objection a distinctive provider format survives: the
/// value is reported at low confidence, redacted like any finding, and the reports say "low".
/// Whole-value templates still drop, and generic rules still drop values with runs.
#[test]
fn runs_in_provider_formats_are_reported_at_low_confidence() {
    let d = Detector::builtin();
    let text = format!("SLACK_BOT_TOKEN={}\n", fakes::slack_bot_with_run(7));
    let findings = d.detect(text.as_bytes());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].rule_id(), "slack-bot-token");
    assert_eq!(findings[0].confidence, Confidence::Low);

    let redacted = d.redact(text.as_bytes(), |_, _| b"<<REDACTED>>".to_vec());
    assert_eq!(redacted, b"SLACK_BOT_TOKEN=<<REDACTED>>\n");

    let found = scan_bytes(&d, Path::new("app.env"), text.as_bytes(), false);
    let mut json = Vec::new();
    write_json_lines(&mut json, &found).unwrap();
    assert!(
        String::from_utf8(json)
            .unwrap()
            .contains("\"confidence\":\"low\"")
    );
    let mut sarif = Vec::new();
    write_sarif(&mut sarif, &found, &d).unwrap();
    let sarif = String::from_utf8(sarif).unwrap();
    assert!(sarif.contains("\"confidence\": \"low\""), "{sarif}");
    assert!(sarif.contains("\"level\": \"note\""), "{sarif}");

    let plain = format!("SLACK_BOT_TOKEN={}\n", fakes::slack_bot(7));
    let findings = d.detect(plain.as_bytes());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].confidence, Confidence::High);

    // A checksummed format with a run: a valid checksum skips the stop-list (high); a failed
    // one is low, and dropped when valid checksums are required.
    let random = "q8Fz2LwX0p111111Vn7RkYt3HsQ9vX";
    let sum = sequester_detect::base62_checksum(crc32fast::hash(random.as_bytes()));
    let sum = std::str::from_utf8(&sum).unwrap();
    let valid = format!("GITHUB_TOKEN=ghp_{random}{sum}");
    let findings = d.detect(valid.as_bytes());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].confidence, Confidence::High);
    let wrong = if sum == "aB3dE5" { "Zq7Lp2" } else { "aB3dE5" };
    let failed = format!("GITHUB_TOKEN=ghp_{random}{wrong}");
    let findings = d.detect(failed.as_bytes());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].confidence, Confidence::Low);
    assert_eq!(findings[0].validation, Validation::Failed);
    let strict = d.with_options(DetectorOptions {
        require_valid_checksums: true,
        ..DetectorOptions::default()
    });
    assert!(strict.detect(failed.as_bytes()).is_empty());
    assert_eq!(strict.detect(valid.as_bytes()).len(), 1);

    let templates = [
        format!("GITHUB_TOKEN=ghp_{}", "a".repeat(36)),
        format!("GITHUB_TOKEN=ghp_{}", "q8Fz2L".repeat(6)),
        format!(
            "SLACK_BOT_TOKEN=xoxb-1111111111-2222222222-{}",
            "a".repeat(24)
        ),
        "OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxx".to_owned(),
        format!("stripe.api_key = 'sk_live_{}'", "0".repeat(32)),
        format!("AWS_ACCESS_KEY_ID=AKIA{}", "A".repeat(16)),
    ];
    for t in &templates {
        let findings = d.detect(t.as_bytes());
        assert!(findings.is_empty(), "{t}: {findings:?}");
    }
    // Generic rules: weak context, so a run still marks the value as a template (the same
    // assignments with random values in place of the runs are found).
    for (with_run, random) in [
        (
            "secret_key = \"Zq7Lp2Wx9Kd4Rb8N111111Tf3\"",
            "secret_key = \"Zq7Lp2Wx9Kd4Rb8N1e7Xq2Tf3\"",
        ),
        (
            "api_token: Q9vXk2Lm7Np4abcdefRt8Ws3Yz6",
            "api_token: Q9vXk2Lm7Np4aJ3cWfRt8Ws3Yz6",
        ),
    ] {
        let findings = d.detect(with_run.as_bytes());
        assert!(findings.is_empty(), "{with_run}: {findings:?}");
        let findings = d.detect(random.as_bytes());
        assert!(
            findings.iter().any(|f| f.is_generic()),
            "{random}: {findings:?}"
        );
    }
}

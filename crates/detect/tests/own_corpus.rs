#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
//! Precision and recall on our own labelled corpus (`tests/corpus/own.jsonl`): realistic
//! chat, logs, code and configuration with generated fakes, and hard negatives.

mod fakes;

use sequester_detect::Detector;

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

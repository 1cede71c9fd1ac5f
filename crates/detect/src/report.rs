//! Report writers for scan findings: JSON lines, SARIF 2.1.0 and a human table.
//!
//! A secret's text appears only if the finding carries it, which happens only when the scan
//! ran with [`crate::ScanOptions::show_secrets`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::DetectError;
use crate::detector::{Confidence, Detector};
use crate::scan::FileFinding;

fn path_text(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// Writes one JSON object per finding and line, with the fields `path`, `line`, `column`,
/// `start`, `end`, `rule`, `provider`, `confidence`, `validated` (and `secret` when present).
pub fn write_json_lines(mut w: impl Write, findings: &[FileFinding]) -> Result<(), DetectError> {
    for f in findings {
        let mut obj = json!({
            "path": path_text(&f.path),
            "line": f.line,
            "column": f.column,
            "start": f.start,
            "end": f.end,
            "rule": f.rule,
            "provider": f.provider,
            "confidence": f.confidence.as_str(),
            "validated": f.validated,
        });
        if let (Some(secret), Value::Object(map)) = (&f.secret, &mut obj) {
            map.insert("secret".to_owned(), Value::String(secret.clone()));
        }
        serde_json::to_writer(&mut w, &obj).map_err(|e| DetectError::Output(e.into()))?;
        w.write_all(b"\n").map_err(DetectError::Output)?;
    }
    w.flush().map_err(DetectError::Output)
}

/// Percent-encodes a path for a SARIF `artifactLocation.uri` (relative reference).
fn uri(path: &Path) -> String {
    let text = path_text(path);
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn level(c: Confidence) -> &'static str {
    match c {
        Confidence::High => "error",
        Confidence::Medium => "warning",
        Confidence::Low => "note",
    }
}

/// Writes a SARIF 2.1.0 log with one run. `detector` supplies the rule metadata.
pub fn write_sarif(
    mut w: impl Write,
    findings: &[FileFinding],
    detector: &Detector,
) -> Result<(), DetectError> {
    // Only the rules that fired, in a stable order, so reports stay small and diffable.
    let mut used: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        let next = used.len();
        used.entry(f.rule.as_str()).or_insert(next);
    }
    let mut order: Vec<(&str, usize)> = used.iter().map(|(k, v)| (*k, *v)).collect();
    order.sort_by_key(|(_, i)| *i);
    let rules: Vec<Value> = order
        .iter()
        .map(|(id, _)| {
            let rule = detector.rules().find(|r| r.id() == *id);
            let name = rule.map_or(*id, |r| r.name());
            let provider = rule.map_or("", |r| r.provider());
            json!({
                "id": id,
                "name": name,
                "shortDescription": { "text": name },
                "properties": { "provider": provider, "tags": ["security", "secret"] },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut region = json!({
                "startLine": f.line,
                "startColumn": f.column,
                "endLine": f.end_line,
                "endColumn": f.end_column,
                "byteOffset": f.start,
                "byteLength": f.end - f.start,
            });
            if let (Some(secret), Value::Object(map)) = (&f.secret, &mut region) {
                map.insert("snippet".to_owned(), json!({ "text": secret }));
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": used.get(f.rule.as_str()).copied().unwrap_or(0),
                "level": level(f.confidence),
                "message": { "text": format!("{} ({})", f.rule_name, f.provider) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.path) },
                        "region": region,
                    }
                }],
                "properties": {
                    "provider": f.provider,
                    "confidence": f.confidence.as_str(),
                    "validated": f.validated,
                },
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "sequester",
                    "informationUri": "https://github.com/sequester-dev/sequester",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    });
    serde_json::to_writer_pretty(&mut w, &log).map_err(|e| DetectError::Output(e.into()))?;
    w.write_all(b"\n").map_err(DetectError::Output)?;
    w.flush().map_err(DetectError::Output)
}

/// Writes an aligned table for people: location, rule, provider, confidence, validated (and
/// the secret when present).
pub fn write_table(mut w: impl Write, findings: &[FileFinding]) -> Result<(), DetectError> {
    let show = findings.iter().any(|f| f.secret.is_some());
    let mut rows: Vec<Vec<String>> = vec![
        ["LOCATION", "RULE", "PROVIDER", "CONFIDENCE", "VALIDATED"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    ];
    if show && let Some(header) = rows.first_mut() {
        header.push("SECRET".to_owned());
    }
    for f in findings {
        let mut row = vec![
            format!("{}:{}:{}", path_text(&f.path), f.line, f.column),
            f.rule.clone(),
            f.provider.clone(),
            f.confidence.as_str().to_owned(),
            if f.validated { "yes" } else { "no" }.to_owned(),
        ];
        if show {
            row.push(f.secret.as_deref().unwrap_or("").replace(['\n', '\r'], " "));
        }
        rows.push(row);
    }
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let last = c + 1 == row.len();
            line.push_str(cell);
            if !last {
                let pad = widths.get(c).copied().unwrap_or(0) - cell.chars().count();
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(w, "{line}").map_err(DetectError::Output)?;
    }
    let n = findings.len();
    writeln!(w, "{n} finding{}", if n == 1 { "" } else { "s" }).map_err(DetectError::Output)?;
    w.flush().map_err(DetectError::Output)
}

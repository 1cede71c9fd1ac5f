#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
//! File scanning: directory walks honour .gitignore, binary files are skipped, locations are
//! right, and the writers produce what the CLI promises (no secret text unless asked).

mod fakes;

use sequester_detect::{
    Detector, ScanOptions, ScanProgress, count_paths, scan_paths, write_json_lines, write_sarif,
    write_table,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn walks_respects_gitignore_skips_binary_and_locates_findings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = fakes::github_classic(31);
    let aws = fakes::aws_key_id(32);
    std::fs::write(root.join(".gitignore"), "ignored.txt\n").unwrap();
    std::fs::write(root.join("ignored.txt"), format!("GITHUB_TOKEN={token}\n")).unwrap();
    std::fs::create_dir(root.join("src")).unwrap();
    std::fs::write(
        root.join("src/config.py"),
        format!("# é settings\nimport os\n\nAWS_ACCESS_KEY_ID = \"{aws}\"\n"),
    )
    .unwrap();
    let mut binary = b"\x00\x01\x02ELF".to_vec();
    binary.extend_from_slice(token.as_bytes());
    std::fs::write(root.join("blob.bin"), binary).unwrap();

    let d = Detector::builtin();
    let report = scan_paths(&d, &[root], &ScanOptions::default());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.binary_files_skipped, 1);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let f = &report.findings[0];
    assert!(f.path.ends_with("src/config.py"));
    assert_eq!(f.rule, "aws-access-key-id");
    assert_eq!((f.line, f.column), (4, 22));
    let text = std::fs::read(root.join("src/config.py")).unwrap();
    assert_eq!(&text[f.start..f.end], aws.as_bytes());
    assert!(f.secret.is_none());
    assert!(!format!("{f:?}").contains(&aws));

    let all = scan_paths(
        &d,
        &[root],
        &ScanOptions {
            respect_ignore_files: false,
            show_secrets: true,
            ..ScanOptions::default()
        },
    );
    assert_eq!(all.findings.len(), 2);
    assert!(
        all.findings
            .iter()
            .any(|f| f.secret.as_deref() == Some(token.as_str()))
    );
}

/// The counting walk behind the progress bar sees the files the scan looks at (ignore files,
/// hidden files and `.git` alike), and the scan's progress reaches its totals exactly.
#[test]
fn counting_walk_matches_what_the_scan_visits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join(".gitignore"), "ignored.txt\n").unwrap();
    std::fs::write(root.join("ignored.txt"), "x".repeat(500)).unwrap();
    std::fs::create_dir_all(root.join(".git/objects")).unwrap();
    std::fs::write(root.join(".git/objects/pack"), "y".repeat(700)).unwrap();
    std::fs::create_dir(root.join("src")).unwrap();
    std::fs::write(root.join("src/a.py"), "print('a')\n".repeat(40)).unwrap();
    std::fs::write(root.join("src/b.bin"), b"\x00\x01binary").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    let never = AtomicBool::new(false);
    for respect_ignore_files in [true, false] {
        let progress = Arc::new(ScanProgress::default());
        let options = ScanOptions {
            respect_ignore_files,
            progress: Some(Arc::clone(&progress)),
            ..ScanOptions::default()
        };
        let (files, bytes) = count_paths(&[root], &options, &never).unwrap();
        let ignored = if respect_ignore_files { 0 } else { 1 };
        // .gitignore, a.py, b.bin, empty (+ ignored.txt); never .git/objects/pack.
        assert_eq!(files, 4 + ignored);
        let on_disk: u64 = [".gitignore", "src/a.py", "src/b.bin", "empty"]
            .iter()
            .chain(if ignored == 1 {
                &["ignored.txt"][..]
            } else {
                &[][..]
            })
            .map(|f| std::fs::metadata(root.join(f)).unwrap().len())
            .sum();
        assert_eq!(bytes, on_disk);
        assert_eq!(progress.fraction(), None, "no totals yet");
        progress.set_totals(files, bytes);
        assert_eq!(progress.fraction(), Some(0.0));
        let report = scan_paths(&Detector::builtin(), &[root], &options);
        assert_eq!(report.binary_files_skipped, 1);
        assert_eq!(progress.visited_files.load(Ordering::Relaxed), files);
        assert_eq!(progress.visited_bytes.load(Ordering::Relaxed), bytes);
        assert_eq!(progress.fraction(), Some(1.0));
    }
    let stopped = AtomicBool::new(true);
    assert_eq!(
        count_paths(&[root], &ScanOptions::default(), &stopped),
        None
    );
}

#[test]
fn writers() {
    let dir = tempfile::tempdir().unwrap();
    let token = fakes::sequester_token(33);
    let file = dir.path().join("notes.md");
    std::fs::write(&file, format!("line one\n  token: {token}\n")).unwrap();
    let d = Detector::builtin();
    let hidden = scan_paths(&d, &[&file], &ScanOptions::default());
    assert_eq!(hidden.findings.len(), 1);

    let mut jsonl = Vec::new();
    write_json_lines(&mut jsonl, &hidden.findings).unwrap();
    let line: serde_json::Value =
        serde_json::from_slice(jsonl.split(|b| *b == b'\n').next().unwrap()).unwrap();
    for field in [
        "path",
        "line",
        "column",
        "start",
        "end",
        "rule",
        "provider",
        "confidence",
        "validated",
    ] {
        assert!(line.get(field).is_some(), "missing {field}");
    }
    assert_eq!(line["rule"], "sequester-token");
    assert_eq!(line["provider"], "sequester");
    assert_eq!(line["validated"], true);
    assert_eq!(line["line"], 2);
    assert_eq!(line["column"], 10);
    assert!(line.get("secret").is_none());
    assert!(!String::from_utf8_lossy(&jsonl).contains(&token));

    let mut sarif = Vec::new();
    write_sarif(&mut sarif, &hidden.findings, &d).unwrap();
    let log: serde_json::Value = serde_json::from_slice(&sarif).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let result = &log["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "sequester-token");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["region"]["startLine"],
        2
    );
    assert_eq!(
        log["runs"][0]["tool"]["driver"]["rules"][0]["id"],
        "sequester-token"
    );
    assert!(!String::from_utf8_lossy(&sarif).contains(&token));

    let mut table = Vec::new();
    write_table(&mut table, &hidden.findings).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("sequester-token") && table.contains("notes.md:2:10"));
    assert!(!table.contains(&token));

    let shown = scan_paths(
        &d,
        &[&file],
        &ScanOptions {
            show_secrets: true,
            ..ScanOptions::default()
        },
    );
    let mut jsonl = Vec::new();
    write_json_lines(&mut jsonl, &shown.findings).unwrap();
    assert!(String::from_utf8_lossy(&jsonl).contains(&token));
}

#[test]
fn large_files_stream_and_report_the_same_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.log");
    let token = fakes::github_classic(34);
    let filler = "2026-11-24T10:00:00Z INFO nothing to see here\n".repeat(200_000); // ~9 MB
    let content = format!("{filler}export GITHUB_TOKEN={token}\n{filler}");
    std::fs::write(&file, &content).unwrap();
    let report = scan_paths(&Detector::builtin(), &[&file], &ScanOptions::default());
    assert_eq!(report.findings.len(), 1);
    let f = &report.findings[0];
    assert_eq!(&content.as_bytes()[f.start..f.end], token.as_bytes());
    assert_eq!(f.line, 200_001);
    assert_eq!(f.column, 21);
}

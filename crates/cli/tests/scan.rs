//! `sequester scan` and `sequester redact` from the command line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_testkit::Cli;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A classic GitHub token with a valid checksum.
fn github_pat() -> String {
    let body: String = sequester_crypto::random_bytes::<30>()
        .iter()
        .map(|b| char::from(BASE62[usize::from(*b) % 62]))
        .collect();
    sequester_testkit::github_classic_token(&body)
}

#[test]
fn scan_reports_json_lines_sarif_and_exit_status() {
    let cli = Cli::new(BIN);
    let dir = cli.scratch().join("repo");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let pat = github_pat();
    std::fs::write(
        dir.join("src/config.py"),
        format!("import os\n\nGITHUB_TOKEN = \"{pat}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("clean.txt"), "nothing to see here\n").unwrap();
    std::fs::write(dir.join(".gitignore"), "ignored.txt\n").unwrap();
    std::fs::write(dir.join("ignored.txt"), format!("token {pat}\n")).unwrap();

    let run = cli.run(&["--json", "scan", dir.to_str().unwrap()], None);
    assert_eq!(run.status, 1, "findings exit 1: {run:?}");
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "the ignored file is skipped: {}",
        run.stdout
    );
    let f = &lines[0];
    assert!(f["path"].as_str().unwrap().ends_with("src/config.py"));
    assert_eq!(
        (f["line"].as_u64(), f["column"].as_u64()),
        (Some(3), Some(17))
    );
    let text = std::fs::read_to_string(dir.join("src/config.py")).unwrap();
    let (start, end) = (
        f["start"].as_u64().unwrap() as usize,
        f["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[start..end], pat);
    assert_eq!(f["rule"], "github-pat-classic");
    assert_eq!(f["provider"], "github");
    assert_eq!(f["validated"], true);
    assert!(
        f.get("secret").is_none(),
        "the secret is only shown with --show-secrets"
    );
    assert!(!run.stdout.contains(&pat));

    let shown = cli.run(
        &["--json", "scan", "--show-secrets", dir.to_str().unwrap()],
        None,
    );
    assert!(shown.stdout.contains(&pat));
    let sarif = cli.run(&["scan", "--sarif", dir.to_str().unwrap()], None);
    let v: serde_json::Value = serde_json::from_str(&sarif.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(v["runs"][0]["results"].as_array().unwrap().len(), 1);
    let all = cli.run(
        &["--json", "scan", "--no-ignore", dir.to_str().unwrap()],
        None,
    );
    assert_eq!(all.stdout.lines().count(), 2);

    let clean = cli.run(&["scan", dir.join("clean.txt").to_str().unwrap()], None);
    assert_eq!(clean.status, 0, "{clean:?}");
    cli.fails(&["scan", "/nonexistent/path"], None, "io_error", 1);
}

#[test]
fn redact_streams_and_catches_a_secret_split_across_writes() {
    let pat = github_pat();
    let (a, b) = pat.split_at(17);
    let mut child = Command::new(BIN)
        .arg("redact")
        .env("SEQUESTER_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
        out
    });
    let mut stdin = child.stdin.take().unwrap();
    // Megabytes of ordinary text first, then the token in two separate writes.
    let filler = "log line with nothing secret in it\n".repeat(100_000);
    stdin.write_all(filler.as_bytes()).unwrap();
    stdin
        .write_all(format!("export GITHUB_TOKEN={a}").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(format!("{b}\nbye\n").as_bytes()).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let text = String::from_utf8(reader.join().unwrap()).unwrap();
    assert!(!text.contains(&pat), "the token passed through");
    assert!(
        text.ends_with("export GITHUB_TOKEN=<<REDACTED_github>>\nbye\n"),
        "{}",
        &text[text.len() - 80..]
    );
    assert_eq!(
        text.len(),
        filler.len() + "export GITHUB_TOKEN=<<REDACTED_github>>\nbye\n".len()
    );
}

/// Rules from a file (`--rules`): found by `scan` and replaced by `redact` like builtin ones;
/// a rule the loader refuses stops the command with `invalid_rule` and says why.
#[test]
fn user_rules_from_a_file_are_used_and_bad_ones_are_refused() {
    let cli = Cli::new(BIN);
    let rule = |pattern: &str| {
        format!(
            r#"
[[rules]]
id = "acme-api-key"
name = "Acme API key"
provider = "acme"
keywords = ["acme_"]
pattern = '''{pattern}'''
confidence = "high"
suggested_hosts = ["api.acme.example"]
"#
        )
    };
    let rules = cli.scratch().join("acme.toml");
    std::fs::write(&rules, rule(r"\b(?P<secret>acme_[A-Za-z0-9]{32})\b")).unwrap();
    let key: String = sequester_crypto::random_bytes::<32>()
        .iter()
        .map(|b| char::from(BASE62[usize::from(*b) % 62]))
        .collect();
    let key = format!("acme_{key}");
    let file = cli.scratch().join("settings.env");
    std::fs::write(&file, format!("ACME_KEY={key}\n")).unwrap();

    let run = cli.run(
        &[
            "--json",
            "scan",
            "--rules",
            rules.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.status, 1, "{run:?}");
    let f: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(f["rule"], "acme-api-key");
    assert_eq!(f["provider"], "acme");
    let text = format!("ACME_KEY={key}\n");
    assert_eq!(
        &text[f["start"].as_u64().unwrap() as usize..f["end"].as_u64().unwrap() as usize],
        key
    );
    let redacted = cli.run(
        &["redact", "--rules", rules.to_str().unwrap()],
        Some(text.as_bytes()),
    );
    assert_eq!(redacted.status, 0, "{redacted:?}");
    assert!(!redacted.stdout.contains(&key), "{redacted:?}");
    assert_eq!(redacted.stdout, "ACME_KEY=<<REDACTED_acme>>\n");

    // A refused rule file stops `scan` before anything is scanned.
    let refused_scan = || {
        cli.fails(
            &[
                "scan",
                "--rules",
                rules.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            None,
            "invalid_rule",
            2,
        )
    };
    // `acme-` matches too but is no keyword: such keys would never be looked for.
    std::fs::write(
        &rules,
        rule(r"\b(?P<secret>(?:acme_|acme-)[A-Za-z0-9]{32})\b"),
    )
    .unwrap();
    let refused = refused_scan();
    assert!(
        refused
            .stderr
            .contains("acme-00000000000000000000000000000000"),
        "the message shows a match without a keyword: {refused:?}"
    );
    // A pattern that does not parse is refused the same way.
    std::fs::write(&rules, rule(r"\b(?P<secret>acme_[A-Za-z0-9]{32)\b")).unwrap();
    let unparsed = refused_scan();
    assert!(unparsed.stderr.contains("pattern rejected"), "{unparsed:?}");
}

//! End-to-end tests of the `sequester` binary: lifecycle, write-only values, bad input,
//! keys, and the server's start and stop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_testkit::{Broker, Cli, encodings, find_in, find_in_files, wait_for};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");

fn canary(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sk-canary-{tag}-{nanos:x}-{}", std::process::id())
}

fn initialised() -> Cli {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    cli
}

#[test]
fn secret_lifecycle_through_the_cli() {
    let cli = initialised();
    let v1 = canary("v1");
    let v2 = canary("v2");
    let added = cli.json(
        &[
            "secret",
            "add",
            "openai",
            "--host",
            "api.openai.com",
            "--host",
            "*.openai.azure.com:443",
            "--inject",
            "header:x-api-key:{value}",
            "--expires-in",
            "90d",
        ],
        Some(format!("{v1}\n").as_bytes()),
    );
    assert_eq!(added["name"], "openai");
    assert_eq!(added["state"], "active");
    assert_eq!(added["current_version"], 1);
    assert_eq!(
        added["hosts"],
        serde_json::json!(["api.openai.com", "*.openai.azure.com:443"])
    );
    assert_eq!(added["injection"], "header:x-api-key:{value}");
    assert!(added["expires_at"].is_string());

    let rotated = cli.json(
        &["secret", "rotate", "openai", "--grace", "1h"],
        Some(v2.as_bytes()),
    );
    assert_eq!(rotated["current_version"], 2);
    assert!(rotated["rotated_at"].is_string());
    let history = cli.json(&["secret", "history", "openai"], None);
    let states: Vec<(u64, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![(2, "current"), (1, "grace")]);

    cli.ok(&["agent", "add", "coder"], None);
    let issued = cli.json(
        &[
            "token", "issue", "--agent", "coder", "--secret", "openai", "--ttl", "1h",
        ],
        None,
    );
    let token = issued["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sqt_") && token.len() == 42, "{token}");
    let id = issued["id"].as_str().unwrap().to_owned();
    let tokens = cli.json(&["token", "list"], None);
    assert_eq!(tokens[0]["id"], id.as_str());
    assert_eq!(tokens[0]["state"], "active");
    assert!(
        !tokens.to_string().contains(&token),
        "token list shows the token"
    );

    let revoked = cli.json(&["token", "revoke", &id], None);
    assert_eq!(revoked["state"], "revoked");

    let revoked = cli.json(&["secret", "revoke", "openai"], None);
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(
        cli.json(&["secret", "show", "openai"], None)["state"],
        "revoked"
    );
    let human = cli.ok(&["secret", "show", "openai"], None);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with("revoked")),
        "{human}"
    );
    cli.fails(
        &["secret", "rotate", "openai"],
        Some(b"x"),
        "secret_revoked",
        6,
    );
    cli.fails(
        &["token", "issue", "--agent", "coder", "--secret", "openai"],
        None,
        "secret_revoked",
        6,
    );

    cli.ok(&["agent", "disable", "coder"], None);
    assert_eq!(cli.json(&["agent", "list"], None)[0]["state"], "disabled");

    cli.ok(&["secret", "rm", "openai"], None);
    cli.fails(&["secret", "show", "openai"], None, "secret_not_found", 3);
    assert_eq!(cli.json(&["token", "list"], None), serde_json::json!([]));
}

#[test]
fn expiry_is_reported_once_it_passes() {
    let cli = initialised();
    cli.ok(
        &[
            "secret",
            "add",
            "short",
            "--host",
            "a.example.com",
            "--expires-in",
            "1s",
        ],
        Some(b"v"),
    );
    wait_for(Duration::from_secs(5), "the secret to expire", || {
        (cli.json(&["secret", "show", "short"], None)["state"] == "expired").then_some(())
    });
    let list = cli.ok(&["secret", "list"], None);
    assert!(list.contains("expired"), "{list}");
    cli.fails(
        &["secret", "rotate", "short"],
        Some(b"v2"),
        "secret_expired",
        6,
    );
}

#[test]
fn values_never_come_back_out() {
    let cli = initialised();
    let value = canary("out");
    let mut outputs = Vec::new();
    let mut record = |run: sequester_testkit::Run| {
        outputs.push(run.stdout);
        outputs.push(run.stderr);
    };
    record(cli.run(
        &["secret", "add", "S", "--host", "api.example.com"],
        Some(value.as_bytes()),
    ));
    record(cli.run(&["agent", "add", "bot"], None));
    record(cli.run(&["token", "issue", "--agent", "bot", "--secret", "S"], None));
    for json in [false, true] {
        for args in [
            vec!["secret", "list"],
            vec!["secret", "show", "S"],
            vec!["secret", "history", "S"],
            vec!["token", "list"],
            vec!["agent", "list"],
            vec!["tenant", "list"],
        ] {
            let mut args = args;
            if json {
                args.insert(0, "--json");
            }
            record(cli.run(&args, None));
        }
    }
    // A failing command that had the value on stdin does not echo it either.
    record(cli.run(
        &["secret", "add", "S", "--host", "api.example.com"],
        Some(value.as_bytes()),
    ));
    record(cli.run(
        &["secret", "rotate", "S", "--grace", "1h"],
        Some(format!("{value}-2").as_bytes()),
    ));
    let hits = find_in(
        outputs.iter().map(|o| ("output", o.as_bytes())),
        &encodings(&value),
    );
    assert!(hits.is_empty(), "value printed: {hits:?}");
    let hits = find_in_files(cli.data_dir(), &encodings(&value));
    assert!(hits.is_empty(), "value on disk: {hits:?}");
}

#[test]
fn bad_input_gives_its_code_and_changes_nothing() {
    let cli = initialised();
    cli.ok(
        &["secret", "add", "existing", "--host", "api.example.com"],
        Some(b"value"),
    );
    cli.ok(&["agent", "add", "bot"], None);
    let before = cli.files();
    let long = "n".repeat(65);
    // (arguments, standard input, error code, exit status)
    type Case<'a> = (Vec<&'a str>, Option<&'a [u8]>, &'a str, i32);
    let cases: Vec<Case> = vec![
        (
            vec!["secret", "add", "x", "--host", "https://api.example.com"],
            Some(b"v"),
            "invalid_host_pattern",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "api.example.com/v1"],
            Some(b"v"),
            "invalid_host_pattern",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "a*.example.com"],
            Some(b"v"),
            "invalid_host_pattern",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "*.com"],
            Some(b"v"),
            "invalid_host_pattern",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "example.com:99999"],
            Some(b"v"),
            "invalid_host_pattern",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "api.example.com"],
            Some(b""),
            "empty_value",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "api.example.com"],
            Some(b"\n"),
            "empty_value",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "api.example.com"],
            Some(b"a\r\nX-Injected: 1"),
            "invalid_value",
            2,
        ),
        (
            vec!["secret", "add", "x", "--host", "api.example.com"],
            Some(&[b'v'; 16 * 1024 + 3]),
            "value_too_large",
            2,
        ),
        (
            vec!["secret", "add", "existing", "--host", "api.example.com"],
            Some(b"v"),
            "secret_exists",
            4,
        ),
        (
            vec!["secret", "add", &long, "--host", "api.example.com"],
            Some(b"v"),
            "name_too_long",
            2,
        ),
        (
            vec!["secret", "add", "bad name", "--host", "api.example.com"],
            Some(b"v"),
            "invalid_name",
            2,
        ),
        (
            vec![
                "secret",
                "add",
                "x",
                "--host",
                "api.example.com",
                "--inject",
                "header:Host:{value}",
            ],
            Some(b"v"),
            "invalid_injection_rule",
            2,
        ),
        (
            vec![
                "secret",
                "add",
                "x",
                "--host",
                "api.example.com",
                "--inject",
                "cookie:x",
            ],
            Some(b"v"),
            "invalid_injection_rule",
            2,
        ),
        (
            vec![
                "secret",
                "add",
                "x",
                "--host",
                "api.example.com",
                "--expires-in",
                "soon",
            ],
            Some(b"v"),
            "invalid_duration",
            2,
        ),
        (
            vec!["secret", "show", "missing"],
            None,
            "secret_not_found",
            3,
        ),
        (vec!["secret", "show", &long], None, "name_too_long", 2),
        (
            vec!["secret", "rotate", "missing"],
            Some(b"v"),
            "secret_not_found",
            3,
        ),
        (
            vec!["secret", "rotate", "existing", "--grace", "forever"],
            Some(b"v"),
            "invalid_duration",
            2,
        ),
        (
            vec!["secret", "rotate", "existing"],
            Some(b""),
            "empty_value",
            2,
        ),
        (
            vec!["secret", "revoke", "missing"],
            None,
            "secret_not_found",
            3,
        ),
        (vec!["secret", "rm", "missing"], None, "secret_not_found", 3),
        (
            vec!["secret", "history", "missing"],
            None,
            "secret_not_found",
            3,
        ),
        (vec!["agent", "add", "bot"], None, "agent_exists", 4),
        (vec!["agent", "add", "bot!"], None, "invalid_name", 2),
        (vec!["agent", "add", "--", "-bot"], None, "invalid_name", 2),
        (
            vec!["agent", "disable", "ghost"],
            None,
            "agent_not_found",
            3,
        ),
        (
            vec!["token", "issue", "--agent", "ghost", "--secret", "existing"],
            None,
            "agent_not_found",
            3,
        ),
        (
            vec!["token", "issue", "--agent", "bot", "--secret", "missing"],
            None,
            "secret_not_found",
            3,
        ),
        (
            vec![
                "token", "issue", "--agent", "bot", "--secret", "existing", "--ttl", "0s",
            ],
            None,
            "invalid_duration",
            2,
        ),
        (
            vec!["token", "revoke", "sqt_notanid"],
            None,
            "invalid_token_id",
            2,
        ),
        (
            vec!["token", "revoke", "tok_000000000000000000000000"],
            None,
            "token_not_found",
            3,
        ),
        (vec!["tenant", "add", "default"], None, "tenant_exists", 4),
        (
            vec!["--tenant", "nowhere", "secret", "list"],
            None,
            "tenant_not_found",
            3,
        ),
        (vec!["init"], None, "already_initialized", 4),
    ];
    for (args, stdin, code, status) in &cases {
        cli.fails(args, *stdin, code, *status);
        assert_eq!(
            cli.files(),
            before,
            "sequester {args:?} changed the data directory"
        );
    }
    // The human form names the code too.
    let run = cli.run(&["secret", "show", "missing"], None);
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error["))
        .unwrap_or_default();
    assert!(
        line.starts_with("error[secret_not_found]: "),
        "{}",
        run.stderr
    );
    assert!(line.contains("sequester secret add missing"), "{line}");
}

#[test]
fn commands_before_init_say_to_run_init() {
    let cli = Cli::new(BIN);
    let run = cli.fails(&["secret", "list"], None, "not_initialized", 3);
    assert!(run.stderr.contains("sequester init"), "{}", run.stderr);
    assert!(
        !cli.data_dir().exists(),
        "a failed command created the data directory"
    );
}

#[test]
fn wrong_missing_or_exposed_master_key() {
    let cli = initialised();
    cli.ok(
        &["secret", "add", "S", "--host", "api.example.com"],
        Some(b"value"),
    );
    let key = cli.data_dir().join("master.key");
    let good = std::fs::read(&key).unwrap();

    let other = initialised();
    std::fs::write(
        &key,
        std::fs::read(other.data_dir().join("master.key")).unwrap(),
    )
    .unwrap();
    let before = cli.files();
    cli.fails(&["secret", "list"], None, "wrong_master_key", 5);
    cli.fails(
        &["secret", "add", "T", "--host", "api.example.com"],
        Some(b"v"),
        "wrong_master_key",
        5,
    );
    assert_eq!(cli.files(), before);

    std::fs::remove_file(&key).unwrap();
    let before = cli.files();
    let run = cli.fails(&["secret", "list"], None, "key_file_missing", 5);
    assert!(
        run.stderr.contains("restore it from your backup"),
        "{}",
        run.stderr
    );
    assert_eq!(cli.files(), before);

    std::fs::write(&key, &good).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = cli.fails(&["secret", "list"], None, "key_file_insecure", 5);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    cli.fails(
        &["serve", "--listen", "127.0.0.1:0"],
        None,
        "key_file_insecure",
        5,
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(cli.json(&["secret", "list"], None)[0]["name"], "S");
}

#[test]
fn rekey_keeps_secrets_and_retires_the_old_key() {
    let cli = initialised();
    cli.ok(
        &["secret", "add", "S", "--host", "api.example.com"],
        Some(b"value"),
    );
    cli.ok(&["tenant", "add", "team-b"], None);
    let old = std::fs::read(cli.data_dir().join("master.key")).unwrap();
    assert_eq!(cli.json(&["rekey"], None)["rewrapped_tenant_keys"], 2);
    assert_ne!(
        std::fs::read(cli.data_dir().join("master.key")).unwrap(),
        old
    );
    assert_eq!(cli.json(&["secret", "show", "S"], None)["state"], "active");
    std::fs::write(cli.data_dir().join("master.key"), old).unwrap();
    cli.fails(&["secret", "list"], None, "wrong_master_key", 5);
}

#[test]
fn passphrase_mode_from_a_file() {
    let cli = Cli::new(BIN);
    let pass = cli.scratch().join("pass");
    std::fs::write(&pass, "a long enough passphrase\n").unwrap();
    let wrong = cli.scratch().join("wrong");
    std::fs::write(&wrong, "another long passphrase\n").unwrap();
    let p = pass.to_str().unwrap();
    cli.ok(&["--passphrase-file", p, "init", "--passphrase"], None);
    assert!(!cli.data_dir().join("master.key").exists());
    cli.ok(
        &[
            "--passphrase-file",
            p,
            "secret",
            "add",
            "S",
            "--host",
            "a.example.com",
        ],
        Some(b"v"),
    );
    cli.fails(&["secret", "list"], None, "passphrase_required", 5);
    cli.fails(
        &[
            "--passphrase-file",
            wrong.to_str().unwrap(),
            "secret",
            "list",
        ],
        None,
        "wrong_master_key",
        5,
    );
    let listed = cli
        .command(&["--json", "secret", "list"])
        .env("SEQUESTER_PASSPHRASE_FILE", &pass)
        .output()
        .unwrap();
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"S\""));
}

#[test]
fn tenants_are_separate_namespaces() {
    let cli = initialised();
    cli.ok(&["tenant", "add", "team-b"], None);
    cli.ok(
        &["secret", "add", "S", "--host", "a.example.com"],
        Some(b"default-value"),
    );
    cli.ok(
        &[
            "--tenant",
            "team-b",
            "secret",
            "add",
            "S",
            "--host",
            "b.example.com",
        ],
        Some(b"b-value"),
    );
    cli.ok(&["--tenant", "team-b", "agent", "add", "bot"], None);
    assert_eq!(
        cli.json(&["secret", "show", "S"], None)["hosts"][0],
        "a.example.com"
    );
    assert_eq!(
        cli.json(&["--tenant", "team-b", "secret", "show", "S"], None)["hosts"][0],
        "b.example.com"
    );
    cli.fails(
        &["token", "issue", "--agent", "bot", "--secret", "S"],
        None,
        "agent_not_found",
        3,
    );
    let names: Vec<String> = cli
        .json(&["tenant", "list"], None)
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["default", "team-b"]);
}

#[test]
fn help_reads_like_a_finished_product() {
    let cli = Cli::new(BIN);
    let top = cli.ok(&["--help"], None);
    for needle in [
        "credential broker for AI agents",
        "secret",
        "token",
        "Exit status",
        "Examples",
    ] {
        assert!(top.contains(needle), "--help lacks {needle:?}:\n{top}");
    }
    for sub in [
        vec!["init"],
        vec!["up"],
        vec!["serve"],
        vec!["rekey"],
        vec!["tenant", "add"],
        vec!["agent", "add"],
        vec!["secret", "add"],
        vec!["secret", "rotate"],
        vec!["secret", "show"],
        vec!["secret", "rm"],
        vec!["token", "issue"],
        vec!["token", "revoke"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let help = cli.ok(&args, None);
        assert!(help.contains("Usage: sequester"), "{sub:?}:\n{help}");
    }
    let add = cli.ok(&["secret", "add", "--help"], None);
    for needle in [
        "--host",
        "--inject",
        "header:NAME:TEMPLATE",
        "--expires-in",
        "standard input",
    ] {
        assert!(
            add.contains(needle),
            "secret add --help lacks {needle:?}:\n{add}"
        );
    }
    let version = cli.ok(&["--version"], None);
    assert!(version.starts_with("sequester "), "{version}");
}

#[test]
fn serve_reports_ready_answers_health_and_stops_on_sigterm() {
    let cli = initialised();
    let value = canary("serve");
    cli.ok(
        &["secret", "add", "S", "--host", "api.example.com"],
        Some(value.as_bytes()),
    );
    let mut broker = Broker::start(&cli, &[]);
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("http://{}{path}", broker.addr),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get("/healthz"), "{\"status\":\"ok\"}\n200");
    assert_eq!(get("/readyz"), "{\"status\":\"ready\"}\n200");
    let missing = get("/nope/x");
    assert!(
        missing.ends_with("401") && missing.contains("\"code\":\"unknown_token\""),
        "{missing}"
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(broker.wait_exit(Duration::from_secs(15)), Some(0));
    let logs = broker.logs();
    assert!(String::from_utf8_lossy(&logs).contains("sequester stopped"));
    assert!(find_in([("logs", logs.as_slice())], &encodings(&value)).is_empty());
}

#[test]
fn up_initialises_a_fresh_directory_then_serves() {
    let cli = Cli::new(BIN);
    let mut child = cli
        .command(&[
            "--json",
            "up",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let ready = wait_for(Duration::from_secs(20), "the ready line", || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).ok()?;
        lines.push(line.clone());
        line.contains("\"event\":\"ready\"").then_some(line)
    });
    assert!(ready.contains("127.0.0.1:"), "{ready}");
    assert!(cli.data_dir().join("master.key").exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

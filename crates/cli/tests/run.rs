//! `sequester run` and `sequester env`: an agent gets tokens and proxy settings, never values,
//! and cannot read the data directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_testkit::{Broker, Cli, TestCa, Upstream, encodings, find_in};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");

fn setup() -> (Cli, TestCa, Upstream, String, std::path::PathBuf) {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    let ca = TestCa::new();
    let upstream = Upstream::start_with_names(&ca, &["localhost"]);
    let ca_path = ca.write_pem(cli.scratch());
    let r: [u8; 8] = sequester_crypto::random_bytes();
    let value = format!(
        "sk-run-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    cli.ok(
        &[
            "secret",
            "add",
            "OPENAI",
            "--host",
            "localhost",
            "--env",
            "OPENAI_API_KEY",
        ],
        Some(value.as_bytes()),
    );
    cli.ok(&["agent", "add", "bot"], None);
    cli.ok(&["egress", "allow", "localhost"], None);
    cli.ok(
        &["token", "issue", "--agent", "bot", "--secret", "OPENAI"],
        None,
    );
    (cli, ca, upstream, value, ca_path)
}

fn run(cli: &Cli, ca_path: &std::path::Path, script: &str) -> std::process::Output {
    cli.command(&[
        "run",
        "--agent",
        "bot",
        "--upstream-ca",
        ca_path.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ])
    .output()
    .unwrap()
}

#[test]
fn the_agent_holds_a_token_and_reaches_the_api_through_the_proxy() {
    let (cli, _ca, upstream, value, ca_path) = setup();
    let url = format!("https://localhost:{}/echo/run", upstream.addr().port());
    let out = run(
        &cli,
        &ca_path,
        &format!(
            "echo \"KEY=$OPENAI_API_KEY\"; env; curl -sS -H \"Authorization: Bearer $OPENAI_API_KEY\" {url}; exit 3"
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the exit status is the command's: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_line = stdout.lines().find(|l| l.starts_with("KEY=")).unwrap();
    assert!(key_line.starts_with("KEY=sqt_"), "{key_line}");
    for var in [
        "HTTPS_PROXY=http://bot:sqa_",
        "NO_PROXY=",
        "SSL_CERT_FILE=",
        "REQUESTS_CA_BUNDLE=",
        "CURL_CA_BUNDLE=",
        "NODE_EXTRA_CA_CERTS=",
        "GIT_SSL_CAINFO=",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(var)),
            "{var} missing:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("SEQUESTER_DATA_DIR"),
        "the agent learned where the data directory is"
    );
    assert!(
        find_in(
            [
                ("agent output", out.stdout.as_slice()),
                ("stderr", out.stderr.as_slice())
            ],
            &encodings(&value)
        )
        .is_empty(),
        "the agent saw the value"
    );
    let r = upstream.last_request().unwrap_or_else(|| {
        panic!(
            "the API was not reached: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        r.header_str("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
    // The run's credentials are revoked when it ends.
    let keys = cli.json(&["agent", "key", "list"], None);
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k["state"] == "revoked"),
        "{keys}"
    );
}

#[test]
fn the_agent_cannot_read_the_data_directory_or_the_brokers_memory() {
    let (cli, _ca, _upstream, _value, ca_path) = setup();
    let dir = cli.data_dir().display().to_string();
    let out = run(
        &cli,
        &ca_path,
        &format!(
            "cat {dir}/sequester.db >/dev/null 2>&1 && echo READ_DB; cat {dir}/master.key >/dev/null 2>&1 && echo READ_KEY; ls {dir} >/dev/null 2>&1 && echo LISTED; \
             cat /proc/$PPID/environ >/dev/null 2>&1 && echo READ_ENVIRON; head -c 1 /proc/$PPID/mem >/dev/null 2>&1 && echo READ_MEM; echo DONE"
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DONE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for leak in ["READ_DB", "READ_KEY", "LISTED"] {
        assert!(
            !stdout.contains(leak),
            "{leak}: the confined agent reached the data directory"
        );
    }
    // The broker (here, `run` itself) is non-dumpable. Root may read any process's memory
    // regardless, so that half is asserted only for an unprivileged user.
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(true);
    if root {
        eprintln!(
            "note: running as root; /proc/<broker>/mem and environ are checked only for unprivileged users"
        );
    } else {
        assert!(
            !stdout.contains("READ_ENVIRON") && !stdout.contains("READ_MEM"),
            "{stdout}"
        );
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not fully confined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_python_script_reading_its_key_from_the_environment_works_and_sees_only_the_token() {
    let python = std::env::var("SEQUESTER_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned()])
        .find(|py| {
            Command::new(py)
                .args(["-c", "import openai"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(python) = python else {
        eprintln!(
            "skipped: the `openai` Python package is not installed (set SEQUESTER_TEST_PYTHON)"
        );
        return;
    };
    let (cli, _ca, upstream, value, ca_path) = setup();
    let script = cli.scratch().join("agent.py");
    std::fs::write(
        &script,
        format!(
            "import os\nfrom openai import OpenAI\nprint('key is', os.environ['OPENAI_API_KEY'])\nc = OpenAI(base_url='https://localhost:{}/v1')\nprint(c.chat.completions.create(model='m', messages=[{{'role': 'user', 'content': 'hi'}}]).choices[0].message.content)\n",
            upstream.addr().port()
        ),
    )
    .unwrap();
    let out = cli
        .command(&[
            "run",
            "--agent",
            "bot",
            "--upstream-ca",
            ca_path.to_str().unwrap(),
            "--",
            &python,
            script.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("key is sqt_"), "{stdout}");
    assert!(stdout.contains("Hello from the test upstream"), "{stdout}");
    assert!(
        find_in(
            [("agent output", out.stdout.as_slice())],
            &encodings(&value)
        )
        .is_empty()
    );
    assert_eq!(
        upstream.last_request().unwrap().header_str("authorization"),
        Some(format!("Bearer {value}").as_str())
    );
}

#[test]
fn env_prints_settings_for_the_running_broker() {
    let (cli, _ca, _upstream, value, ca_path) = setup();
    cli.run(&["env", "--agent", "bot"], None);
    let broker = Broker::start(&cli, &["--upstream-ca", ca_path.to_str().unwrap()]);
    let out = cli.ok(&["env", "--agent", "bot", "--ttl", "1h"], None);
    assert!(out.contains("export HTTPS_PROXY='http://bot:sqa_"), "{out}");
    assert!(out.contains(&broker.proxy_addr), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("export OPENAI_API_KEY='sqt_")),
        "{out}"
    );
    assert!(!out.contains(&value));
}

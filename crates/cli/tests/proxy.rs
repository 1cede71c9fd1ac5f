//! The forward proxy end to end: real clients through HTTPS_PROXY with TLS interception,
//! placeholders swapped for values only toward allowed hosts, exfiltration refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_testkit::{Broker, Cli, TestCa, Upstream, encodings, find_in, wait_for};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");

struct Env {
    cli: Cli,
    upstream: Upstream,
    broker: Broker,
    key: String,
    token: String,
    value: String,
    bundle: std::path::PathBuf,
    _ca: TestCa,
}

impl Env {
    fn start() -> Self {
        Self::start_with_config("")
    }

    /// `config` goes into the data directory's `sequester.toml`, which `serve` reads.
    fn start_with_config(config: &str) -> Self {
        let cli = Cli::new(BIN);
        cli.ok(&["init"], None);
        if !config.is_empty() {
            std::fs::write(cli.data_dir().join("sequester.toml"), config).unwrap();
        }
        let ca = TestCa::new();
        let upstream = Upstream::start_with_names(&ca, &["localhost", "127.0.0.1"]);
        let ca_path = ca.write_pem(cli.scratch());
        let r: [u8; 8] = sequester_crypto::random_bytes();
        let value = format!(
            "sk-proxy-{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        cli.ok(
            &["secret", "add", "S", "--host", "localhost"],
            Some(value.as_bytes()),
        );
        cli.ok(
            &["secret", "add", "ELSEWHERE", "--host", "api.example.com"],
            Some(b"elsewhere-value-123"),
        );
        cli.ok(&["agent", "add", "bot"], None);
        cli.ok(&["egress", "allow", "localhost"], None);
        let token = cli
            .ok(&["token", "issue", "--agent", "bot", "--secret", "S"], None)
            .trim()
            .to_owned();
        let key = cli.json(&["agent", "key", "issue", "bot"], None)["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let broker = Broker::start(&cli, &["--upstream-ca", ca_path.to_str().unwrap()]);
        // Clients trust the broker's CA (and the upstream's, for tests that bypass the proxy).
        let bundle = cli.scratch().join("bundle.pem");
        let mut pem = std::fs::read(&broker.ca_pem).unwrap();
        pem.extend(std::fs::read(&ca_path).unwrap());
        std::fs::write(&bundle, pem).unwrap();
        Self {
            cli,
            upstream,
            broker,
            key,
            token,
            value,
            bundle,
            _ca: ca,
        }
    }

    fn proxy_url(&self) -> String {
        format!("http://bot:{}@{}", self.key, self.broker.proxy_addr)
    }

    fn curl(&self, args: &[&str], url: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "20",
                "--proxy",
                &self.proxy_url(),
                "--cacert",
                self.bundle.to_str().unwrap(),
            ])
            .args(args)
            .arg(url)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let status = text
            .lines()
            .filter(|l| l.starts_with("HTTP/"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|s| s.parse().ok())
            .rfind(|s| *s != 200 || !text.contains("Connection established"))
            .unwrap_or(0);
        (status, text)
    }

    fn upstream_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.upstream.addr().port())
    }
}

#[test]
fn curl_through_the_proxy_gets_the_value_swapped_in() {
    let env = Env::start();
    let (status, text) = env.curl(
        &["-H", &format!("Authorization: Bearer {}", env.token)],
        &env.upstream_url("/echo/a"),
    );
    assert_eq!(status, 200, "{text}");
    let r = env.upstream.last_request().unwrap();
    assert_eq!(
        r.header_str("authorization"),
        Some(format!("Bearer {}", env.value).as_str())
    );
    assert!(!text.contains(&env.value));
    // Echoes come back scrubbed.
    let (status, text) = env.curl(
        &["-H", &format!("Authorization: Bearer {}", env.token)],
        &env.upstream_url("/leak?form=all"),
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        find_in([("client", text.as_bytes())], &encodings(&env.value)).is_empty(),
        "{text}"
    );
    let logs = env.broker.logs();
    assert!(find_in([("logs", logs.as_slice())], &encodings(&env.value)).is_empty());
}

#[test]
fn unauthenticated_use_is_refused_with_407() {
    let env = Env::start();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--proxy",
            &format!("http://{}", env.broker.proxy_addr),
            "http://localhost:1/",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "407");
}

#[test]
fn placeholders_going_elsewhere_are_blocked() {
    let env = Env::start();
    let other = Upstream::start_with_names(&env._ca, &["127.0.0.1"]);
    env.cli.ok(&["egress", "allow", "127.0.0.1"], None);
    wait_for(Duration::from_secs(2), "rule", || Some(()));
    std::thread::sleep(Duration::from_millis(400));
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(env.token.as_bytes())
    };
    let url_other = |p: &str| format!("https://127.0.0.1:{}{p}", other.addr().port());
    for (what, args, url) in [
        (
            "header",
            vec![
                "-H".to_owned(),
                format!("Authorization: Bearer {}", env.token),
            ],
            url_other("/echo/h"),
        ),
        (
            "query",
            vec![],
            url_other(&format!("/echo/q?key={}", env.token)),
        ),
        (
            "url-encoded",
            vec![],
            url_other(&format!("/echo/u?key={}", env.token.replace('_', "%5F"))),
        ),
        (
            "base64",
            vec!["-H".to_owned(), format!("X-Data: {b64}")],
            url_other("/echo/b"),
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, text) = env.curl(&args, &url);
        assert_eq!(status, 403, "{what}: {text}");
        assert!(text.contains("exfiltration_blocked"), "{what}: {text}");
    }
    assert_eq!(
        other.request_count(),
        0,
        "the wrong host received something"
    );
    wait_for(Duration::from_secs(5), "the exfiltration receipts", || {
        let receipts = env.cli.json(&["receipts", "--denied"], None);
        let n = receipts
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["code"] == "exfiltration_blocked")
            .count();
        (n >= 4).then_some(())
    });
    assert!(String::from_utf8_lossy(&env.broker.logs()).contains("ALERT exfiltration blocked"));
}

#[test]
fn egress_refuses_private_and_metadata_addresses_without_a_rule() {
    let env = Env::start();
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/",
        &format!("https://127.0.0.1:{}/echo", env.upstream.addr().port()),
    ] {
        let (status, text) = env.curl(&[], url);
        assert_eq!(status, 403, "{url}: {text}");
    }
    assert_eq!(env.upstream.request_count(), 0);
    // The refusals are on record with their code (denial receipts are queued: poll).
    wait_for(Duration::from_secs(5), "the denial receipts", || {
        let denied = env.cli.json(&["receipts", "--denied"], None);
        let forbidden: Vec<String> = denied
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["code"] == "destination_forbidden")
            .map(|r| r["host"].as_str().unwrap().to_owned())
            .collect();
        ["169.254.169.254", "10.1.2.3", "127.0.0.1"]
            .iter()
            .all(|h| forbidden.iter().any(|f| f == h))
            .then_some(())
    });
}

#[test]
fn another_agents_token_is_refused() {
    let env = Env::start();
    env.cli.ok(&["agent", "add", "other"], None);
    let other_key = env.cli.json(&["agent", "key", "issue", "other"], None)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(400));
    let out = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--proxy",
            &format!("http://other:{other_key}@{}", env.broker.proxy_addr),
            "--cacert",
            env.bundle.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {}", env.token),
            &env.upstream_url("/echo/x"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unknown_token"), "{text}");
    assert_eq!(env.upstream.request_count(), 0);
}

fn python_with(module: &str) -> Option<String> {
    let candidates = std::env::var("SEQUESTER_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned()]);
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn python_requests_httpx_and_the_openai_sdk_through_the_proxy() {
    let Some(python) = python_with("openai, requests, httpx") else {
        eprintln!(
            "skipped: requests, httpx and openai are not installed (pip install requests httpx openai, or set SEQUESTER_TEST_PYTHON)"
        );
        return;
    };
    let env = Env::start();
    let script = r#"
import json, os, requests, httpx
from openai import OpenAI
url = os.environ["UP"]
tok = os.environ["TOKEN"]
r1 = requests.get(url + "/echo/requests", headers={"Authorization": "Bearer " + tok}).status_code
r2 = httpx.get(url + "/echo/httpx", headers={"Authorization": "Bearer " + tok}).status_code
client = OpenAI(api_key=tok, base_url=url + "/v1")
normal = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
print(json.dumps({"requests": r1, "httpx": r2, "normal": normal, "stream": streamed, "env": os.environ.get("TOKEN")}))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .env("UP", env.upstream_url(""))
        .env("TOKEN", &env.token)
        .env("HTTPS_PROXY", env.proxy_url())
        .env("NO_PROXY", "")
        .env("REQUESTS_CA_BUNDLE", &env.bundle)
        .env("SSL_CERT_FILE", &env.bundle)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (v["requests"].as_u64(), v["httpx"].as_u64()),
        (Some(200), Some(200)),
        "{v}"
    );
    assert_eq!(v["normal"], "Hello from the test upstream");
    assert!(v["stream"].as_str().unwrap().contains("Hello"), "{v}");
    for r in env.upstream.requests() {
        assert_eq!(
            r.header_str("authorization"),
            Some(format!("Bearer {}", env.value).as_str()),
            "{}",
            r.path
        );
    }
    assert!(
        find_in(
            [
                ("client", out.stdout.as_slice()),
                ("stderr", out.stderr.as_slice())
            ],
            &encodings(&env.value)
        )
        .is_empty()
    );
}

#[test]
fn a_redirect_to_another_host_does_not_carry_the_placeholder_there() {
    let env = Env::start();
    let other = Upstream::start_with_names(&env._ca, &["127.0.0.1"]);
    env.cli.ok(&["egress", "allow", "127.0.0.1"], None);
    std::thread::sleep(Duration::from_millis(400));
    let target = format!("https://127.0.0.1:{}/echo/stolen", other.addr().port());
    let (status, text) = env.curl(
        &[
            "-L",
            "--location-trusted",
            "-H",
            &format!("Authorization: Bearer {}", env.token),
        ],
        &env.upstream_url(&format!("/redirect?to={target}")),
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("exfiltration_blocked"), "{text}");
    assert_eq!(
        other.request_count(),
        0,
        "the redirect target received the request"
    );
    // The first hop, to the allowed host, got the real value.
    assert_eq!(
        env.upstream
            .last_request()
            .unwrap()
            .header_str("authorization"),
        Some(format!("Bearer {}", env.value).as_str())
    );
}

#[test]
fn a_host_header_naming_another_host_is_refused() {
    let env = Env::start();
    let (status, text) = env.curl(
        &[
            "-H",
            "Host: evil.example",
            "-H",
            &format!("Authorization: Bearer {}", env.token),
        ],
        &env.upstream_url("/echo/h"),
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("destination_forbidden"), "{text}");
    assert_eq!(env.upstream.request_count(), 0);
}

#[test]
fn another_tenants_agent_cannot_use_this_tenants_token() {
    let env = Env::start();
    env.cli.ok(&["tenant", "add", "b"], None);
    env.cli
        .ok(&["--tenant", "b", "agent", "add", "intruder"], None);
    env.cli
        .ok(&["--tenant", "b", "egress", "allow", "localhost"], None);
    let key = env.cli.json(
        &["--tenant", "b", "agent", "key", "issue", "intruder"],
        None,
    )["key"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(400));
    let out = Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--proxy",
            &format!("http://intruder:{key}@{}", env.broker.proxy_addr),
            "--cacert",
            env.bundle.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {}", env.token),
            &env.upstream_url("/echo/x"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unknown_token"), "{text}");
    assert_eq!(env.upstream.request_count(), 0);
}

#[test]
fn request_bodies_are_substituted_only_for_secrets_that_opt_in() {
    let env = Env::start_with_config("max_inspected_body = 4096\n");
    let other = Upstream::start_with_names(&env._ca, &["127.0.0.1"]);
    env.cli.ok(&["egress", "allow", "127.0.0.1"], None);
    let body_value = "body-secret-\"quoted\"-value";
    env.cli.ok(
        &["secret", "add", "B", "--host", "localhost", "--body"],
        Some(body_value.as_bytes()),
    );
    let shown = env.cli.json(&["secret", "show", "B"], None);
    assert_eq!(shown["body_substitution"], true, "{shown}");
    let body_token = env
        .cli
        .ok(&["token", "issue", "--agent", "bot", "--secret", "B"], None)
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_millis(600)); // the broker picks up the new token
    let post = |url: &str, content_type: &str, body: &str, extra: &[&str]| {
        let mut args = vec!["-X", "POST", "-H", content_type, "--data-binary", body];
        args.extend_from_slice(extra);
        env.curl(&args, url)
    };

    // JSON: the value arrives as valid JSON string content, Content-Length fixed up.
    let json_body = format!("{{\"api_key\":\"{body_token}\",\"n\":1}}");
    let (status, text) = post(
        &env.upstream_url("/echo/json"),
        "Content-Type: application/json",
        &json_body,
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let r = env.upstream.last_request().unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(sent["api_key"], body_value);
    assert_eq!(
        r.header_str("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(!String::from_utf8_lossy(&r.body).contains(&body_token));

    // Chunked in, a known length out; a form body gets the percent-encoded value.
    let (status, text) = post(
        &env.upstream_url("/echo/form"),
        "Content-Type: application/x-www-form-urlencoded",
        &format!("key={body_token}&x=1"),
        &["-H", "Transfer-Encoding: chunked"],
    );
    assert_eq!(status, 200, "{text}");
    let r = env.upstream.last_request().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "key=body-secret-%22quoted%22-value&x=1"
    );
    assert!(r.header("transfer-encoding").is_none());
    assert!(!text.contains(body_value));

    // A secret that did not opt in is not replaced in a body: refused, nothing sent.
    let before = env.upstream.request_count();
    let (status, text) = post(
        &env.upstream_url("/echo/plain"),
        "Content-Type: application/json",
        &format!("{{\"k\":\"{}\"}}", env.token),
        &[],
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("invalid_request") && text.contains("--body"),
        "{text}"
    );
    assert_eq!(env.upstream.request_count(), before);

    // The opted-in placeholder in a body toward another host: blocked.
    let (status, text) = post(
        &format!("https://127.0.0.1:{}/echo/x", other.addr().port()),
        "Content-Type: text/plain",
        &format!("here: {body_token}"),
        &[],
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("exfiltration_blocked"), "{text}");
    assert_eq!(other.request_count(), 0);

    // Over the inspection limit: refused with a stable code, nothing sent.
    let big = format!("{}{body_token}", "x".repeat(5000));
    let (status, text) = post(
        &env.upstream_url("/echo/big"),
        "Content-Type: text/plain",
        &big,
        &[],
    );
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
    assert_eq!(env.upstream.request_count(), before);

    // A body without placeholders from this agent still passes (buffered, unchanged).
    let (status, text) = post(
        &env.upstream_url("/echo/none"),
        "Content-Type: text/plain",
        "nothing secret",
        &[],
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(env.upstream.last_request().unwrap().body, b"nothing secret");

    // The value never reached the logs or the data directory in plaintext.
    assert!(
        find_in(
            [("logs", env.broker.logs().as_slice())],
            &encodings(body_value)
        )
        .is_empty()
    );
    assert!(
        sequester_testkit::find_in_files(env.cli.data_dir(), &encodings(body_value)).is_empty()
    );
}

//! End-to-end tests of the reverse gateway with real clients (curl, reqwest, the OpenAI
//! Python SDK) against a recording HTTPS upstream with its own CA.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_testkit::{
    Broker, Cli, Recorded, TestCa, Upstream, encodings, find_in, find_in_files, wait_for,
};
use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sequester");

fn canary(tag: &str) -> String {
    let r: [u8; 8] = sequester_crypto::random_bytes();
    format!(
        "sk-live-{tag}-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A data directory with a service `up` pointing at a recording HTTPS upstream, a secret `S`
/// allowed for 127.0.0.1, an agent `bot` with a token, and a broker serving it.
struct Env {
    cli: Cli,
    upstream: Upstream,
    broker: Broker,
    token: String,
    value: String,
    _ca: TestCa,
}

impl Env {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts with `config` (TOML) as the broker's config file, if given.
    fn start_with(config: Option<&str>) -> Self {
        let cli = Cli::new(BIN);
        cli.ok(&["init"], None);
        let ca = TestCa::new();
        let upstream = Upstream::start(&ca);
        let ca_path = ca.write_pem(cli.scratch());
        cli.ok(
            &["service", "add", "up", "--base-url", &upstream.base_url()],
            None,
        );
        let value = canary("gw");
        cli.ok(
            &["secret", "add", "S", "--host", "127.0.0.1"],
            Some(value.as_bytes()),
        );
        cli.ok(&["agent", "add", "bot"], None);
        let token = cli
            .ok(&["token", "issue", "--agent", "bot", "--secret", "S"], None)
            .trim()
            .to_owned();
        let config_path = cli.scratch().join("sequester.toml");
        let mut args = vec![
            "--upstream-ca".to_owned(),
            ca_path.to_str().unwrap().to_owned(),
        ];
        if let Some(text) = config {
            std::fs::write(&config_path, text).unwrap();
            args.extend([
                "--config".to_owned(),
                config_path.to_str().unwrap().to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let broker = Broker::start(&cli, &args);
        Self {
            cli,
            upstream,
            broker,
            token,
            value,
            _ca: ca,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.broker.addr)
    }

    /// curl with `-i`; returns (status, headers+body text).
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "20"])
            .args(args)
            .arg(self.url(path))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .lines()
            .find(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    fn bearer(&self) -> String {
        format!("Authorization: Bearer {}", self.token)
    }

    fn issue(&self, agent: &str, secret: &str, extra: &[&str]) -> String {
        self.issue_with_id(agent, secret, extra).0
    }

    /// Issues a token; returns (token, id).
    fn issue_with_id(&self, agent: &str, secret: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["token", "issue", "--agent", agent, "--secret", secret];
        args.extend_from_slice(extra);
        let v = self.cli.json(&args, None);
        (
            v["token"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Asserts nothing the upstream received carries the token, and returns what it got.
    fn upstream_never_saw_tokens(&self) -> Vec<Recorded> {
        let reqs = self.upstream.requests();
        for r in &reqs {
            let all = format!(
                "{} {:?} {}",
                r.path,
                r.headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                !all.contains("sqt_"),
                "the upstream received a token: {all}"
            );
        }
        reqs
    }

    fn error_code(text: &str) -> Option<String> {
        let body = text.split("\r\n\r\n").nth(1)?;
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        v["error"]["code"].as_str().map(str::to_owned)
    }
}

#[test]
fn curl_gets_the_real_key_injected_and_never_sees_it() {
    let env = Env::start();
    let (status, text) = env.curl(
        &[
            "-H",
            &env.bearer(),
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            "{\"model\":\"m\",\"messages\":[]}",
        ],
        "/up/v1/chat/completions",
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Hello from the test upstream"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-sequester-request-id"),
        "{text}"
    );
    let reqs = env.upstream_never_saw_tokens();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(
        reqs[0].header_str("authorization"),
        Some(format!("Bearer {}", env.value).as_str())
    );
    assert!(!text.contains(&env.value));
}

#[test]
fn the_token_is_found_wherever_sdks_put_the_key() {
    let env = Env::start();
    let basic = base64_encode(&format!("x:{}", env.token));
    for (args, path) in [
        (
            vec!["-H".to_owned(), format!("x-api-key: {}", env.token)],
            "/up/echo/a".to_owned(),
        ),
        (
            vec![
                "-H".to_owned(),
                format!("Authorization: token {}", env.token),
            ],
            "/up/echo/b".to_owned(),
        ),
        (
            vec!["-H".to_owned(), format!("Authorization: Basic {basic}")],
            "/up/echo/c".to_owned(),
        ),
        (vec![], format!("/up/echo/d?key={}&q=1", env.token)),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, text) = env.curl(&args, &path);
        assert_eq!(status, 200, "{path}: {text}");
    }
    let reqs = env.upstream_never_saw_tokens();
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        assert_eq!(
            r.header_str("authorization"),
            Some(format!("Bearer {}", env.value).as_str()),
            "{}",
            r.path
        );
        assert!(r.header("x-api-key").is_none());
    }
    assert_eq!(reqs[3].path, "/echo/d?q=1");
}

/// A reqwest client (rustls with the ring provider, as everywhere in Sequester).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_streams_sse_chunk_by_chunk() {
    let env = tokio::task::spawn_blocking(Env::start).await.unwrap();
    let client = http_client();
    let mut resp = client
        .get(env.url("/up/sse?events=5&delay_ms=300"))
        .header("authorization", format!("Bearer {}", env.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert!(
        String::from_utf8_lossy(&first).contains("event-0"),
        "{first:?}"
    );
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert!(String::from_utf8_lossy(&rest).contains("event-4"));
    let sent = env.upstream.sse_sent_at(0);
    assert_eq!(sent.len(), 5);
    assert!(
        first_at < *sent.last().unwrap(),
        "the first event arrived only after the upstream sent the last one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_flat_memory() {
    let env = tokio::task::spawn_blocking(Env::start).await.unwrap();
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let client = http_client();
    // Warm up, then measure the high-water mark around 100 MB each way.
    let _ = client
        .get(env.url("/up/bytes?n=1000"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let before = rss(env.broker.pid());
    const N: u64 = 100 * 1024 * 1024;
    let mut resp = client
        .get(env.url(&format!("/up/bytes?n={N}&chunk=65536")))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = 0u64;
    while let Some(c) = resp.chunk().await.unwrap() {
        got += c.len() as u64;
    }
    assert_eq!(got, N);
    let stream = Zeros(N);
    let resp = client
        .post(env.url("/up/sink"))
        .bearer_auth(&env.token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["received"], N);
    let after = rss(env.broker.pid());
    assert!(
        after.saturating_sub(before) < 48 * 1024,
        "broker peak memory grew by {} KiB moving 200 MB",
        after - before
    );
}

/// `total` zero bytes in 64 KiB chunks, produced lazily.
struct Zeros(u64);

impl futures_core::Stream for Zeros {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.0.min(64 * 1024);
        self.0 -= n;
        std::task::Poll::Ready(Some(Ok(vec![7u8; usize::try_from(n).unwrap()])))
    }
}

#[test]
fn every_form_of_an_echoed_key_is_scrubbed() {
    let env = Env::start();
    for form in ["header", "json", "base64", "url", "split", "all"] {
        let (status, text) = env.curl(&["-H", &env.bearer()], &format!("/up/leak?form={form}"));
        assert_eq!(status, 200, "{form}: {text}");
        let hits = find_in([("response", text.as_bytes())], &encodings(&env.value));
        assert!(
            hits.is_empty(),
            "{form}: the client saw the key: {hits:?}\n{text}"
        );
        match form {
            "base64" => assert!(text.contains(&base64_encode(&env.token)), "{form}: {text}"),
            _ => assert!(text.contains(&env.token), "{form}: {text}"),
        }
    }
    let logs = env.broker.logs();
    assert!(find_in([("logs", logs.as_slice())], &encodings(&env.value)).is_empty());
    assert!(
        find_in(
            [("logs", logs.as_slice())],
            &[env.token.as_bytes().to_vec()]
        )
        .is_empty(),
        "a token was logged"
    );
}

#[test]
fn every_denial_has_its_code_and_the_upstream_receives_nothing() {
    let env = Env::start();
    let cli = &env.cli;
    cli.ok(
        &["secret", "add", "OTHER", "--host", "api.example.com"],
        Some(b"other-value"),
    );
    cli.ok(
        &[
            "secret",
            "add",
            "EXPIRING",
            "--host",
            "127.0.0.1",
            "--expires-in",
            "2s",
        ],
        Some(b"expiring-value"),
    );
    cli.ok(
        &["secret", "add", "REVOKED", "--host", "127.0.0.1"],
        Some(b"revoked-value"),
    );
    cli.ok(&["agent", "add", "off"], None);
    let wrong_host = env.issue("bot", "OTHER", &[]);
    let expiring_secret = env.issue("bot", "EXPIRING", &[]);
    let revoked_secret = env.issue("bot", "REVOKED", &[]);
    let disabled_agent = env.issue("off", "S", &[]);
    let (revoked_token, revoked_id) = env.issue_with_id("bot", "S", &[]);
    let expiring_token = env.issue("bot", "S", &["--ttl", "2s"]);
    cli.ok(&["token", "revoke", &revoked_id], None);
    cli.ok(&["secret", "revoke", "REVOKED"], None);
    cli.ok(&["agent", "disable", "off"], None);
    let unknown = {
        let t = sequester_crypto::IssuedToken::generate();
        t.reveal().to_owned()
    };
    // Wait for expiry, and for the broker to see the changes.
    std::thread::sleep(Duration::from_millis(2100));
    let cases = [
        (unknown.as_str(), 401, "unknown_token"),
        (revoked_token.as_str(), 401, "token_revoked"),
        (expiring_token.as_str(), 401, "token_expired"),
        (disabled_agent.as_str(), 403, "agent_disabled"),
        (revoked_secret.as_str(), 403, "secret_revoked"),
        (expiring_secret.as_str(), 403, "secret_expired"),
        (wrong_host.as_str(), 403, "host_not_allowed"),
    ];
    for (token, want_status, want_code) in cases {
        let (status, text) = wait_for(Duration::from_secs(3), want_code, || {
            let (status, text) = env.curl(
                &["-H", &format!("Authorization: Bearer {token}")],
                "/up/echo",
            );
            (Env::error_code(&text).as_deref() == Some(want_code)).then_some((status, text))
        });
        assert_eq!(status, want_status, "{want_code}: {text}");
        assert!(text.contains("\"request_id\""), "{text}");
    }
    let (status, text) = env.curl(&[], "/up/echo");
    assert_eq!(
        (status, Env::error_code(&text).as_deref()),
        (401, Some("unknown_token")),
        "{text}"
    );
    let (status, text) = env.curl(&["-H", &env.bearer()], "/nosuchservice/x");
    assert_eq!(
        (status, Env::error_code(&text).as_deref()),
        (404, Some("unknown_service")),
        "{text}"
    );
    assert_eq!(
        env.upstream.request_count(),
        0,
        "the upstream was contacted: {:?}",
        env.upstream.requests()
    );
    let want = [
        "token_revoked",
        "token_expired",
        "agent_disabled",
        "secret_revoked",
        "secret_expired",
        "host_not_allowed",
        "unknown_service",
    ];
    cli.receipts_when(&["--denied"], "a receipt of every denial", |rows| {
        want.iter()
            .all(|code| rows.iter().any(|r| r["code"].as_str() == Some(code)))
    });
}

#[test]
fn new_tokens_and_revocations_take_effect_within_a_second() {
    let env = Env::start();
    let (fresh, id) = env.issue_with_id("bot", "S", &[]);
    let issued_at = Instant::now();
    wait_for(Duration::from_secs(1), "the new token to work", || {
        (env.curl(
            &["-H", &format!("Authorization: Bearer {fresh}")],
            "/up/echo",
        )
        .0 == 200)
            .then_some(())
    });
    assert!(issued_at.elapsed() < Duration::from_secs(1));
    env.cli.ok(&["token", "revoke", &id], None);
    let revoked_at = Instant::now();
    wait_for(
        Duration::from_secs(1),
        "the revocation to take effect",
        || {
            (env.curl(
                &["-H", &format!("Authorization: Bearer {fresh}")],
                "/up/echo",
            )
            .0 == 401)
                .then_some(())
        },
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_never_fails_and_moves_to_the_new_value() {
    let env = std::sync::Arc::new(tokio::task::spawn_blocking(Env::start).await.unwrap());
    let new_value = canary("rotated");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let env = env.clone();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let client = http_client();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .get(env.url("/up/echo/load"))
                    .bearer_auth(&env.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "a request failed during rotation");
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cli_env = env.clone();
    let nv = new_value.clone();
    tokio::task::spawn_blocking(move || {
        cli_env.cli.ok(
            &["secret", "rotate", "S", "--grace", "2s"],
            Some(nv.as_bytes()),
        )
    })
    .await
    .unwrap();
    let rotated_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    assert!(total > 20, "only {total} requests ran");
    let seen: Vec<String> = env
        .upstream
        .requests()
        .iter()
        .filter_map(|r| r.header_str("authorization").map(str::to_owned))
        .collect();
    let old = format!("Bearer {}", env.value);
    let new = format!("Bearer {new_value}");
    assert!(
        seen.iter().all(|a| *a == old || *a == new),
        "the upstream saw an unexpected credential"
    );
    assert!(seen.contains(&new), "the new value was never used");
    // After the reload (well within the grace window), only the new value is injected.
    env.upstream.clear();
    let client = http_client();
    for _ in 0..5 {
        assert_eq!(
            client
                .get(env.url("/up/echo/after"))
                .bearer_auth(&env.token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert!(rotated_at.elapsed() > Duration::from_secs(1));
    assert!(
        env.upstream
            .requests()
            .iter()
            .all(|r| r.header_str("authorization") == Some(new.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_under_load_stops_requests_within_a_second() {
    let env = std::sync::Arc::new(tokio::task::spawn_blocking(Env::start).await.unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let successes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (env, stop, successes) = (env.clone(), stop.clone(), successes.clone());
        loops.push(tokio::spawn(async move {
            let client = http_client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .get(env.url("/up/echo/load"))
                    .bearer_auth(&env.token)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    successes.lock().unwrap().push(Instant::now());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = env.cli.json(&["token", "list"], None)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cli_env = env.clone();
    tokio::task::spawn_blocking(move || cli_env.cli.ok(&["token", "revoke", &id], None))
        .await
        .unwrap();
    let revoked_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let late: Vec<Duration> = successes
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > revoked_at)
        .map(|t| t.duration_since(revoked_at))
        .collect();
    assert!(
        late.iter().all(|d| *d < Duration::from_secs(1)),
        "a request succeeded {late:?} after revocation"
    );
}

#[test]
fn receipts_are_complete_chained_and_free_of_values() {
    let env = Env::start();
    for i in 0..3 {
        let (status, _) = env.curl(
            &["-H", &env.bearer(), "-H", "X-Run-Id: run-77"],
            &format!("/up/echo/{i}?key=x&q=1"),
        );
        assert_eq!(status, 200);
    }
    env.curl(&["-H", "Authorization: Bearer sqt_nope"], "/up/echo");
    let list = env
        .cli
        .receipts_when(&[], "three completions and a denial", |rows| {
            rows.iter().filter(|x| x["kind"] == "completion").count() == 3
                && rows.iter().any(|x| x["decision"] == "deny")
        });
    assert_eq!(list.len(), 4, "one line per request: {list:?}");
    for r in list.iter().filter(|r| r["kind"] == "completion") {
        assert_eq!(r["agent"], "bot");
        assert_eq!(r["secret"], "S");
        assert_eq!(r["secret_version"], 1);
        assert_eq!(r["service"], "up");
        assert_eq!(r["method"], "GET");
        assert_eq!(r["host"], "127.0.0.1");
        assert_eq!(r["status"], 200);
        assert_eq!(r["decision"], "allow");
        assert_eq!(r["run_id"], "run-77");
        assert!(
            r["path"].as_str().unwrap().contains("key=REDACTED&q=1"),
            "{r}"
        );
        assert!(r["token_id"].as_str().unwrap().starts_with("tok_"));
        assert!(
            r["upstream_ms"].is_u64()
                && r["total_ms"].is_u64()
                && r["bytes_out"].as_u64().unwrap() > 0
        );
    }
    let denial = list.iter().find(|r| r["kind"] == "denial").unwrap();
    assert_eq!(denial["code"], "unknown_token");
    assert_eq!(env.cli.json(&["receipts", "verify"], None)["ok"], true);
    let needles = [encodings(&env.value), encodings(&env.token)].concat();
    let hits = find_in_files(env.cli.data_dir(), &needles);
    assert!(hits.is_empty(), "value or token on disk: {hits:?}");
    let logs = env.broker.logs();
    assert!(find_in([("logs", logs.as_slice())], &needles).is_empty());
}

#[test]
fn receipts_verify_detects_tampering_through_the_cli() {
    let env = Env::start();
    for i in 0..3 {
        env.curl(&["-H", &env.bearer()], &format!("/up/echo/{i}"));
    }
    wait_for(Duration::from_secs(5), "receipts", || {
        (env.cli
            .json(&["receipts"], None)
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "completion")
            .count()
            == 3)
            .then_some(())
    });
    let Env {
        cli, mut broker, ..
    } = env;
    Command::new("kill")
        .args(["-TERM", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(broker.wait_exit(Duration::from_secs(15)), Some(0));
    let env_cli = cli;
    let db = env_cli.data_dir().join("sequester.db");
    assert_eq!(env_cli.json(&["receipts", "verify"], None)["records"], 6);
    for (what, sql) in [
        (
            "edit",
            "UPDATE receipts SET body = replace(body, '\"GET\"', '\"PUT\"') WHERE seq = 2",
        ),
        ("delete", "DELETE FROM receipts WHERE seq = 3"),
        ("delete the last", "DELETE FROM receipts WHERE seq = 6"),
    ] {
        let backup = std::fs::read(&db).unwrap();
        let status = Command::new("python3").args(["-c", &format!("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"{}\"); c.commit(); c.close()", sql.replace('"', "\\\"")), db.to_str().unwrap()]).status().unwrap();
        assert!(status.success());
        let run = env_cli.fails(&["receipts", "verify"], None, "integrity_failure", 5);
        assert!(run.stderr.contains("broken"), "{what}: {}", run.stderr);
        std::fs::write(&db, backup).unwrap();
    }
}

#[test]
fn kill_9_under_load_leaves_an_intent_for_every_request_the_upstream_saw() {
    let env = Env::start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for w in 0..3 {
        let (url, bearer, stop) = (env.url(""), env.bearer(), stop.clone());
        loops.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "2",
                        "-H",
                        &bearer,
                        &format!("{url}/up/echo/w{w}-{i}"),
                    ])
                    .status();
                i += 1;
            }
        }));
    }
    wait_for(Duration::from_secs(10), "some traffic", || {
        (env.upstream.request_count() > 15).then_some(())
    });
    Command::new("kill")
        .args(["-KILL", &env.broker.pid().to_string()])
        .status()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        l.join().unwrap();
    }
    let seen: std::collections::BTreeSet<String> = env
        .upstream
        .requests()
        .into_iter()
        .map(|r| format!("/up{}", r.path))
        .collect();
    let rows = env.cli.json(&["receipts", "--limit", "100000"], None);
    let recorded: std::collections::BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["decision"] == "allow")
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = seen.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "the upstream got {} requests without a receipt: {missing:?}",
        missing.len()
    );
    assert_eq!(env.cli.json(&["receipts", "verify"], None)["ok"], true);
}

fn raw_request(addr: &str, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_input_is_rejected_and_the_upstream_is_untouched() {
    let env = Env::start();
    let addr = env.broker.addr.clone();
    let tok = &env.token;
    let big = "a".repeat(70 * 1024);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("CRLF in a header value", format!("GET /up/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\nX-A: b\rInjected: 1\r\n\r\n").into_bytes(), &["400"]),
        ("bare LF header injection", format!("GET /up/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\nX-A: b\nInjected : 1\r\n\r\n").into_bytes(), &["400"]),
        ("oversized header block", format!("GET /up/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\nX-Big: {big}\r\n\r\n").into_bytes(), &["431", "400"]),
        ("path traversal", format!("GET /up/../admin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), &["400"]),
        ("encoded traversal", format!("GET /up/%2e%2e/admin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), &["400"]),
        ("encoded slash", format!("GET /up/a%2F..%2Fadmin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), &["400"]),
        ("double-encoded traversal", format!("GET /up/%252e%252e/admin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), &["400"]),
        ("Host header elsewhere", format!("GET /up/echo HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), &["421"]),
        ("absolute URI", format!("GET http://evil.example/up/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n").into_bytes(), &["400"]),
        ("CL and TE together", format!("POST /up/sink HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /up/echo/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes(), &["400"]),
        ("two Content-Lengths", format!("POST /up/sink HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd").into_bytes(), &["400"]),
        ("bad chunk framing", format!("POST /up/sink HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\nTransfer-Encoding: chunked, identity\r\n\r\n4\r\nabcd\r\n0\r\n\r\n").into_bytes(), &["400", "501"]),
    ];
    for (what, bytes, statuses) in cases {
        let reply = raw_request(&addr, &bytes);
        let status = reply.split_whitespace().nth(1).unwrap_or("");
        assert!(
            statuses.contains(&status),
            "{what}: got {status:?}\n{reply}"
        );
        assert_eq!(
            env.upstream.request_count(),
            0,
            "{what}: the upstream was contacted: {:?}",
            env.upstream.requests()
        );
    }
    // A well-formed request on the same broker still works.
    assert_eq!(env.curl(&["-H", &env.bearer()], "/up/echo").0, 200);
}

#[test]
fn an_unwritable_audit_log_denies_instead_of_serving_unaudited() {
    let env = Env::start_with(Some("[timeouts]\naudit = 700\n"));
    let url = env.url("/up/echo");
    // Another process holds SQLite's write lock, so no receipt can commit.
    let db = env.cli.data_dir().join("sequester.db");
    let mut locker = Command::new("python3")
        .args(["-c", "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)", db.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "10",
            "-H",
            &env.bearer(),
            &url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    locker.kill().unwrap();
    locker.wait().unwrap();
    assert!(
        text.ends_with("503") && text.contains("audit_unavailable"),
        "{text}"
    );
    assert_eq!(env.upstream.request_count(), 0, "served unaudited");
    // Once the lock is gone, requests flow again.
    wait_for(Duration::from_secs(5), "recovery", || {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &env.bearer(),
                &url,
            ])
            .output()
            .unwrap();
        (out.stdout == b"200").then_some(())
    });
}

#[test]
fn metrics_count_requests_by_service_and_decision() {
    let env = Env::start();
    env.curl(&["-H", &env.bearer()], "/up/echo");
    env.curl(&["-H", "Authorization: Bearer nope"], "/up/echo");
    let (status, text) = env.curl(&[], "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "sequester_requests_total{service=\"up\",decision=\"allow\",code=\"\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("decision=\"deny\",code=\"unknown_token\""),
        "{text}"
    );
    assert!(
        text.contains("sequester_request_duration_seconds_bucket{service=\"up\""),
        "{text}"
    );
    assert!(text.contains("sequester_snapshot_age_seconds"), "{text}");
    // The allowed request's intent was committed before it was served: the writer counted a
    // waited-for receipt and at least one timed batch.
    let sample = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(sample("sequester_audit_receipts_total{durable=\"waited\"}") >= 1);
    assert!(sample("sequester_audit_commit_seconds_count") >= 1);
    assert!(sample("sequester_audit_batch_receipts_sum") >= 1);
    assert!(!text.contains(&env.value) && !text.contains(&env.token));
}

/// The interpreter for the Python client tests: `SEQUESTER_TEST_PYTHON` (CI installs the
/// packages into a virtualenv and sets it), else `python3` if it has the packages.
fn python_with(module: &str) -> Option<String> {
    let candidates = std::env::var("SEQUESTER_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned()]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    None
}

#[test]
fn the_official_openai_sdk_works_through_the_gateway() {
    let Some(python) = python_with("openai") else {
        eprintln!(
            "skipped: the `openai` Python package is not installed (pip install openai, or set SEQUESTER_TEST_PYTHON)"
        );
        return;
    };
    let env = Env::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/openai_chat.py");
    let out = Command::new(&python)
        .arg(script)
        .env("AGENT_TOKEN", &env.token)
        .env("GATEWAY_BASE_URL", env.url("/up/v1"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["normal"], "Hello from the test upstream");
    assert!(v["stream_chunks"].as_u64().unwrap() > 1, "{v}");
    assert!(v["stream"].as_str().unwrap().contains("Hello"), "{v}");
    let reqs = env.upstream_never_saw_tokens();
    let chat: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert_eq!(chat.len(), 2);
    for r in &chat {
        assert_eq!(
            r.header_str("authorization"),
            Some(format!("Bearer {}", env.value).as_str())
        );
    }
    let hits = find_in(
        [
            ("sdk output", out.stdout.as_slice()),
            ("sdk stderr", out.stderr.as_slice()),
        ],
        &encodings(&env.value),
    );
    assert!(hits.is_empty(), "the client saw the key: {hits:?}");
}

#[test]
fn upstream_timeouts_and_failures_have_codes() {
    let env = Env::start_with(Some("[timeouts]\nfirst_byte = 300\n"));
    let (status, text) = env.curl(&["-H", &env.bearer()], "/up/slow?ms=2000");
    assert_eq!(
        (status, Env::error_code(&text).as_deref()),
        (504, Some("upstream_timeout")),
        "{text}"
    );
    env.cli.ok(
        &[
            "service",
            "add",
            "dead",
            "--base-url",
            "https://127.0.0.1:9",
        ],
        None,
    );
    wait_for(Duration::from_secs(3), "the dead service", || {
        let (status, text) = env.curl(&["-H", &env.bearer()], "/dead/x");
        (status == 502).then_some(text)
    });
    env.cli
        .receipts_when(&[], "upstream failure receipts", |rows| {
            ["upstream_timeout", "upstream_unavailable"]
                .iter()
                .all(|code| rows.iter().any(|r| r["code"].as_str() == Some(code)))
        });
}

#[test]
fn http2_clients_work_and_the_secrets_host_is_checked_against_the_service() {
    let env = Env::start();
    // HTTP/2 with prior knowledge from the client, HTTP/2 by ALPN to the upstream.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "-H",
            &env.bearer(),
            &env.url("/up/echo/h2"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    assert_eq!(env.upstream.last_request().unwrap().version, "HTTP/2.0");
    // A preset service routes to its real host, which this secret does not allow: refused
    // before any connection is made.
    let (status, text) = env.curl(&["-H", &env.bearer()], "/openai/v1/models");
    assert_eq!(
        (status, Env::error_code(&text).as_deref()),
        (403, Some("host_not_allowed")),
        "{text}"
    );
    assert!(text.contains("api.openai.com"), "{text}");
}

#[test]
fn services_through_the_cli() {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    let added = cli.json(
        &[
            "service",
            "add",
            "internal",
            "--base-url",
            "https://api.internal.example/v2/",
            "--inject",
            "header:x-api-key:{value}",
        ],
        None,
    );
    assert_eq!(added["base_url"], "https://api.internal.example/v2");
    let list = cli.json(&["service", "list"], None);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for preset in ["openai", "anthropic", "github", "stripe", "slack", "google"] {
        assert!(names.contains(&preset), "{names:?}");
    }
    assert!(names.contains(&"internal"));
    cli.fails(
        &[
            "service",
            "add",
            "internal",
            "--base-url",
            "https://x.example",
        ],
        None,
        "service_exists",
        4,
    );
    cli.fails(
        &["service", "add", "x", "--base-url", "api.example.com"],
        None,
        "invalid_base_url",
        2,
    );
    cli.fails(
        &[
            "service",
            "add",
            "x",
            "--base-url",
            "https://a.example/../b",
        ],
        None,
        "invalid_base_url",
        2,
    );
    cli.fails(&["service", "rm", "nope"], None, "service_not_found", 3);
    cli.ok(&["service", "rm", "internal"], None);
    cli.fails(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/nonexistent.toml",
        ],
        None,
        "io_error",
        1,
    );
    std::fs::write(cli.scratch().join("bad.toml"), "lisen = 1").unwrap();
    cli.fails(
        &[
            "serve",
            "--config",
            cli.scratch().join("bad.toml").to_str().unwrap(),
        ],
        None,
        "invalid_config",
        2,
    );
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let env = Env::start();
    let (status, _) = env.curl(
        &[
            "-H",
            &env.bearer(),
            "-H",
            "Connection: keep-alive, x-private-hop",
            "-H",
            "X-Private-Hop: 1",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Authorization: Basic eDp5",
            "-H",
            "X-Run-Id: r1",
            "-H",
            "X-Kept: yes",
        ],
        "/up/echo/hops",
    );
    assert_eq!(status, 200);
    let r = env.upstream.last_request().unwrap();
    for gone in [
        "x-private-hop",
        "keep-alive",
        "proxy-authorization",
        "x-run-id",
    ] {
        assert!(
            r.header(gone).is_none(),
            "{gone} was forwarded: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header_str("x-kept"), Some("yes"));
    assert_eq!(
        r.header_str("host"),
        Some(env.upstream.addr().to_string().as_str())
    );
}

#[test]
fn shutdown_lets_in_flight_streams_finish() {
    let mut env = Env::start();
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "-H",
            &env.bearer(),
            &env.url("/up/sse?events=6&delay_ms=250"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(first.contains("event-0"), "{first}");
    Command::new("kill")
        .args(["-TERM", &env.broker.pid().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.contains("event-5"),
        "the stream was cut at shutdown: {rest}"
    );
    assert_eq!(env.broker.wait_exit(Duration::from_secs(15)), Some(0));
    // Queued receipts were flushed: the completion of the stream is on record.
    let receipts = env.cli.json(&["receipts"], None);
    assert!(
        receipts
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "completion" && r["status"] == 200),
        "{receipts}"
    );
}

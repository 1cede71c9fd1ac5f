//! The chat sanitizer end to end: pasted credentials come back as placeholders, sealed in
//! the vault with their provider's hosts, and nowhere else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_testkit::{Broker, Cli, encodings, find_in, find_in_files, wait_for};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random(n: usize, alphabet: &[u8]) -> String {
    let mut out = String::new();
    while out.len() < n {
        for b in sequester_crypto::random_bytes::<64>() {
            if out.len() < n && usize::from(b) < (256 / alphabet.len()) * alphabet.len() {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    out
}

/// A classic GitHub token with a valid checksum (CRC32 of the 30 random characters).
fn github_pat() -> String {
    sequester_testkit::github_classic_token(&random(30, BASE62))
}

/// Fresh credentials of the kinds a user pastes: a GitHub token, an OpenAI key and an AWS key
/// pair (whose id is the public half).
struct Pasted {
    pat: String,
    openai: String,
    aws_id: String,
    aws_secret: String,
}

impl Pasted {
    fn new() -> Self {
        Self {
            pat: github_pat(),
            openai: format!("sk-proj-{}", random(64, BASE62)),
            aws_id: format!("AKIA{}", random(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
            aws_secret: random(
                40,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
            ),
        }
    }
}

/// The vault's secrets that the sanitizer (or `redact --seal`) stored.
fn sanitized_secrets(cli: &Cli) -> Vec<serde_json::Value> {
    cli.json(&["secret", "list"], None)
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["origin"] == "sanitized")
        .cloned()
        .collect()
}

fn post_sanitize(addr: &str, key: &str, text: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "text": text }).to_string();
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &format!("http://{addr}/v1/sanitize"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_chat_message_with_three_credentials_comes_back_with_three_placeholders() {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    cli.ok(&["agent", "add", "bot"], None);
    let key = cli.json(&["agent", "key", "issue", "bot"], None)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let broker = Broker::start(&cli, &[]);

    let Pasted {
        pat,
        openai,
        aws_id,
        aws_secret,
    } = Pasted::new();
    let message = format!(
        "hey, here's my GitHub token {pat} — set it up please.\nAlso OpenAI: {openai}\nand AWS: access key {aws_id} secret {aws_secret}\nthanks!"
    );
    let (status, reply) = post_sanitize(&broker.addr, &key, &message);
    assert_eq!(status, 200, "{reply}");
    let text = reply["text"].as_str().unwrap();
    for original in [&pat, &openai, &aws_secret] {
        assert!(
            !text.contains(original.as_str()),
            "a credential survived: {text}"
        );
    }
    assert!(
        text.starts_with("hey, here's my GitHub token <<SECRET_"),
        "{text}"
    );
    let secrets = reply["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 3, "{reply}");
    let placeholders: Vec<&str> = secrets
        .iter()
        .map(|s| s["placeholder"].as_str().unwrap())
        .collect();
    for p in &placeholders {
        assert!(text.contains(p), "{p} not in {text}");
        assert!(sequester_crypto::looks_like_placeholder(p));
    }
    let by_provider = |p: &str| {
        secrets
            .iter()
            .find(|s| s["provider"] == p)
            .unwrap_or_else(|| panic!("no {p} in {reply}"))
    };
    assert!(
        by_provider("github")["suggested_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "api.github.com")
    );
    assert_eq!(
        by_provider("openai")["suggested_hosts"],
        serde_json::json!(["api.openai.com"])
    );
    assert!(
        by_provider("aws")["suggested_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().contains("amazonaws.com"))
    );

    // The vault holds three sealed secrets with those hosts.
    let sanitized = sanitized_secrets(&cli);
    assert_eq!(sanitized.len(), 3, "{sanitized:?}");

    // The same paste maps to the same placeholders; nothing new is stored.
    let (_, again) = post_sanitize(&broker.addr, &key, &message);
    assert_eq!(again["text"], reply["text"]);
    assert!(
        again["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["new"] == false)
    );
    assert_eq!(
        cli.json(&["secret", "list"], None)
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The placeholder works like a token for this agent: the gateway accepts it for GitHub
    // (the upstream itself is out of reach here, so the request ends upstream_unavailable
    // after the broker decided to allow it).
    let gh = by_provider("github")["placeholder"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-H",
            &format!("Authorization: Bearer {gh}"),
            &format!("http://{}/github/user", broker.addr),
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !body.contains("unknown_token") && !body.contains("host_not_allowed"),
        "{body}"
    );
    let allowed = wait_for(Duration::from_secs(10), "the receipt", || {
        let r = cli.json(
            &[
                "receipts",
                "--secret",
                by_provider("github")["secret"].as_str().unwrap(),
            ],
            None,
        );
        r.as_array()
            .unwrap()
            .iter()
            .find(|x| x["decision"] == "allow" || x["kind"] == "completion")
            .cloned()
    });
    assert_eq!(allowed["agent"], "bot");

    // Nowhere in the response, the logs or the database.
    let needles: Vec<Vec<u8>> = [&pat, &openai, &aws_secret]
        .iter()
        .flat_map(|v| encodings(v))
        .collect();
    let reply_text = reply.to_string();
    assert!(find_in([("response", reply_text.as_bytes())], &needles).is_empty());
    let logs = broker.logs();
    assert!(
        find_in([("logs", logs.as_slice())], &needles).is_empty(),
        "a credential reached the logs"
    );
    drop(broker);
    let hits = find_in_files(cli.data_dir(), &needles);
    assert!(hits.is_empty(), "plaintext on disk: {hits:?}");
}

#[test]
fn sanitize_requires_an_agent_key() {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    cli.ok(&["agent", "add", "bot"], None);
    let key = cli.json(&["agent", "key", "issue", "bot"], None);
    let broker = Broker::start(&cli, &[]);
    let (status, reply) = post_sanitize(&broker.addr, "sqa_notakey", "x");
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (401, Some("unknown_token"))
    );
    cli.ok(
        &["agent", "key", "revoke", key["id"].as_str().unwrap()],
        None,
    );
    wait_for(Duration::from_secs(2), "revocation", || {
        let (status, reply) = post_sanitize(&broker.addr, key["key"].as_str().unwrap(), "x");
        (status == 401 && reply["error"]["code"] == "token_revoked").then_some(())
    });
    let fresh = cli.json(&["agent", "key", "issue", "bot"], None)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, reply) = wait_for(Duration::from_secs(2), "the new key", || {
        let r = post_sanitize(&broker.addr, &fresh, "{not json");
        (r.0 != 401).then_some(r)
    });
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["text"], "{not json");
}

/// `<<SECRET_…>>` placeholders in `text`, in order.
fn placeholders_in(text: &str) -> Vec<String> {
    text.match_indices("<<SECRET_")
        .map(|(i, _)| {
            let end = text[i..].find(">>").unwrap() + i + 2;
            text[i..end].to_owned()
        })
        .collect()
}

#[test]
fn redact_with_seal_stores_what_it_finds_as_the_sanitize_api_does() {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    cli.ok(&["agent", "add", "bot"], None);
    let Pasted {
        pat,
        openai,
        aws_id,
        aws_secret,
    } = Pasted::new();
    let transcript = format!(
        "user: my GitHub token is {pat}\nuser: and OpenAI {openai}\nuser: AWS access key {aws_id} secret {aws_secret}\nassistant: noted {pat}\n"
    );
    let sealed = cli.ok(
        &["redact", "--seal", "--agent", "bot"],
        Some(transcript.as_bytes()),
    );
    for original in [&pat, &openai, &aws_secret] {
        assert!(!sealed.contains(original.as_str()), "survived: {sealed}");
    }
    // The public half stays readable, as in the sanitize API; the rest of the text is intact.
    assert!(sealed.contains(&aws_id), "{sealed}");
    assert!(
        sealed.starts_with("user: my GitHub token is <<SECRET_"),
        "{sealed}"
    );
    let found = placeholders_in(&sealed);
    assert_eq!(found.len(), 4, "{sealed}");
    assert_eq!(found[0], found[3], "one value, one placeholder");
    for p in &found {
        assert!(sequester_crypto::looks_like_placeholder(p), "{p}");
    }

    // Three secrets sealed for the agent, with their providers' hosts.
    let stored = sanitized_secrets(&cli);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(
        stored
            .iter()
            .any(|s| s["hosts"].to_string().contains("api.github.com")),
        "{stored:?}"
    );

    // Again: the same placeholders, nothing new stored.
    let again = cli.ok(
        &["redact", "--seal", "--agent", "bot"],
        Some(transcript.as_bytes()),
    );
    assert_eq!(again, sealed);
    assert_eq!(sanitized_secrets(&cli).len(), 3);

    // Without --seal: every finding replaced by a marker, the key id too, nothing stored.
    let plain = cli.ok(&["redact"], Some(transcript.as_bytes()));
    assert!(placeholders_in(&plain).is_empty(), "{plain}");
    assert!(
        plain.starts_with("user: my GitHub token is <<REDACTED_github>>"),
        "{plain}"
    );
    assert!(
        !plain.contains(&aws_id) && !plain.contains(&aws_secret),
        "{plain}"
    );
    assert_eq!(sanitized_secrets(&cli).len(), 3);

    // No plaintext on disk.
    let needles: Vec<Vec<u8>> = [&pat, &openai, &aws_secret]
        .iter()
        .flat_map(|v| encodings(v))
        .collect();
    let hits = find_in_files(cli.data_dir(), &needles);
    assert!(hits.is_empty(), "plaintext on disk: {hits:?}");
}

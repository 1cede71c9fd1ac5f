//! Git over HTTPS through the forward proxy: an agent started by `sequester run` holds only a
//! token in `GIT_TOKEN`, uses it as the password of a git remote (in the URL, or in an
//! `http.extraHeader` Basic header), and the git server receives the real password; the agent
//! never sees it, and the token is refused toward a host the secret does not allow.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use base64::Engine as _;
use sequester_testkit::git::{self, FILE_CONTENT, FILE_NAME, decode_basic};
use sequester_testkit::{Cli, GitServer, TestCa, encodings, find_in};
use std::path::{Path, PathBuf};
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");
/// The user name GitHub-style tokens go with; any user works, the password is what matters.
const USER: &str = "x-access-token";

struct Env {
    cli: Cli,
    ca: TestCa,
    server: GitServer,
    password: String,
    ca_path: PathBuf,
    /// A directory the confined agent may write to (created before the run: Landlock leaves
    /// the data directory's parent without a rule, so only its existing entries are open).
    work: PathBuf,
}

impl Env {
    fn start() -> Self {
        let cli = Cli::new(BIN);
        cli.ok(&["init"], None);
        let ca = TestCa::new();
        let r: [u8; 12] = sequester_crypto::random_bytes();
        let password = format!("ghp_{}", hex(&r));
        let server = GitServer::start(&ca, USER, &password);
        let ca_path = ca.write_pem(cli.scratch());
        cli.ok(
            &[
                "secret",
                "add",
                "GIT",
                "--host",
                "localhost",
                "--env",
                "GIT_TOKEN",
            ],
            Some(password.as_bytes()),
        );
        cli.ok(&["agent", "add", "bot"], None);
        cli.ok(&["egress", "allow", "localhost"], None);
        cli.ok(
            &["token", "issue", "--agent", "bot", "--secret", "GIT"],
            None,
        );
        let work = cli.scratch().join("work");
        std::fs::create_dir(&work).unwrap();
        Self {
            cli,
            ca,
            server,
            password,
            ca_path,
            work,
        }
    }

    /// `sequester run --agent bot --upstream-ca CA -- sh -c SCRIPT`, with git isolated from
    /// the machine's configuration and unable to prompt.
    fn run(&self, script: &str) -> Output {
        let mut cmd = self.cli.command(&[
            "run",
            "--agent",
            "bot",
            "--upstream-ca",
            self.ca_path.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ]);
        git::isolate(&mut cmd)
            .env("HOME", &self.work)
            .env("TMPDIR", &self.work)
            // A stalled transfer fails the test instead of hanging it.
            .env("GIT_HTTP_LOW_SPEED_LIMIT", "1")
            .env("GIT_HTTP_LOW_SPEED_TIME", "30")
            .current_dir(&self.work);
        cmd.output().unwrap()
    }

    /// `https://x-access-token:$GIT_TOKEN@HOST:PORT/repo.git`, for the agent's shell.
    fn token_url(server: &GitServer, host: &str) -> String {
        format!(
            "https://{USER}:$GIT_TOKEN@{host}:{}/repo.git",
            server.port()
        )
    }

    /// A failed run with what the git server received and what the broker refused.
    fn diagnose(&self, out: &Output) -> String {
        let denied = self
            .cli
            .run(&["--json", "receipts", "--denied"], None)
            .stdout;
        format!(
            "{}\n--- git server requests\n{:#?}\n--- git http-backend stderr\n{}\n--- denied receipts\n{denied}",
            describe(out),
            self.server.requests(),
            self.server.backend_stderr()
        )
    }

    /// Every form of the password the agent must not see.
    fn password_forms(&self) -> Vec<Vec<u8>> {
        let mut forms = encodings(&self.password);
        // The whole Basic credential, as git (or the proxy) would encode it.
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{}", self.password));
        forms.push(basic.trim_end_matches('=').as_bytes().to_vec());
        forms
    }

    /// The agent's output (and the broker's, which shares `run`'s stderr) holds no password.
    fn assert_agent_never_saw_the_password(&self, out: &Output) {
        let hits = find_in(
            [
                ("agent stdout", out.stdout.as_slice()),
                ("agent stderr", out.stderr.as_slice()),
            ],
            &self.password_forms(),
        );
        assert!(hits.is_empty(), "the agent saw the password: {hits:?}");
    }

    /// Every Authorization the server received is Basic `x-access-token:PASSWORD`, never a
    /// token; at least one arrived.
    fn assert_server_got_only_the_password(&self) {
        let auths = self.server.received_authorizations();
        assert!(
            !auths.is_empty(),
            "the git server received no credentials: {:#?}",
            self.server.requests()
        );
        for a in &auths {
            assert!(!a.contains("sqt_"), "a token reached the server: {a}");
            assert_eq!(
                decode_basic(a),
                Some((USER.to_owned(), self.password.clone())),
                "the server did not receive the real password"
            );
        }
        for r in self.server.requests() {
            assert!(!r.path.contains("sqt_"), "a token in the path: {}", r.path);
        }
        assert!(
            self.server.requests().iter().any(|r| r.authenticated),
            "{:#?}",
            self.server.requests()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `env` dump of a script (between the markers): the token is there, the password not.
fn assert_env_holds_only_the_token(env: &Env, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dump = stdout
        .split("--- env ---\n")
        .nth(1)
        .and_then(|rest| rest.split("--- end env ---").next())
        .unwrap_or_else(|| panic!("no env dump: {}", describe(out)));
    let token_line = dump
        .lines()
        .find(|l| l.starts_with("GIT_TOKEN="))
        .unwrap_or_else(|| panic!("GIT_TOKEN is not set: {dump}"));
    assert!(token_line.starts_with("GIT_TOKEN=sqt_"), "{token_line}");
    assert!(
        dump.lines().any(|l| l.starts_with("GIT_SSL_CAINFO=")),
        "{dump}"
    );
    assert!(
        dump.lines()
            .any(|l| l.starts_with("HTTPS_PROXY=http://bot:sqa_")),
        "{dump}"
    );
    let hits = find_in([("env", dump.as_bytes())], &env.password_forms());
    assert!(
        hits.is_empty(),
        "the environment holds the password: {hits:?}"
    );
}

const ENV_DUMP: &str = "echo '--- env ---'; env; echo '--- end env ---'";

/// Run first in every script: waits until the broker knows the tokens `run` just issued.
///

#[test]
fn git_ls_remote_with_the_token_in_the_url_gets_the_password_swapped_in() {
    let env = Env::start();
    let head = env.server.head_commit();
    let out = env.run(&format!(
        "{ENV_DUMP}; git ls-remote \"{}\"",
        Env::token_url(&env.server, "localhost")
    ));
    assert!(out.status.success(), "{}", env.diagnose(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{head}\tHEAD")), "{stdout}");
    assert!(
        stdout.contains(&format!("{head}\trefs/heads/main")),
        "{stdout}"
    );
    env.assert_server_got_only_the_password();
    env.assert_agent_never_saw_the_password(&out);
    assert_env_holds_only_the_token(&env, &out);
}

#[test]
fn git_clone_with_the_token_in_the_url_gets_the_repository() {
    let env = Env::start();
    let head = env.server.head_commit();
    let clone = env.work.join("clone");
    let out = env.run(&format!(
        "{ENV_DUMP}; git clone -q \"{}\" {} && git -C {} rev-parse HEAD",
        Env::token_url(&env.server, "localhost"),
        clone.display(),
        clone.display()
    ));
    assert!(out.status.success(), "{}", env.diagnose(&out));
    assert_eq!(
        std::fs::read_to_string(clone.join(FILE_NAME)).unwrap(),
        FILE_CONTENT
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == head),
        "{}",
        describe(&out)
    );
    assert!(
        env.server.requests().iter().any(|r| r.method == "POST"
            && r.path == "/repo.git/git-upload-pack"
            && r.authenticated),
        "{:#?}",
        env.server.requests()
    );
    env.assert_server_got_only_the_password();
    env.assert_agent_never_saw_the_password(&out);
    assert_env_holds_only_the_token(&env, &out);
    // The clone remembers its remote with the token, never the password.
    let hits = find_in_tree(&clone, &env.password_forms());
    assert!(hits.is_empty(), "the password is in the clone: {hits:?}");
}

#[test]
fn git_with_an_extra_basic_header_holding_the_token_gets_the_password_swapped_in() {
    let env = Env::start();
    let head = env.server.head_commit();
    let out = env.run(&format!(
        "{ENV_DUMP}; git -c http.extraHeader=\"Authorization: Basic $(printf '{USER}:%s' \"$GIT_TOKEN\" | base64 -w0)\" ls-remote {}",
        env.server.repo_url()
    ));
    assert!(out.status.success(), "{}", env.diagnose(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{head}\tHEAD")),
        "{}",
        describe(&out)
    );
    env.assert_server_got_only_the_password();
    // The header went with every request: the server never had to challenge.
    assert!(
        env.server.requests().iter().all(|r| r.authenticated),
        "{:#?}",
        env.server.requests()
    );
    env.assert_agent_never_saw_the_password(&out);
    assert_env_holds_only_the_token(&env, &out);
}

#[test]
fn the_token_sent_to_a_host_the_secret_does_not_allow_is_refused() {
    let env = Env::start();
    // Same credentials, so that a leak would make git succeed; reached as 127.0.0.1, which
    // egress allows but the secret (localhost only) does not.
    let other = GitServer::start(&env.ca, USER, &env.password);
    env.cli.ok(&["egress", "allow", "127.0.0.1"], None);
    let out = env.run(&format!(
        "git ls-remote \"{}\"; echo \"url-status=$?\"; \
         git -c http.extraHeader=\"Authorization: Basic $(printf '{USER}:%s' \"$GIT_TOKEN\" | base64 -w0)\" ls-remote {}; echo \"header-status=$?\"; \
         git clone -q \"{}\" {}; echo \"clone-status=$?\"",
        Env::token_url(&other, "127.0.0.1"),
        other.repo_url_as("127.0.0.1"),
        Env::token_url(&other, "127.0.0.1"),
        env.work.join("stolen").display(),
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in ["url", "header", "clone"] {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{step}-status=")))
            .unwrap_or_else(|| panic!("{step} did not run: {}", describe(&out)));
        assert_ne!(line, "0", "{step}: git succeeded: {}", describe(&out));
    }
    assert!(!stdout.contains(&other.head_commit()), "{}", describe(&out));
    assert!(!env.work.join("stolen").join(FILE_NAME).exists());
    // Neither the token nor the password reached the other server in any Authorization.
    let auths = other.received_authorizations();
    assert!(
        auths.is_empty(),
        "the other server received credentials: {auths:?}"
    );
    assert!(
        other
            .requests()
            .iter()
            .all(|r| !r.authenticated && !r.path.contains("sqt_")),
        "{:#?}",
        other.requests()
    );
    env.assert_agent_never_saw_the_password(&out);
    // One refusal per git command.
    let receipts = env
        .cli
        .receipts_when(&["--denied"], "three refusals", |rows| {
            rows.iter()
                .filter(|r| r["code"] == "exfiltration_blocked")
                .count()
                >= 3
        });
    assert!(
        receipts
            .iter()
            .filter(|r| r["code"] == "exfiltration_blocked")
            .all(|r| r["host"] == "127.0.0.1"),
        "{receipts:?}"
    );
    // Nothing went to the allowed server either.
    assert_eq!(env.server.request_count(), 0);
}

/// A command that uses its token at once is never refused with `unknown_token`: `run` issues
/// the tokens before the agent key and waits until the broker accepts the key.
#[test]
fn the_first_request_of_a_run_knows_its_token() {
    let env = Env::start();
    for attempt in 0..8 {
        let out = env.run(&format!(
            "git ls-remote \"{}\"",
            Env::token_url(&env.server, "localhost")
        ));
        assert!(
            out.status.success(),
            "attempt {attempt}: {}",
            env.diagnose(&out)
        );
    }
    let denied = env.cli.json(&["receipts", "--denied"], None);
    assert!(
        denied
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["code"] != "unknown_token"),
        "{denied}"
    );
}

/// Where any of `needles` occurs in the files under `dir`, recursively.
fn find_in_tree(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(find_in_tree(&path, needles));
        } else if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            hits.extend(find_in(
                [(path.display().to_string().as_str(), data.as_slice())],
                needles,
            ));
        }
    }
    hits
}

//! Test support shared by Sequester's integration and end-to-end tests.
//!
//! - [`Cli`]: a temporary data directory and a way to run the `sequester` binary against it,
//!   with stdin piped (never a terminal) and a clean environment;
//! - [`Broker`]: a `sequester serve` child on an ephemeral port, stopped by PID on drop;
//! - [`encodings`] / [`find_in_files`]: the canary search used to prove that a value never
//!   reaches disk, logs or output;
//! - [`TestCa`] ([`tls`]): a throwaway certificate authority issuing leaves and rustls
//!   configurations on the `ring` provider;
//! - [`Upstream`] ([`upstream`]): a recording HTTPS (or plain HTTP) server on a loopback
//!   ephemeral port with OpenAI-compatible, echo, streaming and leak routes.
//!
//! Everything here panics on unexpected failure: it only runs inside tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed expectation is a failed test"
)]

pub mod git;
mod server_thread;
pub mod tls;
pub mod upstream;

pub use git::GitServer;
pub use tls::TestCa;
pub use upstream::{Recorded, Upstream};

use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The result of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON error document printed on stderr by a failing `--json` command.
    pub fn error_code(&self) -> Option<String> {
        let line = self.stderr.lines().find(|l| l.starts_with("{\"error\""))?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["error"]["code"].as_str().map(str::to_owned)
    }
}

/// A temporary data directory and the `sequester` binary to run against it.
pub struct Cli {
    bin: PathBuf,
    root: tempfile::TempDir,
    data_dir: PathBuf,
}

impl Cli {
    /// `bin` is the binary under test, `env!("CARGO_BIN_EXE_sequester")` in the cli crate.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        Self {
            bin: bin.into(),
            root,
            data_dir,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A scratch directory beside the data directory, removed with it.
    pub fn scratch(&self) -> &Path {
        self.root.path()
    }

    /// A command with the data directory set and no inherited Sequester settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("SEQUESTER_DATA_DIR", &self.data_dir)
            .env_remove("SEQUESTER_PASSPHRASE_FILE")
            .env_remove("SEQUESTER_TENANT")
            .env_remove("SEQUESTER_LISTEN")
            .env("SEQUESTER_LOG", "warn");
        cmd
    }

    /// Runs `args` with `stdin` piped in (empty if `None`).
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut pipe = child.stdin.take().unwrap();
            if let Some(input) = stdin {
                // The command may exit before reading (it rejects its arguments first).
                let _ = pipe.write_all(input);
            }
        }
        let out = child.wait_with_output().unwrap();
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let run = self.run(args, stdin);
        assert_eq!(run.status, 0, "sequester {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// Runs a command with `--json` that must succeed; returns its parsed stdout.
    pub fn json(&self, args: &[&str], stdin: Option<&[u8]>) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all, stdin);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    /// The receipts listed by `receipts ARGS --json`, polled until `ready` accepts them.
    /// Denial receipts are queued rather than committed before the answer, so a test that reads
    /// them right after its requests must wait for the writer's next batch.
    pub fn receipts_when(
        &self,
        args: &[&str],
        what: &str,
        mut ready: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut all = vec!["receipts"];
        all.extend_from_slice(args);
        poll(
            Duration::from_secs(10),
            Duration::from_millis(50),
            what,
            || {
                let rows = self.json(&all, None);
                rows.as_array().cloned().unwrap_or_default()
            },
            |rows| ready(rows),
            |rows| format!("; the receipts: {rows:#?}"),
        )
    }

    /// Runs a `--json` command that must fail with `code` and exit status `status`.
    pub fn fails(&self, args: &[&str], stdin: Option<&[u8]>, code: &str, status: i32) -> Run {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all, stdin);
        assert_eq!(
            run.error_code().as_deref(),
            Some(code),
            "sequester {args:?}: {run:?}"
        );
        assert_eq!(run.status, status, "sequester {args:?}: {run:?}");
        run
    }

    /// Every file of the data directory with a its bytes, for before/after comparisons that
    /// print readably.
    pub fn files(&self) -> BTreeMap<String, FileState> {
        self.file_bytes()
            .into_iter()
            .map(|(name, bytes)| (name, FileState(bytes)))
            .collect()
    }

    /// Every file of the data directory with its bytes.
    pub fn file_bytes(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.data_dir) {
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    out.insert(name, std::fs::read(&path).unwrap());
                }
            }
        }
        out
    }
}

/// A file's bytes, compared in full and printed as its length.
#[derive(PartialEq, Eq)]
pub struct FileState(pub Vec<u8>);

impl std::fmt::Debug for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// A classic GitHub personal access token (`ghp_`) around `body` (30 base62 characters), with
/// the checksum GitHub appends: the CRC32 of the body in six base62 digits. Computed here
/// independently of the detector, whose validator the tests exercise.
pub fn github_classic_token(body: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut crc = 0xFFFF_FFFFu32;
    for &b in body.as_bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut n = !crc;
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    format!("ghp_{body}{}", String::from_utf8_lossy(&sum))
}

/// The forms in which a value could leak: raw, base64 (standard, unpadded, URL-safe), hex
/// (both cases), URL-encoded and UTF-16.
pub fn encodings(value: &str) -> Vec<Vec<u8>> {
    let b = value.as_bytes();
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(b);
    let mut forms = vec![
        b.to_vec(),
        std_b64.trim_end_matches('=').as_bytes().to_vec(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(b)
            .into_bytes(),
        hex::encode(b).into_bytes(),
        hex::encode_upper(b).into_bytes(),
        value.encode_utf16().flat_map(u16::to_le_bytes).collect(),
    ];
    let url: String = b
        .iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                char::from(c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    forms.push(url.into_bytes());
    forms.dedup();
    forms
}

/// Where any of `needles` occurs in `haystacks` (name, bytes). Empty means clean.
pub fn find_in<'a>(
    haystacks: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    needles: &[Vec<u8>],
) -> Vec<String> {
    let mut hits = Vec::new();
    for (name, data) in haystacks {
        for n in needles {
            if !n.is_empty() && data.windows(n.len()).any(|w| w == n.as_slice()) {
                hits.push(format!("{:?} in {name}", String::from_utf8_lossy(n)));
            }
        }
    }
    hits
}

/// Where any of `needles` occurs in the files directly under `dir`.
pub fn find_in_files(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    find_in(
        files.iter().map(|(n, d)| (n.as_str(), d.as_slice())),
        needles,
    )
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub fn wait_for<T>(deadline: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    let ready = poll(
        deadline,
        Duration::from_millis(20),
        what,
        check,
        Option::is_some,
        |_| String::new(),
    );
    ready.expect("poll returns only a state it accepted")
}

/// Observes every `period` until `ready` accepts what `observe` returned, or panics after
/// `deadline` naming `what` and, through `describe`, the last state seen.
fn poll<S>(
    deadline: Duration,
    period: Duration,
    what: &str,
    mut observe: impl FnMut() -> S,
    mut ready: impl FnMut(&S) -> bool,
    describe: impl Fn(&S) -> String,
) -> S {
    let start = Instant::now();
    loop {
        let state = observe();
        if ready(&state) {
            return state;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out waiting for {what}{}",
            describe(&state)
        );
        std::thread::sleep(period);
    }
}

/// A running `sequester serve` on an ephemeral loopback port. Stopped by PID on drop.
pub struct Broker {
    child: Child,
    /// The gateway's address.
    pub addr: String,
    /// The forward proxy's address.
    pub proxy_addr: String,
    /// The interception CA certificate clients must trust for the proxy.
    pub ca_pem: std::path::PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Broker {
    /// Starts `sequester serve --listen 127.0.0.1:0` and waits for its ready line.
    pub fn start(cli: &Cli, extra: &[&str]) -> Self {
        let mut args = vec![
            "--json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut child = cli
            .command(&args)
            // The broker logs everything, so tests can check that no value reaches a log line.
            .env("SEQUESTER_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err_pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("broker did not report ready"));
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ready["event"], "ready", "{line}");
        let addr = ready["listen"].as_str().unwrap().to_owned();
        let proxy_addr = ready["proxy"].as_str().unwrap_or_default().to_owned();
        let ca_pem = ready["ca"]
            .as_str()
            .map(std::path::PathBuf::from)
            .unwrap_or_default();
        Self {
            child,
            addr,
            proxy_addr,
            ca_pem,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker logged so far.
    pub fn logs(&self) -> Vec<u8> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit (after a signal sent by the test); returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        wait_for(deadline, "broker exit", || {
            self.child.try_wait().unwrap().map(|s| s.code())
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

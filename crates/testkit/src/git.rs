//! A local HTTPS smart-HTTP git server that requires HTTP Basic authentication.
//!
//! [`GitServer::start`] creates a bare repository in a temporary directory (two commits on
//! `main`, made with the `git` CLI: [`FILE_NAME`] holding [`FILE_CONTENT`], then
//! [`SECOND_FILE_NAME`]) and serves it as `/repo.git` over HTTPS on a loopback ephemeral port,
//! with a leaf for `localhost` and `127.0.0.1` issued by a [`TestCa`] (ALPN `h2` and
//! `http/1.1`). Like [`Upstream`](crate::Upstream) it runs on its own std thread with its own
//! tokio runtime; dropping it stops the runtime, closes every connection, kills any CGI still
//! running and joins the thread.
//!
//! Every request must carry `Authorization: Basic base64(user:password)` with the user and
//! password given to [`GitServer::start`]; any other request gets 401 with
//! `WWW-Authenticate: Basic realm="git"` (which is what makes git, through libcurl, send the
//! credentials of its URL or credential helper). An authenticated request is handed to
//! `git http-backend`, run as a CGI per request (`GIT_PROJECT_ROOT`, `GIT_HTTP_EXPORT_ALL`,
//! `PATH_INFO`, `REQUEST_METHOD`, `QUERY_STRING`, `CONTENT_TYPE`, `CONTENT_LENGTH`,
//! `REMOTE_USER`, `HTTP_*` for the other headers — `Git-Protocol` and `Content-Encoding`
//! among them — but never `Authorization`); the request body is buffered and written to its
//! standard input, its output buffered and parsed as a CGI response (headers, `Status:`,
//! body).
//!
//! Every request is recorded as a [`GitRequest`] (method, path, `Authorization` header, the
//! status answered) before the response is sent: when a client has a response,
//! [`GitServer::requests`] already holds its request.
//!
//! [`isolate`] and [`command`] give a `git` client that ignores the user's and the system's
//! git configuration and never prompts, for deterministic tests.

use crate::server_thread::ServerThread;
use crate::tls::TestCa;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The file of the repository's first commit.
pub const FILE_NAME: &str = "README.md";
/// What [`FILE_NAME`] holds.
pub const FILE_CONTENT: &str = "# sequester git test repository\n";
/// The file added by the second (head) commit.
pub const SECOND_FILE_NAME: &str = "second.txt";
/// The repository's path on the server.
pub const REPO_PATH: &str = "/repo.git";
/// The realm of the server's Basic challenge.
pub const REALM: &str = "git";

/// Environment variables that would make a git client depend on the machine it runs on.
const CLIENT_ENV_REMOVED: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_SSL_NO_VERIFY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "GIT_CURL_VERBOSE",
    "GIT_TRACE",
    "GIT_TRACE_CURL",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_PROTOCOL",
    "GIT_PROXY_COMMAND",
    "GIT_HTTP_USER_AGENT",
];

/// Makes `cmd` (a `git` command, or a shell that runs git) independent of the user's and the
/// system's git configuration and unable to prompt: no system or global config, no askpass,
/// `GIT_TERMINAL_PROMPT=0`, no inherited `GIT_DIR`, TLS or trace settings. Proxy variables are
/// left alone (see [`command`]).
pub fn isolate(cmd: &mut Command) -> &mut Command {
    for name in CLIENT_ENV_REMOVED {
        cmd.env_remove(name);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Sequester Test")
        .env("GIT_AUTHOR_EMAIL", "test@sequester.invalid")
        .env("GIT_COMMITTER_NAME", "Sequester Test")
        .env("GIT_COMMITTER_EMAIL", "test@sequester.invalid")
}

/// A `git` command, [isolated](isolate), that talks to servers directly: every proxy variable
/// is removed. Add `GIT_SSL_CAINFO` to trust a [`TestCa`].
pub fn command() -> Command {
    let mut cmd = Command::new("git");
    isolate(&mut cmd);
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs `git args` in `dir` with [`command`]; panics unless it succeeds; returns its stdout.
fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = command()
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request as the git server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    pub method: String,
    /// The path and query as received.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The `Authorization` header, as (lossy UTF-8) text, if one was sent.
    pub authorization: Option<String>,
    /// Whether it carried the expected Basic credentials.
    pub authenticated: bool,
}

impl GitRequest {
    /// The `(user, password)` of a Basic `Authorization` header, if it is one.
    pub fn basic_credentials(&self) -> Option<(String, String)> {
        self.authorization.as_deref().and_then(decode_basic)
    }
}

/// The `(user, password)` of an `Authorization: Basic …` value (scheme matched in any case).
pub fn decode_basic(authorization: &str) -> Option<(String, String)> {
    let (scheme, cred) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

struct Shared {
    root: PathBuf,
    /// The user and password every request must present.
    expected: (String, String),
    requests: Mutex<Vec<GitRequest>>,
    /// What `git http-backend` wrote on stderr, request after request.
    backend_stderr: Mutex<Vec<u8>>,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Vec<GitRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running smart-HTTP git server. See the [module docs](self).
pub struct GitServer {
    // Before `_dir`: the server (and every CGI it started) stops before the repository goes.
    server: ServerThread,
    shared: Arc<Shared>,
    head: String,
    _dir: tempfile::TempDir,
}

impl GitServer {
    /// Creates the repository and serves it over HTTPS with a leaf for `localhost` and
    /// `127.0.0.1` signed by `ca`, requiring Basic authentication as `user`:`password`.
    pub fn start(ca: &TestCa, user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let head = create_repository(dir.path());
        let shared = Arc::new(Shared {
            root: dir.path().join("root"),
            expected: (user.to_owned(), password.to_owned()),
            requests: Mutex::new(Vec::new()),
            backend_stderr: Mutex::new(Vec::new()),
        });
        let tls = ca.server_config(&["localhost", "127.0.0.1"]);
        let state = Arc::clone(&shared);
        let server = ServerThread::spawn("testkit-git", move |tcp, peer| {
            connection(tcp, peer, Arc::clone(&tls), Arc::clone(&state))
        });
        Self {
            server,
            shared,
            head,
            _dir: dir,
        }
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// `https://localhost:PORT/repo.git`, without credentials.
    pub fn repo_url(&self) -> String {
        format!("https://localhost:{}{REPO_PATH}", self.port())
    }

    /// `https://HOST:PORT/repo.git` for another name of the server (`127.0.0.1`).
    pub fn repo_url_as(&self, host: &str) -> String {
        format!("https://{host}:{}{REPO_PATH}", self.port())
    }

    /// The id of the commit `main` (and `HEAD`) points to.
    pub fn head_commit(&self) -> String {
        self.head.clone()
    }

    /// Every request received since start, in arrival order.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.shared.requests().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests().len()
    }

    /// The `Authorization` header of every request that carried one, in arrival order.
    pub fn received_authorizations(&self) -> Vec<String> {
        self.shared
            .requests()
            .iter()
            .filter_map(|r| r.authorization.clone())
            .collect()
    }

    /// Forgets every recorded request.
    pub fn clear(&self) {
        self.shared.requests().clear();
    }

    /// What `git http-backend` wrote on stderr so far (for failure messages).
    pub fn backend_stderr(&self) -> String {
        let bytes = self
            .shared
            .backend_stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::fmt::Debug for GitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitServer")
            .field("repo_url", &self.repo_url())
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// Makes `dir/root/repo.git` (bare, two commits on `main`) from a work tree in `dir/work`;
/// returns the head commit.
fn create_repository(dir: &Path) -> String {
    let work = dir.join("work");
    let root = dir.join("root");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    git_in(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join(FILE_NAME), FILE_CONTENT).unwrap();
    git_in(&work, &["add", FILE_NAME]);
    git_in(&work, &["commit", "-q", "-m", "first commit"]);
    std::fs::write(work.join(SECOND_FILE_NAME), "second commit\n").unwrap();
    git_in(&work, &["add", SECOND_FILE_NAME]);
    git_in(&work, &["commit", "-q", "-m", "second commit"]);
    git_in(
        &root,
        &["clone", "-q", "--bare", work.to_str().unwrap(), "repo.git"],
    );
    git_in(&root.join("repo.git"), &["rev-parse", "HEAD"])
        .trim()
        .to_owned()
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
    let Ok(Ok(stream)) = handshake.await else {
        return;
    };
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn unauthorized() -> Response<Body> {
    let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&format!("Basic realm=\"{REALM}\"")).unwrap(),
    );
    r
}

async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let body = match incoming.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let user = authorization
        .as_deref()
        .and_then(decode_basic)
        .filter(|(u, p)| (u, p) == (&shared.expected.0, &shared.expected.1))
        .map(|(u, _)| u);
    shared.requests().push(GitRequest {
        method: parts.method.to_string(),
        path,
        version: format!("{:?}", parts.version),
        authorization,
        authenticated: user.is_some(),
    });
    let Some(user) = user else {
        return unauthorized();
    };
    let cgi = Cgi {
        method: parts.method.as_str(),
        path_info: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        version: parts.version,
        headers: &parts.headers,
        user: &user,
        peer,
        body,
    };
    match cgi.run(shared).await {
        Ok(response) => response,
        Err(message) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{message}\n")),
    }
}

/// One `git http-backend` invocation.
struct Cgi<'a> {
    method: &'a str,
    path_info: &'a str,
    query: &'a str,
    version: http::Version,
    headers: &'a HeaderMap,
    user: &'a str,
    peer: SocketAddr,
    body: Bytes,
}

impl Cgi<'_> {
    async fn run(self, shared: &Shared) -> Result<Response<Body>, String> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &shared.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_PROJECT_ROOT", &shared.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_SOFTWARE", "sequester-testkit-git")
            .env("SERVER_PROTOCOL", format!("{:?}", self.version))
            .env("SERVER_NAME", "localhost")
            .env("REQUEST_METHOD", self.method)
            .env("PATH_INFO", self.path_info)
            .env("QUERY_STRING", self.query)
            .env("AUTH_TYPE", "Basic")
            .env("REMOTE_USER", self.user)
            .env("REMOTE_ADDR", self.peer.ip().to_string())
            .env("REMOTE_PORT", self.peer.port().to_string());
        if let Some(ct) = self.headers.get(header::CONTENT_TYPE) {
            cmd.env(
                "CONTENT_TYPE",
                String::from_utf8_lossy(ct.as_bytes()).as_ref(),
            );
        }
        if !self.body.is_empty() || self.method == "POST" {
            cmd.env("CONTENT_LENGTH", self.body.len().to_string());
        }
        for (name, value) in self.headers {
            if [
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
            ]
            .contains(name)
            {
                continue;
            }
            let var = format!(
                "HTTP_{}",
                name.as_str().to_ascii_uppercase().replace('-', "_")
            );
            cmd.env(var, String::from_utf8_lossy(value.as_bytes()).as_ref());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start git http-backend: {e}"))?;
        // Written while the output is read, so that neither side can block the other.
        let mut stdin = child.stdin.take();
        let body = self.body;
        let writer = tokio::spawn(async move {
            if let Some(pipe) = stdin.as_mut() {
                use tokio::io::AsyncWriteExt as _;
                let _ = pipe.write_all(&body).await;
                let _ = pipe.shutdown().await;
            }
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("git http-backend: {e}"))?;
        let _ = writer.await;
        if !out.stderr.is_empty() {
            shared
                .backend_stderr
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&out.stderr);
        }
        parse_cgi_response(&out.stdout).ok_or_else(|| {
            format!(
                "git http-backend ({}) wrote no CGI response: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// Splits a CGI response into headers (with `Status:`) and body.
fn parse_cgi_response(output: &[u8]) -> Option<Response<Body>> {
    let (head, body) = [&b"\r\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|sep| {
            output
                .windows(sep.len())
                .position(|w| w == *sep)
                .map(|at| (at, sep.len()))
        })
        .min_by_key(|(at, _)| *at)
        .map(|(at, len)| (&output[..at], &output[at + len..]))?;
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?.trim();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case("status") {
            let code = std::str::from_utf8(value)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u16>()
                .ok()?;
            builder = builder.status(StatusCode::from_u16(code).ok()?);
        } else {
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(value).ok()?,
            );
        }
    }
    builder.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

//! A recording HTTP(S) upstream on a loopback ephemeral port.
//!
//! [`Upstream::start`] serves HTTPS with a leaf for `127.0.0.1` and `localhost` issued by a
//! [`TestCa`], speaking HTTP/1.1 or HTTP/2 as ALPN (or the client's first bytes) decides;
//! [`Upstream::start_plain`] serves plain HTTP/1.1 (and HTTP/2 with prior knowledge). Each
//! upstream runs on its own std thread with its own tokio runtime, so it works the same from a
//! plain `#[test]` and from a `#[tokio::test]`; dropping it stops the runtime, closes every
//! connection and joins the thread.
//!
//! Every request is recorded as a [`Recorded`] once its body has been read (or has failed),
//! before the response is produced: when a client has a response, [`Upstream::requests`]
//! already holds its request. Bodies are read in full by every route, but at most the first
//! [`BODY_LIMIT`] bytes are kept.
//!
//! # Routes
//!
//! - `POST /v1/chat/completions` — OpenAI-compatible. The body must be a JSON object (else 400
//!   with an OpenAI-shaped `{"error":{"message","type":"invalid_request_error",…}}`); `model`
//!   is echoed (default `test-model`).
//!   - Without `"stream": true`: a `chat.completion` (`id`, `object`, `created`, `model`,
//!     `choices[0].message` with `role: "assistant"` and `content` = [`CHAT_REPLY`],
//!     `finish_reason: "stop"`, `usage`).
//!   - With it: `text/event-stream` of `data: {chat.completion.chunk}\n\n` events — a role
//!     chunk, one chunk per word of [`CHAT_REPLY`], a `finish_reason: "stop"` chunk carrying
//!     `usage`, with `stream_options.include_usage` an extra usage chunk with empty `choices`
//!     as OpenAI sends it — then `data: [DONE]\n\n`. Events are `delay_ms` apart (query
//!     parameter, default 50) and their send times are kept as for `/sse`.
//! - `GET /v1/models` — `{"object":"list","data":[{"id","object":"model","created","owned_by"}]}`
//!   listing [`MODELS`].
//! - any method on `/echo` or `/echo/…` — 200
//!   `{"method","path","headers":{name: value},"body_len"}`: `path` with its query as
//!   received, header values as (lossy UTF-8) strings, a repeated header's values joined by
//!   `", "`.
//! - `GET /sse?events=N&delay_ms=D` — `text/event-stream` of N (default 3) events
//!   `data: event-i\n\n`, i from 0, each in its own frame, D ms (default 50) apart. The instant
//!   each event is handed to the connection is kept: [`Upstream::sse_sent_at`].
//! - `GET /bytes?n=N&chunk=C` — exactly N bytes (default 0) of [`pattern`] in frames of C bytes
//!   (default 16384) with `content-length: N`, never holding more than one frame in memory.
//! - `POST /sink` — reads the whole body (keeping at most [`BODY_LIMIT`] bytes, like every
//!   route) and answers `{"received": N}`.
//! - `GET /leak?form=F&delay_ms=D` — echoes the credential it received: the token after
//!   `Bearer `, else the password of `Basic`, else the `x-api-key` header (400 if none), in
//!   form F (default `json`):
//!   - `header`: response header `x-leaked: VALUE` (body `{"form":"header"}`);
//!   - `json`: `{"key":"VALUE"}`;
//!   - `base64`: `{"b64":"<standard base64 of VALUE>"}`;
//!   - `url`: `{"u":"<VALUE percent-encoded, all but A-Za-z0-9-_.~>"}`;
//!   - `split`: `{"split":"VALUE"}` sent as two frames cut in the middle of VALUE, D ms
//!     (default 50) apart;
//!   - `all`: the header, and `{"key","b64","u","split"}` sent as two frames cut in the middle
//!     of the `split` value.
//! - `GET /status/CODE` — status CODE (200–599) with `{"status": CODE}` (no body for 204 and
//!   304); 400 for any other CODE.
//! - `GET /redirect?to=URL` — `302 Found` to URL (taken verbatim from the query).
//! - `GET /slow?ms=D` — waits D ms (default 1000) before sending headers, then
//!   `{"slept_ms": D}`.
//! - anything else — 404 `{"error":"not_found","method","path"}`.
//!
//! A streamed body over HTTP/2 ends with an empty DATA frame carrying END_STREAM; a client
//! counting frames should skip empty ones.

use crate::server_thread::ServerThread;
use crate::tls::TestCa;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much of each request body is kept in [`Recorded::body`].
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The assistant message of `POST /v1/chat/completions`, streamed or not.
pub const CHAT_REPLY: &str = "Hello from the test upstream";

/// The model ids listed by `GET /v1/models`.
pub const MODELS: &[&str] = &["test-model", "gpt-4o-mini"];

const PATTERN: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The byte at `offset` of every `/bytes` response: a repeating 64-byte printable pattern.
pub fn pattern(offset: u64) -> u8 {
    PATTERN[(offset % 64) as usize]
}

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The path and query as received (for HTTP/2, the `:path` pseudo-header).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0` (`HTTP/1.0` if a client spoke it).
    pub version: String,
    /// Lowercase names with their raw values. Names appear in the order first received;
    /// repeated names keep their values together, in order. HTTP/2 pseudo-headers are absent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The full length of the body received.
    pub body_len: usize,
    /// The first [`BODY_LIMIT`] bytes of the body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    /// Bumped by [`Upstream::clear`] so a stream still running for an old request does not
    /// write its send times into a new request's slot.
    generation: u64,
    requests: Vec<Recorded>,
    sse_sent: Vec<Vec<Instant>>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Log>,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, recorded: Recorded) -> Slot {
        let mut log = self.log();
        log.requests.push(recorded);
        log.sse_sent.push(Vec::new());
        Slot {
            generation: log.generation,
            index: log.requests.len() - 1,
        }
    }

    fn event_sent(&self, slot: Slot, at: Instant) {
        let mut log = self.log();
        if log.generation == slot.generation
            && let Some(times) = log.sse_sent.get_mut(slot.index)
        {
            times.push(at);
        }
    }
}

/// Where a request sits in the log.
#[derive(Clone, Copy)]
struct Slot {
    generation: u64,
    index: usize,
}

/// A running recording upstream. See the [module docs](self) for its routes.
pub struct Upstream {
    server: ServerThread,
    scheme: &'static str,
    shared: Arc<Shared>,
}

impl Upstream {
    /// An HTTPS upstream with a leaf for `127.0.0.1` and `localhost` signed by `ca`.
    pub fn start(ca: &TestCa) -> Self {
        Self::start_with_names(ca, &["127.0.0.1", "localhost"])
    }

    /// An HTTPS upstream with a leaf for `names` (DNS names or IP addresses) signed by `ca`, for
    /// tests that reach it under another name (it still listens on 127.0.0.1 only).
    pub fn start_with_names(ca: &TestCa, names: &[&str]) -> Self {
        Self::spawn(Some(ca.server_config(names)))
    }

    /// A plain-HTTP upstream (HTTP/1.1, or HTTP/2 with prior knowledge), no TLS.
    pub fn start_plain() -> Self {
        Self::spawn(None)
    }

    fn spawn(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let server = ServerThread::spawn("testkit-upstream", move |tcp, _| {
            connection(tcp, tls.clone(), Arc::clone(&state))
        });
        Self {
            server,
            scheme,
            shared,
        }
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT` (or `http://…` for [`Upstream::start_plain`]), no trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.server.addr())
    }

    /// `base_url()` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Every request recorded since start (or the last [`Upstream::clear`]), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log().requests.clone()
    }

    /// The most recent request recorded, if any.
    pub fn last_request(&self) -> Option<Recorded> {
        self.shared.log().requests.last().cloned()
    }

    pub fn request_count(&self) -> usize {
        self.shared.log().requests.len()
    }

    /// Forgets every recorded request; indices start again from 0.
    pub fn clear(&self) {
        let mut log = self.shared.log();
        log.generation += 1;
        log.requests.clear();
        log.sse_sent.clear();
    }

    /// When each event of the event stream answering request `request_index` (an index into
    /// [`Upstream::requests`]) was handed to the connection, in order. Empty for a request that
    /// got no event stream or an unknown index; grows while the stream runs.
    pub fn sse_sent_at(&self, request_index: usize) -> Vec<Instant> {
        self.shared
            .log()
            .sse_sent
            .get(request_index)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (polling, up to `deadline`) until at least `n` requests are recorded; returns them.
    pub fn wait_for_requests(&self, n: usize, deadline: Duration) -> Vec<Recorded> {
        crate::wait_for(deadline, &format!("{n} upstream requests"), || {
            let requests = self.requests();
            (requests.len() >= n).then_some(requests)
        })
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
) {
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    match tls {
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(stream)) = handshake.await else {
                return;
            };
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        None => {
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// The parts of a request a route needs, after its body has been read.
struct Req {
    method: Method,
    route: String,
    query: String,
    headers: HeaderMap,
    path: String,
    body: Vec<u8>,
    body_len: usize,
    slot: Slot,
}

impl Req {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    fn number(&self, name: &str, default: u64) -> u64 {
        self.param(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.number("delay_ms", 50))
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut incoming) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut body = Vec::new();
    let mut body_len = 0usize;
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            body_len += data.len();
            let room = BODY_LIMIT - body.len();
            body.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body_len,
        body: body.clone(),
    };
    let slot = shared.record(recorded);
    let req = Req {
        method: parts.method,
        route: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        path,
        body,
        body_len,
        slot,
    };
    route(&shared, req).await
}

async fn route(shared: &Arc<Shared>, req: Req) -> Response<Body> {
    let route = req.route.as_str();
    match (&req.method, route) {
        (&Method::POST, "/v1/chat/completions") => chat_completions(shared, &req),
        (&Method::GET, "/v1/models") => models(),
        (_, "/echo") => echo(&req),
        (_, r) if r.starts_with("/echo/") => echo(&req),
        (&Method::GET, "/sse") => sse(shared, &req),
        (&Method::GET, "/bytes") => byte_stream(&req),
        (&Method::POST, "/sink") => json(StatusCode::OK, &json!({ "received": req.body_len })),
        (&Method::GET, "/leak") => leak(&req),
        (&Method::GET, r) if r.starts_with("/status/") => status(&r["/status/".len()..]),
        (&Method::GET, "/redirect") => match req.param("to") {
            Some(to) => Response::builder()
                .status(StatusCode::FOUND)
                .header("location", to)
                .body(full(Bytes::new()))
                .unwrap_or_else(|_| {
                    json(StatusCode::BAD_REQUEST, &json!({ "error": "bad location" }))
                }),
            None => json(StatusCode::BAD_REQUEST, &json!({ "error": "give ?to=URL" })),
        },
        (&Method::GET, "/slow") => {
            let ms = req.number("ms", 1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(StatusCode::OK, &json!({ "slept_ms": ms }))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &json!({ "error": "not_found", "method": req.method.as_str(), "path": req.path }),
        ),
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    BoxBody::new(Full::new(bytes.into()))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .unwrap()
}

/// A response whose body is fed, frame by frame, by the returned sender. The channel holds one
/// frame, so a producer never runs ahead of the connection by more than that.
fn streamed(content_type: &str) -> (Sender<Bytes>, http::response::Builder, Body) {
    let (tx, body) = Channel::<Bytes>::new(1);
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type);
    (tx, builder, BoxBody::new(body))
}

fn event_stream(
    shared: &Arc<Shared>,
    slot: Slot,
    events: Vec<String>,
    delay: Duration,
) -> Response<Body> {
    let (mut tx, builder, body) = streamed("text/event-stream");
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            shared.event_sent(slot, Instant::now());
            if tx.send_data(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    builder
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}

fn sse(shared: &Arc<Shared>, req: &Req) -> Response<Body> {
    let n = req.number("events", 3);
    let events = (0..n).map(|i| format!("data: event-{i}\n\n")).collect();
    event_stream(shared, req.slot, events, req.delay())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn openai_error(message: &str) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": null,
        }}),
    )
}

fn chat_completions(shared: &Arc<Shared>, req: &Req) -> Response<Body> {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
        return openai_error("the request body is not JSON");
    };
    if !request.is_object() {
        return openai_error("the request body is not a JSON object");
    }
    let model = request["model"].as_str().unwrap_or("test-model").to_owned();
    let id = format!("chatcmpl-testkit-{}", req.slot.index);
    let created = unix_now();
    // A rough, deterministic token count: words of every text content.
    let prompt_tokens = request["messages"]
        .as_array()
        .map_or(0, |messages| {
            messages
                .iter()
                .map(|m| match &m["content"] {
                    serde_json::Value::String(s) => s.split_whitespace().count(),
                    serde_json::Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .map(|s| s.split_whitespace().count())
                        .sum(),
                    _ => 0,
                })
                .sum::<usize>()
        })
        .max(1);
    let words: Vec<&str> = CHAT_REPLY.split_inclusive(' ').collect();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens + words.len(),
    });

    if request["stream"] != json!(true) {
        return json(
            StatusCode::OK,
            &json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": null,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": CHAT_REPLY, "refusal": null },
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": usage,
            }),
        );
    }

    let chunk = |choices: serde_json::Value, usage: serde_json::Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if !usage.is_null() {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    let choice = |delta: serde_json::Value, finish: serde_json::Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
    let mut events = vec![chunk(
        choice(json!({ "role": "assistant", "content": "" }), json!(null)),
        json!(null),
    )];
    for word in &words {
        events.push(chunk(
            choice(json!({ "content": word }), json!(null)),
            json!(null),
        ));
    }
    events.push(chunk(choice(json!({}), json!("stop")), usage.clone()));
    if request["stream_options"]["include_usage"] == json!(true) {
        events.push(chunk(json!([]), usage));
    }
    events.push("data: [DONE]\n\n".to_owned());
    event_stream(shared, req.slot, events, req.delay())
}

fn models() -> Response<Body> {
    let data: Vec<serde_json::Value> = MODELS
        .iter()
        .map(|id| {
            json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "sequester-testkit" })
        })
        .collect();
    json(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

fn echo(req: &Req) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for name in req.headers.keys() {
        let joined = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), json!(joined));
    }
    json(
        StatusCode::OK,
        &json!({
            "method": req.method.as_str(),
            "path": req.path,
            "headers": headers,
            "body_len": req.body_len,
        }),
    )
}

fn byte_stream(req: &Req) -> Response<Body> {
    let n = req.number("n", 0);
    let chunk = req.number("chunk", 16 * 1024).max(1);
    let (mut tx, builder, body) = streamed("application/octet-stream");
    tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < n {
            let len = usize::try_from(chunk.min(n - sent)).unwrap();
            let mut buf = Vec::with_capacity(len);
            let start = usize::try_from(sent % 64).unwrap();
            buf.extend_from_slice(&PATTERN[start..][..len.min(64 - start)]);
            while buf.len() < len {
                let more = (len - buf.len()).min(64);
                buf.extend_from_slice(&PATTERN[..more]);
            }
            if tx.send_data(Bytes::from(buf)).await.is_err() {
                return;
            }
            sent += chunk.min(n - sent);
        }
    });
    builder
        .header(header::CONTENT_LENGTH, n)
        .body(body)
        .unwrap()
}

/// The credential a client presented: a bearer token, a basic password, or `x-api-key`.
fn credential(headers: &HeaderMap) -> Option<Vec<u8>> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = auth.as_bytes();
        let scheme_is =
            |s: &str| auth.len() > s.len() && auth[..s.len()].eq_ignore_ascii_case(s.as_bytes());
        if scheme_is("Bearer ") {
            return Some(auth["Bearer ".len()..].trim_ascii().to_vec());
        }
        if scheme_is("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth["Basic ".len()..].trim_ascii())
                .ok()?;
            let colon = decoded.iter().position(|&b| b == b':')?;
            return Some(decoded[colon + 1..].to_vec());
        }
    }
    headers.get("x-api-key").map(|v| v.as_bytes().to_vec())
}

fn percent_encode(value: &[u8]) -> String {
    value
        .iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                char::from(c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

fn leak(req: &Req) -> Response<Body> {
    let Some(raw) = credential(&req.headers) else {
        return json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "no credential: send Authorization (Bearer or Basic) or x-api-key" }),
        );
    };
    let value = String::from_utf8_lossy(&raw).into_owned();
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let url = percent_encode(&raw);
    let form = req.param("form").unwrap_or("json");
    let with_header = |builder: http::response::Builder| match HeaderValue::from_bytes(&raw) {
        Ok(v) => builder.header("x-leaked", v),
        Err(_) => builder,
    };
    let ok = || {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
    };
    match form {
        "header" => with_header(ok())
            .body(full(json!({ "form": "header" }).to_string()))
            .unwrap(),
        "json" => json(StatusCode::OK, &json!({ "key": value })),
        "base64" => json(StatusCode::OK, &json!({ "b64": b64 })),
        "url" => json(StatusCode::OK, &json!({ "u": url })),
        "split" => split_body(ok(), "{\"split\":", &quoted(&value), req.delay()),
        "all" => split_body(
            with_header(ok()),
            &format!(
                "{{\"key\":{},\"b64\":{},\"u\":{},\"split\":",
                quoted(&value),
                quoted(&b64),
                quoted(&url),
            ),
            &quoted(&value),
            req.delay(),
        ),
        other => json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("unknown form {other:?}: header, json, base64, url, split or all") }),
        ),
    }
}

/// Sends `head`, then the JSON string `last` (quoted), then `}`, as two frames cut in the
/// middle of `last`'s contents, `delay` apart.
fn split_body(
    builder: http::response::Builder,
    head: &str,
    last: &str,
    delay: Duration,
) -> Response<Body> {
    let cut = head.len() + 1 + (last.len() - 2) / 2;
    let body = Bytes::from(format!("{head}{last}}}"));
    let (mut tx, body_rx) = Channel::<Bytes>::new(1);
    tokio::spawn(async move {
        if tx.send_data(body.slice(..cut)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
        let _ = tx.send_data(body.slice(cut..)).await;
    });
    builder.body(BoxBody::new(body_rx)).unwrap()
}

fn status(code: &str) -> Response<Body> {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    let Some(status) = status else {
        return json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": format!("not a final status code: {code:?}") }),
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Response::builder()
            .status(status)
            .body(full(Bytes::new()))
            .unwrap();
    }
    json(status, &json!({ "status": status.as_u16() }))
}

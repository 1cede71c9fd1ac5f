//! The recording upstream works: over HTTPS with the test CA on HTTP/1.1 and HTTP/2, from
//! async and plain tests, with curl, and each route does what its docs say.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation is a failed test"
)]

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use sequester_testkit::upstream::{BODY_LIMIT, CHAT_REPLY, MODELS, pattern};
use sequester_testkit::{TestCa, Upstream};
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

const CANARY: &str = "sk-canary/7f3e+Q9z=tail";

/// One client connection to an upstream, over TLS with the given ALPN or plain HTTP/1.1.
enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// A response with its body split into the data frames as they arrived.
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    frames: Vec<Bytes>,
}

impl Got {
    fn body(&self) -> Vec<u8> {
        self.frames.concat()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body())))
    }
}

impl Conn {
    /// A TLS connection trusting `ca` and offering `alpn`; asserts the protocol negotiated.
    async fn tls(ca: &TestCa, up: &Upstream, alpn: &[u8]) -> Self {
        let tcp = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(ca.client_config_alpn(&[alpn]));
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        if alpn == b"h2" {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            Self::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            Self::H1(sender)
        }
    }

    async fn plain(up: &Upstream) -> Self {
        let tcp = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        Self::H1(sender)
    }

    /// Sends a request; returns the response with its body still to read.
    async fn start(
        &mut self,
        up: &Upstream,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response<Incoming> {
        let mut builder = Request::builder().method(method);
        builder = match self {
            // HTTP/2 takes :scheme and :authority from an absolute URI.
            Self::H2(_) => builder.uri(up.url(path)),
            Self::H1(_) => builder.uri(path).header("host", up.addr().to_string()),
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Full::new(body.into())).unwrap();
        match self {
            Self::H1(s) => s.send_request(req).await.unwrap(),
            Self::H2(s) => s.send_request(req).await.unwrap(),
        }
    }

    /// Sends a request and reads the whole response.
    async fn send(
        &mut self,
        up: &Upstream,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Got {
        let resp = self.start(up, method, path, headers, body).await;
        read(resp).await
    }

    async fn get(&mut self, up: &Upstream, path: &str) -> Got {
        self.send(up, Method::GET, path, &[], Bytes::new()).await
    }
}

async fn read(resp: Response<Incoming>) -> Got {
    let (parts, mut body) = resp.into_parts();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        // HTTP/2 ends a stream whose length was unknown with an empty DATA frame.
        if let Ok(data) = frame.unwrap().into_data()
            && !data.is_empty()
        {
            frames.push(data);
        }
    }
    Got {
        status: parts.status,
        headers: parts.headers,
        frames,
    }
}

#[tokio::test]
async fn https_http1_records_method_path_headers_and_body() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    assert!(up.base_url().starts_with("https://127.0.0.1:"));
    let mut conn = Conn::tls(&ca, &up, b"http/1.1").await;
    let got = conn
        .send(
            &up,
            Method::POST,
            "/echo/a/b?x=1&y=two",
            &[
                ("X-Mixed-Case", "One"),
                ("x-dup", "first"),
                ("x-dup", "second"),
            ],
            "hello body",
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let echoed = got.json();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/echo/a/b?x=1&y=two");
    assert_eq!(echoed["headers"]["x-mixed-case"], "One");
    assert_eq!(echoed["headers"]["x-dup"], "first, second");
    assert_eq!(echoed["body_len"], 10);

    let requests = up.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/echo/a/b?x=1&y=two");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.body, b"hello body");
    assert_eq!(r.body_len, 10);
    assert_eq!(r.header_str("x-mixed-case"), Some("One"));
    assert_eq!(r.header_all("x-dup"), vec![&b"first"[..], &b"second"[..]]);
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("host") < pos("x-mixed-case") && pos("x-mixed-case") < pos("x-dup"));
    assert_eq!(up.request_count(), 1);
    assert_eq!(up.last_request().as_ref(), Some(r));

    up.clear();
    assert_eq!(up.request_count(), 0);
    conn.get(&up, "/echo").await;
    assert_eq!(up.requests()[0].path, "/echo");
}

#[tokio::test]
async fn https_http2_by_alpn() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let mut conn = Conn::tls(&ca, &up, b"h2").await;
    let got = conn
        .send(
            &up,
            Method::PUT,
            "/echo/h2?q=1",
            &[("authorization", "Bearer abc")],
            "xyz",
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["path"], "/echo/h2?q=1");
    // Several streams on the one connection.
    let (a, b) = tokio::join!(
        read_on_fresh_stream(&conn, &up, "/echo/1"),
        read_on_fresh_stream(&conn, &up, "/echo/2")
    );
    assert_eq!((a, b), (StatusCode::OK, StatusCode::OK));

    let requests = up.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.version == "HTTP/2.0"));
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].header_str("authorization"), Some("Bearer abc"));
    assert_eq!(requests[0].body, b"xyz");
    assert!(requests[0].header(":authority").is_none());
}

async fn read_on_fresh_stream(conn: &Conn, up: &Upstream, path: &str) -> StatusCode {
    let Conn::H2(sender) = conn else {
        panic!("not HTTP/2")
    };
    let mut conn = Conn::H2(sender.clone());
    conn.get(up, path).await.status
}

#[tokio::test]
async fn another_ca_is_not_trusted() {
    let ca = TestCa::new();
    let other = TestCa::new();
    assert_ne!(ca.cert_pem(), other.cert_pem());
    let up = Upstream::start(&ca);
    let tcp = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(other.client_config());
    let err = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    // A name the leaf does not carry is refused too.
    let tcp = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    let err = connector
        .connect(ServerName::try_from("example.test").unwrap(), tcp)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // "localhost" is on the leaf.
    let tcp = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
}

#[tokio::test]
async fn sink_counts_everything_and_keeps_the_first_mib() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let total = 3 * BODY_LIMIT + 5;
    let body: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    for alpn in [&b"http/1.1"[..], b"h2"] {
        up.clear();
        let mut conn = Conn::tls(&ca, &up, alpn).await;
        let got = conn
            .send(&up, Method::POST, "/sink", &[], body.clone())
            .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.json(), serde_json::json!({ "received": total }));
        let r = up.last_request().unwrap();
        assert_eq!(r.body_len, total);
        assert_eq!(r.body.len(), BODY_LIMIT);
        assert_eq!(r.body, body[..BODY_LIMIT]);
    }
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        up.clear();
        let mut conn = Conn::tls(&ca, &up, alpn).await;
        let resp = conn
            .start(
                &up,
                Method::GET,
                "/sse?events=4&delay_ms=150",
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let mut received = Vec::new();
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data()
                && !data.is_empty()
            {
                received.push(Instant::now());
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        assert_eq!(
            text,
            "data: event-0\n\ndata: event-1\n\ndata: event-2\n\ndata: event-3\n\n"
        );
        assert_eq!(
            received.len(),
            4,
            "one frame per event: {alpn:?} {text:?} {received:?}"
        );
        let sent = up.sse_sent_at(0);
        assert_eq!(sent.len(), 4);
        assert!(
            sent.windows(2)
                .all(|w| w[1] - w[0] >= Duration::from_millis(150))
        );
        // The first event reached the client before the last one was even sent.
        assert!(received[0] < sent[3]);
        assert!(up.sse_sent_at(1).is_empty());
    }
}

#[tokio::test]
async fn bytes_streams_exactly_n() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut conn = Conn::tls(&ca, &up, alpn).await;
        let n = 1_000_003usize;
        let got = conn.get(&up, &format!("/bytes?n={n}&chunk=65536")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.headers["content-length"], n.to_string().as_str());
        let body = got.body();
        assert_eq!(body.len(), n);
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i as u64))
        );
        assert!(got.frames.len() > 1);
        let empty = conn.get(&up, "/bytes?n=0").await;
        assert_eq!(empty.status, StatusCode::OK);
        assert!(empty.body().is_empty());
        let odd = conn.get(&up, "/bytes?n=100&chunk=7").await;
        assert_eq!(odd.body(), (0..100).map(pattern).collect::<Vec<u8>>());
    }
}

fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                char::from(c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn leak_echoes_the_credential_in_every_form() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let bearer = format!("Bearer {CANARY}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("user:{CANARY}"))
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut conn = Conn::tls(&ca, &up, alpn).await;
        for auth in [
            ("authorization", bearer.as_str()),
            ("authorization", &basic),
            ("x-api-key", CANARY),
        ] {
            let leak = async |conn: &mut Conn, form: &str| {
                conn.send(
                    &up,
                    Method::GET,
                    &format!("/leak?form={form}"),
                    &[auth],
                    Bytes::new(),
                )
                .await
            };
            let got = leak(&mut conn, "header").await;
            assert_eq!(got.headers["x-leaked"], CANARY);
            let got = leak(&mut conn, "json").await;
            assert_eq!(got.json(), serde_json::json!({ "key": CANARY }));
            let got = leak(&mut conn, "base64").await;
            assert_eq!(got.json(), serde_json::json!({ "b64": b64 }));
            let got = leak(&mut conn, "url").await;
            assert_eq!(got.json(), serde_json::json!({ "u": url_encoded(CANARY) }));
            assert_ne!(url_encoded(CANARY), CANARY);

            let got = leak(&mut conn, "split").await;
            assert_eq!(got.json(), serde_json::json!({ "split": CANARY }));
            assert_eq!(
                got.frames.len(),
                2,
                "two separate frames: {alpn:?} {:?}",
                got.frames
            );
            let canary = CANARY.as_bytes();
            for frame in &got.frames {
                assert!(!frame.windows(canary.len()).any(|w| w == canary));
            }
            assert!(got.frames[0].ends_with(&canary[..canary.len() / 2]));

            let got = leak(&mut conn, "all").await;
            assert_eq!(got.headers["x-leaked"], CANARY);
            assert_eq!(
                got.json(),
                serde_json::json!({ "key": CANARY, "b64": b64, "u": url_encoded(CANARY), "split": CANARY })
            );
            assert_eq!(got.frames.len(), 2);
            assert!(got.frames[1].starts_with(&canary[canary.len() / 2..]));
        }
        let none = conn.get(&up, "/leak?form=json").await;
        assert_eq!(none.status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn status_slow_models_and_not_found() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let mut conn = Conn::tls(&ca, &up, b"h2").await;

    let got = conn.get(&up, "/status/418").await;
    assert_eq!(got.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(got.json(), serde_json::json!({ "status": 418 }));
    let got = conn.get(&up, "/status/503").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    let got = conn.get(&up, "/status/204").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert!(got.body().is_empty());
    assert_eq!(
        conn.get(&up, "/status/99").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        conn.get(&up, "/status/abc").await.status,
        StatusCode::BAD_REQUEST
    );

    let started = Instant::now();
    let got = conn.get(&up, "/slow?ms=200").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(got.json(), serde_json::json!({ "slept_ms": 200 }));

    let got = conn.get(&up, "/v1/models").await;
    let list = got.json();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, MODELS);

    let got = conn.get(&up, "/nope?x=1").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.json()["path"], "/nope?x=1");
    assert_eq!(conn.get(&up, "/sink").await.status, StatusCode::NOT_FOUND);
    assert_eq!(up.request_count(), 9);
}

#[tokio::test]
async fn chat_completions_plain_and_streamed() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let mut conn = Conn::tls(&ca, &up, b"http/1.1").await;
    let request = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "say hello please" }],
    });
    let got = conn
        .send(
            &up,
            Method::POST,
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            request.to_string(),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let c = got.json();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "gpt-4o-mini");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(c["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(c["choices"][0]["index"], 0);
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["message"]["content"], CHAT_REPLY);
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["prompt_tokens"], 3);
    assert_eq!(
        c["usage"]["total_tokens"].as_u64(),
        Some(
            c["usage"]["prompt_tokens"].as_u64().unwrap()
                + c["usage"]["completion_tokens"].as_u64().unwrap()
        )
    );

    let mut streamed = request.clone();
    streamed["stream"] = true.into();
    streamed["stream_options"] = serde_json::json!({ "include_usage": true });
    let got = conn
        .send(
            &up,
            Method::POST,
            "/v1/chat/completions?delay_ms=10",
            &[],
            streamed.to_string(),
        )
        .await;
    assert_eq!(got.headers["content-type"], "text/event-stream");
    let text = String::from_utf8(got.body()).unwrap();
    let events: Vec<&str> = text
        .split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, CHAT_REPLY);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage_chunk = &chunks[chunks.len() - 1];
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 3);
    assert_eq!(got.frames.len(), events.len(), "one frame per event");
    assert_eq!(up.sse_sent_at(1).len(), events.len());

    let got = conn
        .send(&up, Method::POST, "/v1/chat/completions", &[], "{not json")
        .await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert_eq!(got.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn plain_http_upstream() {
    let up = Upstream::start_plain();
    assert!(up.base_url().starts_with("http://127.0.0.1:"));
    let mut conn = Conn::plain(&up).await;
    let got = conn
        .send(&up, Method::POST, "/echo/plain", &[("x-a", "b")], "12345")
        .await;
    assert_eq!(got.json()["body_len"], 5);
    let r = up.last_request().unwrap();
    assert_eq!(
        (r.version.as_str(), r.path.as_str()),
        ("HTTP/1.1", "/echo/plain")
    );
}

/// From a plain `#[test]`, no runtime anywhere: a raw HTTP/1.1 exchange over std sockets.
#[test]
fn plain_http_from_a_sync_test() {
    let up = Upstream::start_plain();
    let mut tcp = std::net::TcpStream::connect(up.addr()).unwrap();
    tcp.write_all(b"GET /status/201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201 Created\r\n"),
        "{response}"
    );
    assert!(response.ends_with("{\"status\":201}"), "{response}");
    assert_eq!(up.requests()[0].path, "/status/201");
}

fn curl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn curl_with_cacert_over_http1_and_http2() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let dir = tempfile::tempdir().unwrap();
    let pem = ca.write_pem(dir.path());
    assert_eq!(pem, dir.path().join("test-ca.pem"));
    assert_eq!(std::fs::read_to_string(&pem).unwrap(), ca.cert_pem());
    let pem = pem.to_str().unwrap();

    let url = up.url("/echo/curl?n=1");
    let out = curl(&[
        "--cacert",
        pem,
        "--http1.1",
        "-H",
        "x-from: curl",
        "-d",
        "abc",
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["headers"]["x-from"], "curl");

    let out = curl(&[
        "--cacert",
        pem,
        "--http2",
        &up.url("/bytes?n=70000&chunk=1000"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 70_000);

    let localhost = format!("https://localhost:{}/echo/by-name", up.addr().port());
    let out = curl(&["--cacert", pem, &localhost]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let requests = up.requests();
    let versions: Vec<&str> = requests.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["HTTP/1.1", "HTTP/2.0", "HTTP/2.0"]);
    assert_eq!(requests[0].body, b"abc");
    assert_eq!(requests[0].header_str("x-from"), Some("curl"));

    // Without the test CA, curl refuses the certificate (exit 60).
    let out = curl(&[&url]);
    assert_eq!(
        out.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(up.request_count(), 3);
}

#[tokio::test]
async fn drop_stops_the_server_and_closes_connections() {
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let addr = up.addr();
    let mut conn = Conn::tls(&ca, &up, b"http/1.1").await;
    let resp = conn
        .start(
            &up,
            Method::GET,
            "/sse?events=1000&delay_ms=50",
            &[],
            Bytes::new(),
        )
        .await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "data: event-0\n\n");

    let started = Instant::now();
    drop(up);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );

    // The stream ends early (closed mid-body) rather than running on.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open after drop");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The official `openai` Python SDK (v1.x) parses the chat completions, plain and streamed,
/// and the model list, over HTTPS verified strictly against the test CA.
const OPENAI_SCRIPT: &str = r#"
import ssl, sys, httpx, openai
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
for http2 in (False, True):
    client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test",
                           http_client=httpx.Client(verify=ctx, http2=http2) if http2 else httpx.Client(verify=ctx))
    c = client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert c.choices[0].message.content == "Hello from the test upstream", c
    assert c.choices[0].finish_reason == "stop" and c.usage.total_tokens > 0, c
    parts = []
    for chunk in client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert "".join(parts) == "Hello from the test upstream", parts
    with client.beta.chat.completions.stream(model="test-model", messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "Hello from the test upstream", final
    assert [m.id for m in client.models.list()] == ["test-model", "gpt-4o-mini"]
print("ok")
"#;

#[test]
#[ignore = "needs the openai Python SDK v1.x: set SEQUESTER_OPENAI_PYTHON to a python that has it"]
fn openai_python_sdk_parses_the_responses() {
    let python = std::env::var("SEQUESTER_OPENAI_PYTHON").unwrap_or_else(|_| "python3".into());
    let ca = TestCa::new();
    let up = Upstream::start(&ca);
    let dir = tempfile::tempdir().unwrap();
    let pem = ca.write_pem(dir.path());
    let out = std::process::Command::new(python)
        .args(["-c", OPENAI_SCRIPT, &up.base_url()])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(up.requests().iter().any(|r| r.version == "HTTP/2.0"));
}

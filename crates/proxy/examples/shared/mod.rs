//! What the two floor examples (`hyper_floor`, `mitm_floor`) share: the allocator, the
//! runtime, and the last step of forwarding a request with a fixed Authorization value.

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

/// Tokio's multi-thread runtime with one worker per core, as `sequester serve` runs.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, usize::from))
        .enable_all()
        .build()
}

/// Sends the request of `parts` (its URI already pointing upstream) and `body` with
/// `authorization` as its Authorization field, without the client's Host and hop-by-hop
/// fields (those stay on this hop, RFC 9110, 7.6.1: a client's `Connection: close` would
/// otherwise close the pooled upstream connection too); 502 if the upstream fails.
pub async fn send<C>(
    client: &Client<C, Incoming>,
    mut parts: http::request::Parts,
    body: Incoming,
    authorization: &http::HeaderValue,
) -> Response<Body>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    parts
        .headers
        .insert(http::header::AUTHORIZATION, authorization.clone());
    for name in [
        http::header::HOST,
        http::header::CONNECTION,
        http::header::PROXY_AUTHORIZATION,
        http::header::TE,
        http::header::TRAILER,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    parts.headers.remove("proxy-connection");
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(http_body_util::BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

/// An empty response with `code`.
pub fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}

/// Listens on `addr`, prints `listening on ADDR` once it does (the benchmark scripts wait for
/// that line), and runs `on_connection` as a task of its own for every connection accepted.
pub async fn accept_loop<F, Fut>(addr: &str, on_connection: F) -> std::io::Result<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(on_connection(stream));
    }
}

//! The floor under the gateway's cost: a reverse proxy built from the same parts as Sequester's
//! gateway (tokio's multi-thread runtime with one worker per core, hyper-util's server and
//! pooled client, mimalloc) that does nothing else — no token lookup, no policy, no receipts,
//! no scrubbing, no metrics. `/{service}/rest` goes to the upstream's `/rest` with the
//! Authorization header replaced by a fixed value. The gateway benchmark runs it beside
//! Sequester and nginx, so that what the libraries cost and what Sequester's own work costs
//! can be told apart.
//!
//! ```text
//! BENCH_VALUE='Bearer …' hyper_floor 127.0.0.1:0 http://127.0.0.1:8080
//! ```
//!
//! The header value comes from the environment (never from the command line); the address it
//! listens on is printed as `listening on ADDR`.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;

mod shared;

use shared::{Body, status};

struct Floor {
    client: Client<HttpConnector, Incoming>,
    upstream: http::uri::Authority,
    authorization: http::HeaderValue,
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: BENCH_VALUE=HEADER hyper_floor LISTEN_ADDR http://UPSTREAM_HOST:PORT");
        return std::process::ExitCode::from(2);
    };
    let authorization = match std::env::var("BENCH_VALUE")
        .ok()
        .and_then(|v| http::HeaderValue::from_str(&v).ok())
    {
        Some(mut v) => {
            v.set_sensitive(true);
            v
        }
        None => {
            eprintln!("hyper_floor: set BENCH_VALUE to the Authorization header to send");
            return std::process::ExitCode::from(2);
        }
    };
    let upstream = match upstream
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme_str() == Some("http"))
        .and_then(|u| u.authority().cloned())
    {
        Some(a) => a,
        None => {
            eprintln!("hyper_floor: the upstream must be an http:// URL with a host");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match shared::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper_floor: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let floor = Arc::new(Floor {
        client: Client::builder(TokioExecutor::new()).build(connector),
        upstream,
        authorization,
    });
    match runtime.block_on(serve(&listen, floor)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_floor: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn serve(listen: &str, floor: Arc<Floor>) -> std::io::Result<()> {
    shared::accept_loop(listen, |stream| {
        let floor = Arc::clone(&floor);
        async move {
            let service = hyper::service::service_fn(move |req| {
                let floor = Arc::clone(&floor);
                async move { Ok::<_, Infallible>(forward(&floor, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

async fn forward(floor: &Floor, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    // `/{service}/rest` → `/rest`.
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let rest = path_and_query
        .strip_prefix('/')
        .and_then(|p| p.find('/').map(|i| &p[i..]))
        .unwrap_or("/");
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(floor.upstream.clone())
        .path_and_query(rest)
        .build();
    let Ok(uri) = uri else {
        return status(StatusCode::BAD_REQUEST);
    };
    parts.uri = uri;
    shared::send(&floor.client, parts, body, &floor.authorization).await
}

//! The floor under the forward proxy's cost: an intercepting HTTPS proxy built from the same
//! parts as Sequester's (tokio's multi-thread runtime with one worker per core, hyper's
//! server and its CONNECT upgrade, rustls with ring terminating the client's TLS with a leaf
//! from Sequester's own interception CA code, hyper-util's auto server choosing HTTP/2 or
//! HTTP/1.1 by ALPN, a pooled hyper-rustls client toward the upstream, mimalloc) that does
//! nothing else — no proxy authentication, no egress policy or DNS check, no substitution
//! (the Authorization header is replaced by a fixed value), no receipts, no scrubbing, no
//! metrics, no framing guard. The proxy benchmark runs it beside Sequester, mitmproxy and the
//! upstream reached directly, so that what the libraries cost and what Sequester's own work
//! costs can be told apart.
//!
//! ```text
//! BENCH_VALUE='Bearer …' mitm_floor 127.0.0.1:0 CA_OUT.pem UPSTREAM_CA.pem
//! ```
//!
//! It mints a throwaway interception CA at start and writes its certificate to `CA_OUT.pem`
//! (for the client to trust); the upstream's certificate must verify against
//! `UPSTREAM_CA.pem`. The header value comes from the environment (never from the command
//! line); the address it listens on is printed as `listening on ADDR`.

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sequester_proxy::intercept_ca::{InterceptCa, LeafCache, SniResolver, server_config};
use std::convert::Infallible;
use std::sync::Arc;

mod shared;

use shared::{Body, status};

struct Floor {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    tls: tokio_rustls::TlsAcceptor,
    authorization: http::HeaderValue,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mitm_floor: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(ca_out), Some(upstream_ca)) = (args.next(), args.next(), args.next())
    else {
        return Err(
            "usage: BENCH_VALUE=HEADER mitm_floor LISTEN_ADDR CA_OUT.pem UPSTREAM_CA.pem".into(),
        );
    };
    let mut authorization = std::env::var("BENCH_VALUE")
        .ok()
        .and_then(|v| http::HeaderValue::from_str(&v).ok())
        .ok_or("set BENCH_VALUE to the Authorization header to send")?;
    authorization.set_sensitive(true);

    // The client side: Sequester's interception CA code, one cached leaf per server name.
    let ca = InterceptCa::generate("mitm floor CA").map_err(|e| e.to_string())?;
    std::fs::write(&ca_out, ca.cert_pem()).map_err(|e| format!("{ca_out}: {e}"))?;
    let resolver = SniResolver::new(Arc::new(LeafCache::new(Arc::new(ca))));
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(resolver).map_err(|e| e.to_string())?,
    ));

    // The upstream side: verified TLS (the given CA only), HTTP/2 or HTTP/1.1 by ALPN, pooled.
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&upstream_ca).map_err(|e| format!("{upstream_ca}: {e}"))?
    {
        roots
            .add(cert.map_err(|e| format!("{upstream_ca}: {e}"))?)
            .map_err(|e| format!("{upstream_ca}: {e}"))?;
    }
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls)
        .https_only()
        .enable_all_versions()
        .wrap_connector(http);

    let runtime = shared::runtime().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let floor = Arc::new(Floor {
        client: Client::builder(TokioExecutor::new()).build(https),
        tls,
        authorization,
    });
    runtime
        .block_on(serve(&listen, floor))
        .map_err(|e| e.to_string())
}

async fn serve(listen: &str, floor: Arc<Floor>) -> std::io::Result<()> {
    shared::accept_loop(listen, |stream| {
        let floor = Arc::clone(&floor);
        async move {
            let service = hyper::service::service_fn(move |req| {
                let floor = Arc::clone(&floor);
                async move { Ok::<_, Infallible>(connect(floor, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        }
    })
    .await
}

/// Answers a CONNECT with 200 and serves the tunnel: TLS with a leaf for the requested name,
/// then each request forwarded to `https://{CONNECT host}{path}`.
fn connect(floor: Arc<Floor>, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req
        .uri()
        .authority()
        .cloned()
        .filter(|_| req.method() == Method::CONNECT)
    else {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let Ok(tls) = floor.tls.accept(TokioIo::new(upgraded)).await else {
            return;
        };
        let service = hyper::service::service_fn(move |req| {
            let floor = Arc::clone(&floor);
            let authority = authority.clone();
            async move { Ok::<_, Infallible>(forward(&floor, authority, req).await) }
        });
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await;
    });
    status(StatusCode::OK)
}

async fn forward(
    floor: &Floor,
    authority: http::uri::Authority,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = http::Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
    else {
        return status(StatusCode::BAD_REQUEST);
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    shared::send(&floor.client, parts, body, &floor.authorization).await
}

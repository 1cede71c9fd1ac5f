//! Sequester's data plane.
//!
//! The reverse gateway: an agent's SDK points its `base_url` at `http://broker/{service}/…`
//! and uses an opaque token as its API key. For each request, in this order: route by the
//! first path segment → identify the token (wherever the SDK put it) → `decide` against the
//! in-memory snapshot → make the intent receipt durable → inject the real value by the
//! secret's injection rule → forward over pooled TLS → stream the response back, scrubbing the
//! value out of it → write the completion receipt. Also `/healthz`, `/readyz`, `/metrics`.
//!
//! Invariants:
//! - A token is never forwarded; a value is only ever sent to its secret's allowed hosts.
//! - No value is injected before its intent receipt is durable (fail closed:
//!   `audit_unavailable`).
//! - Nothing here logs or returns a value or a token; logs carry token ids.
//! - Error bodies are JSON with a stable code; statuses are chosen only in `respond`.
//! - No panics reachable from the network.

mod agent_api;
mod body;
pub mod config;
pub mod egress;
mod forward;
mod framing;
mod gateway;
mod identify;
mod inject;
pub mod intercept_ca;
mod live;
pub mod log_redact;
mod metrics;
mod respond;
mod route;
mod scrub;
pub mod services;
mod substitute;
mod upstream;

pub use config::{Config, ConfigError};

use body::ProxyBody;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use live::LiveSnapshot;
use metrics::Metrics;
use sequester_audit::AuditWriter;
use sequester_model::ErrorCode;
use sequester_store::Store;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Largest request header block accepted (bytes); larger ones get 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Shared state of a running data plane.
pub struct DataPlane {
    store: Arc<dyn Store>,
    live: Arc<LiveSnapshot>,
    config: Arc<Config>,
    audit: AuditWriter,
    client: upstream::UpstreamClient,
    metrics: Arc<Metrics>,
    detector: Arc<sequester_detect::Detector>,
    intercept: Option<Arc<intercept_ca::LeafCache>>,
    guard: egress::EgressGuard,
    tls_client: rustls::ClientConfig,
    /// Upstream clients (connection pools) of the forward proxy, per checked destination.
    tunnel_clients: forward::ClientPool,
}

/// The data plane's background tasks; stop them with [`Background::shutdown`].
pub struct Background {
    reloader: tokio::task::JoinHandle<()>,
    audit: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Stops reloading and waits for queued receipts to be written. Call after [`serve`]
    /// returns and the data plane is dropped.
    pub async fn shutdown(self) {
        self.reloader.abort();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.audit)
            .await
            .is_err()
        {
            tracing::error!("receipts still queued at shutdown were not all written");
        }
    }
}

impl DataPlane {
    /// Builds the data plane: loads the first snapshot, starts the snapshot reloader and the
    /// audit writer (on `audit_store`, a connection of its own).
    pub async fn start(
        store: Arc<dyn Store>,
        audit_store: Arc<dyn Store>,
        config: Config,
        detector: Arc<sequester_detect::Detector>,
        log_redactor: Arc<log_redact::LogRedactor>,
        intercept_ca: Option<intercept_ca::InterceptCa>,
    ) -> Result<(Arc<Self>, Background), ConfigError> {
        let client = upstream::build(config.upstream_ca.as_deref(), &config.timeouts)?;
        let tls_client = upstream::tls_config(config.upstream_ca.as_deref())?;
        let metrics = Arc::new(Metrics::default());
        let live = Arc::new(LiveSnapshot::new(
            sequester_policy::Snapshot::empty(),
            Arc::clone(&log_redactor),
        ));
        live.reload(store.as_ref(), &metrics).await;
        let reloader =
            live::spawn_reloader(Arc::clone(&store), Arc::clone(&live), Arc::clone(&metrics));
        let (audit, audit_task) = AuditWriter::start(audit_store);
        let plane = Arc::new(Self {
            store,
            live,
            config: Arc::new(config),
            audit,
            client,
            metrics,
            detector,
            intercept: intercept_ca.map(|ca| Arc::new(intercept_ca::LeafCache::new(Arc::new(ca)))),
            guard: egress::EgressGuard::system(),
            tls_client,
            tunnel_clients: forward::ClientPool::default(),
        });
        Ok((
            plane,
            Background {
                reloader,
                audit: audit_task,
            },
        ))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                respond::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            (&Method::GET | &Method::HEAD, "/readyz") => {
                let snapshot_loaded = self.live.load().counter() >= 0;
                match self.store.change_counter().await {
                    Ok(_) if snapshot_loaded => {
                        respond::json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
                    }
                    Ok(_) => respond::error(
                        ErrorCode::StorageUnavailable,
                        "the policy snapshot is not loaded",
                        &gateway::request_id(),
                    ),
                    Err(e) => {
                        tracing::warn!(code = %e.code(), error = %e, "store not ready");
                        respond::error(
                            ErrorCode::StorageUnavailable,
                            "the store does not answer",
                            &gateway::request_id(),
                        )
                    }
                }
            }
            (&Method::POST, "/v1/sanitize") => self.sanitize(req).await,
            (_, "/v1/sanitize") => respond::error(
                ErrorCode::InvalidRequest,
                "use POST /v1/sanitize with {\"text\": \"…\"}",
                &gateway::request_id(),
            ),
            (&Method::GET, "/metrics") => {
                let snapshot = self.live.load();
                let text =
                    self.metrics
                        .render(self.live.age(), snapshot.counter(), &self.audit.stats());
                let mut r = Response::new(body::full(text));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            _ => self.gateway(req).await,
        }
    }
}

/// Serves the gateway from `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    plane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEADER_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    accept_loop(
        listener,
        builder,
        plane,
        |p, req| async move { p.handle(req).await },
        shutdown,
    )
    .await
}

/// Serves the forward proxy (HTTP/1.1 with CONNECT) from `listener` until `shutdown`.
pub async fn serve_proxy(
    listener: TcpListener,
    plane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().max_buf_size(MAX_HEADER_BYTES);
    accept_loop(listener, builder, plane, DataPlane::proxy, shutdown).await
}

/// Accepts connections and serves each with `handler` (behind the framing guard) until
/// `shutdown`, then lets in-flight requests finish for up to [`SHUTDOWN_GRACE`].
async fn accept_loop<H, Fut>(
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    plane: Arc<DataPlane>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    H: Fn(Arc<DataPlane>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let plane = Arc::clone(&plane);
                let handler = handler.clone();
                let service = service_fn(move |req| {
                    let fut = handler(Arc::clone(&plane), req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(framing::FramingGuard::new(stream)), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("in-flight requests did not finish within the shutdown grace period");
        }
    }
    Ok(())
}

//! Sequester's data plane.
//!
//! Today it serves the operational endpoints of a running broker: `/healthz` (the process is
//! up) and `/readyz` (the store answers). The reverse gateway and the forward proxy grow here,
//! layered as listener → routing → injection → upstream.
//!
//! Invariants: nothing in this crate logs or returns a secret value or a token; every error
//! response is JSON `{"error":{"code":…,"message":…}}` with a stable code, and the status code
//! is chosen in one place ([`respond`]).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sequester_store::Store;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Shared state of a running data plane.
pub struct DataPlane {
    store: Arc<dyn Store>,
}

impl DataPlane {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                respond(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            (&Method::GET | &Method::HEAD, "/readyz") => match self.store.change_counter().await {
                Ok(_) => respond(StatusCode::OK, &serde_json::json!({"status": "ready"})),
                Err(e) => {
                    tracing::warn!(code = %e.code(), error = %e, "store not ready");
                    error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        e.code().as_str(),
                        "the store does not answer",
                    )
                }
            },
            _ => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint on this broker",
            ),
        }
    }
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// Serves connections from `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    plane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let plane = Arc::clone(&plane);
                let service = service_fn(move |req| {
                    let plane = Arc::clone(&plane);
                    async move { Ok::<_, Infallible>(plane.handle(req).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
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

//! The upstream client: hyper with rustls (ring), pooled keep-alive, HTTP/2 or HTTP/1.1 by
//! ALPN, the webpki roots plus an optional extra CA file.

use crate::body::ProxyBody;
use crate::config::{ConfigError, Timeouts};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// The root store: webpki's roots plus every certificate in `extra_ca`.
fn roots(extra_ca: Option<&Path>) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let err = |message: String| ConfigError::UpstreamCa {
            path: path.to_owned(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// The TLS client configuration for upstreams: ring, safe defaults, webpki roots plus the
/// extra CA file.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::UpstreamCa {
            path: extra_ca.map(Path::to_owned).unwrap_or_default(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots(extra_ca)?)
        .with_no_client_auth())
}

pub fn build(extra_ca: Option<&Path>, timeouts: &Timeouts) -> Result<UpstreamClient, ConfigError> {
    let tls = tls_config(extra_ca)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeouts.connect()));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(client_builder().build(https))
}

/// The pool settings every upstream client shares: idle keep-alive connections are kept for
/// 90 s (reaped by a timer), at most 256 per destination.
pub fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .pool_timer(hyper_util::rt::TokioTimer::new());
    builder
}

//! The egress guard with real sockets on loopback: DNS rebinding cannot move a checked
//! connection, and TLS through the checked connector is verified against the real host name.
//!
//! Every socket here is on 127.0.0.1 or 127.0.0.2; the "forbidden" rebinding target is
//! 127.0.0.2 (loopback, refused without a rule), so a failing test still sends nothing off
//! this machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sequester_model::{ErrorCode, HostPattern};
use sequester_proxy::egress::{
    Action, CheckedConnector, EgressGuard, EgressPolicy, LayeredPolicy, ResolveFuture, Resolver,
};
use sequester_proxy::intercept_ca::{DEFAULT_LEAF_LIFETIME, InterceptCa};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;
use tokio::net::TcpListener;
use tower_service::Service as _;

/// Answers `first` on the first call and `then` on every later call (TTL 0 rebinding).
struct Rebinding {
    first: IpAddr,
    then: IpAddr,
    calls: AtomicUsize,
}

impl Rebinding {
    fn new(first: IpAddr, then: IpAddr) -> Arc<Self> {
        Arc::new(Self {
            first,
            then,
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Resolver for Rebinding {
    fn resolve<'a>(&'a self, _host: &'a str, port: u16) -> ResolveFuture<'a> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let ip = if n == 0 { self.first } else { self.then };
        Box::pin(async move { Ok(vec![SocketAddr::new(ip, port)]) })
    }
}

fn pattern(s: &str) -> HostPattern {
    HostPattern::parse(s).unwrap()
}

const GOOD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const EVIL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A listener on 127.0.0.1 and a non-blocking one on 127.0.0.2, same port.
fn listener_pair() -> (TcpListener, std::net::TcpListener, u16) {
    for _ in 0..20 {
        let good = std::net::TcpListener::bind((GOOD, 0)).unwrap();
        let port = good.local_addr().unwrap().port();
        if let Ok(evil) = std::net::TcpListener::bind((EVIL, port)) {
            good.set_nonblocking(true).unwrap();
            evil.set_nonblocking(true).unwrap();
            return (TcpListener::from_std(good).unwrap(), evil, port);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Whether anything connected to `listener` (non-blocking: a completed TCP connect is already
/// in the accept queue, so no waiting is needed).
fn has_connection(listener: &std::net::TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept failed: {e}"),
    }
}

#[tokio::test]
async fn rebinding_cannot_move_a_checked_connection() {
    let (good, evil, port) = listener_pair();
    let resolver = Rebinding::new(GOOD, EVIL);
    let guard = EgressGuard::new(resolver.clone());
    // 127.0.0.1 stands in for a public answer: a rule names it. 127.0.0.2 has no rule.
    let policy = LayeredPolicy::tenant(EgressPolicy::new(
        Action::Allow,
        vec![pattern("127.0.0.1")],
        Vec::new(),
    ));

    let dest = guard.check(&policy, "api.rebind.test", port).await.unwrap();
    assert_eq!(dest.addrs(), [SocketAddr::new(GOOD, port)]);
    assert_eq!(resolver.calls(), 1);

    // The resolver now answers 127.0.0.2. Every new connection still goes to the checked one.
    let mut connector = CheckedConnector::new(dest);
    let uri: http::Uri = format!("https://api.rebind.test:{port}/").parse().unwrap();
    for _ in 0..3 {
        let io = connector.call(uri.clone()).await.unwrap();
        assert_eq!(io.inner().peer_addr().unwrap(), SocketAddr::new(GOOD, port));
        let (_, from) = good.accept().await.unwrap();
        assert_eq!(from, io.inner().local_addr().unwrap());
        assert!(!has_connection(&evil), "a connection reached 127.0.0.2");
    }
    assert_eq!(resolver.calls(), 1, "the connector resolved again");

    // A fresh check sees the rebound answer and refuses it, with what to do.
    let err = guard
        .check(&policy, "api.rebind.test", port)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DestinationForbidden);
    assert!(
        err.to_string()
            .contains("`sequester egress allow 127.0.0.2`"),
        "{err}"
    );
    assert_eq!(resolver.calls(), 2);
    assert!(!has_connection(&evil));
}

#[tokio::test]
async fn connector_falls_back_only_among_checked_addresses() {
    // The first checked address refuses connections; the second accepts. The forbidden one
    // is never tried.
    let (good, evil, port) = listener_pair();
    drop(good); // 127.0.0.1:port now refuses
    let second = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), port))
        .await
        .unwrap();
    struct Two(u16);
    impl Resolver for Two {
        fn resolve<'a>(&'a self, _: &'a str, _: u16) -> ResolveFuture<'a> {
            let port = self.0;
            Box::pin(async move {
                Ok(vec![
                    SocketAddr::new(GOOD, port),
                    SocketAddr::from(([127, 0, 0, 3], port)),
                ])
            })
        }
    }
    let guard = EgressGuard::new(Arc::new(Two(port)));
    let policy = LayeredPolicy::tenant(EgressPolicy::new(
        Action::Deny,
        vec![pattern("two.rebind.test")],
        Vec::new(),
    ));
    let dest = guard.check(&policy, "two.rebind.test", port).await.unwrap();
    let mut connector = CheckedConnector::new(dest);
    let io = connector
        .call(format!("https://two.rebind.test:{port}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        io.inner().peer_addr().unwrap(),
        SocketAddr::from(([127, 0, 0, 3], port))
    );
    second.accept().await.unwrap();
    assert!(!has_connection(&evil));
}

/// Presents one fixed certificate, whatever the client asks for.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS upstream on `listener` presenting a certificate for `cert_name`, answering every
/// request with the server name the client sent.
fn spawn_upstream(listener: TcpListener, ca: &InterceptCa, cert_name: &str) {
    let leaf = ca
        .mint_leaf(cert_name, SystemTime::now(), DEFAULT_LEAF_LIFETIME)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(leaf.certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let service = service_fn(move |_req| {
                    let body = format!("sni={sni}");
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

fn client_tls(ca: &InterceptCa) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn https_over_the_checked_connector_verifies_the_real_host() {
    let upstream_ca = InterceptCa::generate("Upstream test CA").unwrap();
    let listener = TcpListener::bind((GOOD, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    spawn_upstream(listener, &upstream_ca, "api.rebind.test");

    let resolver = Rebinding::new(GOOD, EVIL);
    let guard = EgressGuard::new(resolver.clone());
    // An exact host rule: this host's private (here loopback) answers are accepted.
    let policy = LayeredPolicy::tenant(EgressPolicy::new(
        Action::Deny,
        vec![pattern("api.rebind.test")],
        Vec::new(),
    ));
    let dest = guard.check(&policy, "api.rebind.test", port).await.unwrap();
    let https = CheckedConnector::new(dest).https(client_tls(&upstream_ca));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);

    for _ in 0..2 {
        let response = client
            .get(
                format!("https://api.rebind.test:{port}/hello")
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"sni=api.rebind.test");
    }
    assert_eq!(resolver.calls(), 1);

    // The connector refuses a URI for another host, before any connection.
    let err = client
        .get(format!("https://evil.test:{port}/").parse().unwrap())
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("Misdirected"), "{err:?}");
    // Plain http is refused too.
    assert!(
        client
            .get(format!("http://api.rebind.test:{port}/").parse().unwrap())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn https_to_an_upstream_with_the_wrong_certificate_fails() {
    let upstream_ca = InterceptCa::generate("Upstream test CA").unwrap();
    let listener = TcpListener::bind((GOOD, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The address answers with a valid certificate, but for another name.
    spawn_upstream(listener, &upstream_ca, "someone-else.test");

    let guard = EgressGuard::new(Rebinding::new(GOOD, GOOD));
    let policy = LayeredPolicy::tenant(EgressPolicy::new(
        Action::Deny,
        vec![pattern("api.rebind.test")],
        Vec::new(),
    ));
    let dest = guard.check(&policy, "api.rebind.test", port).await.unwrap();
    let https = CheckedConnector::new(dest).https(client_tls(&upstream_ca));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let err = client
        .get(format!("https://api.rebind.test:{port}/").parse().unwrap())
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("NotValidForName") || text.contains("InvalidCertificate"),
        "{text}"
    );
}

#[tokio::test]
async fn system_resolver_checks_localhost() {
    // `localhost` resolves to loopback through the real resolver: refused without a rule,
    // accepted with an exact host rule.
    let guard = EgressGuard::system();
    let open = LayeredPolicy::tenant(EgressPolicy::allow_all());
    let err = guard.check(&open, "localhost", 443).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::DestinationForbidden);
    let named = LayeredPolicy::tenant(EgressPolicy::new(
        Action::Deny,
        vec![pattern("localhost")],
        Vec::new(),
    ));
    let dest = guard.check(&named, "localhost", 443).await.unwrap();
    assert!(dest.addrs().iter().all(|a| a.ip().is_loopback()));
}

//! The interception CA as a TLS client sees it: minted leaves verify against the CA for their
//! own name only, for a short time; real handshakes get a certificate per server name and
//! negotiate `h2`; a stored CA reloads; the key never shows in `Debug`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sequester_model::ErrorCode;
use sequester_proxy::intercept_ca::{
    CaError, DEFAULT_LEAF_LIFETIME, InterceptCa, LEAF_BACKDATE, LeafCache, SniResolver,
    server_config,
};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verifier(ca: &InterceptCa) -> Arc<WebPkiServerVerifier> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap()
}

fn verify(
    verifier: &WebPkiServerVerifier,
    leaf: &CertificateDer<'_>,
    name: &str,
    at: SystemTime,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let at = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    verifier
        .verify_server_cert(leaf, &[], &name, &[], at)
        .map(|_| ())
}

#[test]
fn leaf_verifies_for_its_name_only() {
    let ca = InterceptCa::generate("Sequester interception CA").unwrap();
    let v = verifier(&ca);
    let now = SystemTime::now();
    let leaf = ca
        .mint_leaf("api.example.com", now, DEFAULT_LEAF_LIFETIME)
        .unwrap();
    let cert = &leaf.certified.cert[0];
    verify(&v, cert, "api.example.com", now).unwrap();
    for other in [
        "example.com",
        "www.api.example.com",
        "api.example.org",
        "evil.com",
    ] {
        let err = verify(&v, cert, other, now).unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{other}: {err:?}"
        );
    }
    // An IP leaf verifies for that IP only.
    let leaf = ca
        .mint_leaf("127.0.0.1", now, DEFAULT_LEAF_LIFETIME)
        .unwrap();
    verify(&v, &leaf.certified.cert[0], "127.0.0.1", now).unwrap();
    assert!(verify(&v, &leaf.certified.cert[0], "127.0.0.2", now).is_err());
    assert!(verify(&v, &leaf.certified.cert[0], "localhost", now).is_err());
    // A leaf of another CA does not verify against this one.
    let other_ca = InterceptCa::generate("Another CA").unwrap();
    let foreign = other_ca
        .mint_leaf("api.example.com", now, DEFAULT_LEAF_LIFETIME)
        .unwrap();
    assert!(verify(&v, &foreign.certified.cert[0], "api.example.com", now).is_err());
}

/// The validity in the certificate itself, probed with the verifier's clock: valid from
/// `now − 1 h` to `now + 24 h`, at most 25 hours in all.
#[test]
fn leaf_validity_is_short() {
    let ca = InterceptCa::generate("Sequester interception CA").unwrap();
    let v = verifier(&ca);
    // Whole seconds, as certificates store them.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let leaf = ca
        .mint_leaf("short.example.com", now, DEFAULT_LEAF_LIFETIME)
        .unwrap();
    let cert = &leaf.certified.cert[0];
    let at = |t: SystemTime| verify(&v, cert, "short.example.com", t);
    let second = Duration::from_secs(1);
    at(now - LEAF_BACKDATE).unwrap();
    at(now + DEFAULT_LEAF_LIFETIME).unwrap();
    assert!(at(now - LEAF_BACKDATE - second).is_err(), "valid too early");
    assert!(
        at(now + DEFAULT_LEAF_LIFETIME + second).is_err(),
        "valid too late"
    );
    assert!(DEFAULT_LEAF_LIFETIME + LEAF_BACKDATE <= Duration::from_secs(25 * 3600));
    assert_eq!(
        leaf.not_after.duration_since(leaf.not_before).unwrap(),
        Duration::from_secs(25 * 3600)
    );
    // The lifetime is a parameter.
    let brief = ca
        .mint_leaf("short.example.com", now, Duration::from_secs(600))
        .unwrap();
    let cert = &brief.certified.cert[0];
    verify(
        &v,
        cert,
        "short.example.com",
        now + Duration::from_secs(600),
    )
    .unwrap();
    assert!(
        verify(
            &v,
            cert,
            "short.example.com",
            now + Duration::from_secs(601)
        )
        .is_err()
    );
}

/// A client that trusts only `ca`, offering `h2` and `http/1.1`.
fn client_config(ca: &InterceptCa) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

struct Handshake {
    client_cert: CertificateDer<'static>,
    client_alpn: Option<Vec<u8>>,
    server_sni: Option<String>,
    server_alpn: Option<Vec<u8>>,
}

/// One TLS handshake over an in-memory pipe, then one byte each way.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Handshake, std::io::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let mut tls = acceptor.accept(server_io).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.flush().await?;
        let (_, conn) = tls.get_ref();
        Ok::<_, std::io::Error>((
            conn.server_name().map(str::to_owned),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        ))
    });
    let connector = TlsConnector::from(client);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let client_side = async {
        let mut tls = connector.connect(server_name, client_io).await?;
        tls.write_all(b"x").await?;
        tls.flush().await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        let (_, conn) = tls.get_ref();
        Ok::<_, std::io::Error>((
            conn.peer_certificates().unwrap()[0].clone().into_owned(),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        ))
    };
    let client_result = client_side.await;
    let server_result = server_task.await.unwrap();
    let (client_cert, client_alpn) = client_result?;
    let (server_sni, server_alpn) = server_result?;
    Ok(Handshake {
        client_cert,
        client_alpn,
        server_sni,
        server_alpn,
    })
}

#[tokio::test]
async fn handshakes_get_a_certificate_per_server_name_and_h2() {
    let ca = Arc::new(InterceptCa::generate("Sequester interception CA").unwrap());
    let cache = Arc::new(LeafCache::new(Arc::clone(&ca)));
    let server = Arc::new(server_config(SniResolver::new(Arc::clone(&cache))).unwrap());
    assert_eq!(
        server.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let client = Arc::new(client_config(&ca));
    let v = verifier(&ca);
    let now = SystemTime::now();

    let a = handshake(Arc::clone(&server), Arc::clone(&client), "a.example.test")
        .await
        .unwrap();
    let b = handshake(Arc::clone(&server), Arc::clone(&client), "b.example.test")
        .await
        .unwrap();
    assert_eq!(a.server_sni.as_deref(), Some("a.example.test"));
    assert_eq!(b.server_sni.as_deref(), Some("b.example.test"));
    for h in [&a, &b] {
        assert_eq!(h.client_alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(h.server_alpn.as_deref(), Some(&b"h2"[..]));
    }
    assert_ne!(a.client_cert, b.client_cert);
    verify(&v, &a.client_cert, "a.example.test", now).unwrap();
    verify(&v, &b.client_cert, "b.example.test", now).unwrap();
    assert!(verify(&v, &a.client_cert, "b.example.test", now).is_err());
    assert!(verify(&v, &b.client_cert, "a.example.test", now).is_err());
    assert_eq!(cache.len(), 2);

    // A second handshake for the same name reuses the cached leaf.
    let a2 = handshake(Arc::clone(&server), Arc::clone(&client), "A.Example.Test")
        .await
        .unwrap();
    assert_eq!(a2.client_cert, a.client_cert);
    assert_eq!(cache.len(), 2);

    // A client offering only http/1.1 gets http/1.1.
    let mut h1 = client_config(&ca);
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let c = handshake(Arc::clone(&server), Arc::new(h1), "c.example.test")
        .await
        .unwrap();
    assert_eq!(c.server_alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn no_server_name_no_certificate() {
    let ca = Arc::new(InterceptCa::generate("Sequester interception CA").unwrap());
    let cache = Arc::new(LeafCache::new(Arc::clone(&ca)));
    let server = Arc::new(server_config(SniResolver::new(Arc::clone(&cache))).unwrap());
    let mut client = client_config(&ca);
    client.enable_sni = false;
    let result = handshake(server, Arc::new(client), "a.example.test").await;
    assert!(result.is_err());
    assert!(cache.is_empty());
}

#[tokio::test]
async fn warm_mints_off_the_runtime_and_fills_the_cache() {
    let ca = Arc::new(InterceptCa::generate("Sequester interception CA").unwrap());
    let cache = Arc::new(LeafCache::new(Arc::clone(&ca)));
    let key = cache.warm("warm.example.test").await.unwrap();
    assert!(cache.contains_fresh("warm.example.test", SystemTime::now()));
    let again = cache.certified_key("warm.example.test").unwrap();
    assert!(Arc::ptr_eq(&key, &again));
    let err = cache.warm("not a name").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
}

#[test]
fn from_parts_round_trip() {
    let ca = InterceptCa::generate("Sequester interception CA").unwrap();
    let pem = ca.cert_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let key = ca.key_der();
    let reloaded = InterceptCa::from_parts(&pem, &key).unwrap();
    assert_eq!(reloaded.cert_pem(), pem);
    assert_eq!(reloaded.cert_der(), ca.cert_der());
    assert_eq!(reloaded.fingerprint(), ca.fingerprint());
    assert_eq!(*reloaded.key_der(), *key);
    assert_eq!(reloaded.not_after(), ca.not_after());
    // Leaves of the reloaded CA verify against the original certificate.
    let v = verifier(&ca);
    let now = SystemTime::now();
    let leaf = reloaded
        .mint_leaf("reloaded.example.test", now, DEFAULT_LEAF_LIFETIME)
        .unwrap();
    verify(&v, &leaf.certified.cert[0], "reloaded.example.test", now).unwrap();
    // PEM with surrounding text, as a file might hold it.
    let noisy = format!("# the Sequester interception CA\n{pem}\n");
    InterceptCa::from_parts(&noisy, &key).unwrap();
}

#[test]
fn mismatched_key_is_rejected() {
    let a = InterceptCa::generate("CA A").unwrap();
    let b = InterceptCa::generate("CA B").unwrap();
    let err = InterceptCa::from_parts(&a.cert_pem(), &b.key_der()).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch), "{err}");
    assert_eq!(err.code(), ErrorCode::IntegrityFailure);
    assert!(err.to_string().contains("generate a new interception CA"));
}

/// The 32-byte private scalar inside a PKCS#8 P-256 key (ECPrivateKey: version 1, then an
/// OCTET STRING of 32 bytes).
fn private_scalar(pkcs8: &[u8]) -> Vec<u8> {
    let at = pkcs8
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .unwrap();
    pkcs8[at + 5..at + 5 + 32].to_vec()
}

#[test]
fn ca_key_never_in_debug() {
    use base64::Engine as _;
    let ca = Arc::new(InterceptCa::generate("Sequester interception CA").unwrap());
    let key = ca.key_der();
    let scalar = private_scalar(&key);
    let cache = Arc::new(LeafCache::new(Arc::clone(&ca)));
    cache.certified_key("debug.example.test").unwrap();
    let resolver = SniResolver::new(Arc::clone(&cache));
    let config = server_config(resolver.clone()).unwrap();
    let outputs = [
        format!("{ca:?}"),
        format!("{ca:#?}"),
        format!("{cache:?}"),
        format!("{resolver:?}"),
        format!("{config:?}"),
        format!(
            "{:?}",
            InterceptCa::from_parts(&ca.cert_pem(), &ca.key_der())
        ),
        format!(
            "{:?}",
            InterceptCa::from_parts(
                &ca.cert_pem(),
                &InterceptCa::generate("x").unwrap().key_der()
            )
        ),
    ];
    let hex: String = scalar.iter().map(|b| format!("{b:02x}")).collect();
    let b64_key = base64::engine::general_purpose::STANDARD.encode(&*key);
    let list = format!("{:?}", &scalar[..4]);
    let list = list.trim_start_matches('[').trim_end_matches(']');
    // The detectors work: a derived Debug of the key bytes would be caught.
    assert!(format!("{:?}", key.to_vec()).contains(list));
    for out in &outputs {
        assert!(!out.contains(&hex), "hex scalar in {out}");
        assert!(!out.contains(&hex.to_uppercase()), "{out}");
        assert!(!out.contains(&b64_key[..40]), "base64 key in {out}");
        assert!(!out.contains(list), "decimal key bytes in {out}");
        assert!(!out.contains("PRIVATE"), "{out}");
    }
    assert!(outputs[0].contains(&ca.fingerprint()));
}

/// How long one mint takes (P-256 key generation + one signature). Printed with
/// `--nocapture`; the bound only catches a pathological regression.
#[test]
fn mint_time() {
    let ca = InterceptCa::generate("Sequester interception CA").unwrap();
    let now = SystemTime::now();
    let rounds = 50u32;
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for i in 0..rounds {
        let t = Instant::now();
        ca.mint_leaf(&format!("host{i}.example.test"), now, DEFAULT_LEAF_LIFETIME)
            .unwrap();
        worst = worst.max(t.elapsed());
    }
    let mean = start.elapsed() / rounds;
    eprintln!(
        "mint: mean {:.3} ms, worst {:.3} ms over {rounds} leaves",
        mean.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    assert!(mean < Duration::from_millis(50), "mean mint {mean:?}");
}

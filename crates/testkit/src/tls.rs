//! A throwaway certificate authority for tests.
//!
//! Each [`TestCa`] is a fresh self-signed CA with its own key, so nothing a test trusts is
//! trusted anywhere else. It issues leaf certificates for any DNS names or IP addresses and
//! builds rustls configurations on the `ring` provider (never aws-lc, never the process-wide
//! default provider):
//!
//! - [`TestCa::server_config`]: a server presenting a leaf for the given names, ALPN `h2` then
//!   `http/1.1`;
//! - [`TestCa::client_config`]: a client trusting only this CA;
//! - [`TestCa::cert_pem`] / [`TestCa::write_pem`]: the CA certificate for other clients
//!   (`curl --cacert`, `SSL_CERT_FILE`, the broker's upstream trust settings).
//!
//! The certificates satisfy strict verifiers (OpenSSL's `X509_STRICT`, as Python 3.13 enables
//! by default): the CA has critical basic constraints, key usage and a subject key identifier;
//! each leaf has an authority key identifier, key usage and the server-auth extended key usage.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name [`TestCa::write_pem`] writes.
pub const CA_PEM_FILE: &str = "test-ca.pem";

/// The rustls crypto provider every configuration here uses: `ring`, chosen explicitly.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A fresh self-signed certificate authority, its key held in memory for the test's life.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A new CA with a new key (ECDSA P-256).
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        // A name of its own, so that no two test CAs can be mistaken for each other's issuer.
        let id = hex::encode(&key.public_key_raw()[1..9]);
        dn.push(DnType::CommonName, format!("Sequester test CA {id}"));
        dn.push(DnType::OrganizationName, "sequester-testkit");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// The CA certificate in PEM form.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate in DER form, for a rustls `RootCertStore`.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Writes the CA certificate to `dir/test-ca.pem` and returns that path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join(CA_PEM_FILE);
        std::fs::write(&path, self.cert_pem()).unwrap();
        path
    }

    /// A leaf certificate chain (leaf, then this CA) and its key for `names`: DNS names
    /// (`localhost`, `api.example.test`) or IP addresses (`127.0.0.1`, `::1`).
    pub fn issue(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        assert!(
            !names.is_empty(),
            "a leaf certificate needs at least one name"
        );
        let key = KeyPair::generate().unwrap();
        // `CertificateParams::new` makes a name that parses as an IP address an IP SAN.
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0]);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let chain = vec![leaf.der().clone(), self.cert_der()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (chain, key)
    }

    /// A server configuration presenting a fresh leaf for `names` signed by this CA, offering
    /// ALPN `h2` and `http/1.1` (in that order of preference).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.issue(names);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client configuration trusting only this CA, with no ALPN: the connection speaks
    /// HTTP/1.1. See [`TestCa::client_config_alpn`] to offer `h2`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client_config_alpn(&[])
    }

    /// A client configuration trusting only this CA and offering `protocols` by ALPN, such as
    /// `&[b"h2"]` or `&[b"http/1.1"]`.
    pub fn client_config_alpn(&self, protocols: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

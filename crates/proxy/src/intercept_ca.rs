//! The interception CA: the certificate authority the forward proxy uses to terminate an
//! agent's TLS, and the leaf certificates it mints on demand for each server name.
//!
//! An agent that sends HTTPS through Sequester trusts the broker's CA (its certificate is
//! installed in the agent's trust store); the broker answers each intercepted TLS handshake
//! with a leaf certificate for the requested server name, signed by that CA, and opens its own
//! verified connection upstream (see [`crate::egress`]).
//!
//! # Design
//!
//! - [`InterceptCa::generate`] makes an ECDSA P-256 CA (rcgen, ring): basic constraints
//!   `CA:TRUE, pathlen:0` (critical), key usage `keyCertSign, cRLSign` (critical), a subject
//!   key identifier, a random serial, valid from one day ago for ten years.
//! - The CA key leaves this module only as [`InterceptCa::key_der`] (PKCS#8, in a zeroizing
//!   buffer) for the caller to seal; nothing here writes it to disk, logs it, or prints it:
//!   [`InterceptCa`]'s `Debug` shows the certificate's fingerprint only.
//! - [`InterceptCa::from_parts`] reloads a stored CA. rcgen 0.13 signs with a `Certificate`,
//!   which it cannot read back from DER without its `x509-parser` feature (and that crate's
//!   ASN.1 parser stack), so a small DER reader below takes what signing needs from our own
//!   certificate: the subject name, the subject key identifier, the validity, basic
//!   constraints and key usage. It reads only that, refuses anything unexpected and never
//!   recurses. Then:
//!   - the key must be the certificate's key (same SubjectPublicKeyInfo), else `KeyMismatch`;
//!   - the certificate must say `CA:TRUE` with `keyCertSign` and be valid now (webpki trusts a
//!     root by fiat and checks neither; OpenSSL-based clients check both);
//!   - a probe leaf is minted and verified with webpki against the stored certificate as the
//!     only root, which proves the signature and that the subject re-encodes byte for byte.
//!
//!   A pair that fails any step does not load, instead of minting leaves no client accepts.
//! - [`InterceptCa::mint_leaf`] makes an ECDSA P-256 leaf for one name (a DNS name or an IP
//!   literal): the subject alternative name is exactly that name, extended key usage
//!   `serverAuth`, key usage `digitalSignature`, `CA:FALSE`, an authority key identifier, a
//!   random serial (126 random bits), valid from one hour before `now` (clock skew) until
//!   [`DEFAULT_LEAF_LIFETIME`] (24 h) after it, never past the CA's own expiry. The chain sent
//!   is the leaf alone: the CA is the client's trust anchor.
//! - [`LeafCache`] keeps minted leaves by name, at most [`DEFAULT_CACHE_CAPACITY`] (evicting
//!   the oldest insertion, found by a linear scan: microseconds at this size, against a
//!   mint's fraction of a millisecond), and mints a fresh leaf once a quarter of the lifetime
//!   is left. Minting happens outside the cache lock; two first handshakes for one name may
//!   both mint, and the later leaf wins.
//! - [`SniResolver`] implements rustls' `ResolvesServerCert`: it mints or reuses the leaf for
//!   the ClientHello's server name. A ClientHello **without** a server name gets no
//!   certificate (`None`, the handshake fails): the broker only impersonates a name the client
//!   asked for, and the forward proxy checks that name against the CONNECT host
//!   ([`crate::egress::check_sni_matches_host`]). rustls drops IP-literal SNI, so an
//!   IP-literal destination needs a resolver that uses the CONNECT host instead.
//! - [`server_config`] builds the rustls `ServerConfig` (ring provider, ALPN `h2`,
//!   `http/1.1`).
//!
//! # Cost on the async runtime
//!
//! `ResolvesServerCert::resolve` is synchronous and runs inside the handshake, on a runtime
//! thread. A mint is one P-256 key generation and one signature: about 0.1 ms (the
//! `mint_time` test prints it; ring's primitives are optimised even in debug builds), and a
//! cached leaf costs a map lookup. The forward proxy knows
//! the CONNECT host before the ClientHello arrives, so it can call [`LeafCache::warm`] first,
//! which mints on tokio's blocking pool; the handshake then finds the leaf in the cache.
//!
//! # Threat model
//!
//! The CA key can impersonate any site to every agent that trusts the CA, so it is as
//! sensitive as the stored secrets: sealed by the caller, never logged, never in `Debug`.
//! rcgen's and ring's in-memory copies of the key are not zeroized on drop; the buffers this
//! module hands out are. Leaf keys live only in memory, in the cache. A client can make the
//! broker mint for many names (one mint per new name, the cache bounded); the forward proxy
//! should run the egress check on the CONNECT host and the SNI check before minting, so only
//! allowed names are ever impersonated.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use sequester_model::ErrorCode;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// How long a minted leaf is valid after `now`.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// How far before `now` a leaf's validity starts, for clients whose clock is behind.
pub const LEAF_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// How many leaves [`LeafCache`] keeps by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// How long a generated CA is valid (ten years).
const CA_LIFETIME: Duration = Duration::from_secs(3653 * 24 * 60 * 60);

/// How far before generation a CA's validity starts.
const CA_BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

/// The name of the probe leaf [`InterceptCa::from_parts`] mints to prove the pair.
const PROBE_NAME: &str = "ca-check.sequester.invalid";

/// Why the CA or a leaf could not be made or loaded. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid CA common name: {0}")]
    InvalidCommonName(&'static str),
    #[error("the stored CA certificate is not usable: {0}; generate a new interception CA")]
    InvalidCertificate(String),
    #[error("the stored CA key is not an ECDSA P-256 PKCS#8 key; generate a new interception CA")]
    InvalidKey,
    #[error(
        "the stored CA key does not belong to the stored CA certificate; restore the matching \
         pair or generate a new interception CA"
    )]
    KeyMismatch,
    #[error("cannot mint a certificate for {name:?}: it is not a DNS name or an IP address")]
    InvalidName { name: String },
    #[error("the system clock is before 1970 or too far in the future")]
    Clock,
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl CaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidCommonName(_) => ErrorCode::InvalidConfig,
            Self::InvalidCertificate(_) | Self::InvalidKey => ErrorCode::InvalidConfig,
            Self::KeyMismatch => ErrorCode::IntegrityFailure,
            Self::InvalidName { .. } => ErrorCode::InvalidRequest,
            Self::Clock | Self::Generate(_) => ErrorCode::Internal,
        }
    }
}

fn generate_err(e: impl fmt::Display) -> CaError {
    CaError::Generate(e.to_string())
}

/// The rustls crypto provider used here: ring, chosen explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| CaError::Clock)?;
    OffsetDateTime::UNIX_EPOCH
        .checked_add(time::Duration::try_from(since).map_err(|_| CaError::Clock)?)
        .ok_or(CaError::Clock)
}

/// A random positive serial of 16 bytes.
fn random_serial(provider: &CryptoProvider) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Generate("the system random source failed".to_owned()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6; // never a leading zero byte, so always 16 bytes
    Ok(SerialNumber::from_slice(&bytes))
}

// ---------------------------------------------------------------------------------------------
// The CA
// ---------------------------------------------------------------------------------------------

/// The interception certificate authority: its certificate and its key, in memory.
///
/// `Debug` prints the certificate's SHA-256 fingerprint, never the key.
pub struct InterceptCa {
    /// rcgen's view of the CA, used as the issuer when signing (its DER may differ from
    /// `cert_der` after [`InterceptCa::from_parts`]; only its subject and key id are used).
    issuer: Certificate,
    key: KeyPair,
    cert_der: CertificateDer<'static>,
    /// End of the CA's validity; leaves never outlive it.
    not_after: SystemTime,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for InterceptCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterceptCa")
            .field("cert_sha256", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl InterceptCa {
    /// A new CA with a new ECDSA P-256 key; see the module docs for its profile.
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        Self::generate_at(common_name, SystemTime::now())
    }

    /// [`InterceptCa::generate`] with the clock as an argument.
    pub fn generate_at(common_name: &str, now: SystemTime) -> Result<Self, CaError> {
        if common_name.trim().is_empty() {
            return Err(CaError::InvalidCommonName("it is empty"));
        }
        if common_name.chars().count() > 64 {
            return Err(CaError::InvalidCommonName(
                "it is longer than 64 characters",
            ));
        }
        if common_name.chars().any(char::is_control) {
            return Err(CaError::InvalidCommonName("it contains control characters"));
        }
        let provider = provider();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Sequester");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial(&provider)?);
        params.not_before = to_offset(now.checked_sub(CA_BACKDATE).ok_or(CaError::Clock)?)?;
        let not_after = now.checked_add(CA_LIFETIME).ok_or(CaError::Clock)?;
        params.not_after = to_offset(not_after)?;
        let issuer = params.self_signed(&key).map_err(generate_err)?;
        let cert_der = issuer.der().clone();
        Ok(Self {
            issuer,
            key,
            cert_der,
            not_after: truncate_to_second(not_after),
            provider,
        })
    }

    /// Reloads a CA from its certificate (PEM) and its key (PKCS#8 DER, as returned by
    /// [`InterceptCa::key_der`]). Refuses a key that does not match the certificate, and
    /// proves the pair by minting and verifying a probe leaf (see the module docs).
    pub fn from_parts(cert_pem: &str, key_der: &[u8]) -> Result<Self, CaError> {
        Self::from_parts_at(cert_pem, key_der, SystemTime::now())
    }

    /// [`InterceptCa::from_parts`] with the clock as an argument.
    pub fn from_parts_at(cert_pem: &str, key_der: &[u8], now: SystemTime) -> Result<Self, CaError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::InvalidCertificate(format!("not a PEM certificate ({e})")))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(key_der);
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CaError::InvalidKey)?;
        let parsed =
            der::parse_ca(&cert_der).map_err(|e| CaError::InvalidCertificate(e.to_owned()))?;
        if parsed.spki != key.public_key_der().as_slice() {
            return Err(CaError::KeyMismatch);
        }
        // webpki trusts a root by fiat (it checks neither its validity nor that it is a CA);
        // clients such as OpenSSL do, so check both here.
        if !parsed.is_ca || !parsed.may_sign_certs {
            return Err(CaError::InvalidCertificate(
                "it is not a CA certificate (basic constraints CA:TRUE and keyCertSign)".to_owned(),
            ));
        }
        if now >= parsed.not_after {
            return Err(CaError::InvalidCertificate(format!(
                "it expired at {}",
                humantime_utc(parsed.not_after)
            )));
        }
        if now < parsed.not_before {
            return Err(CaError::InvalidCertificate(format!(
                "it is not valid before {}",
                humantime_utc(parsed.not_before)
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = parsed.subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        if let Some(ski) = parsed.subject_key_id {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        }
        // Only the subject, key identifier and key of `issuer` are used when signing.
        let issuer = params.self_signed(&key).map_err(generate_err)?;
        let ca = Self {
            issuer,
            key,
            cert_der,
            not_after: parsed.not_after,
            provider: provider(),
        };
        ca.prove(now)?;
        Ok(ca)
    }

    /// Mints a probe leaf and verifies it against the stored certificate as the only root.
    fn prove(&self, now: SystemTime) -> Result<(), CaError> {
        let leaf = self.mint_leaf(PROBE_NAME, now, Duration::from_secs(60))?;
        let Some(end_entity) = leaf.certified.cert.first() else {
            return Err(generate_err("the probe leaf has no certificate"));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
        let name = ServerName::try_from(PROBE_NAME).map_err(generate_err)?;
        let at = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|_| CaError::Clock)?,
        );
        verifier
            .verify_server_cert(end_entity, &[], &name, &[], at)
            .map_err(|e| {
                CaError::InvalidCertificate(format!(
                    "a leaf signed with the stored key does not verify against it ({e})"
                ))
            })?;
        Ok(())
    }

    /// The CA certificate in PEM form, to install in agents' trust stores.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// The CA certificate in DER form.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// When the CA certificate expires (rotate before then).
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA key, PKCS#8 DER, in a buffer zeroized on drop. The caller seals it; it is never
    /// written anywhere by this module.
    pub fn key_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.serialized_der().to_vec())
    }

    /// The SHA-256 fingerprint of the CA certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(&self.cert_der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Mints a leaf for `name` (a DNS name or an IP literal; lowercase is used, a trailing dot
    /// dropped), valid from `now − LEAF_BACKDATE` to `now + lifetime`.
    pub fn mint_leaf(
        &self,
        name: &str,
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<MintedLeaf, CaError> {
        let name = LeafName::parse(name)?;
        let not_before = now.checked_sub(LEAF_BACKDATE).ok_or(CaError::Clock)?;
        let not_after = now
            .checked_add(lifetime)
            .ok_or(CaError::Clock)?
            .min(self.not_after);
        if not_after <= now {
            return Err(CaError::InvalidCertificate(
                "the interception CA has expired".to_owned(),
            ));
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let text = name.to_string();
        // ub-common-name is 64; longer DNS names go in the SAN only.
        dn.push(
            DnType::CommonName,
            if text.len() <= 64 {
                text.as_str()
            } else {
                "Sequester interception leaf"
            },
        );
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match &name {
            LeafName::Dns(dns) => SanType::DnsName(
                dns.as_str()
                    .try_into()
                    .map_err(|_| CaError::InvalidName { name: dns.clone() })?,
            ),
            LeafName::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial(&self.provider)?);
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        let leaf = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(generate_err)?;

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(generate_err)?;
        let certified = Arc::new(CertifiedKey::new(vec![leaf.der().clone()], signing_key));
        Ok(MintedLeaf {
            certified,
            not_before,
            not_after,
        })
    }
}

/// `t` without its sub-second part, as a certificate stores it.
fn truncate_to_second(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
fn humantime_utc(t: SystemTime) -> String {
    match to_offset(t) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ),
        Err(_) => "an unrepresentable time".to_owned(),
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A name a leaf can be minted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LeafName {
    Dns(String),
    Ip(IpAddr),
}

impl LeafName {
    fn parse(name: &str) -> Result<Self, CaError> {
        let invalid = || CaError::InvalidName {
            name: name.chars().take(80).collect(),
        };
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if let Ok(ip) = IpAddr::from_str(bare) {
            return Ok(Self::Ip(ip));
        }
        let dns = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
        if dns.contains('*') {
            return Err(invalid());
        }
        rustls_pki_types::DnsName::try_from(dns.as_str()).map_err(|_| invalid())?;
        Ok(Self::Dns(dns))
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(d) => f.write_str(d),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A minted leaf: the rustls certified key (chain = the leaf) and its validity.
#[derive(Clone)]
pub struct MintedLeaf {
    pub certified: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl fmt::Debug for MintedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedLeaf")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// The cache and the rustls resolver
// ---------------------------------------------------------------------------------------------

struct CacheEntry {
    leaf: MintedLeaf,
    refresh_at: SystemTime,
    inserted: u64,
}

struct CacheState {
    entries: HashMap<String, CacheEntry>,
    next_seq: u64,
}

/// Minted leaves by name: bounded, evicting the oldest insertion, re-minting a leaf once a
/// quarter of its lifetime is left.
pub struct LeafCache {
    ca: Arc<InterceptCa>,
    capacity: usize,
    lifetime: Duration,
    state: Mutex<CacheState>,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache")
            .field("ca", &self.ca)
            .field("capacity", &self.capacity)
            .field("lifetime", &self.lifetime)
            .field("len", &self.len())
            .finish()
    }
}

impl LeafCache {
    /// A cache of [`DEFAULT_CACHE_CAPACITY`] leaves of [`DEFAULT_LEAF_LIFETIME`].
    pub fn new(ca: Arc<InterceptCa>) -> Self {
        Self::with_limits(ca, DEFAULT_CACHE_CAPACITY, DEFAULT_LEAF_LIFETIME)
    }

    /// A cache of at most `capacity` leaves (at least one) of the given lifetime (at least one
    /// minute).
    pub fn with_limits(ca: Arc<InterceptCa>, capacity: usize, lifetime: Duration) -> Self {
        Self {
            ca,
            capacity: capacity.max(1),
            lifetime: lifetime.max(Duration::from_secs(60)),
            state: Mutex::new(CacheState {
                entries: HashMap::new(),
                next_seq: 0,
            }),
        }
    }

    pub fn ca(&self) -> &Arc<InterceptCa> {
        &self.ca
    }

    /// How many leaves are cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state is a plain map: a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The leaf for `name` now: cached, or minted (synchronously) and cached.
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        self.leaf_at(name, SystemTime::now()).map(|l| l.certified)
    }

    /// The leaf for `name` at `now`: cached while `now` is before its refresh time, else
    /// minted (without holding the cache lock) and cached.
    pub fn leaf_at(&self, name: &str, now: SystemTime) -> Result<MintedLeaf, CaError> {
        let key = LeafName::parse(name)?.to_string();
        if let Some(entry) = self.lock().entries.get(&key)
            && now < entry.refresh_at
            && now >= entry.leaf.not_before
        {
            return Ok(entry.leaf.clone());
        }
        let leaf = self.ca.mint_leaf(&key, now, self.lifetime)?;
        let refresh_at = leaf
            .not_after
            .checked_sub(self.lifetime / 4)
            .unwrap_or(leaf.not_after);
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq = state.next_seq.wrapping_add(1);
        if !state.entries.contains_key(&key) && state.entries.len() >= self.capacity {
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.inserted)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                state.entries.remove(&oldest);
            }
        }
        state.entries.insert(
            key,
            CacheEntry {
                leaf: leaf.clone(),
                refresh_at,
                inserted: seq,
            },
        );
        Ok(leaf)
    }

    /// Whether a fresh leaf for `name` is cached at `now`.
    pub fn contains_fresh(&self, name: &str, now: SystemTime) -> bool {
        let Ok(key) = LeafName::parse(name) else {
            return false;
        };
        self.lock()
            .entries
            .get(&key.to_string())
            .is_some_and(|e| now < e.refresh_at)
    }

    /// Mints (or finds) the leaf for `name` on tokio's blocking pool, so that the handshake's
    /// synchronous [`SniResolver`] finds it cached. Call it with the CONNECT host before
    /// accepting the tunnel's TLS.
    pub async fn warm(self: &Arc<Self>, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let this = Arc::clone(self);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || this.certified_key(&name))
            .await
            .map_err(|e| CaError::Generate(format!("the minting task failed: {e}")))?
    }
}

/// rustls certificate resolver: the leaf for the ClientHello's server name, from a
/// [`LeafCache`]. No server name, no certificate (see the module docs).
#[derive(Debug, Clone)]
pub struct SniResolver {
    cache: Arc<LeafCache>,
}

impl SniResolver {
    pub fn new(cache: Arc<LeafCache>) -> Self {
        Self { cache }
    }

    pub fn cache(&self) -> &Arc<LeafCache> {
        &self.cache
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = client_hello.server_name() else {
            tracing::debug!("intercepted ClientHello without a server name: no certificate");
            return None;
        };
        match self.cache.certified_key(name) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(server_name = name, error = %e, "could not mint a leaf");
                None
            }
        }
    }
}

/// The forward proxy's TLS server configuration: ring provider, safe default protocol versions,
/// no client authentication, leaves from `resolver`, ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: SniResolver) -> Result<rustls::ServerConfig, CaError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(generate_err)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// A minimal DER reader for our own CA certificate
// ---------------------------------------------------------------------------------------------

/// Reads what [`InterceptCa::from_parts`] needs from a certificate: the subject (as an rcgen
/// name), the subject public key info (whole TLV) and the subject key identifier. It accepts
/// single-byte tags and definite lengths of up to four bytes only, never recurses, and refuses
/// anything else; the result is proven afterwards by the probe leaf.
mod der {
    use rcgen::{
        BmpString, DistinguishedName, DnType, DnValue, Ia5String, PrintableString, TeletexString,
        UniversalString,
    };
    use std::time::{Duration, SystemTime};

    pub(super) const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const INTEGER: u8 = 0x02;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const VERSION: u8 = 0xa0;
    const ISSUER_UID: u8 = 0x81;
    const SUBJECT_UID: u8 = 0x82;
    const EXTENSIONS: u8 = 0xa3;
    /// 2.5.29.14
    const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    /// 2.5.29.19
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    /// 2.5.29.15
    const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    const BIT_STRING: u8 = 0x03;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;

    pub(super) struct Tlv<'a> {
        pub tag: u8,
        pub value: &'a [u8],
        pub raw: &'a [u8],
    }

    pub(super) struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(bytes: &'a [u8]) -> Self {
            Self { rest: bytes }
        }

        pub fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        pub fn peek_tag(&self) -> Option<u8> {
            self.rest.first().copied()
        }

        pub fn read(&mut self) -> Result<Tlv<'a>, &'static str> {
            let bad = "malformed DER";
            let tag = *self.rest.first().ok_or(bad)?;
            if tag & 0x1f == 0x1f {
                return Err("unsupported DER tag");
            }
            let first = *self.rest.get(1).ok_or(bad)?;
            let (len, header) = if first < 0x80 {
                (usize::from(first), 2usize)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 {
                    return Err("unsupported DER length");
                }
                let bytes = self.rest.get(2..2 + n).ok_or(bad)?;
                let len = bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + n)
            };
            let end = header.checked_add(len).ok_or(bad)?;
            let raw = self.rest.get(..end).ok_or(bad)?;
            let value = raw.get(header..).ok_or(bad)?;
            self.rest = self.rest.get(end..).ok_or(bad)?;
            Ok(Tlv { tag, value, raw })
        }

        pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, &'static str> {
            let tlv = self.read()?;
            if tlv.tag == tag {
                Ok(tlv)
            } else {
                Err("unexpected DER structure")
            }
        }
    }

    pub(super) struct ParsedCa {
        pub subject: DistinguishedName,
        pub spki: Vec<u8>,
        pub subject_key_id: Option<Vec<u8>>,
        pub not_before: SystemTime,
        pub not_after: SystemTime,
        /// basicConstraints present with `cA` TRUE.
        pub is_ca: bool,
        /// keyUsage absent, or present with keyCertSign.
        pub may_sign_certs: bool,
    }

    #[derive(Default)]
    struct Extensions {
        subject_key_id: Option<Vec<u8>>,
        is_ca: bool,
        key_usage: Option<Vec<u8>>,
    }

    /// Parses a certificate's TBS fields.
    pub(super) fn parse_ca(cert: &[u8]) -> Result<ParsedCa, &'static str> {
        let mut outer = Reader::new(cert);
        let certificate = outer.expect(SEQUENCE)?;
        if !outer.is_empty() {
            return Err("trailing data after the certificate");
        }
        let mut cert = Reader::new(certificate.value);
        let tbs = cert.expect(SEQUENCE)?;
        let mut tbs = Reader::new(tbs.value);
        if tbs.peek_tag() == Some(VERSION) {
            tbs.read()?;
        }
        tbs.expect(INTEGER)?; // serial
        tbs.expect(SEQUENCE)?; // signature algorithm
        tbs.expect(SEQUENCE)?; // issuer
        let validity = tbs.expect(SEQUENCE)?;
        let subject = tbs.expect(SEQUENCE)?;
        let spki = tbs.expect(SEQUENCE)?;
        let mut extensions = Extensions::default();
        while !tbs.is_empty() {
            let field = tbs.read()?;
            match field.tag {
                ISSUER_UID | SUBJECT_UID => {}
                EXTENSIONS => extensions = parse_extensions(field.value)?,
                _ => return Err("unexpected field in the certificate"),
            }
        }
        let mut validity = Reader::new(validity.value);
        let not_before = parse_time(&validity.read()?)?;
        let not_after = parse_time(&validity.read()?)?;
        let may_sign_certs = match &extensions.key_usage {
            None => true,
            // BIT STRING: unused-bits count, then bit 0 (0x80) … bit 5 keyCertSign (0x04).
            Some(bits) => bits.get(1).is_some_and(|b| b & 0x04 != 0),
        };
        Ok(ParsedCa {
            subject: parse_name(subject.value)?,
            spki: spki.raw.to_vec(),
            subject_key_id: extensions.subject_key_id,
            not_before,
            not_after,
            is_ca: extensions.is_ca,
            may_sign_certs,
        })
    }

    fn parse_extensions(extensions: &[u8]) -> Result<Extensions, &'static str> {
        let mut found = Extensions::default();
        let mut outer = Reader::new(extensions);
        let list = outer.expect(SEQUENCE)?;
        let mut list = Reader::new(list.value);
        while !list.is_empty() {
            let ext = list.expect(SEQUENCE)?;
            let mut ext = Reader::new(ext.value);
            let oid = ext.expect(OID)?;
            if ext.peek_tag() == Some(BOOLEAN) {
                ext.read()?;
            }
            let value = ext.expect(OCTET_STRING)?;
            let mut inner = Reader::new(value.value);
            match oid.value {
                SUBJECT_KEY_ID => {
                    found.subject_key_id = Some(inner.expect(OCTET_STRING)?.value.to_vec());
                }
                BASIC_CONSTRAINTS => {
                    let seq = inner.expect(SEQUENCE)?;
                    let mut seq = Reader::new(seq.value);
                    found.is_ca = seq.peek_tag() == Some(BOOLEAN)
                        && seq.read()?.value.first().is_some_and(|b| *b != 0);
                }
                KEY_USAGE => found.key_usage = Some(inner.expect(BIT_STRING)?.value.to_vec()),
                _ => {}
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    pub(super) fn parse_ca_time_for_test(
        tag: u8,
        value: &[u8],
    ) -> Result<SystemTime, &'static str> {
        parse_time(&Tlv {
            tag,
            value,
            raw: value,
        })
    }

    /// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ`.
    fn parse_time(tlv: &Tlv<'_>) -> Result<SystemTime, &'static str> {
        let bad = "malformed certificate time";
        let text = std::str::from_utf8(tlv.value).map_err(|_| bad)?;
        let digits = text.strip_suffix('Z').ok_or(bad)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, &'static str> {
            digits.get(r).and_then(|d| d.parse().ok()).ok_or(bad)
        };
        let (year, rest) = match (tlv.tag, digits.len()) {
            (UTC_TIME, 12) => {
                let yy = num(0..2)?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
            }
            (GENERALIZED_TIME, 14) => (num(0..4)?, 4),
            _ => return Err(bad),
        };
        let month = time::Month::try_from(u8::try_from(num(rest..rest + 2)?).map_err(|_| bad)?)
            .map_err(|_| bad)?;
        let small = |r| -> Result<u8, &'static str> { u8::try_from(num(r)?).map_err(|_| bad) };
        let date = time::Date::from_calendar_date(
            i32::try_from(year).map_err(|_| bad)?,
            month,
            small(rest + 2..rest + 4)?,
        )
        .map_err(|_| bad)?;
        let clock = time::Time::from_hms(
            small(rest + 4..rest + 6)?,
            small(rest + 6..rest + 8)?,
            small(rest + 8..rest + 10)?,
        )
        .map_err(|_| bad)?;
        let at = time::PrimitiveDateTime::new(date, clock).assume_utc();
        let secs = at.unix_timestamp();
        let secs = u64::try_from(secs).map_err(|_| bad)?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or(bad)
    }

    /// A Name's RDNs (the contents of its SEQUENCE), one attribute per RDN.
    pub(super) fn parse_name(name: &[u8]) -> Result<DistinguishedName, &'static str> {
        let mut dn = DistinguishedName::new();
        let mut rdns = Reader::new(name);
        while !rdns.is_empty() {
            let rdn = rdns.expect(SET)?;
            let mut rdn = Reader::new(rdn.value);
            let attr = rdn.expect(SEQUENCE)?;
            if !rdn.is_empty() {
                return Err("multi-valued names are not supported");
            }
            let mut attr = Reader::new(attr.value);
            let oid = attr.expect(OID)?;
            let value = attr.read()?;
            if !attr.is_empty() {
                return Err("malformed name attribute");
            }
            let ty = DnType::from_oid(&oid_arcs(oid.value)?);
            if dn.get(&ty).is_some() {
                return Err("repeated name attributes are not supported");
            }
            dn.push(ty, dn_value(value.tag, value.value)?);
        }
        Ok(dn)
    }

    fn dn_value(tag: u8, value: &[u8]) -> Result<DnValue, &'static str> {
        let text = || std::str::from_utf8(value).map_err(|_| "a name is not valid text");
        let bad = |_| "a name is not valid for its string type";
        Ok(match tag {
            0x0c => DnValue::Utf8String(text()?.to_owned()),
            0x13 => DnValue::PrintableString(PrintableString::try_from(text()?).map_err(bad)?),
            0x16 => DnValue::Ia5String(Ia5String::try_from(text()?).map_err(bad)?),
            0x14 => DnValue::TeletexString(TeletexString::try_from(text()?).map_err(bad)?),
            0x1e => DnValue::BmpString(BmpString::from_utf16be(value.to_vec()).map_err(bad)?),
            0x1c => DnValue::UniversalString(
                UniversalString::from_utf32be(value.to_vec()).map_err(bad)?,
            ),
            _ => return Err("unsupported string type in a name"),
        })
    }

    pub(super) fn oid_arcs(bytes: &[u8]) -> Result<Vec<u64>, &'static str> {
        let bad = "malformed object identifier";
        let mut subids = Vec::new();
        let mut current: u64 = 0;
        let mut in_progress = false;
        for &b in bytes {
            if !in_progress && b == 0x80 {
                return Err(bad); // non-minimal encoding
            }
            current = current.checked_mul(128).ok_or(bad)? | u64::from(b & 0x7f);
            in_progress = b & 0x80 != 0;
            if !in_progress {
                subids.push(current);
                current = 0;
            }
        }
        if in_progress {
            return Err(bad);
        }
        let (&first, rest) = subids.split_first().ok_or(bad)?;
        let (a, b) = match first {
            0..40 => (0, first),
            40..80 => (1, first - 40),
            _ => (2, first - 80),
        };
        let mut arcs = vec![a, b];
        arcs.extend_from_slice(rest);
        Ok(arcs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::DnValue;

    fn ca() -> InterceptCa {
        InterceptCa::generate("Sequester test interception CA").unwrap()
    }

    /// The value of extension `oid` in a certificate, by the module's DER reader.
    fn extension<'a>(cert: &'a [u8], oid: &[u8]) -> Option<(bool, &'a [u8])> {
        let mut r = der::Reader::new(cert);
        let c = r.expect(der::SEQUENCE).ok()?;
        let mut c = der::Reader::new(c.value);
        let tbs = c.expect(der::SEQUENCE).ok()?;
        let mut tbs = der::Reader::new(tbs.value);
        while let Ok(field) = tbs.read() {
            if field.tag != 0xa3 {
                continue;
            }
            let mut o = der::Reader::new(field.value);
            let list = o.expect(der::SEQUENCE).ok()?;
            let mut list = der::Reader::new(list.value);
            while let Ok(ext) = list.expect(der::SEQUENCE) {
                let mut e = der::Reader::new(ext.value);
                let id = e.expect(0x06).ok()?;
                let mut critical = false;
                if e.peek_tag() == Some(0x01) {
                    critical = e.read().ok()?.value == [0xff];
                }
                let v = e.expect(0x04).ok()?;
                if id.value == oid {
                    return Some((critical, v.value));
                }
            }
        }
        None
    }

    #[test]
    fn ca_profile() {
        let ca = ca();
        let der = ca.cert_der().to_vec();
        // basicConstraints: critical, CA:TRUE, pathlen 0.
        let (critical, bc) = extension(&der, &[0x55, 0x1d, 0x13]).unwrap();
        assert!(critical);
        assert_eq!(bc, [0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]);
        // keyUsage: critical, keyCertSign (bit 5) and cRLSign (bit 6) only (rcgen writes all
        // nine bits).
        let (critical, ku) = extension(&der, &[0x55, 0x1d, 0x0f]).unwrap();
        assert!(critical);
        assert_eq!(ku, [0x03, 0x03, 0x07, 0x06, 0x00]);
        // A subject key identifier.
        assert!(extension(&der, &[0x55, 0x1d, 0x0e]).is_some());
        let parsed = der::parse_ca(&der).unwrap();
        assert_eq!(
            parsed.subject.get(&DnType::CommonName),
            Some(&DnValue::Utf8String(
                "Sequester test interception CA".to_owned()
            ))
        );
        assert_eq!(parsed.spki, ca.key.public_key_der());
    }

    #[test]
    fn leaf_profile() {
        let ca = ca();
        let leaf = ca
            .mint_leaf("API.Example.com.", SystemTime::now(), DEFAULT_LEAF_LIFETIME)
            .unwrap();
        let der = leaf.certified.cert[0].to_vec();
        assert_eq!(leaf.certified.cert.len(), 1);
        // SAN: exactly one dNSName, lowercase, no trailing dot.
        let (_, san) = extension(&der, &[0x55, 0x1d, 0x11]).unwrap();
        let mut expected = vec![0x30, 2 + 15, 0x82, 15];
        expected.extend_from_slice(b"api.example.com");
        assert_eq!(san, expected);
        // EKU serverAuth only.
        let (_, eku) = extension(&der, &[0x55, 0x1d, 0x25]).unwrap();
        assert_eq!(
            eku,
            [
                0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01
            ]
        );
        // CA:FALSE (rcgen writes the default explicitly).
        let (_, bc) = extension(&der, &[0x55, 0x1d, 0x13]).unwrap();
        assert_eq!(bc, [0x30, 0x03, 0x01, 0x01, 0x00]);
        // An authority key identifier.
        assert!(extension(&der, &[0x55, 0x1d, 0x23]).is_some());
        assert!(
            leaf.not_after.duration_since(leaf.not_before).unwrap()
                <= Duration::from_secs(25 * 3600)
        );
    }

    #[test]
    fn ip_leaf_san() {
        let ca = ca();
        let leaf = ca
            .mint_leaf("[::1]", SystemTime::now(), DEFAULT_LEAF_LIFETIME)
            .unwrap();
        let (_, san) = extension(&leaf.certified.cert[0], &[0x55, 0x1d, 0x11]).unwrap();
        let mut expected = vec![0x30, 18, 0x87, 16];
        expected.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(san, expected);
    }

    #[test]
    fn leaf_names() {
        for bad in [
            "",
            "*.example.com",
            "exa mple.com",
            "a..b",
            "-x.com/",
            "host:443",
        ] {
            assert!(
                matches!(LeafName::parse(bad), Err(CaError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            LeafName::parse("Example.COM.").unwrap(),
            LeafName::Dns("example.com".into())
        );
        assert_eq!(
            LeafName::parse("10.0.0.1").unwrap(),
            LeafName::Ip("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn cache_is_bounded_and_evicts_oldest() {
        let cache = LeafCache::with_limits(Arc::new(ca()), 3, DEFAULT_LEAF_LIFETIME);
        let now = SystemTime::now();
        for n in ["a.test", "b.test", "c.test"] {
            cache.leaf_at(n, now).unwrap();
        }
        assert_eq!(cache.len(), 3);
        cache.leaf_at("d.test", now).unwrap();
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains_fresh("a.test", now));
        for n in ["b.test", "c.test", "d.test"] {
            assert!(cache.contains_fresh(n, now), "{n}");
        }
    }

    #[test]
    fn cache_reuses_then_refreshes_before_expiry() {
        let cache = LeafCache::new(Arc::new(ca()));
        let t0 = SystemTime::now();
        let first = cache.leaf_at("api.test", t0).unwrap();
        let again = cache
            .leaf_at("API.test.", t0 + Duration::from_secs(3600))
            .unwrap();
        assert!(Arc::ptr_eq(&first.certified, &again.certified));
        // With a quarter of the lifetime left, a new leaf.
        let late = t0 + DEFAULT_LEAF_LIFETIME - DEFAULT_LEAF_LIFETIME / 4;
        let fresh = cache.leaf_at("api.test", late).unwrap();
        assert!(!Arc::ptr_eq(&first.certified, &fresh.certified));
        assert!(fresh.not_after > first.not_after);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn oid_decoding() {
        assert_eq!(
            der::oid_arcs(&[0x55, 0x04, 0x03]).unwrap(),
            vec![2, 5, 4, 3]
        );
        assert_eq!(
            der::oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).unwrap(),
            vec![1, 2, 840, 113_549, 1, 9, 1]
        );
        assert!(der::oid_arcs(&[]).is_err());
        assert!(der::oid_arcs(&[0x86]).is_err());
        assert!(der::oid_arcs(&[0x80, 0x01]).is_err());
    }

    #[test]
    fn from_parts_refuses_non_ca_and_garbage() {
        let ca = ca();
        let key = ca.key_der();
        assert!(matches!(
            InterceptCa::from_parts("not pem", &key),
            Err(CaError::InvalidCertificate(_))
        ));
        assert!(matches!(
            InterceptCa::from_parts(&ca.cert_pem(), b"not a key"),
            Err(CaError::InvalidKey)
        ));
        // A leaf signed by the CA, presented with its own key, is not a CA: the probe fails.
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["leaf.test".to_owned()]).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        let leaf = params.signed_by(&leaf_key, &ca.issuer, &ca.key).unwrap();
        let err = InterceptCa::from_parts(&leaf.pem(), leaf_key.serialized_der()).unwrap_err();
        assert!(matches!(err, CaError::InvalidCertificate(_)), "{err}");
    }

    #[test]
    fn from_parts_refuses_expired_ca() {
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let old = InterceptCa::generate_at("Old CA", long_ago).unwrap();
        let err = InterceptCa::from_parts(&old.cert_pem(), &old.key_der()).unwrap_err();
        assert!(matches!(err, CaError::InvalidCertificate(_)), "{err}");
        // Within its validity it loads.
        InterceptCa::from_parts_at(
            &old.cert_pem(),
            &old.key_der(),
            long_ago + Duration::from_secs(3600),
        )
        .unwrap();
    }

    #[test]
    fn ca_validity_is_read_back_and_bounds_leaves() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ca = InterceptCa::generate_at("Validity CA", t0).unwrap();
        let parsed = der::parse_ca(ca.cert_der()).unwrap();
        assert_eq!(parsed.not_before, t0 - CA_BACKDATE);
        assert_eq!(parsed.not_after, t0 + CA_LIFETIME);
        assert_eq!(ca.not_after(), parsed.not_after);
        assert!(parsed.is_ca && parsed.may_sign_certs);
        // Ten years, give or take the leap days.
        let years = CA_LIFETIME.as_secs() as f64 / (365.25 * 86_400.0);
        assert!((9.99..10.01).contains(&years), "{years}");
        // A leaf minted an hour before the CA expires ends with the CA.
        let late = ca.not_after() - Duration::from_secs(3600);
        let leaf = ca
            .mint_leaf("late.test", late, DEFAULT_LEAF_LIFETIME)
            .unwrap();
        assert_eq!(leaf.not_after, ca.not_after());
        // After it, nothing is minted.
        assert!(
            ca.mint_leaf("late.test", ca.not_after(), DEFAULT_LEAF_LIFETIME)
                .is_err()
        );
    }

    #[test]
    fn certificate_times() {
        let t = |tag: u8, text: &str| {
            der::parse_ca_time_for_test(tag, text.as_bytes())
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(t(0x17, "700101000000Z"), Ok(0));
        assert_eq!(t(0x17, "491231235959Z"), Ok(2_524_607_999));
        assert_eq!(t(0x18, "20240229120000Z"), Ok(1_709_208_000));
        for (tag, bad) in [
            (0x17, "700101000000"),
            (0x17, "7001010000Z"),
            (0x18, "20241301000000Z"),
            (0x18, "20240230000000Z"),
            (0x18, "2024022912000aZ"),
            (0x17, "20240229120000Z"),
            (0x18, "19600101000000Z"),
        ] {
            assert!(t(tag, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generate_refuses_bad_common_names() {
        for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
            assert!(matches!(
                InterceptCa::generate(bad),
                Err(CaError::InvalidCommonName(_))
            ));
        }
    }

    proptest! {
        #[test]
        fn der_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = der::parse_ca(&bytes);
            let _ = der::parse_name(&bytes);
            let _ = der::oid_arcs(&bytes);
        }

        #[test]
        fn der_reader_never_panics_on_mutated_ca(pos in 0usize..600, byte in any::<u8>()) {
            // A real certificate with one byte changed: realistic structure, broken detail.
            static CERT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let cert = CERT.get_or_init(|| ca().cert_der().to_vec());
            let mut bytes = cert.clone();
            let i = pos % bytes.len();
            bytes[i] = byte;
            let _ = der::parse_ca(&bytes);
        }
    }
}

use crate::CryptoError;
use crate::aead::{open_raw, seal_raw};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use rand::RngCore as _;
use zeroize::Zeroizing;

/// Fills an array from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// The root key. It only wraps and unwraps tenant data keys and signs the key check.
pub struct MasterKey(Zeroizing<[u8; 32]>);

/// A tenant's data key; seals that tenant's secret versions.
pub struct DataKey(Zeroizing<[u8; 32]>);

const DATA_KEY_LABEL: &[u8] = b"sequester/v1/data-key";
const KEY_CHECK_LABEL: &[u8] = b"sequester/v1/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"sequester master key check";

impl MasterKey {
    pub fn generate() -> Self {
        Self(Zeroizing::new(random_bytes()))
    }

    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives a master key from a passphrase with Argon2id.
    pub fn from_passphrase(passphrase: &[u8], params: &KdfParams) -> Result<Self, CryptoError> {
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
                .map_err(|e| CryptoError::Kdf(e.to_string()))?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, &params.salt, out.as_mut())
            .map_err(|e| CryptoError::Kdf(e.to_string()))?;
        Ok(Self(out))
    }

    /// Wraps a new random data key for `tenant_id`. Returns the key and its wrapped form.
    pub fn new_data_key(&self, tenant_id: &str) -> Result<(DataKey, Vec<u8>), CryptoError> {
        let key = DataKey(Zeroizing::new(random_bytes()));
        let wrapped = self.wrap(&key, tenant_id)?;
        Ok((key, wrapped))
    }

    /// Wraps an existing data key (used by `rekey`).
    pub fn wrap(&self, key: &DataKey, tenant_id: &str) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.0, &data_key_aad(tenant_id), key.0.as_ref())
    }

    /// Unwraps `tenant_id`'s data key.
    pub fn unwrap_data_key(&self, tenant_id: &str, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let plain = open_raw(&self.0, &data_key_aad(tenant_id), wrapped).map_err(|_| {
            CryptoError::Integrity {
                what: format!("the data key of tenant {tenant_id}"),
            }
        })?;
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Integrity {
                what: format!("the data key of tenant {tenant_id}"),
            })?;
        Ok(DataKey(Zeroizing::new(bytes)))
    }

    /// Seals a blob that belongs to the whole broker (not a tenant), such as the interception
    /// CA's private key, bound to `label`.
    pub fn seal_blob(&self, label: &str, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.0, &blob_aad(label), data)
    }

    /// Opens a blob sealed by [`MasterKey::seal_blob`] with the same label.
    pub fn open_blob(&self, label: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_raw(&self.0, &blob_aad(label), blob).map_err(|()| CryptoError::Integrity {
            what: format!("the sealed {label}"),
        })
    }

    /// A value stored beside the data that proves, on open, that this is the right key.
    pub fn key_check(&self) -> Result<KeyCheck, CryptoError> {
        seal_raw(&self.0, KEY_CHECK_LABEL, KEY_CHECK_PLAINTEXT).map(KeyCheck)
    }

    /// Verifies a stored key check. A mismatch means the wrong key or passphrase.
    pub fn verify(&self, check: &KeyCheck, hint: &'static str) -> Result<(), CryptoError> {
        match open_raw(&self.0, KEY_CHECK_LABEL, &check.0) {
            Ok(p) if p.as_slice() == KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(CryptoError::WrongKey { hint }),
        }
    }
}

impl DataKey {
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A keyed hash (HMAC-SHA256) under a subkey derived from this tenant's data key,
    /// domain-separated by `label`; `parts` are length-prefixed. Used to recognise a value
    /// pasted twice without storing anything derived from it in the clear, and to derive
    /// placeholders.
    pub fn mac(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::{Hmac, Mac as _};
        type HmacSha256 = Hmac<sha2::Sha256>;
        let subkey = {
            let Ok(mut m) = HmacSha256::new_from_slice(self.0.as_ref()) else {
                return [0u8; 32];
            };
            m.update(b"sequester/v1/derive/mac");
            Zeroizing::new(<[u8; 32]>::from(m.finalize().into_bytes()))
        };
        let Ok(mut m) = HmacSha256::new_from_slice(subkey.as_ref()) else {
            return [0u8; 32];
        };
        m.update(label.as_bytes());
        m.update(&[0]);
        for part in parts {
            m.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            m.update(part);
        }
        m.finalize().into_bytes().into()
    }
}

fn blob_aad(label: &str) -> Vec<u8> {
    let mut aad = b"sequester/v1/blob".to_vec();
    aad.push(0);
    aad.extend_from_slice(label.as_bytes());
    aad
}

fn data_key_aad(tenant_id: &str) -> Vec<u8> {
    let mut aad = DATA_KEY_LABEL.to_vec();
    aad.push(0);
    aad.extend_from_slice(tenant_id.as_bytes());
    aad
}

/// The sealed key-check blob, stored in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck(pub Vec<u8>);

/// Argon2id parameters and salt for passphrase mode, stored in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: [u8; 16],
}

impl KdfParams {
    /// 64 MiB, 3 passes, 1 lane: above OWASP's Argon2id minimum, about half a second here.
    pub fn generate() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
            salt: random_bytes(),
        }
    }

    /// `argon2id$v=19$m=65536,t=3,p=1$<salt base64>`.
    pub fn encode(&self) -> String {
        format!(
            "argon2id$v=19$m={},t={},p={}${}",
            self.m_kib,
            self.t,
            self.p,
            B64.encode(self.salt)
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("argon2id$v=19$m=")?;
        let (m, rest) = rest.split_once(",t=")?;
        let (t, rest) = rest.split_once(",p=")?;
        let (p, salt) = rest.split_once('$')?;
        let salt: [u8; 16] = B64.decode(salt).ok()?.try_into().ok()?;
        Some(Self {
            m_kib: m.parse().ok()?,
            t: t.parse().ok()?,
            p: p.parse().ok()?,
            salt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_check_distinguishes_keys() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let check = a.key_check().unwrap();
        a.verify(&check, "test").unwrap();
        assert!(matches!(
            b.verify(&check, "test"),
            Err(CryptoError::WrongKey { .. })
        ));
    }

    #[test]
    fn blobs_are_bound_to_their_label_and_key() {
        let master = MasterKey::generate();
        let sealed = master.seal_blob("ca key", b"secret bytes").unwrap();
        assert_eq!(
            master.open_blob("ca key", &sealed).unwrap().as_slice(),
            b"secret bytes"
        );
        assert!(master.open_blob("other", &sealed).is_err());
        assert!(MasterKey::generate().open_blob("ca key", &sealed).is_err());
    }

    #[test]
    fn data_keys_are_bound_to_their_tenant() {
        let master = MasterKey::generate();
        let (_key, wrapped) = master.new_data_key("ten_a").unwrap();
        assert!(master.unwrap_data_key("ten_a", &wrapped).is_ok());
        let err = master.unwrap_data_key("ten_b", &wrapped).err().unwrap();
        assert_eq!(err.code(), sequester_model::ErrorCode::IntegrityFailure);
        let other = MasterKey::generate();
        assert!(other.unwrap_data_key("ten_a", &wrapped).is_err());
    }

    #[test]
    fn macs_are_keyed_labelled_and_length_prefixed() {
        let master = MasterKey::generate();
        let (a, _) = master.new_data_key("ten_a").unwrap();
        let (b, _) = master.new_data_key("ten_b").unwrap();
        assert_eq!(a.mac("x", &[b"v"]), a.mac("x", &[b"v"]));
        assert_ne!(
            a.mac("x", &[b"v"]),
            b.mac("x", &[b"v"]),
            "tenant keys differ"
        );
        assert_ne!(a.mac("x", &[b"v"]), a.mac("y", &[b"v"]), "labels separate");
        assert_ne!(
            a.mac("x", &[b"ab", b"c"]),
            a.mac("x", &[b"a", b"bc"]),
            "parts are prefixed"
        );
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let params = KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
            salt: [7; 16],
        };
        let a = MasterKey::from_passphrase(b"correct horse", &params).unwrap();
        let b = MasterKey::from_passphrase(b"correct horse", &params).unwrap();
        let c = MasterKey::from_passphrase(b"wrong horse", &params).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_ne!(a.bytes(), c.bytes());
        assert_eq!(KdfParams::decode(&params.encode()), Some(params));
        assert_eq!(KdfParams::decode("argon2id$v=19$m=x"), None);
    }
}

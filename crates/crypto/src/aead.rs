//! XChaCha20-Poly1305 sealing with a versioned blob format:
//! `0x01 || nonce (24 bytes) || ciphertext || tag (16 bytes)`.

use crate::{CryptoError, DataKey, SecretValue, random_bytes};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const VERSION_LABEL: &[u8] = b"sequester/v1/secret-version";

pub(crate) fn seal_raw(
    key: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Seal)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens a blob made by `seal_raw`. The error carries no detail on purpose: callers say what
/// failed to open.
pub(crate) fn open_raw(key: &[u8; 32], aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
    let (format, rest) = blob.split_first().ok_or(())?;
    if *format != FORMAT_V1 || rest.len() < NONCE_LEN + 16 {
        return Err(());
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| ())
}

/// What a sealed secret version is bound to. Opening with any other field fails.
#[derive(Debug, Clone, Copy)]
pub struct SecretVersionAad<'a> {
    pub tenant_id: &'a str,
    pub secret_id: &'a str,
    pub secret_name: &'a str,
    pub version: u32,
}

impl SecretVersionAad<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(96);
        aad.extend_from_slice(VERSION_LABEL);
        for field in [self.tenant_id, self.secret_id, self.secret_name] {
            // Length prefixes keep field boundaries unambiguous.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(field.as_bytes());
        }
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad
    }

    fn describe(&self) -> String {
        format!(
            "secret {} version {} (tenant {})",
            self.secret_name, self.version, self.tenant_id
        )
    }
}

/// Seals one secret version with its tenant's data key.
pub fn seal_version(
    key: &DataKey,
    aad: &SecretVersionAad<'_>,
    value: &SecretValue,
) -> Result<Vec<u8>, CryptoError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "sealing encrypts the value; the plaintext never leaves this call"
    )]
    let plaintext = value.expose();
    seal_raw(key.bytes(), &aad.encode(), plaintext)
}

/// Opens one sealed secret version. Fails with [`CryptoError::Integrity`] if the blob was
/// altered or belongs to another tenant, secret, name or version.
pub fn open_version(
    key: &DataKey,
    aad: &SecretVersionAad<'_>,
    sealed: &[u8],
) -> Result<SecretValue, CryptoError> {
    open_raw(key.bytes(), &aad.encode(), sealed)
        .map(SecretValue::from_zeroizing)
        .map_err(|()| CryptoError::Integrity {
            what: aad.describe(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;
    use proptest::prelude::*;

    fn aad(version: u32) -> SecretVersionAad<'static> {
        SecretVersionAad {
            tenant_id: "ten_1",
            secret_id: "sec_1",
            secret_name: "OPENAI",
            version,
        }
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "test compares round-tripped bytes"
    )]
    fn bytes(v: &SecretValue) -> Vec<u8> {
        v.expose().to_vec()
    }

    #[test]
    fn seal_open_round_trip_and_nonces_differ() {
        let (key, _) = MasterKey::generate().new_data_key("ten_1").unwrap();
        let value = SecretValue::new(b"sk-test-123".to_vec());
        let a = seal_version(&key, &aad(1), &value).unwrap();
        let b = seal_version(&key, &aad(1), &value).unwrap();
        assert_ne!(a, b, "random nonces");
        assert_eq!(
            bytes(&open_version(&key, &aad(1), &a).unwrap()),
            b"sk-test-123"
        );
    }

    #[test]
    fn every_bound_field_matters() {
        let (key, _) = MasterKey::generate().new_data_key("ten_1").unwrap();
        let sealed = seal_version(&key, &aad(1), &SecretValue::new(b"v".to_vec())).unwrap();
        let variants = [
            SecretVersionAad {
                version: 2,
                ..aad(1)
            },
            SecretVersionAad {
                tenant_id: "ten_2",
                ..aad(1)
            },
            SecretVersionAad {
                secret_id: "sec_2",
                ..aad(1)
            },
            SecretVersionAad {
                secret_name: "OTHER",
                ..aad(1)
            },
            // Field boundaries are length-prefixed, not concatenated.
            SecretVersionAad {
                tenant_id: "ten_1s",
                secret_id: "ec_1",
                ..aad(1)
            },
        ];
        for v in variants {
            let err = open_version(&key, &v, &sealed).err().unwrap();
            assert_eq!(err.code(), sequester_model::ErrorCode::IntegrityFailure);
        }
    }

    proptest! {
        #[test]
        fn tampering_any_byte_fails(pos in 0usize..64, flip in 1u8..=255) {
            let (key, _) = MasterKey::generate().new_data_key("ten_1").unwrap();
            let mut sealed = seal_version(&key, &aad(1), &SecretValue::new(b"0123456789abcdef0123".to_vec())).unwrap();
            let pos = pos % sealed.len();
            sealed[pos] ^= flip;
            prop_assert!(open_version(&key, &aad(1), &sealed).is_err());
        }
    }
}

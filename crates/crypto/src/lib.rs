//! Sequester's envelope encryption and token primitives.
//!
//! Scheme (see `docs/adr/0001-envelope-encryption.md`):
//! - a 256-bit **master key**, from a key file (mode 0600) or derived from a passphrase with
//!   Argon2id, wraps one random 256-bit **data key** per tenant;
//! - every secret version is **sealed** with its tenant's data key using XChaCha20-Poly1305
//!   with a random 192-bit nonce, and associated data that binds the tenant id, the secret id,
//!   the secret name and the version number, so a sealed blob copied to another row fails to
//!   open;
//! - **tokens** are `sqt_` + 32 random base62 characters + a 6-character CRC32 checksum; only a
//!   domain-separated SHA-256 hash of a token is ever stored.
//!
//! Invariants: no type here that holds key material or a secret value implements `Debug`,
//! `Display`, `Clone` or `Serialize`; all of them zeroize their memory on drop. Errors never
//! contain a value, a key or a token.

mod aead;
mod error;
mod keyfile;
mod keys;
mod token;
mod value;

pub use aead::{SecretVersionAad, open_version, seal_version};
pub use error::CryptoError;
pub use keyfile::{create_key_file, read_key_file};
pub use keys::{DataKey, KdfParams, KeyCheck, MasterKey, random_bytes};
pub use token::{
    AGENT_KEY_PREFIX, IssuedToken, PLACEHOLDER_PREFIX, TOKEN_PREFIX, TokenHash, chain_hash,
    looks_like_agent_key, looks_like_placeholder, looks_like_token, placeholder_from,
};
pub use value::SecretValue;

//! Opaque tokens handed to agents in place of credentials.
//!
//! Format: `sqt_` + 32 base62 characters from the CSPRNG (about 190 bits) + 6 base62
//! characters encoding the CRC32 of the random part. The checksum lets scanners (and the
//! broker) recognise a well-formed token offline without a lookup; it adds no secrecy.

use crate::random_bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const TOKEN_PREFIX: &str = "sqt_";
/// Prefix of agent keys: an agent's own credential for the agent API and the forward proxy.
pub const AGENT_KEY_PREFIX: &str = "sqa_";
/// A placeholder is `<<SECRET_` + 12 base62 characters + `>>`.
pub const PLACEHOLDER_PREFIX: &str = "<<SECRET_";
const PLACEHOLDER_SUFFIX: &str = ">>";
const PLACEHOLDER_BODY: usize = 12;
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HASH_LABEL: &[u8] = b"sequester/v1/token\0";

/// A freshly issued token. Shown to the operator once, never stored; zeroized on drop.
pub struct IssuedToken(Zeroizing<String>);

impl IssuedToken {
    /// A new `sqt_` token.
    pub fn generate() -> Self {
        Self::with_prefix(TOKEN_PREFIX)
    }

    /// A new `sqa_` agent key.
    pub fn agent_key() -> Self {
        Self::with_prefix(AGENT_KEY_PREFIX)
    }

    fn with_prefix(prefix: &str) -> Self {
        let mut s = Zeroizing::new(String::with_capacity(prefix.len() + 38));
        s.push_str(prefix);
        let mut filled = 0;
        while filled < RANDOM_LEN {
            // Rejection sampling keeps the alphabet uniform: 248 = 4 * 62.
            for b in random_bytes::<64>() {
                if filled == RANDOM_LEN {
                    break;
                }
                if b < 248 {
                    s.push(char::from(BASE62[usize::from(b % 62)]));
                    filled += 1;
                }
            }
        }
        let checksum = checksum(&s[prefix.len()..]);
        s.push_str(&checksum);
        Self(s)
    }

    /// The token string, to print once to the operator.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

fn checksum(random_part: &str) -> String {
    let mut n = crc32fast::hash(random_part.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[usize::try_from(n % 62).unwrap_or(0)];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Whether `s` has the exact shape of a Sequester token, checksum included.
pub fn looks_like_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX).is_some_and(well_formed_body)
}

/// Whether `s` has the exact shape of an agent key, checksum included.
pub fn looks_like_agent_key(s: &str) -> bool {
    s.strip_prefix(AGENT_KEY_PREFIX)
        .is_some_and(well_formed_body)
}

/// The placeholder derived from a keyed hash (see `DataKey::mac`).
pub fn placeholder_from(mac: &[u8; 32]) -> String {
    let mut s = String::with_capacity(PLACEHOLDER_PREFIX.len() + PLACEHOLDER_BODY + 2);
    s.push_str(PLACEHOLDER_PREFIX);
    for b in mac.iter().take(PLACEHOLDER_BODY) {
        s.push(char::from(BASE62[usize::from(*b) % 62]));
    }
    s.push_str(PLACEHOLDER_SUFFIX);
    s
}

/// Whether `s` is exactly a placeholder `<<SECRET_xxxxxxxxxxxx>>`.
pub fn looks_like_placeholder(s: &str) -> bool {
    s.strip_prefix(PLACEHOLDER_PREFIX)
        .and_then(|rest| rest.strip_suffix(PLACEHOLDER_SUFFIX))
        .is_some_and(|body| {
            body.len() == PLACEHOLDER_BODY && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn well_formed_body(body: &str) -> bool {
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    checksum(random) == sum
}

/// One link of the receipt hash chain: SHA-256 over a domain label, the previous link and the
/// record's canonical body.
pub fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sequester/v1/receipt\0");
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// The stored form of a token: SHA-256 over a domain label and the token.
///
/// Tokens carry ~190 random bits, so a fast hash is enough: there is nothing to brute-force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let mut h = Sha256::new();
        h.update(HASH_LABEL);
        h.update(token.as_bytes());
        Self(h.finalize().into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison, for re-checking a hash found by lookup.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn issued_tokens_are_well_formed_and_distinct() {
        let a = IssuedToken::generate();
        let b = IssuedToken::generate();
        assert_eq!(a.reveal().len(), 4 + 32 + 6);
        assert!(looks_like_token(a.reveal()));
        assert_ne!(a.reveal(), b.reveal());
        assert_ne!(a.hash(), b.hash());
        assert!(a.hash().ct_eq(&TokenHash::of(a.reveal())));
    }

    #[test]
    fn agent_keys_and_placeholders() {
        let k = IssuedToken::agent_key();
        assert!(looks_like_agent_key(k.reveal()));
        assert!(!looks_like_token(k.reveal()));
        let p = placeholder_from(&[200; 32]);
        assert_eq!(p.len(), 9 + 12 + 2);
        assert!(looks_like_placeholder(&p));
        assert!(!looks_like_placeholder("<<SECRET_short>>"));
        assert!(!looks_like_placeholder(&p.replace(">>", ">")));
    }

    #[test]
    fn checksum_catches_typos() {
        let t = IssuedToken::generate();
        let s = t.reveal();
        let mut typo = s.to_owned().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!looks_like_token(std::str::from_utf8(&typo).unwrap()));
        assert!(!looks_like_token(&s[..s.len() - 1]));
        assert!(!looks_like_token(&s.replacen("sqt_", "sqx_", 1)));
    }

    proptest! {
        /// CRC32 detects every burst error up to 32 bits, so any single-character change to
        /// the random part is caught.
        #[test]
        fn any_single_substitution_is_detected(body in "[A-Za-z0-9]{32}", pos in 0usize..32, c in "[A-Za-z0-9]") {
            let token = format!("{}{}{}", TOKEN_PREFIX, body, checksum(&body));
            prop_assert!(looks_like_token(&token));
            let mut changed = body.clone().into_bytes();
            prop_assume!(changed[pos] != c.as_bytes()[0]);
            changed[pos] = c.as_bytes()[0];
            let changed = String::from_utf8(changed).unwrap();
            let forged = format!("{}{}{}", TOKEN_PREFIX, changed, checksum(&body));
            prop_assert!(!looks_like_token(&forged));
        }
    }
}

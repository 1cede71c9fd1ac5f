//! Offline validators: checks a candidate must pass that a regular expression cannot express.
//!
//! Two kinds. A *checksum* validator confirms a format that carries its own check digits
//! (GitHub, npm and Sequester tokens); a candidate that fails it is kept at low confidence, or
//! dropped when [`crate::DetectorOptions::require_valid_checksums`] is set, because
//! hand-edited and truncated tokens are still worth a look. A *structure* validator confirms a
//! decodable structure (a JWT header, a PEM body, an AWS key id); a candidate that fails it is
//! not that kind of credential and is dropped.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A named offline check a rule can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Validator {
    /// GitHub `gh?_` tokens: 30 base62 characters, then 6 base62 digits of their CRC32.
    GithubChecksum,
    /// npm `npm_` tokens: the same scheme as GitHub's.
    NpmChecksum,
    /// Sequester `sqt_` tokens: 32 base62 characters, then 6 base62 digits of their CRC32.
    SequesterChecksum,
    /// A JWT whose header decodes to a JSON object with an `alg` member, or with another
    /// registered JOSE header parameter over a JSON payload, or any JSON header over a claims
    /// set with a registered claim (`iss`, `sub`, `exp`, …) and a signature.
    Jwt,
    /// A PEM or OpenSSH private key whose body decodes from base64.
    Pem,
    /// An AWS access key id: a known 4-letter prefix and 16 base32 characters.
    AwsKeyId,
    /// An HTTP Basic credential: base64 of `user:password` in printable text.
    BasicAuth,
    /// A Discord bot token: the first segment is the base64 of a numeric user id.
    DiscordBotToken,
    /// A base64 key that decodes to exactly 64 bytes (Azure storage account keys).
    Base64Key64,
    /// A JWT encoded in base64 once more.
    JwtBase64,
    /// A PEM private key encoded in base64 (Kubernetes secrets, environment variables).
    PemBase64,
    /// A Grafana legacy API key: base64 of `{"k":…,"n":…,"id":…}`.
    GrafanaApiKey,
}

/// Whether a failed check lowers confidence (checksum) or rejects the candidate (structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValidatorKind {
    Checksum,
    Structure,
}

impl Validator {
    /// Every validator, for documentation and error messages.
    pub const ALL: &'static [Validator] = &[
        Self::GithubChecksum,
        Self::NpmChecksum,
        Self::SequesterChecksum,
        Self::Jwt,
        Self::Pem,
        Self::AwsKeyId,
        Self::BasicAuth,
        Self::DiscordBotToken,
        Self::Base64Key64,
        Self::JwtBase64,
        Self::PemBase64,
        Self::GrafanaApiKey,
    ];

    /// The name used in rule files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GithubChecksum => "github-checksum",
            Self::NpmChecksum => "npm-checksum",
            Self::SequesterChecksum => "sequester-checksum",
            Self::Jwt => "jwt",
            Self::Pem => "pem",
            Self::AwsKeyId => "aws-key-id",
            Self::BasicAuth => "basic-auth",
            Self::DiscordBotToken => "discord-bot-token",
            Self::Base64Key64 => "base64-key-64",
            Self::JwtBase64 => "jwt-base64",
            Self::PemBase64 => "pem-base64",
            Self::GrafanaApiKey => "grafana-api-key",
        }
    }

    /// Looks a validator up by its rule-file name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }

    pub(crate) const fn kind(self) -> ValidatorKind {
        match self {
            Self::GithubChecksum | Self::NpmChecksum | Self::SequesterChecksum => {
                ValidatorKind::Checksum
            }
            _ => ValidatorKind::Structure,
        }
    }

    /// Runs the check on a candidate secret.
    pub fn check(self, secret: &[u8]) -> bool {
        match self {
            Self::GithubChecksum => prefixed_crc32(secret, 4, 30),
            Self::NpmChecksum => secret.starts_with(b"npm_") && prefixed_crc32(secret, 4, 30),
            Self::SequesterChecksum => secret.starts_with(b"sqt_") && prefixed_crc32(secret, 4, 32),
            Self::Jwt => jwt(secret),
            Self::Pem => pem(secret),
            Self::AwsKeyId => aws_key_id(secret),
            Self::BasicAuth => basic_auth(secret),
            Self::DiscordBotToken => discord_bot_token(secret),
            Self::Base64Key64 => decode_any_base64(secret).is_some_and(|d| d.len() == 64),
            Self::JwtBase64 => jwt_base64(secret),
            Self::PemBase64 => decode_any_base64(secret).is_some_and(|inner| {
                let text = String::from_utf8_lossy(&inner);
                text.starts_with("-----BEGIN") && text.contains("PRIVATE KEY")
            }),
            Self::GrafanaApiKey => grafana_api_key(secret),
        }
    }
}

/// `prefix_len` bytes of prefix, `random_len` base62 characters, then 6 base62 digits of the
/// CRC32 of the random part, most significant digit first.
fn prefixed_crc32(secret: &[u8], prefix_len: usize, random_len: usize) -> bool {
    if secret.len() != prefix_len + random_len + 6 {
        return false;
    }
    let body = &secret[prefix_len..];
    if !body.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (random, sum) = body.split_at(random_len);
    base62_checksum(crc32fast::hash(random)) == sum
}

/// The 6-digit base62 encoding of a CRC32, most significant digit first, zero-padded.
pub fn base62_checksum(mut n: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

fn decode_any_base64(s: &[u8]) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// Header parameters registered for JWS and JWE (IANA "JSON Web Signature and Encryption
/// Header Parameters", including the RFC 7519 claims a header may replicate). A JWT header
/// is a JSON object with `alg`; one without it still counts when it names one of these and
/// the payload is a JSON object too.
const JOSE_HEADER_PARAMS: &[&str] = &[
    "alg", "enc", "zip", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty",
    "crit", "epk", "apu", "apv", "iv", "tag", "p2s", "p2c", "b64", "ppt", "url", "nonce", "svt",
    "iss", "sub", "aud",
];

fn json_object(segment: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let decoded = decode_any_base64(segment)?;
    match serde_json::from_slice::<serde_json::Value>(&decoded) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn jwt(secret: &[u8]) -> bool {
    let mut parts = secret.split(|b| *b == b'.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Some(header) = json_object(header) else {
        return false;
    };
    // A signature, when present, is base64url, and no base64 text has a length of 4n + 1: a
    // word such as `signature` stands in for one in templates.
    let signature = parts.next();
    if signature.is_some_and(|sig| sig.iter().filter(|b| **b != b'=').count() % 4 == 1) {
        return false;
    }
    if header.get("alg").is_some_and(serde_json::Value::is_string) {
        return decode_any_base64(payload).is_some();
    }
    if header
        .keys()
        .any(|k| JOSE_HEADER_PARAMS.contains(&k.as_str()))
    {
        return json_object(payload).is_some();
    }
    // A header without any registered parameter (some issuers put key metadata such as `kty`
    // or `ver` there) still makes a signed JWT when the payload is a claims set: a JSON object
    // with a registered claim, followed by a signature of a plausible length.
    let signed = signature.is_some_and(|sig| {
        sig.len() >= MIN_JWT_SIGNATURE_LEN
            && sig
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'+' | b'/'))
    });
    signed
        && json_object(payload)
            .is_some_and(|claims| claims.keys().any(|k| JWT_CLAIMS.contains(&k.as_str())))
}

/// The claims RFC 7519 registers (section 4.1).
const JWT_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// The shortest signature a header without registered parameters may carry: 16 bytes of MAC
/// or more (an HS256 signature is 43 base64url characters).
const MIN_JWT_SIGNATURE_LEN: usize = 22;

fn pem(secret: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(secret) else {
        return false;
    };
    // Keys inside JSON or code strings carry `\n` escapes instead of line breaks.
    let text = text.replace("\\n", "\n").replace("\\r", "");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return false;
    };
    if !first.starts_with("-----BEGIN ") {
        return false;
    }
    let mut body = String::new();
    for line in lines {
        if line.starts_with("-----END ") {
            break;
        }
        // Encrypted legacy PEM headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: …`), armour
        // headers (`Version: …`) and the OpenPGP armour checksum line (`=abcd`).
        if line.contains(':') || (line.starts_with('=') && line.len() <= 5) {
            continue;
        }
        body.push_str(line.trim_matches(|c| c == '"' || c == '\'' || c == ','));
    }
    let Some(decoded) = decode_any_base64(body.as_bytes()) else {
        return false;
    };
    if first.contains("OPENSSH") {
        return decoded.starts_with(b"openssh-key-v1\0");
    }
    decoded.len() >= 24
}

/// A JWT that was base64-encoded once more (Kubernetes secrets, CI variables).
fn jwt_base64(secret: &[u8]) -> bool {
    decode_any_base64(secret).is_some_and(|inner| jwt(inner.trim_ascii()))
}

/// Grafana's legacy keys are base64 of `{"k":"<key>","n":"<name>","id":<n>}`. Readable JSON
/// without the `n` member is another service's value that starts the same way (Power BI report
/// links carry `{"k":…,"t":…}`), and a key that reads as a template is an example. Text that
/// does not decode to readable text is kept: keys are often cut short or hand-edited.
fn grafana_api_key(secret: &[u8]) -> bool {
    let body = secret
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(&secret[..0], |i| &secret[..=i]);
    let whole = &body[..body.len() - body.len() % 4];
    let Ok(decoded) = STANDARD_NO_PAD.decode(whole) else {
        return true;
    };
    if !decoded.iter().all(|b| (0x20..0x7f).contains(b)) {
        return true;
    }
    if !decoded.windows(4).any(|w| w == br#""n":"#) {
        return false;
    }
    let text = String::from_utf8_lossy(&decoded);
    let key = text
        .strip_prefix(r#"{"k":""#)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    !crate::stoplist::is_placeholder(key.as_bytes())
}

const AWS_KEY_PREFIXES: &[&[u8]] = &[
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"AIPA", b"ANPA", b"ANVA", b"APKA", b"ABIA",
    b"ACCA",
];

fn aws_key_id(secret: &[u8]) -> bool {
    if secret.len() != 20 {
        return false;
    }
    let (prefix, rest) = secret.split_at(4);
    let known = AWS_KEY_PREFIXES.contains(&prefix) || prefix.starts_with(b"A3T");
    known
        && rest
            .iter()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b))
}

fn basic_auth(secret: &[u8]) -> bool {
    let Some(decoded) = decode_any_base64(secret) else {
        return false;
    };
    let printable = decoded.iter().all(|b| (0x20..0x7f).contains(b));
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    printable && colon > 0 && colon + 1 < decoded.len()
}

fn discord_bot_token(secret: &[u8]) -> bool {
    let Some(first) = secret.split(|b| *b == b'.').next() else {
        return false;
    };
    decode_any_base64(first)
        .is_some_and(|d| (15..=20).contains(&d.len()) && d.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `prefix` + `random` + checksum, the way GitHub, npm and Sequester do.
    fn with_checksum(prefix: &str, random: &str) -> String {
        let sum = base62_checksum(crc32fast::hash(random.as_bytes()));
        format!("{prefix}{random}{}", String::from_utf8_lossy(&sum))
    }

    fn one_char_off(s: &str, at: usize) -> String {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'a' { b'b' } else { b'a' };
        String::from_utf8_lossy(&b).into_owned()
    }

    #[test]
    fn crc32_and_base62_known_values() {
        // The CRC-32/ISO-HDLC check value.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(&base62_checksum(0), b"000000");
        assert_eq!(&base62_checksum(61), b"00000z");
        assert_eq!(&base62_checksum(62), b"000010");
        // 0xFFFFFFFF = 4 * 62^5 + 42 * 62^4 + 41 * 62^3 + 15 * 62^2 + 12 * 62 + 3
        assert_eq!(&base62_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn github_checksum_good_and_one_off() {
        let token = with_checksum("ghp_", "R4nd0mB0dyF0rT3stingQ9xZ2w7Lk5");
        assert!(Validator::GithubChecksum.check(token.as_bytes()));
        for at in [4, 20, 33, token.len() - 1] {
            let off = one_char_off(&token, at);
            assert!(!Validator::GithubChecksum.check(off.as_bytes()), "{at}");
        }
        assert!(!Validator::GithubChecksum.check(&token.as_bytes()[..token.len() - 1]));
    }

    #[test]
    fn npm_checksum_good_and_one_off() {
        let token = with_checksum("npm_", "Zq81LmXv02PoNw7Yt4Rs5Ku3Je6Hd9");
        assert!(Validator::NpmChecksum.check(token.as_bytes()));
        assert!(!Validator::NpmChecksum.check(one_char_off(&token, 10).as_bytes()));
        assert!(!Validator::NpmChecksum.check(token.replace("npm_", "npx_").as_bytes()));
    }

    #[test]
    fn sequester_checksum_good_and_one_off() {
        let token = with_checksum("sqt_", "a9Z8b7Y6c5X4d3W2e1V0f9U8g7T6h5S4");
        assert_eq!(token.len(), 42);
        assert!(Validator::SequesterChecksum.check(token.as_bytes()));
        assert!(!Validator::SequesterChecksum.check(one_char_off(&token, 5).as_bytes()));
        assert!(!Validator::SequesterChecksum.check(one_char_off(&token, 41).as_bytes()));
    }

    #[test]
    fn jwt_header_must_be_json_with_alg() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"1234"}"#);
        let good = format!("{header}.{payload}.c2lnbmF0dXJl");
        assert!(Validator::Jwt.check(good.as_bytes()));
        let no_alg = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT"}"#);
        assert!(!Validator::Jwt.check(format!("{no_alg}.{payload}.x").as_bytes()));
        assert!(!Validator::Jwt.check(b"eyJhbGciOi.eyJzdWIi.x"));
        // A header of key metadata over registered claims, signed: a JWT.
        let kty = URL_SAFE_NO_PAD.encode(br#"{"kty":"EC"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"ci","exp":1300819380}"#);
        let sig = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(Validator::Jwt.check(format!("{kty}.{claims}.{sig}").as_bytes()));
        // ... but not unsigned, nor over a payload without registered claims.
        assert!(!Validator::Jwt.check(format!("{kty}.{claims}").as_bytes()));
        assert!(!Validator::Jwt.check(format!("{kty}.{claims}.c2ln").as_bytes()));
        let other = URL_SAFE_NO_PAD.encode(br#"{"name":"x"}"#);
        assert!(!Validator::Jwt.check(format!("{kty}.{other}.{sig}").as_bytes()));
    }

    #[test]
    fn aws_key_ids() {
        assert!(Validator::AwsKeyId.check(b"AKIAQ7Z3M2RT5LVN4WXC"));
        assert!(!Validator::AwsKeyId.check(b"AKIAQ7Z3M2RT5LVN4WX1"));
        assert!(!Validator::AwsKeyId.check(b"AXIAQ7Z3M2RT5LVN4WXC"));
    }

    #[test]
    fn basic_auth_and_discord() {
        assert!(Validator::BasicAuth.check(STANDARD.encode("deploy:s3cr3t-v4lue").as_bytes()));
        assert!(!Validator::BasicAuth.check(STANDARD.encode("no colon").as_bytes()));
        let id = STANDARD_NO_PAD.encode("814253796412345678");
        assert!(Validator::DiscordBotToken.check(format!("{id}.GhT1x2.abc").as_bytes()));
        assert!(!Validator::DiscordBotToken.check(b"bm90IGRpZ2l0cw.GhT1x2.abc"));
    }

    #[test]
    fn grafana_keys() {
        let good =
            STANDARD.encode(br#"{"k":"Qx7Lm2Vn9Rt4Yb8Kc1Zp6Ws3Hd5Jf0Ga","n":"ci-deploy","id":3}"#);
        assert!(Validator::GrafanaApiKey.check(good.as_bytes()));
        let other = STANDARD
            .encode(br#"{"k":"0b7d2c14-5e3a-4f8b-9c21-7a6e5d4c3b2a","t":"f1e2d3c4","c":5}"#);
        assert!(!Validator::GrafanaApiKey.check(other.as_bytes()));
        let template = STANDARD.encode(br#"{"k":"EXAMPLEKEYEXAMPLEKEY","n":"example","id":1}"#);
        assert!(!Validator::GrafanaApiKey.check(template.as_bytes()));
        // Cut short or hand-edited: not readable, kept.
        assert!(
            Validator::GrafanaApiKey.check(b"eyJrIjoiyCb8v6TUfcLYszVZ2UnP6v70oyFcZNhoAJO41Shj")
        );
    }

    #[test]
    fn names_round_trip() {
        for v in Validator::ALL {
            assert_eq!(Validator::from_name(v.name()), Some(*v));
        }
    }
}

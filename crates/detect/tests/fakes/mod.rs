//! Deterministic fake credentials for tests: real formats (checksums included), random
//! content, generated at test time so that nothing credential-shaped is stored in the
//! repository beyond the rule files' own examples.

#![allow(dead_code, reason = "each test file uses a different subset")]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const DIGITS: &[u8] = b"0123456789";

/// A small deterministic PRNG (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// `len` characters from `alphabet`, re-drawn until free of runs of 4 equal or
    /// consecutive characters (which the stop-list treats as placeholders).
    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        loop {
            let s: Vec<u8> = (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect();
            let bad = s.windows(4).any(|w| {
                w.windows(2).all(|p| p[0] == p[1])
                    || w.windows(2).all(|p| p[1] == p[0].wrapping_add(1))
                    || w.windows(2).all(|p| p[0] == p[1].wrapping_add(1))
            });
            let lower = String::from_utf8_lossy(&s).to_lowercase();
            let words = [
                "example", "xxxx", "test", "fake", "dummy", "sample", "invalid",
            ];
            if !bad && !words.iter().any(|w| lower.contains(w)) {
                return String::from_utf8(s).unwrap();
            }
        }
    }
    /// [`Self::string`], re-drawn until it holds at least one byte of each set in `required`.
    pub fn string_with(&mut self, alphabet: &[u8], len: usize, required: &[&[u8]]) -> String {
        loop {
            let s = self.string(alphabet, len);
            if required
                .iter()
                .all(|set| s.bytes().any(|b| set.contains(&b)))
            {
                return s;
            }
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn random_alnum(seed: u64, len: usize) -> String {
    Rng::new(seed).string(ALNUM, len)
}

fn base62_checksum(mut n: u32) -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

fn checksummed(seed: u64, prefix: &str, random_len: usize) -> String {
    let random = random_alnum(seed, random_len);
    let sum = base62_checksum(crc32fast::hash(random.as_bytes()));
    format!("{prefix}{random}{sum}")
}

pub fn github_classic(seed: u64) -> String {
    checksummed(seed, "ghp_", 30)
}
pub fn github_oauth(seed: u64) -> String {
    checksummed(seed, "gho_", 30)
}
pub fn npm_token(seed: u64) -> String {
    checksummed(seed, "npm_", 30)
}
pub fn sequester_token(seed: u64) -> String {
    checksummed(seed, "sqt_", 32)
}
/// A Django secret key: 50 characters of the alphabet `get_random_secret_key` draws from.
pub fn django_key(seed: u64) -> String {
    Rng::new(seed).string_with(
        b"abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)",
        50,
        &[DIGITS, b"!@#$%^&*(=+)"],
    )
}
/// A generated secret with symbols (a password manager's or `openssl rand`-style output).
pub fn symbol_secret(seed: u64) -> String {
    Rng::new(seed).string_with(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&*@^",
        32,
        &[UPPER, LOWER, DIGITS, b"!#$%&*@^"],
    )
}
pub fn aws_key_id(seed: u64) -> String {
    format!("AKIA{}", Rng::new(seed).string(BASE32, 16))
}
pub fn aws_secret(seed: u64) -> String {
    Rng::new(seed).string_with(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        40,
        &[UPPER, LOWER, DIGITS],
    )
}
pub fn openai_project_key(seed: u64) -> String {
    let mut r = Rng::new(seed);
    format!(
        "sk-proj-{}T3BlbkFJ{}",
        r.string(ALNUM, 74),
        r.string(ALNUM, 74)
    )
}
pub fn anthropic_key(seed: u64) -> String {
    format!("sk-ant-api03-{}AA", Rng::new(seed).string(ALNUM, 93))
}
pub fn slack_bot(seed: u64) -> String {
    let mut r = Rng::new(seed);
    format!(
        "xoxb-{}-{}-{}",
        r.string(b"123456789", 12),
        r.string(b"123456789", 13),
        r.string(ALNUM, 24)
    )
}
/// A Slack bot token whose team id holds a run of six `1`s (real ids such as `511111111`
/// do): the stop-list objects to the run, so it is reported at low confidence.
pub fn slack_bot_with_run(seed: u64) -> String {
    let mut r = Rng::new(seed);
    format!(
        "xoxb-{}111111{}-{}-{}",
        r.string(b"23456789", 1),
        r.string(b"23456789", 4),
        r.string(b"123456789", 13),
        r.string(ALNUM, 24)
    )
}
pub fn stripe_live(seed: u64) -> String {
    format!("sk_live_{}", Rng::new(seed).string(ALNUM, 99))
}
pub fn google_api_key(seed: u64) -> String {
    format!(
        "AIza{}",
        Rng::new(seed).string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
            35
        )
    )
}
pub fn hf_token(seed: u64) -> String {
    format!(
        "hf_{}",
        Rng::new(seed).string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 34)
    )
}
pub fn jwt(seed: u64) -> String {
    let mut r = Rng::new(seed);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(format!(r#"{{"sub":"{}","scope":"read write"}}"#, r.string(HEX, 12)).as_bytes());
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(r.bytes(32)))
}
pub fn pem_block(seed: u64) -> String {
    let body = STANDARD.encode(Rng::new(seed).bytes(600));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        lines.join("\n")
    )
}
pub fn hex(seed: u64, len: usize) -> String {
    Rng::new(seed).string(HEX, len)
}
pub fn uuid(seed: u64) -> String {
    let h = hex(seed, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Expands `@@kind@@` templates in corpus text with fresh fakes.
pub fn expand(template: &str, seed: u64) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut n = 0u64;
    while let Some(start) = rest.find("@@") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("@@") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let kind = &after[..end];
        n += 1;
        let s = seed.wrapping_mul(1000).wrapping_add(n);
        let value = match kind {
            "github_classic" => github_classic(s),
            "github_oauth" => github_oauth(s),
            "npm" => npm_token(s),
            "sequester" => sequester_token(s),
            "aws_key_id" => aws_key_id(s),
            "django_key" => django_key(s),
            "symbol_secret" => symbol_secret(s),
            "aws_secret" => aws_secret(s),
            "openai" => openai_project_key(s),
            "anthropic" => anthropic_key(s),
            "slack_bot" => slack_bot(s),
            "slack_bot_with_run" => slack_bot_with_run(s),
            "stripe_live" => stripe_live(s),
            "google_api_key" => google_api_key(s),
            "hf" => hf_token(s),
            "jwt" => jwt(s),
            "pem" => pem_block(s),
            "hex32" => hex(s, 32),
            "hex40" => hex(s, 40),
            "uuid" => uuid(s),
            "alnum24" => random_alnum(s, 24),
            "alnum40" => random_alnum(s, 40),
            other => panic!("unknown fake kind {other}"),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// About `size` bytes of mixed logs, code and configuration with a planted secret every few
/// kilobytes (for redactor and agreement tests).
pub fn corpus_text(seed: u64, size: usize) -> String {
    let mut r = Rng::new(seed);
    let lines = [
        "2026-11-24T10:15:02Z INFO  http request method=GET path=/v1/users status=200 latency_ms=12",
        "fn parse_key(input: &str) -> Result<Key, Error> { let token = lexer.next_token()?; Ok(token) }",
        "    let cache_key = format!(\"user:{}:profile\", user_id);",
        "commit 3f9a1c2e4b5d6f7a8b9c0d1e2f3a4b5c6d7e8f90 Merge pull request #1234 from acme/feature",
        "\"integrity\": \"sha512-Vr5DkUqBVwXm1vV5tFSk3RU6U4l8wDqLkxA/zlYVk0aQ3vI8ZP2c9hVtz+q2V5JYh0Q==\",",
        "max_tokens: 4096  # model output limit",
        "password: ${DB_PASSWORD}",
        "user_id=8f14e45f-ceea-467f-a8f0-62c0f3d1b0e7 session started",
        "SELECT id, name FROM accounts WHERE tenant_id = $1 ORDER BY created_at DESC;",
    ];
    let secrets = [
        "export GITHUB_TOKEN=@@github_classic@@",
        "AWS_ACCESS_KEY_ID=@@aws_key_id@@\nAWS_SECRET_ACCESS_KEY=@@aws_secret@@",
        "Authorization: Bearer @@sequester@@",
        "DATABASE_URL=postgres://app:@@alnum24@@@db.internal:5432/app",
        "OPENAI_API_KEY=@@openai@@",
        "slack_token = \"@@slack_bot@@\"",
        "@@pem@@",
        "stripe.api_key = '@@stripe_live@@'",
    ];
    let mut out = String::with_capacity(size + 4096);
    let mut n = 0u64;
    while out.len() < size {
        for _ in 0..30 {
            out.push_str(lines[r.below(lines.len())]);
            out.push('\n');
        }
        n += 1;
        out.push_str(&expand(secrets[r.below(secrets.len())], seed * 7919 + n));
        out.push('\n');
    }
    out
}

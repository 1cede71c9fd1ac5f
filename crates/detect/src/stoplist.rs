//! Filters that throw away candidates which have the shape of a credential but are not one:
//! documentation examples and templates, look-alikes (UUIDs, digests, paths, code references),
//! identifiers that name something other than a credential, and Sequester's own placeholders.

use std::sync::LazyLock;

use memchr::memmem;
use regex_automata::meta::Regex;

/// Substrings (compared case-insensitively) that mark a value as an example or a template.
const PLACEHOLDER_PARTS: &[&[u8]] = &[
    b"example",
    b"xxxx",
    b"****",
    b"\xe2\x80\xa2\xe2\x80\xa2", // "••"
    b"...",
    b"<your",
    b"your_",
    b"your-",
    b"yourapi",
    b"yourkey",
    b"yourtoken",
    b"yoursecret",
    b"yourpass",
    b"${",
    b"{{",
    b"}}",
    b"%(",
    b"$(",
    b"#{",
    b"changeme",
    b"change_me",
    b"change-me",
    b"placeholder",
    b"redacted",
    b"replace_me",
    b"replaceme",
    b"replace-me",
    b"insert_",
    b"insert-",
    b"dummy",
    b"fixme",
    b"not_a_real",
    b"notareal",
    b"not-a-real",
    b"notreal",
    b"lorem",
    b"qwerty",
    b"asdfgh",
    b"sample",
    b"invalid",
    b"goes_here",
    b"goeshere",
    // The example UUID of RFC 4122 and countless docs.
    b"123e4567-e89b-12d3",
];

/// Whole values (compared case-insensitively) that are words, not credentials.
const STOP_WORDS: &[&[u8]] = &[
    b"password",
    b"passwd",
    b"pass",
    b"secret",
    b"token",
    b"key",
    b"apikey",
    b"api_key",
    b"admin",
    b"root",
    b"test",
    b"testing",
    b"none",
    b"null",
    b"nil",
    b"undefined",
    b"true",
    b"false",
    b"empty",
    b"string",
    b"required",
    b"optional",
    b"default",
    b"value",
    b"password123",
    b"mypassword",
    b"secret123",
    b"p@ssw0rd",
    b"pa$$word",
    b"letmein",
    b"hunter2",
    b"guest",
    b"user",
    b"username",
];

/// One case-insensitive search for every placeholder part (built once).
static PLACEHOLDER_SEARCH: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let alternation: Vec<String> = PLACEHOLDER_PARTS
        .iter()
        .map(|p| p.iter().map(|b| format!("\\x{b:02x}")).collect::<String>())
        .collect();
    Regex::builder()
        .syntax(
            regex_automata::util::syntax::Config::new()
                .case_insensitive(true)
                .unicode(false)
                .utf8(false),
        )
        .build(&alternation.join("|"))
        .ok()
});

/// Why the placeholder stop-list objects to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// The whole value is a template, an example or words (`EXAMPLE`, `${VAR}`, `xxxx`,
    /// `password1`, one character or a short unit repeated): never a credential.
    Template(&'static str),
    /// Only a run of six identical or consecutive characters somewhere in an otherwise
    /// plausible value (`abcdef`, `111111`, also interleaved). Templates often have them, but so
    /// do real tokens now and then (Slack team ids like `511111111`): a provider format keeps
    /// such a value at low confidence instead of dropping it.
    Runs,
}

impl Placeholder {
    /// The check that objected, for [`crate::Detector::explain`].
    pub(crate) const fn reason(self) -> &'static str {
        match self {
            Self::Template(reason) => reason,
            Self::Runs => "runs",
        }
    }
}

/// Whether `value` is an obvious example, template or word rather than a credential.
pub fn is_placeholder(value: &[u8]) -> bool {
    placeholder(value).is_some()
}

/// Which placeholder check `value` fails, if any: the reason [`is_placeholder`] gives.
#[cfg(test)]
fn placeholder_reason(value: &[u8]) -> Option<&'static str> {
    placeholder(value).map(Placeholder::reason)
}

/// The placeholder stop-list's objection to `value`, if any. Every whole-value template is
/// checked before runs, so [`Placeholder::Runs`] means runs are the only objection.
pub(crate) fn placeholder(value: &[u8]) -> Option<Placeholder> {
    template_reason(value)
        .map(Placeholder::Template)
        .or_else(|| has_runs(value).then_some(Placeholder::Runs))
}

/// Which whole-value template check `value` fails, if any.
fn template_reason(value: &[u8]) -> Option<&'static str> {
    if value.is_empty() {
        return Some("empty");
    }
    if STOP_WORDS.iter().any(|w| value.eq_ignore_ascii_case(w)) {
        return Some("stop word");
    }
    let has_part = match &*PLACEHOLDER_SEARCH {
        Some(re) => re.is_match(value),
        None => PLACEHOLDER_PARTS
            .iter()
            .any(|p| contains_ignore_case(value, p)),
    };
    if has_part {
        return Some("template part");
    }
    // A template variable: `$NAME`, `%NAME%`, `@NAME@`.
    let ident =
        |s: &[u8]| !s.is_empty() && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if let Some(rest) = value.strip_prefix(b"$")
        && (ident(rest)
            || rest
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_'))
    {
        return Some("template variable");
    }
    // Long values made of words (`YOUR_VERY_LONG_CLIENT_SECRET`, `SlackAppTokenHere`).
    if value.len() >= 20 && wordy_share(value) >= 0.8 && wordy_letter_pieces(value) >= 3 {
        return Some("words");
    }
    // Template brackets: `<password>`, `[PASSWORD]`, `<user:password>`.
    if value.starts_with(b"<")
        || value.ends_with(b">")
        || (value.starts_with(b"[") && value.ends_with(b"]"))
    {
        return Some("template brackets");
    }
    // A stop word with a number or symbol tacked on (`test123`, `Password1!`, `admin2024`).
    let stem_len = value
        .iter()
        .rposition(|b| b.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    if stem_len > 0
        && stem_len < value.len()
        && value.len() - stem_len <= 4
        && STOP_WORDS
            .iter()
            .any(|w| value[..stem_len].eq_ignore_ascii_case(w))
    {
        return Some("stop word with affix");
    }
    for delim in [b'%', b'@'] {
        if value.len() > 2 && value[0] == delim && value[value.len() - 1] == delim {
            return Some("template delimiters");
        }
    }
    if names_a_credential(value) {
        return Some("names a credential");
    }
    if is_periodic(value) {
        return Some("periodic");
    }
    if repeats_after_prefix(value) {
        return Some("repeated body");
    }
    None
}

/// Words that end a value which only names what it stands for.
const CREDENTIAL_NOUNS: &[&[u8]] = &[b"password", b"passwd", b"passphrase", b"secret"];

/// A value that spells out what it is: a credential word, possibly in leetspeak
/// (`p@ssw0rd`, `s3cr3t`, `super$ecret`), after other words (`CleartextPassword`,
/// `my_secret`), with at most four digits or symbols around it (`AdminPassword1!`).
fn names_a_credential(value: &[u8]) -> bool {
    let affix = |s: &[u8]| s.iter().all(|b| !b.is_ascii_alphabetic());
    for lead in 0..=4.min(value.len()) {
        if !affix(&value[..lead]) {
            break;
        }
        for trail in 0..=4.min(value.len() - lead) {
            if !affix(&value[value.len() - trail..]) {
                break;
            }
            if spells_credential_noun(&value[lead..value.len() - trail]) {
                return true;
            }
        }
    }
    false
}

/// Whether `core`, read as leetspeak without separators, is words ending in a credential noun.
fn spells_credential_noun(core: &[u8]) -> bool {
    let mut letters: Vec<u8> = Vec::with_capacity(core.len());
    for &b in core {
        let c = match b {
            b'@' | b'4' => b'a',
            b'3' => b'e',
            b'0' => b'o',
            b'1' | b'!' => b'i',
            b'$' | b'5' => b's',
            b'7' => b't',
            b'_' | b'-' | b'.' | b' ' => continue,
            c if c.is_ascii_alphabetic() => c.to_ascii_lowercase(),
            _ => return false,
        };
        letters.push(c);
    }
    CREDENTIAL_NOUNS.iter().any(|noun| {
        letters
            .strip_suffix(*noun)
            .is_some_and(|before| before.len() <= 3 || before.len() <= 15 && piece_is_wordy(before))
    })
}

/// Six or more identical characters, or six or more consecutive characters of an alphabet in
/// either direction (`abcdef`, `987654`), also interleaved (`a1b2c3d4e5f6`).
fn has_runs(value: &[u8]) -> bool {
    if adjacent_runs(value) {
        return true;
    }
    let alnum: Vec<u8> = value
        .iter()
        .copied()
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    let even: Vec<u8> = alnum.iter().copied().step_by(2).collect();
    let odd: Vec<u8> = alnum.iter().copied().skip(1).step_by(2).collect();
    adjacent_sequences(&even) || adjacent_sequences(&odd)
}

/// Six or more consecutive characters of an alphabet (not repeats: `aaaa` interleaved with
/// random text is common in real base64).
fn adjacent_sequences(value: &[u8]) -> bool {
    let (mut up, mut down) = (1usize, 1usize);
    for w in value.windows(2) {
        let (a, b) = (w[0], w[1]);
        up = if b == a.wrapping_add(1) { up + 1 } else { 1 };
        down = if a == b.wrapping_add(1) { down + 1 } else { 1 };
        if up >= 6 || down >= 6 {
            return true;
        }
    }
    false
}

fn adjacent_runs(value: &[u8]) -> bool {
    const RUN: usize = 6;
    let (mut same, mut up, mut down) = (1usize, 1usize, 1usize);
    for w in value.windows(2) {
        let (a, b) = (w[0], w[1]);
        let sequential = a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric();
        same = if a == b { same + 1 } else { 1 };
        up = if sequential && b == a.wrapping_add(1) {
            up + 1
        } else {
            1
        };
        down = if sequential && a == b.wrapping_add(1) {
            down + 1
        } else {
            1
        };
        if same >= RUN || up >= RUN || down >= RUN {
            return true;
        }
    }
    false
}

/// A short unit repeated across the whole value (`abc123abc123abc123`).
fn is_periodic(value: &[u8]) -> bool {
    value.len() >= 12 && repeats_a_unit(value)
}

/// `value` is a unit of one to eight characters repeated at least three times (ignoring case).
fn repeats_a_unit(value: &[u8]) -> bool {
    let n = value.len();
    (1..=8usize)
        .filter(|p| n >= 3 * p)
        .any(|p| (p..n).all(|i| value[i].eq_ignore_ascii_case(&value[i - p])))
}

/// A provider prefix followed by nothing but repetition: one character or a short unit from
/// somewhere in the first third of the value to its end (`ghp_000000…`, `AKIAAAAAAAAAAAAAAAAA`,
/// `ghp_abc123abc123…`), or every alphanumeric segment after the first repeating one unit of
/// its own, covering at least half of the value (`xoxb-1111111111-2222222222-aaaaaaaaaaaa`).
fn repeats_after_prefix(value: &[u8]) -> bool {
    let n = value.len();
    if n < 12 {
        return false;
    }
    if (1..=n / 3).any(|k| value.len() - k >= 12 && is_periodic(&value[k..])) {
        return true;
    }
    let mut segments = value
        .split(|b| !b.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty());
    if segments.next().is_none() {
        return false;
    }
    let (mut count, mut covered) = (0usize, 0usize);
    for seg in segments {
        if !repeats_a_unit(seg) {
            return false;
        }
        count += 1;
        covered += seg.len();
    }
    count > 0 && covered * 2 >= n
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    if needle.len() > hay.len() {
        return false;
    }
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `value` is something else that merely looks random: a UUID, a digest written with
/// its algorithm (`sha512-…` in lock files), a file path, a dotted code reference, a number.
pub fn is_lookalike(value: &[u8]) -> bool {
    if is_uuid(value) {
        return true;
    }
    let lower: Vec<u8> = value.to_ascii_lowercase();
    const DIGEST_PREFIXES: &[&[u8]] = &[
        b"sha1-", b"sha256-", b"sha384-", b"sha512-", b"md5-", b"sha1:", b"sha256:", b"sha384:",
        b"sha512:", b"md5:", b"blake2b", b"h1:",
    ];
    if DIGEST_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    const FILE_SUFFIXES: &[&[u8]] = &[
        b".pem",
        b".key",
        b".json",
        b".txt",
        b".crt",
        b".cer",
        b".p12",
        b".pfx",
        b".yaml",
        b".yml",
        b".xml",
        b".env",
        b".js",
        b".ts",
        b".py",
        b".rb",
        b".go",
        b".rs",
        b".java",
        b".html",
        b".png",
        b".jpg",
        b".svg",
        b".gpg",
        b".asc",
        b".pub",
        b".jks",
        b".keystore",
        b".der",
        b".csv",
        b".log",
        b".sh",
        b".conf",
        b".cfg",
        b".ini",
        b".toml",
        b".php",
    ];
    if FILE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
        return true;
    }
    // A path: starts with / ./ ../ ~/ or holds two or more slashes between word-like segments.
    if lower.starts_with(b"/") || lower.starts_with(b"./") || lower.starts_with(b"../") {
        return true;
    }
    if lower.starts_with(b"~/") || lower.starts_with(b"http") {
        return true;
    }
    // An AWS ARN, a CSS selector or URL fragment, a host name.
    if lower.starts_with(b"arn:") || (lower.starts_with(b"#") && wordy_share(&lower[1..]) >= 0.6) {
        return true;
    }
    if is_host_name(&lower) {
        return true;
    }
    // A route or path made of words (`cms/sites/passwords#edit`).
    if value.contains(&b'/') && wordy_share(value) >= 0.6 {
        return true;
    }
    // A package coordinate or name ending in a version (`jjwt-jackson-0.11.2`).
    if ends_with_version(value) {
        return true;
    }
    // Few letters around a long number: an id (`cmp2-qat-1208358310`), not a key.
    let letters = value.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let numeric_segment = value
        .split(|b| !b.is_ascii_alphanumeric())
        .any(|seg| seg.len() >= 6 && seg.iter().all(u8::is_ascii_digit));
    if letters < 8 && numeric_segment && value.iter().any(|b| !b.is_ascii_alphanumeric()) {
        return true;
    }
    // Only digits and separators: versions, dates, phone numbers, amounts.
    if value
        .iter()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'+'))
    {
        return true;
    }
    // A dotted code reference such as `settings.SECRET_KEY` or `os.environ.get`.
    if is_code_reference(value) {
        return true;
    }
    false
}

/// `name-1.2.3`, `lib@2.0`, `v1.10`: a trailing dotted version number.
fn ends_with_version(value: &[u8]) -> bool {
    let parts: Vec<&[u8]> = value.rsplitn(4, |b| *b == b'.').collect();
    if parts.len() < 2 {
        return false;
    }
    let numeric = |p: &[u8]| !p.is_empty() && p.len() <= 4 && p.iter().all(u8::is_ascii_digit);
    // The last parts are numbers, and the one before ends in digits after a separator.
    let Some(first) = parts.last() else {
        return false;
    };
    let tail_ok = parts[..parts.len() - 1].iter().all(|p| numeric(p));
    let lead = first
        .rsplit(|b| matches!(b, b'-' | b'_' | b'@' | b'v' | b'V' | b':'))
        .next()
        .unwrap_or_default();
    tail_ok && numeric(lead) && lead.len() < first.len()
}

/// Whether `value` is a UUID (optionally in braces).
pub fn is_uuid(value: &[u8]) -> bool {
    let v = value
        .strip_prefix(b"{")
        .and_then(|v| v.strip_suffix(b"}"))
        .unwrap_or(value);
    if v.len() != 36 {
        return false;
    }
    v.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    })
}

/// `settings.SECRET_KEY`, `os.environ.get`, `X25519.KeyPair`: identifiers joined by dots,
/// mostly words.
fn is_code_reference(value: &[u8]) -> bool {
    let mut parts = 0;
    for part in value.split(|b| *b == b'.') {
        let Some((&first, rest)) = part.split_first() else {
            return false;
        };
        if !(first.is_ascii_alphabetic() || first == b'_' || first == b'$') {
            return false;
        }
        if !rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            return false;
        }
        parts += 1;
    }
    parts >= 2 && wordy_share(value) >= 0.4
}

/// A lowercase DNS name: labels of letters, digits and hyphens, two or more dots or a
/// final label of 2 to 6 letters.
fn is_host_name(lower: &[u8]) -> bool {
    let labels: Vec<&[u8]> = lower.split(|b| *b == b'.').collect();
    if labels.len() < 2 {
        return false;
    }
    let ok = labels.iter().all(|l| {
        !l.is_empty()
            && l.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    });
    let tld = labels.last().copied().unwrap_or_default();
    ok && (2..=6).contains(&tld.len()) && tld.iter().all(u8::is_ascii_lowercase)
}

/// Whether a value looks machine-generated rather than made of words: it mixes letters and
/// digits (or is long and mixes cases), and is not mostly words and years joined by
/// separators (`k8s-cluster-prod-2024`, `MyAppSecretKey`).
pub fn looks_random(value: &[u8]) -> bool {
    let has_digit = value.iter().any(u8::is_ascii_digit);
    let has_lower = value.iter().any(u8::is_ascii_lowercase);
    let has_upper = value.iter().any(u8::is_ascii_uppercase);
    let mixed =
        (has_digit && (has_lower || has_upper)) || (value.len() >= 20 && has_lower && has_upper);
    mixed && wordy_share(value) < 0.6
}

/// The share of `value`'s bytes that belong to word-like segments: segments (split at
/// punctuation) whose pieces (split at camel case and letter/digit changes) are all words of
/// two or more letters with vowels, or numbers of up to four digits.
pub fn wordy_share(value: &[u8]) -> f64 {
    if value.is_empty() {
        return 0.0;
    }
    let mut wordy = 0usize;
    for seg in value.split(|b| !b.is_ascii_alphanumeric()) {
        if !seg.is_empty() && segment_is_wordy(seg) {
            wordy += seg.len();
        }
    }
    wordy as f64 / value.len() as f64
}

fn segment_is_wordy(seg: &[u8]) -> bool {
    let mut start = 0;
    for i in 1..=seg.len() {
        let boundary = i == seg.len() || {
            let (a, b) = (seg[i - 1], seg[i]);
            (a.is_ascii_digit() != b.is_ascii_digit())
                || (a.is_ascii_lowercase() && b.is_ascii_uppercase())
        };
        if boundary {
            if !piece_is_wordy(&seg[start..i]) {
                return false;
            }
            start = i;
        }
    }
    true
}

fn piece_is_wordy(piece: &[u8]) -> bool {
    if piece.iter().all(u8::is_ascii_digit) {
        return piece.len() <= 4;
    }
    // Two letters only as a capitalised word (`My`, `Id`); random text breaks into many
    // one- and two-letter pieces.
    let capitalised =
        piece[0].is_ascii_uppercase() && piece[1..].iter().all(u8::is_ascii_lowercase);
    if piece.len() < 2 || (piece.len() == 2 && !capitalised) {
        return false;
    }
    // A word has a plausible share of vowels; long vowel-poor runs are random letters.
    let vowels = piece
        .iter()
        .filter(|b| matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u'))
        .count();
    // Four consonants in a row are rare in words and common in random letters.
    let mut run = 0usize;
    let mut longest = 0usize;
    for b in piece {
        if matches!(
            b.to_ascii_lowercase(),
            b'a' | b'e' | b'i' | b'o' | b'u' | b'y'
        ) {
            run = 0;
        } else {
            run += 1;
            longest = longest.max(run);
        }
    }
    longest < 4
        && piece.len() <= 15
        && (vowels * 5 >= piece.len() && piece.len() <= 12 || vowels * 10 >= piece.len() * 3)
}

/// How many letter pieces of `value` are words (see [`wordy_share`]).
fn wordy_letter_pieces(value: &[u8]) -> usize {
    let mut n = 0;
    for seg in value.split(|b| !b.is_ascii_alphanumeric()) {
        let mut start = 0;
        for i in 1..=seg.len() {
            let boundary = i == seg.len() || {
                let (a, b) = (seg[i - 1], seg[i]);
                (a.is_ascii_digit() != b.is_ascii_digit())
                    || (a.is_ascii_lowercase() && b.is_ascii_uppercase())
            };
            if boundary {
                let piece = &seg[start..i];
                if piece.iter().all(u8::is_ascii_alphabetic) && piece_is_wordy(piece) {
                    n += 1;
                }
                start = i;
            }
        }
    }
    n
}

/// Words that, anywhere in an identifier, say it is not a credential (`public_key`,
/// `sort_key`, `max_tokens`, `csrf_token`, `keyboard`).
const NON_CREDENTIAL_MODIFIERS: &[&str] = &[
    "public",
    "pub",
    "pubkey",
    "publishable",
    "primary",
    "foreign",
    "sort",
    "partition",
    "cache",
    "lookup",
    "map",
    "max",
    "min",
    "num",
    "page",
    "next",
    "prev",
    "cursor",
    "csrf",
    "xsrf",
    "nonce",
    "commit",
    "rev",
    "revision",
    "integrity",
    "etag",
    "example",
    "sample",
    "dummy",
    "mock",
    "fake",
    // Negations: a value the code itself says is not a working credential
    // (`nonMatchingToken`, `invalid_api_key`, `wrongPassword`).
    "non",
    "not",
    "invalid",
    "wrong",
    "incorrect",
    "bogus",
    "hotkey",
    "shortcut",
    "monkey",
    "monkeys",
    "turkey",
    "hockey",
    "jockey",
    "whiskey",
    "keyboard",
    "keyword",
    "keywords",
    "keypair",
    "keypress",
    "keypressed",
    "pressed",
    "keyup",
    "keydown",
    "keyframe",
    "keyframes",
    "keymap",
    "keyspace",
    "keys",
    "keying",
    "tokenizer",
    "tokenize",
    "tokens",
    "author",
    "authors",
    "authority",
    "oauth2",
];

/// Words that, after the credential word (`token_type`, `key_id`, `secret_name`), make the
/// identifier name an attribute of a credential rather than the credential.
const NON_CREDENTIAL_HEADS: &[&str] = &[
    "id",
    "ids",
    "type",
    "kind",
    "name",
    "names",
    "length",
    "len",
    "size",
    "count",
    "path",
    "file",
    "filename",
    "dir",
    "url",
    "uri",
    "format",
    "version",
    "prefix",
    "suffix",
    "hash",
    "sha",
    "digest",
    "checksum",
    "fingerprint",
    "uuid",
    "guid",
    "label",
    "hint",
    "description",
    "placeholder",
    "expires",
    "expiry",
    "expiration",
    "ttl",
    "timeout",
    "pattern",
    "regex",
    "policy",
    "usage",
    "limit",
    "encoding",
    "algorithm",
    "alg",
    "method",
    "mode",
    "scope",
    "audience",
    "issuer",
    "region",
    "field",
    "column",
    "index",
    "header",
    "param",
    "position",
    "pos",
    "offset",
    "ref",
    "location",
    "store",
    "provider",
    "manager",
    "service",
    "generator",
    "validator",
    "validation",
    "endpoint",
    "field",
    "event",
    "message",
    "error",
    "status",
    "state",
    "enabled",
    "required",
    "rotation",
    "vault",
    "env",
    "var",
];

/// Words that name a credential; what follows the last of them is the identifier's head.
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "key",
    "apikey",
    "auth",
    "credential",
    "credentials",
    "creds",
    "private",
    "access",
];

/// Splits an identifier into lowercase words at `_ - .` and camel-case boundaries.
fn identifier_words(ident: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for &b in ident {
        if b.is_ascii_alphanumeric() {
            if b.is_ascii_uppercase() && prev_lower && !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
            word.push(char::from(b.to_ascii_lowercase()));
        } else {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev_lower = false;
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether the identifier explicitly names a secret (`herokuToken`, `API_KEY`, `db_password`),
/// not just any key. Used to accept look-alike values (UUIDs) that some services issue as
/// credentials.
pub fn identifier_names_secret(ident: &[u8]) -> bool {
    let words = identifier_words(ident);
    let strong = [
        "token",
        "tokens",
        "secret",
        "apikey",
        "password",
        "passwd",
        "pwd",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "pat",
    ];
    words.iter().any(|w| strong.contains(&w.as_str()))
        || words.windows(2).any(|p| {
            p[1] == "key"
                && ["api", "access", "secret", "private", "license", "master"]
                    .contains(&p[0].as_str())
        })
}

/// Whether the identifier around a keyword names something that is not a credential.
pub fn identifier_names_non_credential(ident: &[u8]) -> bool {
    let mut words = identifier_words(ident);
    // "Do not commit" marks a value as a secret; its words are not modifiers.
    if let Some(i) = words
        .windows(3)
        .position(|w| w[0] == "do" && w[1] == "not" && w[2] == "commit")
    {
        words.drain(i..i + 3);
    }
    if words
        .iter()
        .any(|w| NON_CREDENTIAL_MODIFIERS.contains(&w.as_str()))
    {
        return true;
    }
    let last_credential = words
        .iter()
        .rposition(|w| CREDENTIAL_WORDS.iter().any(|c| w.ends_with(c)));
    match last_credential {
        Some(i) => words[i + 1..]
            .iter()
            .any(|w| NON_CREDENTIAL_HEADS.contains(&w.as_str())),
        None => false,
    }
}

/// Whether `value` repeats its own identifier (`API_KEY = "api-key"`, a constant naming
/// itself), comparing letters and digits only, case-insensitively.
pub fn value_echoes_identifier(value: &[u8], ident: &[u8]) -> bool {
    let norm = |s: &[u8]| -> Vec<u8> {
        s.iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(u8::to_ascii_lowercase)
            .collect()
    };
    let (v, i) = (norm(value), norm(ident));
    v.len() >= 6
        && i.len() >= 6
        && (memmem::find(&i, &v).is_some() || memmem::find(&v, &i).is_some())
}

/// The identifier around `pos` in `hay`: the run of word characters (`A-Za-z0-9_.-`) that
/// contains `pos`, capped at 64 bytes on each side and never reaching `limit` (where the
/// value starts).
pub fn identifier_at(hay: &[u8], pos: usize, limit: usize) -> &[u8] {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let hay = &hay[..limit.min(hay.len())];
    let pos = pos.min(hay.len());
    let mut start = pos;
    while start > 0 && pos - start < 64 && is_ident(hay[start - 1]) {
        start -= 1;
    }
    let mut end = pos;
    while end < hay.len() && end - pos < 64 && is_ident(hay[end]) {
        end += 1;
    }
    &hay[start..end]
}

const PLACEHOLDER_OPEN: &[u8] = b"<<SECRET_";
const PLACEHOLDER_LEN: usize = PLACEHOLDER_OPEN.len() + 12 + 2;

/// Whether `span` of `hay` overlaps a Sequester placeholder `<<SECRET_` + 12 chars + `>>`.
/// Placeholders are already safe and are never reported.
pub fn overlaps_sequester_placeholder(hay: &[u8], span: &std::ops::Range<usize>) -> bool {
    let from = span.start.saturating_sub(PLACEHOLDER_LEN);
    let to = (span.end + PLACEHOLDER_LEN).min(hay.len());
    if from >= to {
        return false;
    }
    let region = &hay[from..to];
    memmem::find_iter(region, PLACEHOLDER_OPEN).any(|i| {
        let start = from + i;
        let end = start + PLACEHOLDER_LEN;
        is_sequester_placeholder(hay.get(start..end).unwrap_or_default())
            && start < span.end
            && span.start < end
    })
}

/// Whether `s` is exactly a Sequester placeholder.
pub fn is_sequester_placeholder(s: &[u8]) -> bool {
    s.len() == PLACEHOLDER_LEN
        && s.starts_with(PLACEHOLDER_OPEN)
        && s.ends_with(b">>")
        && s[PLACEHOLDER_OPEN.len()..PLACEHOLDER_LEN - 2]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        for v in [
            "AKIAIOSFODNN7EXAMPLE",
            "xxxxxxxxxxxxxxxx",
            "${API_TOKEN}",
            "{{ api_token }}",
            "<your-api-key>",
            "changeme",
            "aaaaaaaaaaaaaaaaaaaa",
            "abcdefghij1234567890",
            "1234567890abcdef1234",
            "9876543210zyxwvutsrq",
            "abc123abc123abc123",
            "$PASSWORD",
            "%DB_PASS%",
            "password",
            "sk-...",
            "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",
            "test123",
            "Password1!",
            "<user:password>",
            "[PASSWORD]",
            "super$ecret",
            "CleartextPassword1",
            "MySecretPassw0rd!",
            "123P4ssW0rd@@",
            "db_password",
        ] {
            assert!(is_placeholder(v.as_bytes()), "{v} should be a placeholder");
        }
        for v in [
            "q8Fz2LwX0pVn7RkYt3Hs",
            "hT4m9WcQ2zK7vB1nX6pJ",
            "S3cure-Passw0rd!2024",
            "xK9mQ2secret",
            "Prestigitariu$",
        ] {
            assert!(!is_placeholder(v.as_bytes()), "{v} is not a placeholder");
        }
        assert_eq!(
            placeholder_reason(b"abcdef1234567890abcdef1234567890"),
            Some("runs")
        );
        assert_eq!(placeholder_reason(b"${API_TOKEN}"), Some("template part"));
        assert_eq!(placeholder_reason(b"q8Fz2LwX0pVn7RkYt3Hs"), None);
    }

    #[test]
    fn runs_are_the_only_soft_objection() {
        // A run inside an otherwise random value: only runs object.
        assert_eq!(
            placeholder(b"xoxb-5111111114-2948571038475-q8Fz2LwX0pVn7RkYt3HsQ9vX"),
            Some(Placeholder::Runs)
        );
        assert_eq!(
            placeholder(b"q8Fz2LwXabcdefRkYt3Hs"),
            Some(Placeholder::Runs)
        );
        // Whole-value templates are never only runs, even when they also hold runs.
        let ghp_one_char = format!("ghp_{}", "a".repeat(36));
        let ghp_unit = format!("ghp_{}", "q8Fz2L".repeat(6));
        let akia = format!("AKIA{}", "A".repeat(16));
        let slack = format!("xoxb-1111111111-2222222222-{}", "a".repeat(24));
        for (v, reason) in [
            ("aaaaaaaaaaaaaaaaaaaa", "periodic"),
            ("abc123abc123abc123", "periodic"),
            (ghp_one_char.as_str(), "repeated body"),
            (ghp_unit.as_str(), "repeated body"),
            (akia.as_str(), "repeated body"),
            (slack.as_str(), "repeated body"),
            ("sk-xxxxxxxxxxxxxxxx", "template part"),
            ("sk_live_your_api_key_111111", "template part"),
            ("${TOKEN_111111}", "template part"),
        ] {
            assert_eq!(
                placeholder(v.as_bytes()),
                Some(Placeholder::Template(reason)),
                "{v}"
            );
        }
        // A repeated segment beside random ones is not a repeated body.
        assert_eq!(
            placeholder(b"xoxb-1111111111-2948571038475-q8Fz2LwX0pVn7RkYt3HsQ9vX"),
            Some(Placeholder::Runs)
        );
    }

    #[test]
    fn lookalikes() {
        for v in [
            "123e4567-e89b-12d3-a456-426614174000",
            "sha512-Q2hlY2tzdW0gb2YgYSBwYWNrYWdlIGluIGEgbG9jayBmaWxl",
            "jjwt-jackson-0.11.2",
            "cmp2-qat-1208358310",
            "config/keys/server.pem",
            "/etc/ssl/private/server.key",
            "1.2.3",
            "2024-01-31",
            "settings.SECRET_KEY",
            "os.environ.get",
            "X25519.KeyPair",
            "sm02915.int.contoso.com",
            "arn:aws:iam::aws:policy/ChangePassword",
            "cms/sites/passwords#edit",
        ] {
            assert!(is_lookalike(v.as_bytes()), "{v} should be a look-alike");
        }
        assert!(!is_lookalike(b"q8Fz2LwX0pVn7RkYt3Hs"));
        assert!(!is_lookalike(b"d41d8cd98f00b204e9800998ecf8427e"));
    }

    #[test]
    fn randomness() {
        for v in [
            "q8Fz2LwX0pVn7RkYt3Hs",
            "yfi45upwc03e6uq6zayqwt7vvaad4a6m",
            "hTmWcQzKvBnXpJrLsDfGhYtE",
        ] {
            assert!(looks_random(v.as_bytes()), "{v}");
        }
        for v in [
            "k8s-cluster-prod-2024",
            "MyAppSecretKeyValue",
            "my_secret_key_name",
            "release-v2",
        ] {
            assert!(!looks_random(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn identifiers() {
        for v in [
            "public_key",
            "keyId",
            "sort_key",
            "max_tokens",
            "token_type",
            "commit_sha_key",
            "secret_name",
            "keyboard_layout",
            "nonMatchingToken",
            "invalid_api_key",
            "wrongPassword",
        ] {
            assert!(identifier_names_non_credential(v.as_bytes()), "{v}");
        }
        for v in [
            "api_key",
            "SECRET_KEY",
            "githubToken",
            "client_secret",
            "DB_PASSWORD",
            "message-birdToken",
            "keystore_password",
            "NOTION_API_KEY",
            "secret_do_not_commit",
        ] {
            assert!(!identifier_names_non_credential(v.as_bytes()), "{v}");
        }
        assert_eq!(identifier_at(b"x = my_api_key=1", 8, 15), b"my_api_key");
    }

    #[test]
    fn sequester_placeholders() {
        let hay = b"key=<<SECRET_AbCdEf123456>> tail";
        assert!(is_sequester_placeholder(&hay[4..27]));
        assert!(overlaps_sequester_placeholder(hay, &(13..25)));
        assert!(!overlaps_sequester_placeholder(hay, &(28..32)));
    }
}

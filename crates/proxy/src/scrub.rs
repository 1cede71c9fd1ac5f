//! Response scrubbing: a real value (raw, base64 at any alignment, URL-encoded, hex) that
//! comes back from an upstream is replaced with the token before the agent sees it, also
//! when it is split across chunks.
//!
//! Streaming without delay: after each chunk only the longest tail that could still begin a
//! match is held back, so a chunk that ends in `\n\n` (an SSE event) goes out at once.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use std::sync::Arc;
use zeroize::Zeroizing;

/// One way a value can appear in a response. The same form applied to the token gives the
/// replacement, so an echoed value decodes to the token wherever it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Raw,
    Base64Padded,
    /// The value inside a longer base64 blob at byte alignment `k` (0..3): only the
    /// characters that encode the value's bits alone.
    Core {
        url_safe: bool,
        k: usize,
    },
    Url,
    UrlLower,
    Hex,
    HexUpper,
}

const FORMS: &[Form] = &[
    Form::Raw,
    Form::Base64Padded,
    Form::Core {
        url_safe: false,
        k: 0,
    },
    Form::Core {
        url_safe: false,
        k: 1,
    },
    Form::Core {
        url_safe: false,
        k: 2,
    },
    Form::Core {
        url_safe: true,
        k: 0,
    },
    Form::Core {
        url_safe: true,
        k: 1,
    },
    Form::Core {
        url_safe: true,
        k: 2,
    },
    Form::Url,
    Form::UrlLower,
    Form::Hex,
    Form::HexUpper,
];

impl Form {
    fn encode(self, bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Self::Raw => bytes.to_vec(),
            Self::Base64Padded => STANDARD.encode(bytes).into_bytes(),
            Self::Core { url_safe, k } => {
                let engine = if url_safe {
                    URL_SAFE_NO_PAD
                } else {
                    STANDARD_NO_PAD
                };
                let mut padded = Zeroizing::new(vec![0u8; k]);
                padded.extend_from_slice(bytes);
                let enc = Zeroizing::new(engine.encode(&*padded).into_bytes());
                let skip = (8 * k).div_ceil(6);
                let total_bits = 8 * (k + bytes.len());
                let end = if total_bits.is_multiple_of(6) {
                    enc.len()
                } else {
                    enc.len().saturating_sub(1)
                };
                enc.get(skip..end).map(<[u8]>::to_vec).unwrap_or_default()
            }
            Self::Url | Self::UrlLower => {
                let url: Vec<u8> = bytes
                    .iter()
                    .flat_map(|&b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            vec![b]
                        } else {
                            format!("%{b:02X}").into_bytes()
                        }
                    })
                    .collect();
                if self == Self::UrlLower {
                    url.to_ascii_lowercase()
                } else {
                    url
                }
            }
            Self::Hex => hex_lower(bytes),
            Self::HexUpper => hex_lower(bytes).to_ascii_uppercase(),
        })
    }

    /// The replacement for a match of this form: the token in the same encoding, except that
    /// URL-encoded values are replaced by the token as it is (it needs no encoding).
    fn replacement(self, token: &[u8]) -> Vec<u8> {
        match self {
            Self::Url | Self::UrlLower => token.to_vec(),
            other => other.encode(token).to_vec(),
        }
    }
}

fn hex_lower(b: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.iter()
        .flat_map(|&x| [HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]])
        .collect()
}

/// The compiled search for a set of values: built once per secret when the snapshot loads,
/// shared by every request that injects that secret.
pub struct ScrubPatterns {
    matcher: AhoCorasick,
    needles: Vec<Zeroizing<Vec<u8>>>,
    forms: Vec<Form>,
    longest: usize,
    /// Bytes some needle begins with: a held-back tail must start with one of them.
    starts: [bool; 256],
}

impl ScrubPatterns {
    /// The patterns for `values`; `None` if there is nothing to look for.
    pub fn new(values: &[&[u8]]) -> Option<Arc<Self>> {
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut forms = Vec::new();
        for value in values {
            for form in FORMS {
                let needle = form.encode(value);
                // Very short needles would match ordinary text; values are longer in practice.
                if needle.len() >= 8 && !needles.iter().any(|n| n.as_slice() == needle.as_slice()) {
                    needles.push(needle);
                    forms.push(*form);
                }
            }
        }
        if needles.is_empty() {
            return None;
        }
        // A contiguous NFA builds an order of magnitude faster than a DFA for these few
        // patterns and scans fast enough for response bodies.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(needles.iter().map(|n| n.as_slice()))
            .ok()?;
        let longest = needles.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut starts = [false; 256];
        for n in &needles {
            if let Some(&b) = n.first() {
                starts[usize::from(b)] = true;
            }
        }
        Some(Arc::new(Self {
            matcher,
            needles,
            forms,
            longest,
            starts,
        }))
    }
}

/// Replaces the forms of a set of values in a byte stream.
pub struct Scrubber {
    patterns: Arc<ScrubPatterns>,
    /// What a match is replaced by: the token, in the matched form. Computed at the first
    /// match (most responses have none), so a request pays nothing for it.
    token: Vec<u8>,
    carry: Zeroizing<Vec<u8>>,
    replaced: u64,
}

impl Scrubber {
    /// A scrubber for `values`, each replaced by `token` (in the matching encoding). `None`
    /// if there is nothing to look for.
    pub fn new(values: &[&[u8]], token: &[u8]) -> Option<Self> {
        ScrubPatterns::new(values).map(|p| Self::with_patterns(p, token))
    }

    /// A scrubber over precompiled patterns.
    pub fn with_patterns(patterns: Arc<ScrubPatterns>, token: &[u8]) -> Self {
        Self {
            patterns,
            token: token.to_vec(),
            carry: Zeroizing::new(Vec::new()),
            replaced: 0,
        }
    }

    /// How many occurrences were replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Replaces every complete match in `buf`; returns the output and where the unmatched
    /// tail begins.
    fn replace(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let mut last = 0;
        for m in self.patterns.matcher.find_iter(buf) {
            out.extend_from_slice(&buf[last..m.start()]);
            if let Some(form) = self.patterns.forms.get(m.pattern().as_usize()) {
                out.extend_from_slice(&form.replacement(&self.token));
            }
            last = m.end();
            self.replaced += 1;
        }
        last
    }

    /// Length of the longest suffix of `tail` that is a proper prefix of some needle.
    fn partial(&self, tail: &[u8]) -> usize {
        let max = tail.len().min(self.patterns.longest.saturating_sub(1));
        (1..=max)
            .rev()
            .find(|&k| {
                let suffix = &tail[tail.len() - k..];
                self.patterns.starts[usize::from(suffix[0])]
                    && self.patterns.needles.iter().any(|n| n.starts_with(suffix))
            })
            .unwrap_or(0)
    }

    /// Feeds one chunk; returns what can be sent now. A chunk with no match and nothing to
    /// hold back (the common case) is passed on without a copy.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() && self.patterns.matcher.find(chunk.as_ref()).is_none() {
            let hold = self.partial(&chunk);
            if hold == 0 {
                return chunk;
            }
            self.carry.extend_from_slice(&chunk[chunk.len() - hold..]);
            return chunk.slice(..chunk.len() - hold);
        }
        let mut buf = Zeroizing::new(std::mem::take(&mut *self.carry));
        buf.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(buf.len());
        let tail_start = self.replace(&buf, &mut out);
        let tail = &buf[tail_start..];
        let hold = self.partial(tail);
        out.extend_from_slice(&tail[..tail.len() - hold]);
        self.carry.extend_from_slice(&tail[tail.len() - hold..]);
        Bytes::from(out)
    }

    /// Flushes what was held back at the end of the stream.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.carry).to_vec())
    }

    /// Scrubs a complete buffer (a header value). `None` if nothing matched.
    pub fn scrub_all(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        let before = self.replaced;
        let mut out = Vec::with_capacity(input.len());
        let tail = self.replace(input, &mut out);
        out.extend_from_slice(&input[tail..]);
        (self.replaced > before).then_some(out)
    }
}

/// Rewrites every header whose values `f` changes (`Some(new)` replaces a value), keeping the
/// order of values; headers `f` leaves alone are not touched.
pub fn rewrite_headers<E>(
    headers: &mut http::HeaderMap,
    mut f: impl FnMut(&http::HeaderValue) -> Result<Option<http::HeaderValue>, E>,
) -> Result<(), E> {
    let names: Vec<_> = headers.keys().cloned().collect();
    for name in names {
        let values: Vec<http::HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match f(&v)? {
                Some(new) => {
                    changed = true;
                    out.push(new);
                }
                None => out.push(v),
            }
        }
        if changed {
            headers.remove(&name);
            for v in out {
                headers.append(name.clone(), v);
            }
        }
    }
    Ok(())
}

impl Scrubber {
    /// Scrubs every header value (a value that would not be a valid header after scrubbing
    /// stays as it was).
    pub fn scrub_headers(&mut self, headers: &mut http::HeaderMap) {
        let _ = rewrite_headers(headers, |v| {
            Ok::<_, std::convert::Infallible>(
                self.scrub_all(v.as_bytes())
                    .and_then(|b| http::HeaderValue::from_bytes(&b).ok()),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALUE: &[u8] = b"sk-live-0123456789abcdefXYZ";
    const TOKEN: &[u8] = b"sqt_TOKENTOKENTOKENTOKENTOKENTOKEN123456";

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Scrubber::new(&[VALUE], TOKEN).unwrap();
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&s.push(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&s.finish());
        out
    }

    #[test]
    fn replaces_every_form() {
        let b64 = STANDARD.encode(VALUE);
        let wrapped = STANDARD.encode([b"user:".as_slice(), VALUE].concat());
        let text = format!(
            "raw={} b64={} basic={} url={} hex={}",
            std::str::from_utf8(VALUE).unwrap(),
            b64,
            wrapped,
            "sk-live-0123456789abcdefXYZ",
            hex_lower(VALUE)
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>(),
        );
        let out = run(&[text.as_bytes()]);
        let out_s = String::from_utf8_lossy(&out);
        assert!(!out.windows(VALUE.len()).any(|w| w == VALUE), "{out_s}");
        assert!(!out_s.contains(&b64));
        assert!(out_s.contains(&STANDARD.encode(TOKEN)), "{out_s}");
        // The value inside a larger base64 blob is gone too.
        let decoded_basic = out_s
            .split("basic=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let decoded = STANDARD.decode(decoded_basic).unwrap_or_default();
        assert!(!decoded.windows(VALUE.len()).any(|w| w == VALUE));
    }

    #[test]
    fn split_anywhere_is_still_caught() {
        let text = [b"{\"key\":\"".as_slice(), VALUE, b"\"}"].concat();
        for cut in 0..=text.len() {
            let out = run(&[&text[..cut], &text[cut..]]);
            assert_eq!(
                out,
                [b"{\"key\":\"".as_slice(), TOKEN, b"\"}"].concat(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn does_not_hold_back_sse_event_ends() {
        let mut s = Scrubber::new(&[VALUE], TOKEN).unwrap();
        let out = s.push(Bytes::from_static(b"data: hello\n\n"));
        assert_eq!(&out[..], b"data: hello\n\n");
        // A tail that could start the value is held until the next chunk decides.
        let out = s.push(Bytes::from_static(b"data: sk-li"));
        assert_eq!(&out[..], b"data: ");
        let out = s.push(Bytes::from_static(b"ght\n\n"));
        assert_eq!(&out[..], b"sk-light\n\n");
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_result(prefix in "[a-z \\n]{0,40}", suffix in "[a-z \\n]{0,40}", cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let text = [prefix.as_bytes(), VALUE, suffix.as_bytes(), VALUE].concat();
            let whole = run(&[&text]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&text[last..c]); last = c; }
            chunks.push(&text[last..]);
            prop_assert_eq!(run(&chunks), whole.clone());
            prop_assert!(!whole.windows(VALUE.len()).any(|w| w == VALUE));
        }
    }
}

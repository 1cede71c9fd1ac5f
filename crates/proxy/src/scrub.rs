//! Response scrubbing: a real value (raw, base64 at any alignment, URL-encoded, hex) that
//! comes back from an upstream is replaced with the token before the agent sees it, also
//! when it is split across chunks.
//!
//! Streaming without delay: after each chunk only the longest tail that could still begin a
//! match is held back, so a chunk that ends in `\n\n` (an SSE event) goes out at once.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use zeroize::Zeroizing;

/// Needles derived from a value, each with its replacement derived the same way from the
/// token.
fn forms(value: &[u8], token: &[u8]) -> Vec<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    let mut out: Vec<(Zeroizing<Vec<u8>>, Vec<u8>)> = Vec::new();
    let mut push = |needle: Vec<u8>, replacement: Vec<u8>| {
        // Very short needles would match ordinary text; values are much longer in practice.
        if needle.len() >= 8 && !out.iter().any(|(n, _)| n.as_slice() == needle.as_slice()) {
            out.push((Zeroizing::new(needle), replacement));
        }
    };
    push(value.to_vec(), token.to_vec());
    push(
        STANDARD.encode(value).into_bytes(),
        STANDARD.encode(token).into_bytes(),
    );
    // The value inside a longer base64 blob, at each of the three byte alignments: only the
    // characters that encode the value's bits alone are matched.
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for k in 0..3usize {
            let core = |bytes: &[u8]| -> Vec<u8> {
                let mut padded = vec![0u8; k];
                padded.extend_from_slice(bytes);
                let enc = Zeroizing::new(engine.encode(&padded).into_bytes());
                let skip = (8 * k).div_ceil(6);
                let total_bits = 8 * (k + bytes.len());
                let end = if total_bits.is_multiple_of(6) {
                    enc.len()
                } else {
                    enc.len().saturating_sub(1)
                };
                enc.get(skip..end).map(<[u8]>::to_vec).unwrap_or_default()
            };
            push(core(value), core(token));
        }
    }
    let url: Vec<u8> = value
        .iter()
        .flat_map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                vec![b]
            } else {
                format!("%{b:02X}").into_bytes()
            }
        })
        .collect();
    push(url.clone(), token.to_vec());
    push(url.to_ascii_lowercase(), token.to_vec());
    push(Zeroizing::new(hex_lower(value)).to_vec(), hex_lower(token));
    push(
        Zeroizing::new(hex_lower(value).to_ascii_uppercase()).to_vec(),
        hex_lower(token).to_ascii_uppercase(),
    );
    out
}

fn hex_lower(b: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.iter()
        .flat_map(|&x| [HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]])
        .collect()
}

/// Replaces the forms of a set of values in a byte stream.
pub struct Scrubber {
    matcher: AhoCorasick,
    needles: Vec<Zeroizing<Vec<u8>>>,
    replacements: Vec<Vec<u8>>,
    carry: Zeroizing<Vec<u8>>,
    replaced: u64,
}

impl Scrubber {
    /// A scrubber for `values`, each replaced by `token` (in the matching encoding). `None`
    /// if there is nothing to look for.
    pub fn new(values: &[&[u8]], token: &[u8]) -> Option<Self> {
        let mut needles = Vec::new();
        let mut replacements = Vec::new();
        for value in values {
            for (needle, replacement) in forms(value, token) {
                if !needles
                    .iter()
                    .any(|n: &Zeroizing<Vec<u8>>| n.as_slice() == needle.as_slice())
                {
                    needles.push(needle);
                    replacements.push(replacement);
                }
            }
        }
        if needles.is_empty() {
            return None;
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(needles.iter().map(|n| n.as_slice()))
            .ok()?;
        Some(Self {
            matcher,
            needles,
            replacements,
            carry: Zeroizing::new(Vec::new()),
            replaced: 0,
        })
    }

    /// How many occurrences were replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Replaces every complete match in `buf`; returns the output and where the unmatched
    /// tail begins.
    fn replace(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let mut last = 0;
        for m in self.matcher.find_iter(buf) {
            out.extend_from_slice(&buf[last..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
            last = m.end();
            self.replaced += 1;
        }
        last
    }

    /// Length of the longest suffix of `tail` that is a proper prefix of some needle.
    fn partial(&self, tail: &[u8]) -> usize {
        let longest = self.needles.iter().map(|n| n.len()).max().unwrap_or(0);
        let max = tail.len().min(longest.saturating_sub(1));
        (1..=max)
            .rev()
            .find(|&k| {
                let suffix = &tail[tail.len() - k..];
                self.needles.iter().any(|n| n.starts_with(suffix))
            })
            .unwrap_or(0)
    }

    /// Feeds one chunk; returns what can be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut buf = Zeroizing::new(std::mem::take(&mut *self.carry));
        buf.extend_from_slice(chunk);
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
            out.extend_from_slice(&s.push(c));
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
        let out = s.push(b"data: hello\n\n");
        assert_eq!(&out[..], b"data: hello\n\n");
        // A tail that could start the value is held until the next chunk decides.
        let out = s.push(b"data: sk-li");
        assert_eq!(&out[..], b"data: ");
        let out = s.push(b"ght\n\n");
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

//! Replacing tokens and placeholders by real values in an outgoing request (forward proxy):
//! header values (raw, percent-encoded, inside Basic credentials), the path and query, and, for
//! secrets that opt in, the body (raw, percent-encoded, or as a JSON string with `<`/`>`
//! escaped the way Go's encoder writes them).
//!
//! Every buffer that holds a value is `Zeroizing`; callers decide *whether* a swap is allowed
//! (`decide`), this module only performs it.

use base64::Engine as _;
use bytes::Bytes;
use sequester_crypto::SecretValue;
use sequester_model::SecretId;
use zeroize::Zeroizing;

/// A replacement to make in the request: the credential text as sent and its value.
pub(crate) struct Swap {
    pub(crate) token: Zeroizing<String>,
    pub(crate) value: SecretValue,
    pub(crate) secret: SecretId,
}

impl Swap {
    #[expect(
        clippy::disallowed_methods,
        reason = "substitution: the value replaces its token toward a host `decide` allowed"
    )]
    fn value(&self) -> &[u8] {
        self.value.expose()
    }
}

/// `bytes` percent-encoded (RFC 3986 unreserved characters kept).
pub(crate) fn percent_encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 3));
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// `hay` with every `needle` replaced by `with()`, or `None` if `needle` does not occur
/// (`with` is only called then: encoding a value costs an allocation).
fn replace_all<W: AsRef<[u8]>>(
    hay: &[u8],
    needle: &[u8],
    with: impl FnOnce() -> W,
) -> Option<Zeroizing<Vec<u8>>> {
    // Most header values are shorter than a token: no searcher is built for them.
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let finder = memchr::memmem::Finder::new(needle);
    let mut matches = finder.find_iter(hay).peekable();
    matches.peek()?;
    let with = with();
    let with = with.as_ref();
    let mut out = Zeroizing::new(Vec::with_capacity(hay.len() + with.len()));
    let mut last = 0;
    for at in matches {
        out.extend_from_slice(&hay[last..at]);
        out.extend_from_slice(with);
        last = at + needle.len();
    }
    out.extend_from_slice(&hay[last..]);
    Some(out)
}

/// Applies `replace_all` in place, reporting whether anything changed.
fn replace_in<W: AsRef<[u8]>>(
    current: &mut Zeroizing<Vec<u8>>,
    needle: &[u8],
    with: impl FnOnce() -> W,
) -> bool {
    match replace_all(current, needle, with) {
        Some(new) => {
            *current = new;
            true
        }
        None => false,
    }
}

/// A header value with every token replaced: raw, percent-encoded, or inside Basic credentials.
pub(crate) fn substitute_header(value: &[u8], swaps: &[Swap]) -> Option<Zeroizing<Vec<u8>>> {
    if let Ok(text) = std::str::from_utf8(value)
        && let Some(cred) = text
            .strip_prefix("Basic ")
            .or_else(|| text.strip_prefix("basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(cred.trim())
    {
        let mut decoded = Zeroizing::new(decoded);
        let mut changed = false;
        for s in swaps {
            changed |= replace_in(&mut decoded, s.token.as_bytes(), || s.value());
        }
        if changed {
            let mut out = Zeroizing::new(b"Basic ".to_vec());
            let encoded =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*decoded));
            out.extend_from_slice(encoded.as_bytes());
            return Some(out);
        }
    }
    let mut current = Zeroizing::new(value.to_vec());
    let mut changed = false;
    for s in swaps {
        // A token's encoded form is at least as long as the token.
        if current.len() < s.token.len() {
            continue;
        }
        changed |= replace_in(&mut current, s.token.as_bytes(), || s.value());
        let encoded_token = percent_encode(s.token.as_bytes());
        if encoded_token.as_str() != s.token.as_str() {
            changed |= replace_in(&mut current, encoded_token.as_bytes(), || {
                percent_encode(s.value())
            });
        }
    }
    changed.then_some(current)
}

/// The path and query with every token replaced by the percent-encoded value.
pub(crate) fn substitute_path(path_and_query: &str, swaps: &[Swap]) -> Zeroizing<String> {
    let mut current = Zeroizing::new(path_and_query.as_bytes().to_vec());
    for s in swaps {
        if current.len() < s.token.len() {
            continue;
        }
        replace_in(&mut current, s.token.as_bytes(), || {
            percent_encode(s.value())
        });
        replace_in(
            &mut current,
            percent_encode(s.token.as_bytes()).as_bytes(),
            || percent_encode(s.value()),
        );
    }
    Zeroizing::new(String::from_utf8_lossy(&current).into_owned())
}

/// How a request body is encoded, which decides how a value is written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `application/json` or `+json`: the value is written as JSON string content.
    Json,
    /// `application/x-www-form-urlencoded`: percent-encoded.
    Form,
    /// Anything else: the value as it is.
    Other,
}

impl BodyKind {
    pub(crate) fn of(content_type: Option<&[u8]>) -> Self {
        let Some(ct) = content_type.and_then(|v| std::str::from_utf8(v).ok()) else {
            return Self::Other;
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence == "application/json" || essence.ends_with("+json") {
            Self::Json
        } else if essence == "application/x-www-form-urlencoded" {
            Self::Form
        } else {
            Self::Other
        }
    }
}

/// `<` and `>` as Go's `encoding/json` (and others) escape them inside strings.
fn json_escaped_angles(text: &str) -> String {
    text.replace('<', "\\u003c").replace('>', "\\u003e")
}

/// `value` as the content of a JSON string (RFC 8259 escapes).
fn json_string_content(value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[usize::from(b >> 4)]);
                out.push(b"0123456789abcdef"[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out
}

/// Every form in which a token can appear in a body, to look for it: raw, percent-encoded,
/// and (in JSON) with escaped angle brackets. The caller runs `tokens_in` over each.
pub(crate) fn body_views(body: &[u8], kind: BodyKind) -> Vec<Zeroizing<Vec<u8>>> {
    let mut views = Vec::new();
    match kind {
        BodyKind::Form => {
            if let Ok(text) = std::str::from_utf8(body) {
                views.push(crate::identify::percent_decode(text));
            }
        }
        BodyKind::Json => {
            let mut unescaped = Zeroizing::new(body.to_vec());
            replace_in(&mut unescaped, b"\\u003c", || b"<");
            replace_in(&mut unescaped, b"\\u003e", || b">");
            replace_in(&mut unescaped, b"\\u003C", || b"<");
            replace_in(&mut unescaped, b"\\u003E", || b">");
            views.push(unescaped);
        }
        BodyKind::Other => {}
    }
    views
}

/// The body with every token replaced, written the way `kind` requires, or `None` if no
/// token occurs in it.
pub(crate) fn substitute_body(body: &[u8], kind: BodyKind, swaps: &[Swap]) -> Option<Bytes> {
    let mut current = Zeroizing::new(body.to_vec());
    let mut changed = false;
    for s in swaps {
        let token = s.token.as_str();
        match kind {
            BodyKind::Json => {
                let value = json_string_content(s.value());
                changed |= replace_in(&mut current, token.as_bytes(), || &value[..]);
                // A token without angle brackets (sqt_…) has no escaped form.
                let lower = json_escaped_angles(token);
                if lower != token {
                    let upper = lower
                        .replace("\\u003c", "\\u003C")
                        .replace("\\u003e", "\\u003E");
                    for escaped in [lower, upper] {
                        changed |= replace_in(&mut current, escaped.as_bytes(), || &value[..]);
                    }
                }
            }
            BodyKind::Form => {
                let value = percent_encode(s.value());
                changed |= replace_in(&mut current, token.as_bytes(), || value.as_bytes());
                changed |= replace_in(
                    &mut current,
                    percent_encode(token.as_bytes()).as_bytes(),
                    || value.as_bytes(),
                );
            }
            BodyKind::Other => {
                changed |= replace_in(&mut current, token.as_bytes(), || s.value());
            }
        }
    }
    changed.then(|| Bytes::from_owner(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap(token: &str, value: &[u8]) -> Swap {
        Swap {
            token: Zeroizing::new(token.to_owned()),
            value: SecretValue::new(value.to_vec()),
            secret: SecretId::from_stored("sec_test".to_owned()),
        }
    }

    const PH: &str = "<<SECRET_abcdefghijkl>>";

    #[test]
    fn replace_all_handles_edges() {
        assert!(replace_all(b"abc", b"", || b"x").is_none());
        assert!(replace_all(b"abc", b"zz", || b"x").is_none());
        assert_eq!(
            &*replace_all(b"aXbXX", b"X", || b"--").unwrap(),
            b"a--b----"
        );
        assert_eq!(&*replace_all(b"XX", b"XX", || b"").unwrap(), b"");
    }

    #[test]
    fn json_bodies_get_an_escaped_value() {
        let swaps = [swap(PH, b"va\"lue\\x\n")];
        let body = format!(
            "{{\"key\":\"{PH}\",\"go\":\"\\u003c\\u003cSECRET_abcdefghijkl\\u003e\\u003e\"}}"
        );
        let out = substitute_body(body.as_bytes(), BodyKind::Json, &swaps).unwrap();
        assert_eq!(
            &out[..],
            br#"{"key":"va\"lue\\x\u000a","go":"va\"lue\\x\u000a"}"#
        );
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["key"], "va\"lue\\x\n");
    }

    #[test]
    fn form_bodies_get_a_percent_encoded_value() {
        let swaps = [swap(PH, b"a b&c")];
        let body = "token=%3C%3CSECRET_abcdefghijkl%3E%3E&raw=<<SECRET_abcdefghijkl>>";
        let out = substitute_body(body.as_bytes(), BodyKind::Form, &swaps).unwrap();
        assert_eq!(&out[..], b"token=a%20b%26c&raw=a%20b%26c");
    }

    #[test]
    fn other_bodies_get_the_value_as_is_and_untouched_bodies_are_none() {
        let swaps = [swap("sqt_token", b"v")];
        assert_eq!(
            &substitute_body(b"x sqt_token y", BodyKind::Other, &swaps).unwrap()[..],
            b"x v y"
        );
        assert!(substitute_body(b"nothing here", BodyKind::Json, &swaps).is_none());
    }

    #[test]
    fn body_kinds() {
        assert_eq!(
            BodyKind::of(Some(b"application/json; charset=utf-8")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::of(Some(b"application/vnd.api+json")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::of(Some(b"Application/X-WWW-Form-Urlencoded")),
            BodyKind::Form
        );
        assert_eq!(BodyKind::of(Some(b"text/plain")), BodyKind::Other);
        assert_eq!(BodyKind::of(None), BodyKind::Other);
    }

    #[test]
    fn views_expose_encoded_placeholders() {
        let json = br#"{"a":"\u003c\u003cSECRET_abcdefghijkl\u003e\u003e"}"#;
        let views = body_views(json, BodyKind::Json);
        assert!(
            views
                .iter()
                .any(|v| memchr::memmem::find(v, PH.as_bytes()).is_some())
        );
        let form = b"a=%3C%3CSECRET_abcdefghijkl%3E%3E";
        let views = body_views(form, BodyKind::Form);
        assert!(
            views
                .iter()
                .any(|v| memchr::memmem::find(v, PH.as_bytes()).is_some())
        );
    }

    #[test]
    fn basic_credentials_are_rewritten_inside() {
        let swaps = [swap("sqt_tok", b"real")];
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:sqt_tok")
        );
        let out = substitute_header(header.as_bytes(), &swaps).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:real")
            )
        );
        assert!(substitute_header(b"Bearer other", &swaps).is_none());
    }
}

//! Finding the agent's token wherever its SDK put the "API key": any header (Authorization
//! `Bearer`/`token`/`Basic`, `x-api-key`, `x-goog-api-key`, …) or a query parameter. Every
//! header and parameter that carries a token is removed: a token is never forwarded.

use base64::Engine as _;
use http::HeaderMap;
use sequester_crypto::{
    PLACEHOLDER_PREFIX, TOKEN_PREFIX, TokenHash, looks_like_placeholder, looks_like_token,
};
use zeroize::Zeroizing;

const TOKEN_LEN: usize = 42;
const PLACEHOLDER_LEN: usize = 9 + 12 + 2;

/// Why the request's credentials could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifyError {
    /// No Sequester token anywhere.
    Missing,
    /// Two different tokens: the request is ambiguous.
    Several,
}

/// Every well-formed token (`sqt_…`) and placeholder (`<<SECRET_…>>`) in `bytes`.
pub(crate) fn tokens_in(bytes: &[u8], out: &mut Vec<Zeroizing<String>>) {
    let prefix = TOKEN_PREFIX.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(PLACEHOLDER_PREFIX.as_bytes())
            && let Some(candidate) = bytes.get(i..i + PLACEHOLDER_LEN)
            && let Ok(candidate) = std::str::from_utf8(candidate)
            && looks_like_placeholder(candidate)
        {
            out.push(Zeroizing::new(candidate.to_owned()));
            i += PLACEHOLDER_LEN;
            continue;
        }
        if i + TOKEN_LEN > bytes.len() {
            i += 1;
            continue;
        }
        if bytes[i..].starts_with(prefix)
            && let Ok(candidate) = std::str::from_utf8(&bytes[i..i + TOKEN_LEN])
        {
            let ends_cleanly = bytes
                .get(i + TOKEN_LEN)
                .is_none_or(|b| !b.is_ascii_alphanumeric());
            if ends_cleanly && looks_like_token(candidate) {
                out.push(Zeroizing::new(candidate.to_owned()));
                i += TOKEN_LEN;
                continue;
            }
        }
        i += 1;
    }
}

/// Tokens in a header value, including inside `Basic base64(user:password)`.
fn tokens_in_header(value: &[u8], out: &mut Vec<Zeroizing<String>>) {
    tokens_in(value, out);
    let text = String::from_utf8_lossy(value);
    let mut words = text.split_ascii_whitespace();
    if let (Some(scheme), Some(cred)) = (words.next(), words.next())
        && scheme.eq_ignore_ascii_case("basic")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(cred)
    {
        let decoded = Zeroizing::new(decoded);
        tokens_in(&decoded, out);
    }
}

pub(crate) fn percent_decode(s: &str) -> Zeroizing<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3).unwrap_or_default())
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Zeroizing::new(out)
}

/// The token as the agent sent it, and its hash.
pub struct Presented {
    pub token: Zeroizing<String>,
    pub hash: TokenHash,
}

/// The presented token, after removing every header and query parameter that carried it.
/// Returns the new query (without token parameters).
pub fn extract(
    headers: &mut HeaderMap,
    query: Option<&str>,
) -> (Result<Presented, IdentifyError>, Option<String>) {
    let mut found: Vec<Zeroizing<String>> = Vec::new();
    let mut carrying = Vec::new();
    for (name, value) in headers.iter() {
        let before = found.len();
        tokens_in_header(value.as_bytes(), &mut found);
        if found.len() > before {
            carrying.push(name.clone());
        }
    }
    for name in carrying {
        headers.remove(&name);
    }
    let query = query.map(|q| {
        q.split('&')
            .filter(|pair| {
                let before = found.len();
                tokens_in(&percent_decode(pair), &mut found);
                found.len() == before
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    let query = query.filter(|q| !q.is_empty());
    let result = match found.split_first() {
        None => Err(IdentifyError::Missing),
        Some((first, rest)) if rest.iter().all(|t| t.as_str() == first.as_str()) => Ok(Presented {
            hash: TokenHash::of(first),
            token: first.clone(),
        }),
        Some(_) => Err(IdentifyError::Several),
    };
    (result, query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use sequester_crypto::IssuedToken;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn finds_tokens_where_sdks_put_keys() {
        let t = IssuedToken::generate();
        let tok = t.reveal();
        let basic_pw =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{tok}"));
        let basic_user = base64::engine::general_purpose::STANDARD.encode(format!("{tok}:"));
        for (hs, query) in [
            (vec![("authorization", format!("Bearer {tok}"))], None),
            (vec![("authorization", format!("token {tok}"))], None),
            (vec![("authorization", format!("Basic {basic_pw}"))], None),
            (vec![("authorization", format!("Basic {basic_user}"))], None),
            (vec![("x-api-key", tok.to_owned())], None),
            (vec![("x-goog-api-key", tok.to_owned())], None),
            (vec![], Some(format!("key={tok}&alt=json"))),
            (
                vec![],
                Some(format!("alt=json&api_key={}", tok.replace('_', "%5F"))),
            ),
        ] {
            let pairs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut h = headers(&pairs);
            h.insert("accept", HeaderValue::from_static("application/json"));
            let (got, q) = extract(&mut h, query.as_deref());
            assert_eq!(got.map(|p| p.hash).ok(), Some(t.hash()), "{hs:?} {query:?}");
            assert_eq!(h.len(), 1, "token header kept: {h:?}");
            assert!(!q.unwrap_or_default().contains("sqt_"));
            if let Some(q) = &query {
                assert!(!q.is_empty());
            }
        }
    }

    #[test]
    fn placeholders_count_as_tokens() {
        let p = sequester_crypto::placeholder_from(&[9; 32]);
        let mut h = headers(&[("authorization", &format!("Bearer {p}"))]);
        let (got, _) = extract(&mut h, None);
        assert_eq!(got.map(|x| x.hash).ok(), Some(TokenHash::of(&p)));
        assert!(h.is_empty());
        let encoded = p.replace('<', "%3C").replace('>', "%3E");
        let mut h = HeaderMap::new();
        let (got, q) = extract(&mut h, Some(&format!("key={encoded}&a=1")));
        assert_eq!(got.map(|x| x.hash).ok(), Some(TokenHash::of(&p)));
        assert_eq!(q.as_deref(), Some("a=1"));
    }

    #[test]
    fn missing_several_and_malformed() {
        let a = IssuedToken::generate();
        let b = IssuedToken::generate();
        let mut h = headers(&[("authorization", "Bearer sk-real-looking")]);
        assert_eq!(extract(&mut h, None).0.err(), Some(IdentifyError::Missing));
        let mut h = headers(&[
            ("authorization", &format!("Bearer {}", a.reveal())),
            ("x-api-key", b.reveal()),
        ]);
        assert_eq!(extract(&mut h, None).0.err(), Some(IdentifyError::Several));
        assert!(h.is_empty(), "both token headers removed even when refused");
        let mut h = headers(&[
            ("authorization", &format!("Bearer {}", a.reveal())),
            ("x-api-key", a.reveal()),
        ]);
        assert_eq!(extract(&mut h, None).0.map(|p| p.hash).ok(), Some(a.hash()));
        // A checksum typo is not a token.
        let last = a.reveal().as_bytes()[41];
        let typo = format!(
            "{}{}",
            &a.reveal()[..41],
            if last == b'x' { 'y' } else { 'x' }
        );
        let mut h = headers(&[("authorization", &format!("Bearer {typo}"))]);
        assert_eq!(extract(&mut h, None).0.err(), Some(IdentifyError::Missing));
        // Longer runs of alphanumerics are not tokens either.
        let mut h = headers(&[("authorization", &format!("Bearer {}abc", a.reveal()))]);
        assert_eq!(extract(&mut h, None).0.err(), Some(IdentifyError::Missing));
    }
}

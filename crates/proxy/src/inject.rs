//! Attaching a value to an outgoing request by the secret's injection rule. Header values are
//! built in zeroizing buffers and marked sensitive (never indexed by HPACK).

use crate::substitute::percent_encode;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use sequester_crypto::SecretValue;
use sequester_model::InjectionRule;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
#[error("the value cannot be carried by this injection rule: {0}")]
pub struct InjectError(&'static str);

fn sensitive(bytes: &[u8]) -> Result<HeaderValue, InjectError> {
    let mut v = HeaderValue::from_bytes(bytes)
        .map_err(|_| InjectError("it holds bytes not allowed in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Applies `rule` with `value` to the outgoing headers and query.
pub fn inject(
    rule: &InjectionRule,
    value: &SecretValue,
    headers: &mut HeaderMap,
    query: &mut Option<String>,
) -> Result<(), InjectError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "injection: the value is copied into the outgoing request toward an allowed host"
    )]
    let raw = value.expose();
    match rule {
        InjectionRule::Header { name, .. } => {
            let (_, before, after) = rule
                .header_parts()
                .ok_or(InjectError("the template has no {value}"))?;
            let mut buf =
                Zeroizing::new(Vec::with_capacity(before.len() + raw.len() + after.len()));
            buf.extend_from_slice(before.as_bytes());
            buf.extend_from_slice(raw);
            buf.extend_from_slice(after.as_bytes());
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| InjectError("the header name is invalid"))?;
            headers.insert(name, sensitive(&buf)?);
        }
        InjectionRule::Basic { user } => {
            let mut pair = Zeroizing::new(Vec::with_capacity(user.len() + 1 + raw.len()));
            pair.extend_from_slice(user.as_bytes());
            pair.push(b':');
            pair.extend_from_slice(raw);
            let mut header = Zeroizing::new(b"Basic ".to_vec());
            header.extend_from_slice(
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*pair)).as_bytes(),
            );
            headers.insert(http::header::AUTHORIZATION, sensitive(&header)?);
        }
        InjectionRule::Query { param } => {
            let encoded = percent_encode(raw);
            let kept: Vec<&str> = query
                .as_deref()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty() && p.split('=').next() != Some(param.as_str()))
                .collect();
            let mut q = kept.join("&");
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(param);
            q.push('=');
            q.push_str(&encoded);
            *query = Some(q);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule() {
        let value = SecretValue::new(b"sk-abc/+=".to_vec());
        let mut h = HeaderMap::new();
        let mut q = Some("a=1&key=old".to_owned());
        inject(&InjectionRule::bearer(), &value, &mut h, &mut q).unwrap();
        assert_eq!(h["authorization"], "Bearer sk-abc/+=");
        assert!(h["authorization"].is_sensitive());
        inject(
            &InjectionRule::parse("header:x-api-key:{value}").unwrap(),
            &value,
            &mut h,
            &mut q,
        )
        .unwrap();
        assert_eq!(h["x-api-key"], "sk-abc/+=");
        inject(
            &InjectionRule::parse("basic:x-access-token").unwrap(),
            &value,
            &mut h,
            &mut q,
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("x-access-token:sk-abc/+=");
        assert_eq!(h["authorization"], format!("Basic {b64}").as_str());
        inject(
            &InjectionRule::parse("query:key").unwrap(),
            &value,
            &mut h,
            &mut q,
        )
        .unwrap();
        assert_eq!(q.as_deref(), Some("a=1&key=sk-abc%2F%2B%3D"));
    }
}

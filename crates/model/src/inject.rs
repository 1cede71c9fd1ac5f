//! Injection rules: how a secret value is attached to an outgoing request.
//!
//! Written as one string, the same on the command line, in config files and in the store:
//! - `header:NAME:TEMPLATE`, for example `header:Authorization:Bearer {value}` or
//!   `header:x-api-key:{value}`; the template holds `{value}` exactly once;
//! - `basic:USER`, HTTP basic authentication with the value as the password;
//! - `query:PARAM`, the value as a URL query parameter.

use std::fmt;
use std::str::FromStr;

/// Why an injection rule was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid injection rule: {reason}; use 'header:NAME:TEMPLATE' (TEMPLATE containing {{value}}), 'basic:USER' or 'query:PARAM'"
)]
pub struct ParseInjectionError {
    reason: &'static str,
}

impl ParseInjectionError {
    pub fn code(&self) -> crate::ErrorCode {
        crate::ErrorCode::InvalidInjectionRule
    }
}

/// A validated injection rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InjectionRule {
    /// Set header `name` to `template` with `{value}` replaced by the secret.
    Header { name: String, template: String },
    /// `Authorization: Basic base64(user:value)`.
    Basic { user: String },
    /// Add (or replace) query parameter `param` with the secret.
    Query { param: String },
}

/// Headers that describe the connection or the framing of the message; an injection rule
/// must never set them (request smuggling, routing to another host).
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
    "proxy-authenticate",
];

const PLACEHOLDER: &str = "{value}";

impl InjectionRule {
    /// `header:Authorization:Bearer {value}`, the rule used when none is given.
    pub fn bearer() -> Self {
        Self::Header {
            name: "authorization".to_owned(),
            template: "Bearer {value}".to_owned(),
        }
    }

    pub fn parse(input: &str) -> Result<Self, ParseInjectionError> {
        let err = |reason| ParseInjectionError { reason };
        let (kind, rest) = input
            .split_once(':')
            .ok_or_else(|| err("missing the kind before ':'"))?;
        match kind {
            "header" => {
                let (name, template) = rest
                    .split_once(':')
                    .ok_or_else(|| err("a header rule needs a name and a template"))?;
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    return Err(err("the header name must be a valid HTTP token"));
                }
                let name = name.to_ascii_lowercase();
                if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                    return Err(err(
                        "that header controls routing or framing and cannot be set",
                    ));
                }
                if template.matches(PLACEHOLDER).count() != 1 {
                    return Err(err("the template must contain {value} exactly once"));
                }
                if !template
                    .bytes()
                    .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
                {
                    return Err(err("the template may hold only printable ASCII characters"));
                }
                Ok(Self::Header {
                    name,
                    template: template.to_owned(),
                })
            }
            "basic" => {
                if rest.is_empty() {
                    return Err(err("a basic rule needs a user name"));
                }
                if rest.contains(':') || !rest.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err(
                        "the basic user name may hold printable ASCII without ':' or spaces",
                    ));
                }
                Ok(Self::Basic {
                    user: rest.to_owned(),
                })
            }
            "query" => {
                if rest.is_empty()
                    || !rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b))
                {
                    return Err(err(
                        "the query parameter name may hold only A-Z a-z 0-9 _ - . ~",
                    ));
                }
                Ok(Self::Query {
                    param: rest.to_owned(),
                })
            }
            _ => Err(err("unknown kind (expected header, basic or query)")),
        }
    }

    /// The template split around `{value}`, for header rules.
    pub fn header_parts(&self) -> Option<(&str, &str, &str)> {
        match self {
            Self::Header { name, template } => {
                let (before, after) = template.split_once(PLACEHOLDER)?;
                Some((name, before, after))
            }
            _ => None,
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Default for InjectionRule {
    fn default() -> Self {
        Self::bearer()
    }
}

impl FromStr for InjectionRule {
    type Err = ParseInjectionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for InjectionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header { name, template } => write!(f, "header:{name}:{template}"),
            Self::Basic { user } => write!(f, "basic:{user}"),
            Self::Query { param } => write!(f, "query:{param}"),
        }
    }
}

impl serde::Serialize for InjectionRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for InjectionRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            InjectionRule::parse("header:Authorization:Bearer {value}").unwrap(),
            InjectionRule::bearer()
        );
        assert_eq!(
            InjectionRule::parse("header:x-api-key:{value}")
                .unwrap()
                .header_parts(),
            Some(("x-api-key", "", ""))
        );
        assert_eq!(
            InjectionRule::parse("basic:x-access-token").unwrap(),
            InjectionRule::Basic {
                user: "x-access-token".into()
            }
        );
        assert_eq!(
            InjectionRule::parse("query:key").unwrap().to_string(),
            "query:key"
        );
    }

    #[test]
    fn rejects_bad_rules() {
        for bad in [
            "",
            "header",
            "header:Authorization",
            "header:Authorization:Bearer",
            "header:Authorization:{value}{value}",
            "header:Bad Name:{value}",
            "header:Host:{value}",
            "header:Content-Length:{value}",
            "header:Transfer-Encoding:{value}",
            "header:X:{value}\r\nInjected: 1",
            "basic:",
            "basic:a:b",
            "query:",
            "query:a&b",
            "cookie:session",
        ] {
            assert_eq!(
                InjectionRule::parse(bad).unwrap_err().code(),
                crate::ErrorCode::InvalidInjectionRule,
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,64}") {
            if let Ok(rule) = InjectionRule::parse(&s) {
                prop_assert_eq!(InjectionRule::parse(&rule.to_string()).unwrap(), rule);
            }
        }
    }
}

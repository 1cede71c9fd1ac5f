//! Host patterns: where a secret may be sent.
//!
//! Accepted forms, each with an optional `:port`:
//! - an exact DNS name, `api.openai.com` (internationalised names are converted to their ASCII
//!   form, `bücher.example` becomes `xn--bcher-kva.example`);
//! - a wildcard for exactly one leftmost label, `*.example.com` (matches `a.example.com`, not
//!   `example.com` nor `a.b.example.com`); the suffix must have at least two labels;
//! - an IPv4 address `127.0.0.1` or a bracketed IPv6 address `[::1]`.
//!
//! A pattern without a port matches every port of that host. Schemes, paths, user info, query
//! strings and whitespace are rejected rather than silently stripped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a host pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {input:?}: {reason}")]
pub struct ParseHostError {
    input: String,
    reason: &'static str,
}

impl ParseHostError {
    fn new(input: &str, reason: &'static str) -> Self {
        // Inputs are host names typed by an operator, never secret values; cap them anyway so
        // a pasted blob does not flood a terminal.
        let input: String = input.chars().take(80).collect();
        Self { input, reason }
    }

    pub fn code(&self) -> crate::ErrorCode {
        crate::ErrorCode::InvalidHostPattern
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum HostKind {
    Exact(String),
    /// `*.suffix`: the stored string is the suffix without `*.`.
    Wildcard(String),
    Ip(IpAddr),
}

/// A validated host pattern. See the module docs for the grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPattern {
    kind: HostKind,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(input: &str) -> Result<Self, ParseHostError> {
        let err = |reason| ParseHostError::new(input, reason);
        if input.is_empty() {
            return Err(err("it is empty; give a host name such as api.example.com"));
        }
        if input.contains("://") {
            return Err(err("give the host only, without a scheme such as https://"));
        }
        if let Some(c) = input.chars().find(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@' | '\\')
        }) {
            return Err(match c {
                '/' | '\\' => err("give the host only, without a path"),
                '?' | '#' => err("give the host only, without a query or fragment"),
                '@' => err("give the host only, without user information"),
                _ => err("it contains whitespace or control characters"),
            });
        }

        let (host, port) = split_port(input).map_err(err)?;
        if host.is_empty() {
            return Err(err("the host part is empty"));
        }

        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("an IPv6 address must be written in brackets, like [::1]"))?;
            let ip = Ipv6Addr::from_str(inner).map_err(|_| err("not a valid IPv6 address"))?;
            return Ok(Self {
                kind: HostKind::Ip(IpAddr::V6(ip)),
                port,
            });
        }
        if host.contains(':') {
            return Err(err(
                "an IPv6 address must be written in brackets, like [::1]",
            ));
        }
        if let Ok(ip) = Ipv4Addr::from_str(host) {
            return Ok(Self {
                kind: HostKind::Ip(IpAddr::V4(ip)),
                port,
            });
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(err(
                "looks like an IP address but is not a valid IPv4 address",
            ));
        }

        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if name.contains('*') {
            return Err(err(
                "a wildcard is allowed only as the whole leftmost label, like *.example.com",
            ));
        }
        if name.ends_with('.') {
            return Err(err("remove the trailing dot"));
        }
        let ascii = idna::domain_to_ascii_strict(name)
            .map_err(|_| err("not a valid DNS name (labels of letters, digits and hyphens)"))?;
        if ascii.is_empty()
            || ascii
                .split('.')
                .any(|label| label.is_empty() || label.len() > 63)
        {
            return Err(err("not a valid DNS name (empty or over-long label)"));
        }
        if wildcard && !ascii.contains('.') {
            return Err(err(
                "a wildcard must keep at least two labels after it, like *.example.com",
            ));
        }
        if ascii
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("the last label of a DNS name cannot be all digits"));
        }
        Ok(Self {
            kind: if wildcard {
                HostKind::Wildcard(ascii)
            } else {
                HostKind::Exact(ascii)
            },
            port,
        })
    }

    /// The host part as written in a URL authority: the ASCII name (with `*.` for a
    /// wildcard) or the IP literal, IPv6 in brackets; no port.
    pub fn host_string(&self) -> String {
        match &self.kind {
            HostKind::Exact(name) => name.clone(),
            HostKind::Wildcard(suffix) => format!("*.{suffix}"),
            HostKind::Ip(IpAddr::V4(ip)) => ip.to_string(),
            HostKind::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }

    /// The port this pattern is limited to, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether `host` (a DNS name in ASCII form, or an IP literal; IPv6 with or without
    /// brackets) on `port` is covered by this pattern. Matching is case-insensitive; a
    /// trailing dot on `host` is ignored.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        match &self.kind {
            HostKind::Ip(ip) => {
                let bare = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                IpAddr::from_str(bare).is_ok_and(|h| h == *ip)
            }
            HostKind::Exact(name) => host.eq_ignore_ascii_case(name),
            HostKind::Wildcard(suffix) => match host.split_once('.') {
                Some((label, rest)) => {
                    !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
                }
                None => false,
            },
        }
    }
}

/// Splits `host[:port]` / `[v6][:port]`.
fn split_port(input: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if input.starts_with('[') {
        match input.rfind(']') {
            Some(end) => {
                let rest = &input[end + 1..];
                if rest.is_empty() {
                    (input, None)
                } else if let Some(port) = rest.strip_prefix(':') {
                    (&input[..=end], Some(port))
                } else {
                    return Err("unexpected text after the IPv6 address");
                }
            }
            None => return Err("an IPv6 address must be written in brackets, like [::1]"),
        }
    } else {
        match input.matches(':').count() {
            0 => (input, None),
            1 => match input.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (input, None),
            },
            _ => return Err("an IPv6 address must be written in brackets, like [::1]:443"),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
                return Err("the port must be a number from 1 to 65535");
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("the port must be a number from 1 to 65535"),
                Ok(n) => Some(n),
            }
        }
    };
    Ok((host, port))
}

impl FromStr for HostPattern {
    type Err = ParseHostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            HostKind::Exact(name) => f.write_str(name)?,
            HostKind::Wildcard(suffix) => write!(f, "*.{suffix}")?,
            HostKind::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostKind::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for HostPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HostPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn canonical_forms() {
        for (input, canonical) in [
            ("api.openai.com", "api.openai.com"),
            ("API.OpenAI.com", "api.openai.com"),
            ("*.example.com", "*.example.com"),
            ("example.com:8443", "example.com:8443"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("[::1]", "[::1]"),
            ("[::1]:443", "[::1]:443"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(p(input).to_string(), canonical, "{input}");
            assert_eq!(p(canonical), p(input));
        }
    }

    #[test]
    fn rejects_with_reason() {
        for bad in [
            "",
            "https://api.openai.com",
            "api.openai.com/v1",
            "user@host.com",
            "host.com?x=1",
            "a*.example.com",
            "*.*.example.com",
            "api.*.com",
            "*.com",
            "*",
            "host.com:",
            "host.com:0",
            "host.com:65536",
            "host.com:http",
            "::1",
            "[::1",
            "[zz::1]",
            "bad_host.com",
            "-lead.example.com",
            "a..b.com",
            "example.com.",
            "999.1.1.1",
            "with space.com",
            "tab\t.com",
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidHostPattern, "{bad:?}");
        }
    }

    #[test]
    fn wildcard_matches_one_label_only() {
        let w = p("*.example.com");
        assert!(w.matches("a.example.com", 443));
        assert!(w.matches("A.Example.COM", 443));
        assert!(!w.matches("example.com", 443));
        assert!(!w.matches("a.b.example.com", 443));
        assert!(!w.matches("aexample.com", 443));
        assert!(!w.matches("a.example.com.evil.net", 443));
    }

    #[test]
    fn ports_and_ips() {
        assert!(p("example.com").matches("example.com", 8443));
        assert!(p("example.com:8443").matches("example.com", 8443));
        assert!(!p("example.com:8443").matches("example.com", 443));
        assert!(p("127.0.0.1").matches("127.0.0.1", 1));
        assert!(!p("127.0.0.1").matches("127.0.0.2", 1));
        assert!(p("[::1]").matches("::1", 1));
        assert!(p("[::1]").matches("[::1]", 1));
        assert!(!p("example.com").matches("example.com.evil.net", 443));
        assert!(p("example.com").matches("example.com.", 443));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = HostPattern::parse(&s);
        }

        #[test]
        fn display_round_trips(s in "(\\*\\.)?[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,5})?\\.[a-z]{2,6}(:[1-9][0-9]{0,3})?") {
            let parsed = HostPattern::parse(&s).unwrap();
            prop_assert_eq!(HostPattern::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}

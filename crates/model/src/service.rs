//! Services: named upstreams that the reverse gateway routes `/{service}/…` to.

use crate::HostPattern;
use std::fmt;

/// Why a base URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base URL {input:?}: {reason}")]
pub struct ParseUrlError {
    input: String,
    reason: &'static str,
}

impl ParseUrlError {
    pub fn code(&self) -> crate::ErrorCode {
        crate::ErrorCode::InvalidBaseUrl
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// An upstream base URL: `https://host[:port][/path]`, no user info, query or fragment.
/// The path never ends with `/` (the root is the empty path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

impl BaseUrl {
    pub fn parse(input: &str) -> Result<Self, ParseUrlError> {
        let err = |reason| ParseUrlError {
            input: input.chars().take(120).collect(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = input.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = input.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(err("it must start with https:// (or http://)"));
        };
        if rest.contains(['?', '#']) {
            return Err(err("a base URL cannot hold a query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(err("a base URL cannot hold user information"));
        }
        if authority.contains('*') {
            return Err(err("a base URL names one host, not a wildcard"));
        }
        let host = HostPattern::parse(authority).map_err(|_| err("the host is not valid"))?;
        let port = host.port().unwrap_or(scheme.default_port());
        let host_only = host.host_string();
        if path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\')
        {
            return Err(err(
                "the path holds spaces, control characters or backslashes",
            ));
        }
        if path
            .split('/')
            .any(|seg| seg == "." || seg == ".." || seg.to_ascii_lowercase().contains("%2f"))
        {
            return Err(err("the path holds dot segments or encoded slashes"));
        }
        Ok(Self {
            scheme,
            host: host_only,
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as it goes in a URL authority (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path prefix, without a trailing `/`; empty for the root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host` or `host:port` when the port is not the scheme's default, for the Host header.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path
        )
    }
}

impl serde::Serialize for BaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.path()),
            ("api.openai.com", 443, "/v1")
        );
        assert_eq!(u.to_string(), "https://api.openai.com/v1");
        let u = BaseUrl::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.path(), u.authority().as_str()),
            ("127.0.0.1", 8443, "", "127.0.0.1:8443")
        );
        let u = BaseUrl::parse("http://[::1]:9000/api").unwrap();
        assert_eq!(u.to_string(), "http://[::1]:9000/api");
        for bad in [
            "api.openai.com",
            "ftp://x.com",
            "https://",
            "https://user:pw@x.com",
            "https://x.com/?q=1",
            "https://x.com/#f",
            "https://*.x.com",
            "https://x.com/a/../b",
            "https://x.com/a%2Fb",
            "https://x.com/a b",
        ] {
            assert_eq!(
                BaseUrl::parse(bad).unwrap_err().code(),
                crate::ErrorCode::InvalidBaseUrl,
                "{bad}"
            );
        }
    }
}

//! Validated names for tenants, agents and secrets.
//!
//! A name is 1 to [`NAME_MAX_LEN`] bytes of ASCII letters, digits, `_`, `-` and `.`, starting
//! with a letter or a digit. Names are case-sensitive (`OPENAI_API_KEY` and `openai_api_key` are
//! different secrets). The charset keeps names safe in URLs, environment variable names, file
//! names, log lines and SQL without escaping.

use std::fmt;
use std::str::FromStr;

/// Longest accepted name, in bytes.
pub const NAME_MAX_LEN: usize = 64;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNameError {
    #[error("{kind} name is empty; use 1 to {NAME_MAX_LEN} characters from A-Z a-z 0-9 _ - .")]
    Empty { kind: &'static str },
    #[error("{kind} name is {len} bytes long; the limit is {NAME_MAX_LEN}, choose a shorter name")]
    TooLong { kind: &'static str, len: usize },
    #[error(
        "{kind} name must start with a letter or digit and use only A-Z a-z 0-9 _ - . (found {found:?} at position {position})"
    )]
    BadCharacter {
        kind: &'static str,
        found: char,
        position: usize,
    },
}

impl ParseNameError {
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            Self::TooLong { .. } => crate::ErrorCode::NameTooLong,
            Self::Empty { .. } | Self::BadCharacter { .. } => crate::ErrorCode::InvalidName,
        }
    }
}

fn check(kind: &'static str, s: &str) -> Result<(), ParseNameError> {
    if s.is_empty() {
        return Err(ParseNameError::Empty { kind });
    }
    if s.len() > NAME_MAX_LEN {
        return Err(ParseNameError::TooLong { kind, len: s.len() });
    }
    for (position, c) in s.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (position > 0 && matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(ParseNameError::BadCharacter {
                kind,
                found: c,
                position,
            });
        }
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// Parses and validates a name.
            pub fn parse(s: &str) -> Result<Self, ParseNameError> {
                check($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = ParseNameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a tenant, unique in the broker.
    TenantName,
    "tenant"
);
name_type!(
    /// The name of an agent, unique in its tenant.
    AgentName,
    "agent"
);
name_type!(
    /// The name of a secret, unique in its tenant.
    SecretName,
    "secret"
);

name_type!(
    /// The name of a service (a named upstream), unique in its tenant; the first path segment
    /// of a gateway request.
    ServiceName,
    "service"
);

impl TenantName {
    /// The tenant that `init` creates and that commands use when `--tenant` is not given.
    pub fn default_tenant() -> Self {
        Self("default".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_documented_charset() {
        for ok in [
            "a",
            "OPENAI_API_KEY",
            "github-token.prod",
            "0day",
            "x".repeat(64).as_str(),
        ] {
            assert!(SecretName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names_with_codes() {
        assert_eq!(
            SecretName::parse("").unwrap_err().code(),
            crate::ErrorCode::InvalidName
        );
        assert_eq!(
            SecretName::parse(&"x".repeat(65)).unwrap_err().code(),
            crate::ErrorCode::NameTooLong
        );
        for bad in [
            "-lead",
            "_lead",
            ".lead",
            "sp ace",
            "slash/",
            "ünï",
            "semi;colon",
            "nl\n",
        ] {
            assert_eq!(
                AgentName::parse(bad).unwrap_err().code(),
                crate::ErrorCode::InvalidName,
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_charset(s in "\\PC{0,80}") {
            if let Ok(name) = TenantName::parse(&s) {
                prop_assert!(name.as_str().len() <= NAME_MAX_LEN);
                prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
            }
        }

        #[test]
        fn valid_names_round_trip(s in "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}") {
            let name = SecretName::parse(&s).unwrap();
            prop_assert_eq!(name.to_string(), s);
        }
    }
}

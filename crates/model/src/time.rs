//! Time as plain data. This crate never reads the clock: callers pass `now` in.

use std::fmt;
use std::time::Duration;

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix(secs: i64) -> Self {
        Self(secs)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    pub fn plus(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// RFC 3339 in UTC, `2026-11-24T21:14:48Z`.
    pub fn rfc3339(self) -> String {
        let secs = u64::try_from(self.0).unwrap_or(0);
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a duration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: use a number and a unit, like 90d, 12h, 30m, 45s or 1h30m")]
pub struct ParseDurationError {
    input: String,
}

impl ParseDurationError {
    pub fn code(&self) -> crate::ErrorCode {
        crate::ErrorCode::InvalidDuration
    }
}

/// Longest accepted duration: 100 years.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `90d`, `1h30m`, `45s`, `2w`; at least one second and at most 100 years, whole
/// seconds only.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        input: input.chars().take(40).collect(),
    };
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed.starts_with(|c: char| !c.is_ascii_digit()) {
        return Err(err());
    }
    let d = humantime::parse_duration(trimmed).map_err(|_| err())?;
    if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > MAX_DURATION {
        return Err(err());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        for bad in [
            "",
            "d",
            "-1h",
            "0s",
            "10",
            "500ms",
            "1.5s",
            "1000y",
            "abc",
            "1 fortnight",
        ] {
            assert_eq!(
                parse_duration(bad).unwrap_err().code(),
                crate::ErrorCode::InvalidDuration,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::from_unix(1_795_900_000).to_string(),
            "2026-11-28T21:06:40Z"
        );
    }
}

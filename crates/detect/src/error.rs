//! The crate's one error type.
//!
//! Messages name rule ids, field names and file paths, never input text: a rule file is operator
//! configuration, and scanned content may hold the very secrets this crate looks for.

use std::path::PathBuf;

/// Everything that can go wrong while loading rules, scanning files or writing a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// A rule file is not valid TOML or does not follow the rule schema.
    #[error(
        "rule file {source_name} could not be read: {message}; see crates/detect/rules/README.md for the format"
    )]
    RuleSyntax {
        /// Where the rules came from (a builtin file name or "extra rules").
        source_name: String,
        /// The TOML parser's explanation (it quotes rule text, which is configuration).
        message: String,
    },
    /// A rule has a field with an unusable value.
    #[error("rule {rule_id:?}: {field} {reason}")]
    InvalidRule {
        rule_id: String,
        field: &'static str,
        reason: String,
    },
    /// Two rules share an id.
    #[error("rule id {rule_id:?} is defined twice; rule ids must be unique")]
    DuplicateRule { rule_id: String },
    /// A rule names a validator that does not exist.
    #[error("rule {rule_id:?}: unknown validator {name:?}; known validators: {known}")]
    UnknownValidator {
        rule_id: String,
        name: String,
        known: String,
    },
    /// A rule's pattern does not compile, or may match unboundedly long text.
    #[error("rule {rule_id:?}: pattern rejected: {reason}")]
    InvalidPattern { rule_id: String, reason: String },
    /// Reading a file or directory failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a report failed.
    #[error("cannot write the report: {0}")]
    Output(#[source] std::io::Error),
}

impl DetectError {
    /// The stable, machine-readable code of this error. Codes are never renamed or reused.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::RuleSyntax { .. } | Self::InvalidRule { .. } => "invalid_rule",
            Self::DuplicateRule { .. } => "duplicate_rule",
            Self::UnknownValidator { .. } => "unknown_validator",
            Self::InvalidPattern { .. } => "invalid_rule_pattern",
            Self::Io { .. } => "io_error",
            Self::Output(_) => "output_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case() {
        let errors = [
            DetectError::DuplicateRule {
                rule_id: "x".into(),
            },
            DetectError::Output(std::io::Error::other("x")),
        ];
        for e in errors {
            assert!(
                e.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
    }
}

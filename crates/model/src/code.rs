//! Stable error and denial codes.

use std::fmt;

/// A stable, machine-readable code for every failure Sequester reports.
///
/// The string form (`as_str`) is what users and agents see in JSON bodies, receipts and CLI
/// output. Codes are never renamed or reused for another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    // Input that failed to parse.
    InvalidName,
    NameTooLong,
    InvalidHostPattern,
    InvalidInjectionRule,
    InvalidDuration,
    InvalidValue,
    EmptyValue,
    ValueTooLarge,
    InvalidTokenId,
    InvalidBaseUrl,
    InvalidConfig,
    InvalidRule,
    // Data directory and keys.
    NotInitialized,
    AlreadyInitialized,
    KeyFileMissing,
    KeyFileInsecure,
    WrongMasterKey,
    PassphraseRequired,
    IntegrityFailure,
    // Lookups and conflicts.
    TenantNotFound,
    AgentNotFound,
    SecretNotFound,
    TokenNotFound,
    TenantExists,
    AgentExists,
    SecretExists,
    ServiceNotFound,
    ServiceExists,
    // Lifecycle.
    SecretRevoked,
    SecretExpired,
    AgentDisabled,
    TokenRevoked,
    TokenExpired,
    // Data plane.
    UnknownToken,
    HostNotAllowed,
    DestinationForbidden,
    AuditUnavailable,
    UnknownService,
    InvalidRequest,
    MisdirectedRequest,
    UpstreamUnavailable,
    UpstreamTimeout,
    NotFound,
    ExfiltrationBlocked,
    /// A request body the proxy must inspect is larger than it buffers.
    BodyTooLarge,
    // Infrastructure.
    StorageUnavailable,
    SchemaTooNew,
    Io,
    Internal,
}

impl ErrorCode {
    /// The stable string form of the code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidName => "invalid_name",
            Self::NameTooLong => "name_too_long",
            Self::InvalidHostPattern => "invalid_host_pattern",
            Self::InvalidInjectionRule => "invalid_injection_rule",
            Self::InvalidDuration => "invalid_duration",
            Self::InvalidValue => "invalid_value",
            Self::EmptyValue => "empty_value",
            Self::ValueTooLarge => "value_too_large",
            Self::InvalidTokenId => "invalid_token_id",
            Self::InvalidBaseUrl => "invalid_base_url",
            Self::InvalidConfig => "invalid_config",
            Self::InvalidRule => "invalid_rule",
            Self::NotInitialized => "not_initialized",
            Self::AlreadyInitialized => "already_initialized",
            Self::KeyFileMissing => "key_file_missing",
            Self::KeyFileInsecure => "key_file_insecure",
            Self::WrongMasterKey => "wrong_master_key",
            Self::PassphraseRequired => "passphrase_required",
            Self::IntegrityFailure => "integrity_failure",
            Self::TenantNotFound => "tenant_not_found",
            Self::AgentNotFound => "agent_not_found",
            Self::SecretNotFound => "secret_not_found",
            Self::TokenNotFound => "token_not_found",
            Self::TenantExists => "tenant_exists",
            Self::AgentExists => "agent_exists",
            Self::SecretExists => "secret_exists",
            Self::ServiceNotFound => "service_not_found",
            Self::ServiceExists => "service_exists",
            Self::SecretRevoked => "secret_revoked",
            Self::SecretExpired => "secret_expired",
            Self::AgentDisabled => "agent_disabled",
            Self::TokenRevoked => "token_revoked",
            Self::TokenExpired => "token_expired",
            Self::UnknownToken => "unknown_token",
            Self::HostNotAllowed => "host_not_allowed",
            Self::DestinationForbidden => "destination_forbidden",
            Self::AuditUnavailable => "audit_unavailable",
            Self::UnknownService => "unknown_service",
            Self::InvalidRequest => "invalid_request",
            Self::MisdirectedRequest => "misdirected_request",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::NotFound => "not_found",
            Self::ExfiltrationBlocked => "exfiltration_blocked",
            Self::BodyTooLarge => "body_too_large",
            Self::StorageUnavailable => "storage_unavailable",
            Self::SchemaTooNew => "schema_too_new",
            Self::Io => "io_error",
            Self::Internal => "internal_error",
        }
    }

    /// Every code, for documentation and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::InvalidName,
        Self::NameTooLong,
        Self::InvalidHostPattern,
        Self::InvalidInjectionRule,
        Self::InvalidDuration,
        Self::InvalidValue,
        Self::EmptyValue,
        Self::ValueTooLarge,
        Self::InvalidTokenId,
        Self::InvalidBaseUrl,
        Self::InvalidConfig,
        Self::InvalidRule,
        Self::NotInitialized,
        Self::AlreadyInitialized,
        Self::KeyFileMissing,
        Self::KeyFileInsecure,
        Self::WrongMasterKey,
        Self::PassphraseRequired,
        Self::IntegrityFailure,
        Self::TenantNotFound,
        Self::AgentNotFound,
        Self::SecretNotFound,
        Self::TokenNotFound,
        Self::TenantExists,
        Self::AgentExists,
        Self::SecretExists,
        Self::ServiceNotFound,
        Self::ServiceExists,
        Self::SecretRevoked,
        Self::SecretExpired,
        Self::AgentDisabled,
        Self::TokenRevoked,
        Self::TokenExpired,
        Self::UnknownToken,
        Self::HostNotAllowed,
        Self::DestinationForbidden,
        Self::AuditUnavailable,
        Self::UnknownService,
        Self::InvalidRequest,
        Self::MisdirectedRequest,
        Self::UpstreamUnavailable,
        Self::UpstreamTimeout,
        Self::NotFound,
        Self::ExfiltrationBlocked,
        Self::BodyTooLarge,
        Self::StorageUnavailable,
        Self::SchemaTooNew,
        Self::Io,
        Self::Internal,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s} is not snake_case"
            );
        }
    }
}

use sequester_crypto::CryptoError;
use sequester_model::ErrorCode;
use std::path::PathBuf;

/// Failures of the store. Messages say what to do next and never contain a value or a token.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no Sequester data directory at {path}; run `sequester init` first")]
    NotInitialized { path: PathBuf },
    #[error(
        "{path} already holds a Sequester data directory; use it as it is, or choose another --data-dir"
    )]
    AlreadyInitialized { path: PathBuf },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(
        "this data directory is sealed with a passphrase; give it with --passphrase-file or SEQUESTER_PASSPHRASE_FILE, or run interactively"
    )]
    PassphraseRequired,
    #[error("tenant {name:?} does not exist; `sequester tenant list` shows the tenants")]
    TenantNotFound { name: String },
    #[error(
        "agent {name:?} does not exist in tenant {tenant:?}; add it with `sequester agent add {name}`"
    )]
    AgentNotFound { tenant: String, name: String },
    #[error(
        "secret {name:?} does not exist in tenant {tenant:?}; add it with `sequester secret add {name} --host HOST`"
    )]
    SecretNotFound { tenant: String, name: String },
    #[error(
        "token {id} does not exist in tenant {tenant:?}; `sequester token list` shows the tokens"
    )]
    TokenNotFound { tenant: String, id: String },
    #[error("tenant {name:?} already exists")]
    TenantExists { name: String },
    #[error("agent {name:?} already exists in tenant {tenant:?}")]
    AgentExists { tenant: String, name: String },
    #[error(
        "secret {name:?} already exists in tenant {tenant:?}; use `sequester secret rotate {name}` to give it a new value"
    )]
    SecretExists { tenant: String, name: String },
    #[error(
        "service {name:?} does not exist in tenant {tenant:?}; `sequester service list` shows the services"
    )]
    ServiceNotFound { tenant: String, name: String },
    #[error("service {name:?} already exists in tenant {tenant:?}")]
    ServiceExists { tenant: String, name: String },
    #[error("secret {name:?} is revoked; add a new secret instead")]
    SecretRevoked { name: String },
    #[error("secret {name:?} has expired; add a new secret instead")]
    SecretExpired { name: String },
    #[error("agent {name:?} is disabled")]
    AgentDisabled { name: String },
    #[error("the secret value is empty; pipe the value on standard input")]
    EmptyValue,
    #[error("the secret value is longer than {max} bytes")]
    ValueTooLarge { max: usize },
    #[error("the secret value {reason}")]
    InvalidValue { reason: &'static str },
    #[error("a secret needs at least one allowed host; give --host HOST")]
    NoHosts,
    #[error(
        "the database schema is version {found}, newer than this sequester supports ({supported}); upgrade sequester"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("the database holds invalid data ({what}); restore it from a backup")]
    Corrupt { what: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotInitialized { .. } => ErrorCode::NotInitialized,
            Self::AlreadyInitialized { .. } => ErrorCode::AlreadyInitialized,
            Self::Crypto(e) => e.code(),
            Self::PassphraseRequired => ErrorCode::PassphraseRequired,
            Self::TenantNotFound { .. } => ErrorCode::TenantNotFound,
            Self::AgentNotFound { .. } => ErrorCode::AgentNotFound,
            Self::SecretNotFound { .. } => ErrorCode::SecretNotFound,
            Self::TokenNotFound { .. } => ErrorCode::TokenNotFound,
            Self::TenantExists { .. } => ErrorCode::TenantExists,
            Self::AgentExists { .. } => ErrorCode::AgentExists,
            Self::SecretExists { .. } => ErrorCode::SecretExists,
            Self::ServiceNotFound { .. } => ErrorCode::ServiceNotFound,
            Self::ServiceExists { .. } => ErrorCode::ServiceExists,
            Self::SecretRevoked { .. } => ErrorCode::SecretRevoked,
            Self::SecretExpired { .. } => ErrorCode::SecretExpired,
            Self::AgentDisabled { .. } => ErrorCode::AgentDisabled,
            Self::EmptyValue => ErrorCode::EmptyValue,
            Self::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            Self::InvalidValue { .. } => ErrorCode::InvalidValue,
            Self::NoHosts => ErrorCode::InvalidHostPattern,
            Self::SchemaTooNew { .. } => ErrorCode::SchemaTooNew,
            Self::Corrupt { .. } => ErrorCode::IntegrityFailure,
            Self::Database(_) | Self::Sqlite(_) => ErrorCode::StorageUnavailable,
            Self::Io { .. } => ErrorCode::Io,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into() }
    }
}

use sequester_model::ErrorCode;
use std::path::PathBuf;

/// Failures of key handling and sealing. Messages never contain key material or values.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "integrity check failed for {what}: the sealed data was altered, moved to another row, or belongs to another key; restore the database from a backup"
    )]
    Integrity { what: String },
    #[error("the master key does not open this data directory: {hint}")]
    WrongKey { hint: &'static str },
    #[error(
        "master key file {path} is missing; restore it from your backup (without it the sealed secrets cannot be opened)"
    )]
    KeyFileMissing { path: PathBuf },
    #[error(
        "master key file {path} has mode {mode:03o}, readable by other users; run `chmod 600 {path}` and consider rotating every secret"
    )]
    KeyFileInsecure { path: PathBuf, mode: u32 },
    #[error("master key file {path} is malformed; restore it from your backup")]
    KeyFileMalformed { path: PathBuf },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("sealing failed")]
    Seal,
}

impl CryptoError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Integrity { .. } => ErrorCode::IntegrityFailure,
            Self::WrongKey { .. } => ErrorCode::WrongMasterKey,
            Self::KeyFileMissing { .. } => ErrorCode::KeyFileMissing,
            Self::KeyFileInsecure { .. } => ErrorCode::KeyFileInsecure,
            Self::KeyFileMalformed { .. } => ErrorCode::WrongMasterKey,
            Self::Io { .. } => ErrorCode::Io,
            Self::Kdf(_) | Self::Seal => ErrorCode::Internal,
        }
    }
}

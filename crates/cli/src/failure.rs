//! The CLI's error: a stable code, a message that says what to do, and an exit status.

use sequester_model::ErrorCode;
use sequester_store::StoreError;

#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The documented exit status for this failure.
    pub fn exit_status(&self) -> u8 {
        use ErrorCode as C;
        match self.code {
            C::InvalidName
            | C::NameTooLong
            | C::InvalidHostPattern
            | C::InvalidInjectionRule
            | C::InvalidDuration
            | C::InvalidValue
            | C::EmptyValue
            | C::ValueTooLarge
            | C::InvalidTokenId
            | C::InvalidBaseUrl
            | C::InvalidConfig
            | C::InvalidRule => 2,
            C::NotInitialized
            | C::TenantNotFound
            | C::AgentNotFound
            | C::SecretNotFound
            | C::TokenNotFound
            | C::ServiceNotFound => 3,
            C::AlreadyInitialized
            | C::TenantExists
            | C::AgentExists
            | C::SecretExists
            | C::ServiceExists => 4,
            C::KeyFileMissing
            | C::KeyFileInsecure
            | C::WrongMasterKey
            | C::PassphraseRequired
            | C::IntegrityFailure
            | C::SchemaTooNew => 5,
            C::SecretRevoked
            | C::SecretExpired
            | C::AgentDisabled
            | C::TokenRevoked
            | C::TokenExpired => 6,
            _ => 1,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

macro_rules! from_parse_error {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Failure {
            fn from(e: $ty) -> Self {
                Self::new(e.code(), e.to_string())
            }
        }
    )*};
}

from_parse_error!(
    sequester_model::ParseNameError,
    sequester_model::ParseHostError,
    sequester_model::ParseInjectionError,
    sequester_model::ParseDurationError,
    sequester_model::ParseUrlError
);

impl From<sequester_detect::DetectError> for Failure {
    fn from(e: sequester_detect::DetectError) -> Self {
        let code = match e.code() {
            "io_error" | "output_error" => ErrorCode::Io,
            _ => ErrorCode::InvalidRule,
        };
        Self::new(code, e.to_string())
    }
}

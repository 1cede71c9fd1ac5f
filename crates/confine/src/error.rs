use crate::ConfineStatus;
use sequester_model::ErrorCode;
use std::ffi::OsString;
use std::path::PathBuf;

/// Failures of confinement. None of them carries file contents, only paths and causes.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A path to deny cannot be turned into a precise, stable location.
    #[error("cannot deny `{path}`: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// Reading the file system to build the rules failed; nothing was confined.
    #[error(
        "cannot inspect `{path}` while building the confinement ({source}); nothing was confined, so fix the path or its permissions and retry"
    )]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The kernel or the `landlock` crate rejected the ruleset; nothing was confined.
    #[error("Landlock rejected the confinement: {source}")]
    Landlock { source: landlock::RulesetError },
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("cannot make this process undumpable (prctl PR_SET_DUMPABLE): {source}")]
    Undumpable { source: std::io::Error },
    /// The caller's `accept` check refused the confinement that was achieved, so the program
    /// was not started. The calling thread stays confined as far as `status` says.
    #[error("refused to start the program because confinement is not good enough: {status}")]
    Refused { status: ConfineStatus },
    /// `execve` failed after confinement (missing program, or a program inside a denied path).
    #[error("cannot run `{}` under confinement: {source}", program.to_string_lossy())]
    Exec {
        program: OsString,
        source: std::io::Error,
    },
}

impl ConfineError {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidPath { .. } => ErrorCode::InvalidConfig,
            Self::Inspect { .. } | Self::Exec { .. } => ErrorCode::Io,
            Self::Landlock { .. } | Self::Undumpable { .. } | Self::Refused { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

impl From<landlock::RulesetError> for ConfineError {
    fn from(source: landlock::RulesetError) -> Self {
        Self::Landlock { source }
    }
}

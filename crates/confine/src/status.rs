use crate::ConfineError;
use landlock::{ABI, LandlockStatus, RestrictSelf};
use std::fmt;

/// What a confinement call actually put in force.
///
/// Callers decide what to do with anything short of [`ConfineStatus::FullyEnforced`]; the
/// recommended policy for starting an agent is: run on `FullyEnforced`, warn and run on
/// `PartiallyEnforced` (secrets stay unreadable, see the reason), refuse on `NotEnforced`
/// unless the operator opted out of confinement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfineStatus {
    /// Every denied path is closed to reading, listing, writing, truncating, creating,
    /// removing, renaming, linking and executing, for the confined thread and every process
    /// it starts.
    FullyEnforced,
    /// Confinement is in force with a gap that `reason` names precisely: an old Landlock ABI
    /// that cannot stop `truncate(2)` (denied files are still unreadable), or other threads of
    /// the process that were already running and stay unconfined.
    PartiallyEnforced { reason: String },
    /// Nothing is confined (only `no_new_privs` may have been set); `reason` says why and what
    /// would fix it.
    NotEnforced { reason: String },
}

impl ConfineStatus {
    /// Whether this is [`ConfineStatus::FullyEnforced`].
    pub fn is_fully_enforced(&self) -> bool {
        matches!(self, Self::FullyEnforced)
    }

    /// Whether any Landlock restriction is in force (fully or partially).
    pub fn is_enforced(&self) -> bool {
        !matches!(self, Self::NotEnforced { .. })
    }
}

impl fmt::Display for ConfineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FullyEnforced => f.write_str("fully enforced"),
            Self::PartiallyEnforced { reason } => write!(f, "partially enforced: {reason}"),
            Self::NotEnforced { reason } => write!(f, "not enforced: {reason}"),
        }
    }
}

/// Landlock support of the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockSupport {
    /// Landlock works; `abi` is the kernel's ABI version (1 = Linux 5.13 … 7 = Linux 6.15).
    Available { abi: u32 },
    /// Built into the kernel but not enabled at boot (`EOPNOTSUPP`).
    NotEnabled,
    /// Not built into the kernel, or blocked by a seccomp filter (`ENOSYS`).
    NotImplemented,
}

impl LandlockSupport {
    /// Why confinement cannot be enforced, or `None` when Landlock is available.
    pub fn unavailable_reason(self) -> Option<&'static str> {
        match self {
            Self::Available { .. } => None,
            Self::NotEnabled => Some(
                "Landlock is built into this kernel but not enabled; add `landlock` to the `lsm=` boot parameter",
            ),
            Self::NotImplemented => Some(
                "this kernel has no Landlock (or a seccomp filter hides it); it needs Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK=y",
            ),
        }
    }
}

impl fmt::Display for LandlockSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available { abi } => write!(f, "Landlock ABI {abi}"),
            Self::NotEnabled => f.write_str("Landlock not enabled"),
            Self::NotImplemented => f.write_str("Landlock not available"),
        }
    }
}

/// Asks the kernel which Landlock ABI it supports. Changes nothing in the calling process.
pub fn landlock_support() -> Result<LandlockSupport, ConfineError> {
    // With no flag requested and `no_new_privs(false)`, `apply` performs no syscall besides the
    // version query and restricts nothing.
    let status = RestrictSelf::default().no_new_privs(false).apply()?;
    Ok(LandlockSupport::from(status.landlock))
}

impl From<LandlockStatus> for LandlockSupport {
    fn from(status: LandlockStatus) -> Self {
        match status {
            LandlockStatus::Available {
                effective_abi,
                kernel_abi,
            } => Self::Available {
                abi: kernel_abi
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or_else(|| abi_number(effective_abi)),
            },
            LandlockStatus::NotEnabled => Self::NotEnabled,
            LandlockStatus::NotImplemented => Self::NotImplemented,
        }
    }
}

/// The number of an ABI (`ABI` is non-exhaustive, so it cannot be cast; its `Display` is the
/// number).
pub(crate) fn abi_number(abi: ABI) -> u32 {
    abi.to_string().parse().unwrap_or(0)
}

//! Keeping the broker's memory away from same-user processes.

use crate::ConfineError;
use rustix::process::{DumpableBehavior, set_dumpable_behavior};

/// Marks the calling process not dumpable: `prctl(PR_SET_DUMPABLE, 0)`.
///
/// Afterwards a process of the same user without `CAP_SYS_PTRACE` can no longer
/// `ptrace(2)`-attach to this process, read its memory with `process_vm_readv(2)`, or open its
/// `/proc/<pid>/mem`, `environ`, `maps`, `fd/*` and the like: the kernel makes those files owned
/// by root and refuses them in its ptrace access check. No core dump is written either, so a
/// crash cannot leave key material on disk.
///
/// The flag belongs to the process (all its threads) and is reset to dumpable by `execve(2)`
/// and by a change of user or group ids, so the broker must call this itself, early in `main`,
/// after any privilege change and before it reads the master key or a secret. It does nothing
/// against root or a process holding `CAP_SYS_PTRACE`.
pub fn make_undumpable() -> Result<(), ConfineError> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| ConfineError::Undumpable { source: e.into() })
}

//! Confining, then replacing the process image with the agent.

use crate::rules::{Threads, confine};
use crate::{ConfineError, ConfineStatus};
use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Confines the calling process so that `deny` is out of reach (as
/// [`confine_current_process`](crate::confine_current_process)), asks `accept` whether the
/// achieved [`ConfineStatus`] is good enough, then replaces the process image with `program`.
///
/// - `program` is looked up in the `PATH` of `env` when it has no slash.
/// - `args` excludes `argv[0]`, which is `program`.
/// - `env` is the **complete** environment of the program: nothing of the caller's environment
///   is passed on unless it is listed (pass `std::env::vars_os().collect::<Vec<_>>()` to keep
///   it all).
/// - `accept` sees the status before anything runs; returning `false` refuses with
///   [`ConfineError::Refused`] and the program is not started. A typical policy is
///   `|s| s.is_enforced()`, after printing the reason of a partial status.
///
/// Only returns on failure. Other threads of the caller do not matter: `execve` ends them,
/// and the program and everything it starts inherit the confinement. File descriptors the
/// caller leaves open without `O_CLOEXEC` are inherited as they are and are not checked by
/// Landlock, so open nothing inside a denied path before calling this.
pub fn exec_confined(
    deny: &[PathBuf],
    program: &OsStr,
    args: &[OsString],
    env: &[(OsString, OsString)],
    accept: impl FnOnce(&ConfineStatus) -> bool,
) -> Result<Infallible, ConfineError> {
    let status = confine(deny, Threads::EndedByExec)?;
    if !accept(&status) {
        return Err(ConfineError::Refused { status });
    }
    let source = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(ConfineError::Exec {
        program: program.to_os_string(),
        source,
    })
}

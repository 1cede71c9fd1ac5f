//! Sequester's confinement: keeping an agent that runs as the broker's own user away from the
//! broker's data directory, master key file and memory.
//!
//! Job. `sequester run -- CMD…` starts an agent with proxy settings, and the agent often has a
//! shell on the broker's machine as the same user. File modes do not stop it (same owner), so
//! this crate adds two kernel mechanisms:
//! - [`make_undumpable`], called by the **broker** on itself: `prctl(PR_SET_DUMPABLE, 0)`, so a
//!   same-user process cannot ptrace it, read `/proc/<pid>/mem` or `/proc/<pid>/environ` (the
//!   kernel makes them root-owned and refuses the ptrace access check), or get a core dump.
//! - [`confine_current_process`] and [`exec_confined`], used on the **agent's** side: a Landlock
//!   ruleset that closes a set of denied paths (the data directory and the key file) and leaves
//!   the rest of the file system as it was: system files readable, `/tmp` and the working
//!   directory writable, programs executable (but see the side effects below for the
//!   directories that contain a denied path). `no_new_privs` is set too.
//!
//! How the denial works. Landlock only grants, and a rule on a directory covers everything
//! beneath it. So no rule may sit on a denied path or on any of its ancestors; instead every
//! entry of each ancestor that is neither denied nor another ancestor gets a full-access rule
//! (files and directories alike; symlinks none, since access through them is checked at the
//! target). Denied paths are canonicalized first (symlinks resolved; the missing tail of a path
//! that does not exist yet is kept, so it is denied once created), and ancestors are opened
//! component by component without following symlinks.
//!
//! Invariants:
//! - a denied path and everything beneath it, including what is created after confinement,
//!   gets no rule: with Landlock ABI ≥ 3 a confined process can neither read, list, write,
//!   truncate, create, remove, rename, link nor execute there, whatever path or symlink it
//!   uses to get there;
//! - the returned [`ConfineStatus`] says exactly what is in force; nothing here reports
//!   `FullyEnforced` for a kernel or thread layout that leaves a gap;
//! - fail closed: any error while building rules returns before `landlock_restrict_self`, and
//!   an entry that cannot be inspected stays inaccessible rather than granted;
//! - no `unsafe`: syscalls go through the `landlock` and `rustix` crates.
//!
//! Threat model: a hostile agent running as the broker's user, confined by this crate (Landlock
//! available), with the broker undumpable.
//! - It **cannot** read or change the data directory or the key file (also not through
//!   symlinks, `/proc/<pid>/root`, `/proc/<pid>/fd/*` or renaming a parent), read the broker's
//!   memory or environment (undumpable, and Landlock forbids ptrace of processes outside the
//!   agent's domain), gain privileges through set-uid programs (`no_new_privs`), or mount
//!   anything over the rules (Landlock forbids mount changes).
//! - It runs as an unprivileged user: root, or a process with `CAP_SYS_PTRACE` or
//!   `CAP_PERFMON`, can still read the broker's memory, and is not in this model.
//! - It **can** still talk to the broker's sockets and ports (that is its job), see the process
//!   list and `stat(2)` the denied files (size, times: Landlock does not cover metadata), send
//!   signals to the broker (same user), exhaust CPU, memory, disk or file descriptors, and use
//!   any hard link or bind mount that exposes the data elsewhere (Landlock checks paths, not
//!   inodes). File descriptors inherited from its parent are not checked. When a single file
//!   is denied rather than its directory, its siblings that exist at confinement time are
//!   granted: deny the whole data directory.
//! - Side effects of the technique: ancestors of a denied path cannot be listed, and nothing
//!   can be created, removed or renamed directly inside them (e.g. new files directly in
//!   `$HOME` when the data directory is `~/.local/share/sequester`); entries created directly
//!   in an ancestor after confinement are inaccessible. Keep the data directory out of the
//!   agent's working area.
//! - Where Landlock is missing nothing is confined and the status says so
//!   ([`ConfineStatus::NotEnforced`]); there is no mount-namespace fallback.
//!
//! Recommended deployment: the broker as its own system user (or on its own host), with the
//! data directory mode 0700 under that user. Then file modes and the kernel's ptrace rules
//! protect it against every agent; this crate is defence in depth, and the only protection
//! when broker and agent share a user.

mod dumpable;
mod error;
mod exec;
mod plan;
mod rules;
mod status;

pub use dumpable::make_undumpable;
pub use error::ConfineError;
pub use exec::exec_confined;
pub use status::{ConfineStatus, LandlockSupport, landlock_support};

use std::path::PathBuf;

/// Confines the calling thread, and every process it starts afterwards, so that the paths in
/// `deny` and everything beneath them are inaccessible while the rest of the file system stays
/// as it was. Also sets `no_new_privs`. Irreversible for the thread.
///
/// Paths may be relative (to the working directory), go through symlinks, or not exist yet;
/// a denied path may be a directory or a file. Refused: `/`, an empty path, a dangling symlink,
/// `..` after a missing component.
///
/// Threads of the process that are already running stay unconfined unless the kernel has
/// Landlock ABI 8 (`LANDLOCK_RESTRICT_SELF_TSYNC`); the status reports it. Call this before
/// starting threads, or use [`exec_confined`].
pub fn confine_current_process(deny: &[PathBuf]) -> Result<ConfineStatus, ConfineError> {
    rules::confine(deny, rules::Threads::Matter)
}

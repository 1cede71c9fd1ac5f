//! Building the Landlock ruleset from a [`Plan`] and restricting the calling thread.

use crate::plan::Plan;
use crate::status::abi_number;
use crate::{ConfineError, ConfineStatus, LandlockSupport, landlock_support};
use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, LandlockStatus, PathBeneath,
    RestrictSelf, RestrictSelfAttr, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus,
};
use rustix::fs::{Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The newest ABI this crate requests rights from. Rights the kernel lacks are dropped
/// (`CompatLevel::BestEffort`) and reported in the status. From ABI 10 on no new file-system
/// right exists; raise this only after reading what a newer ABI adds.
const REQUESTED_ABI: ABI = ABI::V10;

/// The ABI whose rights make the denial complete: read, list, write, execute, create, remove
/// (V1), rename and link across directories (V2), truncate (V3). Later rights (`IoctlDev` in
/// V5, `ResolveUnix` in V9) concern device files and sockets, which a data directory does not
/// hold; they are enforced when the kernel has them.
const COMPLETE_ABI: ABI = ABI::V3;

/// Whether other threads of the caller matter for the status (they do not when the caller
/// is about to `execve`, which ends them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    Matter,
    EndedByExec,
}

pub(crate) fn confine(deny: &[PathBuf], threads: Threads) -> Result<ConfineStatus, ConfineError> {
    let plan = Plan::new(deny)?;
    let support = landlock_support()?;
    if let Some(reason) = support.unavailable_reason() {
        // Still set no_new_privs, as promised: it costs nothing and blocks set-uid escalation.
        RestrictSelf::default().apply()?;
        return Ok(ConfineStatus::NotEnforced {
            reason: reason.to_owned(),
        });
    }
    let other_threads = match threads {
        Threads::Matter => count_threads().map(|n| n.saturating_sub(1)),
        Threads::EndedByExec => Some(0),
    };
    let all = AccessFs::from_all(REQUESTED_ABI);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .create()?
        .all_threads(true)?;
    grant_everything_else(&plan, &mut ruleset)?;
    let restriction = ruleset.restrict_self()?;
    Ok(status(&restriction, support, other_threads))
}

/// Adds a full-access rule for every entry of every ancestor directory, except denied paths
/// and other ancestors. Symlinks get no rule: access through them is checked at their target.
fn grant_everything_else(plan: &Plan, ruleset: &mut RulesetCreated) -> Result<(), ConfineError> {
    let all = AccessFs::from_all(REQUESTED_ABI);
    let file = AccessFs::from_file(REQUESTED_ABI);
    if plan.denied.is_empty() {
        // Nothing to deny: with no ancestor to walk, grant the whole tree, or the ruleset
        // would deny everything.
        let root = Path::new("/");
        let fd = open_dir_no_symlinks(root).map_err(|e| ConfineError::Inspect {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        ruleset.add_rule(PathBeneath::new(fd, all))?;
        return Ok(());
    }
    for ancestor in &plan.ancestors {
        let inspect = |source: Errno| ConfineError::Inspect {
            path: ancestor.clone(),
            source: source.into(),
        };
        let dir = match open_dir_no_symlinks(ancestor) {
            Ok(fd) => fd,
            // Not created yet: its existing parent was listed and granted nothing for it.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(inspect(e)),
        };
        let entries = match Dir::read_from(&dir) {
            Ok(entries) => entries,
            // Cannot list it (e.g. mode 0711): its entries stay closed, which fails safe.
            Err(Errno::ACCESS) => continue,
            Err(e) => return Err(inspect(e)),
        };
        for entry in entries {
            let entry = entry.map_err(inspect)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." || plan.keeps_closed(&ancestor.join(name)) {
                continue;
            }
            let Some((fd, is_dir)) = open_entry(&dir, entry.file_name()) else {
                continue;
            };
            let access: BitFlags<AccessFs> = if is_dir { all } else { file };
            ruleset.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    Ok(())
}

/// Opens an absolute, canonical directory path one component at a time without following any
/// symlink, so a path swapped for a symlink after canonicalization fails instead of redirecting
/// the walk.
fn open_dir_no_symlinks(path: &Path) -> Result<OwnedFd, Errno> {
    let walk = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open("/", walk, Mode::empty())?;
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => {
                dir = rustix::fs::openat(&dir, name, walk, Mode::empty())?;
            }
            // Plans hold canonical paths only.
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(Errno::INVAL);
            }
        }
    }
    let list = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::openat(&dir, ".", list, Mode::empty())
}

/// Opens one directory entry as an `O_PATH` descriptor without following a symlink. Returns
/// `None` for symlinks and for entries that vanished or cannot be opened: they get no rule, so
/// they stay closed (safe, if less convenient).
fn open_entry(dir: &OwnedFd, name: &std::ffi::CStr) -> Option<(OwnedFd, bool)> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => None,
        FileType::Directory => Some((fd, true)),
        _ => Some((fd, false)),
    }
}

fn count_threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|entries| entries.count())
}

fn status(
    restriction: &RestrictionStatus,
    support: LandlockSupport,
    other_threads: Option<usize>,
) -> ConfineStatus {
    let abi = match restriction.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi,
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => ABI::Unsupported,
    };
    if restriction.ruleset == RulesetStatus::NotEnforced || abi == ABI::Unsupported {
        return ConfineStatus::NotEnforced {
            reason: format!("Landlock enforced no rule ({support})"),
        };
    }
    let n = abi_number(abi);
    let mut gaps = Vec::new();
    if abi < COMPLETE_ABI {
        gaps.push(format!(
            "Landlock ABI {n} cannot restrict truncate(2) (needs ABI 3, Linux 6.2), so a confined process can truncate, though not read, files in the denied paths"
        ));
    }
    if abi < ABI::V2 {
        gaps.push(
            "Landlock ABI 1 cannot grant renaming or linking between directories, so those fail with EXDEV everywhere".to_owned(),
        );
    }
    if !restriction.no_new_privs {
        gaps.push("no_new_privs was not set".to_owned());
    }
    if !restriction.all_threads {
        match other_threads {
            Some(0) => {}
            Some(k) => gaps.push(format!(
                "only the calling thread is confined: {k} other thread(s) were already running and Landlock ABI {n} cannot confine them (needs ABI 8); confine before starting threads, or use exec_confined"
            )),
            None => gaps.push(
                "only the calling thread is confined, and the other threads could not be counted".to_owned(),
            ),
        }
    }
    if gaps.is_empty() {
        ConfineStatus::FullyEnforced
    } else {
        ConfineStatus::PartiallyEnforced {
            reason: gaps.join("; "),
        }
    }
}

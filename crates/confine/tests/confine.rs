//! Confinement as an agent meets it: a child process confined against a temporary data
//! directory tries to read, list, write and escape, and the broker's memory is probed from a
//! same-user process.
//!
//! Children are this test binary run again with `--exact child_entry` and a mode in
//! `SEQUESTER_CONFINE_TEST_MODE`; they report on stdout in lines starting with `@ `. Where the
//! kernel has no Landlock the Landlock tests print why they are skipped and pass.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_confine::{
    ConfineStatus, LandlockSupport, confine_current_process, exec_confined, landlock_support,
    make_undumpable,
};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const MODE: &str = "SEQUESTER_CONFINE_TEST_MODE";
const ROOT: &str = "SEQUESTER_CONFINE_TEST_ROOT";
const TARGET_PID: &str = "SEQUESTER_CONFINE_TEST_PID";
const TARGET_ADDR: &str = "SEQUESTER_CONFINE_TEST_ADDR";
const CANARY: &str = "SEQUESTER_CONFINE_TEST_CANARY";
const CANARY_VALUE: &str = "canary-7f3a9c-not-for-agents";
/// Bytes the undumpable-target child keeps in memory for the reader to look for.
static MEMORY_CANARY: [u8; 16] = *b"sequester-memory";
/// The one file outside the test tree that a confined child must still read.
const SYSTEM_FILE: &str = "/etc/hostname";

/// Entry point of every child process; a no-op in the normal test run.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    // libtest has printed `test child_entry ... ` without a newline.
    println!();
    let code = match mode.as_str() {
        "exec-shell" => child_exec_shell(),
        "exec-probe" => child_exec_probe(),
        "probe" => child_probe(),
        "in-process" => child_in_process(),
        "target" => child_target(false),
        "undumpable-target" => child_target(true),
        "reader" | "confined-reader" => child_reader(),
        other => panic!("unknown mode {other}"),
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// Fixture

/// A temporary tree:
/// - `data/` (denied, given through the symlink `allowed/link-to-data`) with `sequester.db`
///   and `master.key`;
/// - `keys/master.key` (a denied file) beside `keys/public.txt`;
/// - `later/` (denied, created only after confinement);
/// - `allowed/` with `notes.txt` and symlinks into `data/`; `out/` for writing.
struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        for dir in ["data", "keys", "allowed", "out"] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("data/sequester.db"), b"SQLite format 3\0").unwrap();
        std::fs::write(root.join("data/master.key"), b"master-key-bytes").unwrap();
        std::fs::write(root.join("keys/master.key"), b"other-key-bytes").unwrap();
        std::fs::write(root.join("keys/public.txt"), b"public").unwrap();
        std::fs::write(root.join("allowed/notes.txt"), b"notes").unwrap();
        symlink(root.join("data"), root.join("allowed/link-to-data")).unwrap();
        symlink(
            root.join("data/master.key"),
            root.join("allowed/link-to-key"),
        )
        .unwrap();
        Self { _tmp: tmp, root }
    }

    fn deny(root: &Path) -> Vec<PathBuf> {
        vec![
            root.join("allowed/link-to-data"),
            root.join("keys/master.key"),
            root.join("later"),
        ]
    }
}

fn landlock_or_skip(test: &str) -> Option<u32> {
    match landlock_support().unwrap() {
        LandlockSupport::Available { abi } => {
            eprintln!("{test}: Landlock ABI {abi}");
            Some(abi)
        }
        other => {
            eprintln!(
                "SKIPPED {test}: {}",
                other.unavailable_reason().unwrap_or("Landlock unavailable")
            );
            None
        }
    }
}

fn child(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The `@ key value` lines of a child's output.
fn reports(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@ "))
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

fn say(key: &str, value: impl std::fmt::Display) {
    println!("@ {key} {value}");
}

/// `ok`, or the error kind and errno of an I/O result.
fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{:?}/{}", e.kind(), e.raw_os_error().unwrap_or(0)),
    }
}

const EACCES: &str = "PermissionDenied/13";

fn status_line(status: &ConfineStatus) -> String {
    match status {
        ConfineStatus::FullyEnforced => "full".to_owned(),
        ConfineStatus::PartiallyEnforced { reason } => format!("partial {reason}"),
        ConfineStatus::NotEnforced { reason } => format!("none {reason}"),
    }
}

fn deny_from_env() -> Vec<PathBuf> {
    Tree::deny(Path::new(&std::env::var_os(ROOT).unwrap()))
}

fn accept_and_report(status: &ConfineStatus) -> bool {
    say("status", status_line(status));
    status.is_enforced()
}

// ---------------------------------------------------------------------------------------------
// Landlock through exec_confined: real programs

#[test]
fn exec_confined_shell_cannot_reach_the_data_dir_but_works_elsewhere() {
    let Some(abi) = landlock_or_skip("exec_confined_shell") else {
        return;
    };
    let tree = Tree::new();
    let out = child("exec-shell")
        .env(ROOT, &tree.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r = reports(&stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    if abi >= 3 {
        assert_eq!(r["status"], "full", "{stdout}");
    }
    for denied in [
        "cat-db",
        "cat-key",
        "ls-data",
        "cat-via-symlink",
        "cat-via-dir-symlink",
        "cat-key-file",
        "write-data",
    ] {
        assert_ne!(r[denied], "0", "{denied} should fail:\n{stdout}\n{stderr}");
    }
    for allowed in [
        "cat-sibling",
        "cat-public",
        "cat-system",
        "write-other",
        "sh-true",
        "ls-allowed",
    ] {
        assert_eq!(
            r[allowed], "0",
            "{allowed} should work:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stderr.contains("Permission denied"),
        "denials should be EACCES:\n{stderr}"
    );
    assert!(!stdout.contains("master-key-bytes") && !stdout.contains("SQLite format"));
    assert_eq!(
        std::fs::read_to_string(tree.root.join("out/written")).unwrap(),
        "hello\n"
    );
    assert!(!tree.root.join("data/planted").exists());
}

fn child_exec_shell() -> i32 {
    let root = std::env::var_os(ROOT).unwrap();
    let script = format!(
        r#"
        cat "$R/data/sequester.db"; echo "@ cat-db $?"
        cat "$R/data/master.key"; echo "@ cat-key $?"
        ls "$R/data"; echo "@ ls-data $?"
        cat "$R/allowed/link-to-key"; echo "@ cat-via-symlink $?"
        cat "$R/allowed/link-to-data/master.key"; echo "@ cat-via-dir-symlink $?"
        cat "$R/keys/master.key"; echo "@ cat-key-file $?"
        echo x > "$R/data/planted"; echo "@ write-data $?"
        cat "$R/allowed/notes.txt" >/dev/null; echo "@ cat-sibling $?"
        cat "$R/keys/public.txt" >/dev/null; echo "@ cat-public $?"
        cat {SYSTEM_FILE} >/dev/null; echo "@ cat-system $?"
        ls "$R/allowed" >/dev/null; echo "@ ls-allowed $?"
        echo hello > "$R/out/written"; echo "@ write-other $?"
        /bin/sh -c true; echo "@ sh-true $?"
        "#
    );
    let env: Vec<(OsString, OsString)> =
        vec![("PATH".into(), "/usr/bin:/bin".into()), ("R".into(), root)];
    let err = exec_confined(
        &deny_from_env(),
        "/bin/sh".as_ref(),
        &["-c".into(), script.into()],
        &env,
        accept_and_report,
    )
    .unwrap_err();
    eprintln!("exec_confined: {err}");
    1
}

// ---------------------------------------------------------------------------------------------
// Landlock through exec_confined: precise errors, escapes, paths created later

#[test]
fn exec_confined_probe_denies_exactly_the_denied_paths() {
    let Some(abi) = landlock_or_skip("exec_confined_probe") else {
        return;
    };
    let tree = Tree::new();
    let mut child = child("exec-probe")
        .env(ROOT, &tree.root)
        .env(CANARY, CANARY_VALUE)
        .spawn()
        .unwrap();
    // The probe checks what it can, then waits while paths appear inside denied locations.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    wait_for_line(&mut stdout, "@ waiting", &mut seen, &mut child);
    std::fs::create_dir(tree.root.join("later")).unwrap();
    std::fs::write(tree.root.join("later/secret"), b"later-secret").unwrap();
    std::fs::write(tree.root.join("data/sequester.db-wal"), b"wal").unwrap();
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    stdout.read_to_string(&mut seen).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}\n{stderr}");
    let r = reports(&seen);
    if abi >= 3 {
        assert_eq!(r["status"], "full", "{seen}");
    }

    let denied = [
        "read-db",
        "read-key",
        "list-data",
        "read-via-symlink",
        "read-via-dir-symlink",
        "read-key-file",
        "open-db-for-write",
        "create-in-data",
        "create-later-dir",
        "read-later-file",
        "read-later-in-data",
        "read-via-proc-root",
    ];
    for key in denied {
        assert_eq!(r[key], EACCES, "{key}:\n{seen}\n{stderr}");
    }
    // Moving the data out, or its parent aside, must fail (EACCES, or EXDEV for a refused
    // cross-directory move) and leave everything in place.
    for key in ["rename-db-out", "link-key-out", "rename-data-dir"] {
        assert!(
            r[key] == EACCES || r[key] == "CrossesDevices/18",
            "{key}: {}\n{seen}",
            r[key]
        );
    }
    assert!(tree.root.join("data/sequester.db").exists());
    assert!(tree.root.join("data/master.key").exists());
    assert!(!tree.root.join("out/stolen").exists());
    assert!(!tree.root.join("out/key").exists());

    let allowed = [
        "read-sibling",
        "read-public",
        "read-system",
        "write-other",
        "read-back-other",
        "rename-within-other",
        "run-sh",
        "stat-key",
    ];
    for key in allowed {
        assert_eq!(r[key], "ok", "{key}:\n{seen}\n{stderr}");
    }
    assert_eq!(r["no-new-privs"], "1", "{seen}");
    // Landlock forbids ptrace-class access from the agent to processes outside its domain, like
    // this test process; root still reads memory-backed /proc files through CAP_PERFMON, which
    // is outside the threat model.
    if is_root() {
        eprintln!(
            "as root: read-parent-environ gave {}",
            r["read-parent-environ"]
        );
    } else {
        assert_eq!(r["read-parent-environ"], EACCES, "{seen}");
    }
    assert!(!seen.contains("master-key-bytes") && !seen.contains("later-secret"));
}

fn wait_for_line(
    stdout: &mut BufReader<std::process::ChildStdout>,
    marker: &str,
    seen: &mut String,
    child: &mut Child,
) {
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("child ended before `{marker}`:\n{seen}\n{stderr}");
        }
        seen.push_str(&line);
        if line.trim_end() == marker {
            return;
        }
    }
}

fn child_exec_probe() -> i32 {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in &mut env {
        if k == MODE {
            *v = "probe".into();
        }
    }
    let err = exec_confined(
        &deny_from_env(),
        std::env::current_exe().unwrap().as_os_str(),
        &[
            "--exact".into(),
            "child_entry".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
        &env,
        accept_and_report,
    )
    .unwrap_err();
    eprintln!("exec_confined: {err}");
    1
}

/// Runs inside the confined process.
fn child_probe() -> i32 {
    let root = PathBuf::from(std::env::var_os(ROOT).unwrap());
    let r = |p: &str| root.join(p);
    probe_denied_reads(&root);
    say(
        "open-db-for-write",
        outcome(
            std::fs::OpenOptions::new()
                .write(true)
                .open(r("data/sequester.db")),
        ),
    );
    say(
        "create-in-data",
        outcome(std::fs::write(r("data/planted"), b"x")),
    );
    say("create-later-dir", outcome(std::fs::create_dir(r("later"))));
    say(
        "rename-db-out",
        outcome(std::fs::rename(r("data/sequester.db"), r("out/stolen"))),
    );
    say(
        "link-key-out",
        outcome(std::fs::hard_link(r("data/master.key"), r("out/key"))),
    );
    say(
        "rename-data-dir",
        outcome(std::fs::rename(r("data"), r("data-moved"))),
    );
    say(
        "read-via-proc-root",
        outcome(std::fs::read(
            Path::new("/proc/self/root").join(r("data/master.key").strip_prefix("/").unwrap()),
        )),
    );
    let parent = std::os::unix::process::parent_id();
    say(
        "read-parent-environ",
        outcome(std::fs::read(format!("/proc/{parent}/environ"))),
    );

    say(
        "read-sibling",
        outcome(std::fs::read(r("allowed/notes.txt"))),
    );
    say("read-public", outcome(std::fs::read(r("keys/public.txt"))));
    say("read-system", outcome(std::fs::read(SYSTEM_FILE)));
    say(
        "write-other",
        outcome(std::fs::write(r("out/new.txt"), b"agent output")),
    );
    say(
        "read-back-other",
        outcome(std::fs::read(r("out/new.txt")).and_then(|b| {
            (b == b"agent output")
                .then_some(())
                .ok_or_else(|| std::io::Error::other("mismatch"))
        })),
    );
    say(
        "rename-within-other",
        outcome(std::fs::rename(r("out/new.txt"), r("out/renamed.txt"))),
    );
    say(
        "run-sh",
        outcome(
            Command::new("/bin/sh")
                .args(["-c", "true"])
                .status()
                .and_then(|s| {
                    s.success()
                        .then_some(())
                        .ok_or_else(|| std::io::Error::other(format!("{s}")))
                }),
        ),
    );
    // Landlock does not cover metadata: documented in the threat model.
    say("stat-key", outcome(std::fs::metadata(r("data/master.key"))));
    let nnp = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    say("no-new-privs", nnp);

    // Paths that appear after confinement, inside denied locations.
    say("waiting", "");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    say("read-later-file", outcome(std::fs::read(r("later/secret"))));
    say(
        "read-later-in-data",
        outcome(std::fs::read(r("data/sequester.db-wal"))),
    );
    0
}

fn probe_denied_reads(root: &Path) {
    let r = |p: &str| root.join(p);
    say("read-db", outcome(std::fs::read(r("data/sequester.db"))));
    say("read-key", outcome(std::fs::read(r("data/master.key"))));
    say("list-data", outcome(std::fs::read_dir(r("data"))));
    say(
        "read-via-symlink",
        outcome(std::fs::read(r("allowed/link-to-key"))),
    );
    say(
        "read-via-dir-symlink",
        outcome(std::fs::read(r("allowed/link-to-data/sequester.db"))),
    );
    say(
        "read-key-file",
        outcome(std::fs::read(r("keys/master.key"))),
    );
}

// ---------------------------------------------------------------------------------------------
// Landlock in-process: the status is honest about threads

#[test]
fn confine_current_process_confines_the_thread_and_reports_other_threads() {
    let Some(abi) = landlock_or_skip("confine_current_process") else {
        return;
    };
    let tree = Tree::new();
    let out = child("in-process")
        .env(ROOT, &tree.root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r = reports(&stdout);
    // libtest runs the child's test on a thread of its own, so the main thread exists too.
    if abi >= 8 {
        assert_eq!(r["status"], "full", "{stdout}");
    } else {
        assert!(
            r["status"].starts_with("partial") && r["status"].contains("other thread"),
            "{stdout}"
        );
    }
    for key in [
        "read-db",
        "read-key",
        "list-data",
        "read-via-symlink",
        "read-via-dir-symlink",
        "read-key-file",
    ] {
        assert_eq!(r[key], EACCES, "{key}:\n{stdout}");
    }
    assert_ne!(r["child-cat-key"], "0", "{stdout}\n{stderr}");
    assert_eq!(r["child-cat-notes"], "0", "{stdout}\n{stderr}");
}

fn child_in_process() -> i32 {
    let root = PathBuf::from(std::env::var_os(ROOT).unwrap());
    let status = confine_current_process(&deny_from_env()).unwrap();
    say("status", status_line(&status));
    probe_denied_reads(&root);
    // Processes started after confinement inherit it.
    let cat = |p: &str| {
        Command::new("/bin/cat")
            .arg(root.join(p))
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .code()
            .unwrap_or(-1)
    };
    say("child-cat-key", cat("data/master.key"));
    say("child-cat-notes", cat("allowed/notes.txt"));
    0
}

// ---------------------------------------------------------------------------------------------
// make_undumpable: a same-user process cannot read the broker's memory or environment

#[test]
fn an_undumpable_process_hides_its_memory_and_environment_from_its_user() {
    let Some(r) = probe_target(true, "reader") else {
        return;
    };
    assert_eq!(r["environ"], EACCES, "{r:?}");
    assert_eq!(r["mem"], EACCES, "{r:?}");
}

#[test]
fn a_dumpable_process_is_readable_by_its_user_control() {
    let Some(r) = probe_target(false, "reader") else {
        return;
    };
    assert_eq!(r["environ"], "ok canary", "{r:?}");
    // Yama (ptrace_scope ≥ 1) may forbid reading memory of a non-descendant even when
    // dumpable; only assert where it does not apply.
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "0".to_owned());
    if yama == "0" {
        assert_eq!(r["mem"], "ok canary", "{r:?}");
    } else {
        eprintln!("control: Yama ptrace_scope={yama}, mem gave {}", r["mem"]);
    }
}

#[test]
fn a_confined_agent_cannot_read_a_same_user_process_even_when_dumpable() {
    if landlock_or_skip("confined reader").is_none() {
        return;
    }
    let Some(r) = probe_target(false, "confined-reader") else {
        return;
    };
    assert_eq!(r["environ"], EACCES, "{r:?}");
    assert_eq!(r["mem"], EACCES, "{r:?}");
    // Denying nothing still leaves the whole file system usable.
    assert_eq!(r["read-system"], "ok", "{r:?}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Starts a target (undumpable or not) and a reader as the same unprivileged user, and returns
/// what the reader could see. As root both run as `nobody`, since root's `CAP_SYS_PTRACE`
/// reads any process.
fn probe_target(undumpable: bool, reader: &str) -> Option<BTreeMap<String, String>> {
    let as_root = is_root();
    let unprivileged = |cmd: &mut Command| {
        if as_root {
            cmd.uid(65534).gid(65534);
        }
    };
    let mode = if undumpable {
        "undumpable-target"
    } else {
        "target"
    };
    let mut target_cmd = child(mode);
    target_cmd.env(CANARY, CANARY_VALUE);
    unprivileged(&mut target_cmd);
    let mut target = match target_cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("SKIPPED undumpable test: cannot start the target as nobody: {e}");
            return None;
        }
    };
    let mut stdout = BufReader::new(target.stdout.take().unwrap());
    let mut seen = String::new();
    wait_for_line(&mut stdout, "@ ready", &mut seen, &mut target);
    let addr = reports(&seen)["addr"].clone();

    let mut reader_cmd = child(reader);
    reader_cmd
        .env(TARGET_PID, target.id().to_string())
        .env(TARGET_ADDR, addr)
        .stdin(Stdio::null());
    unprivileged(&mut reader_cmd);
    let out = reader_cmd.output().unwrap();
    drop(target.stdin.take());
    assert!(target.wait().unwrap().success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reports(&stdout);
    Some(r)
}

fn child_target(undumpable: bool) -> i32 {
    if undumpable {
        make_undumpable().unwrap();
    }
    say("addr", MEMORY_CANARY.as_ptr() as usize);
    say("ready", "");
    // Keep the canary alive and in memory until the parent closes stdin.
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
    i32::from(std::hint::black_box(&MEMORY_CANARY)[0] == 0)
}

fn child_reader() -> i32 {
    if std::env::var(MODE).unwrap() == "confined-reader" {
        let status = confine_current_process(&[]).unwrap();
        say("status", status_line(&status));
        say("read-system", outcome(std::fs::read(SYSTEM_FILE)));
    }
    let pid = std::env::var(TARGET_PID).unwrap();
    let addr: u64 = std::env::var(TARGET_ADDR).unwrap().parse().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).map(|bytes| {
        let canary = format!("{CANARY}={CANARY_VALUE}");
        if bytes.split(|b| *b == 0).any(|v| v == canary.as_bytes()) {
            "canary"
        } else {
            "no-canary"
        }
    });
    say(
        "environ",
        match environ {
            Ok(found) => format!("ok {found}"),
            Err(e) => outcome::<()>(Err(e)),
        },
    );
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|mut f| {
        f.seek(SeekFrom::Start(addr))?;
        let mut buf = [0u8; 16];
        f.read_exact(&mut buf)?;
        Ok(if buf == MEMORY_CANARY {
            "canary"
        } else {
            "other"
        })
    });
    say(
        "mem",
        match mem {
            Ok(found) => format!("ok {found}"),
            Err(e) => outcome::<()>(Err(e)),
        },
    );
    0
}

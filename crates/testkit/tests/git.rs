//! The test git server works with the real `git` client over HTTPS: `ls-remote` and `clone`
//! succeed with the right Basic credentials and fail with wrong or missing ones.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation is a failed test"
)]

use sequester_testkit::git::{self, FILE_CONTENT, FILE_NAME, SECOND_FILE_NAME};
use sequester_testkit::{GitServer, TestCa};
use std::path::Path;
use std::process::Output;

const USER: &str = "x-access-token";
const PASSWORD: &str = "ghp_testkit/Pa55+word=";

/// `https://USER:PASSWORD@localhost:PORT/repo.git`, the password percent-encoded.
fn credential_url(server: &GitServer, user: &str, password: &str) -> String {
    let encoded: String = password
        .bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                char::from(c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    format!(
        "https://{user}:{encoded}@localhost:{}/repo.git",
        server.port()
    )
}

fn git(ca_pem: &Path, cwd: &Path, args: &[&str]) -> Output {
    git::command()
        .args(args)
        .current_dir(cwd)
        .env("GIT_SSL_CAINFO", ca_pem)
        .output()
        .unwrap()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn ls_remote_and_clone_with_the_right_password() {
    let ca = TestCa::new();
    let server = GitServer::start(&ca, USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = ca.write_pem(dir.path());
    assert_eq!(
        server.repo_url(),
        format!("https://localhost:{}/repo.git", server.port())
    );
    let head = server.head_commit();
    assert_eq!(head.len(), 40, "{head}");

    let url = credential_url(&server, USER, PASSWORD);
    let out = git(&ca_pem, dir.path(), &["ls-remote", &url]);
    assert!(
        out.status.success(),
        "{}\nbackend: {}",
        describe(&out),
        server.backend_stderr()
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("{head}\tHEAD")), "{listing}");
    assert!(
        listing.contains(&format!("{head}\trefs/heads/main")),
        "{listing}"
    );

    let out = git(&ca_pem, dir.path(), &["clone", "-q", &url, "clone"]);
    assert!(
        out.status.success(),
        "{}\nbackend: {}",
        describe(&out),
        server.backend_stderr()
    );
    let clone = dir.path().join("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join(FILE_NAME)).unwrap(),
        FILE_CONTENT
    );
    assert!(clone.join(SECOND_FILE_NAME).is_file());
    let cloned_head = git(&ca_pem, &clone, &["rev-parse", "HEAD"]);
    assert_eq!(String::from_utf8_lossy(&cloned_head.stdout).trim(), head);
    let log = git(&ca_pem, &clone, &["log", "--oneline"]);
    assert_eq!(String::from_utf8_lossy(&log.stdout).lines().count(), 2);

    // Git asks without credentials first, is challenged, then sends them.
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.authorization.is_none() && !r.authenticated),
        "{requests:#?}"
    );
    let auths = server.received_authorizations();
    assert!(!auths.is_empty(), "{requests:#?}");
    for a in &auths {
        assert_eq!(
            git::decode_basic(a),
            Some((USER.to_owned(), PASSWORD.to_owned())),
            "{a}"
        );
    }
    assert!(
        requests.iter().any(|r| r.method == "POST"
            && r.path == "/repo.git/git-upload-pack"
            && r.authenticated),
        "{requests:#?}"
    );
}

#[test]
fn an_extra_authorization_header_works_too() {
    use base64::Engine as _;
    let ca = TestCa::new();
    let server = GitServer::start(&ca, USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = ca.write_pem(dir.path());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let out = git(
        &ca_pem,
        dir.path(),
        &[
            "-c",
            &format!("http.extraHeader=Authorization: Basic {basic}"),
            "ls-remote",
            &server.repo_url(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&server.head_commit()));
    // Sent up front: no request went unauthenticated.
    assert!(server.requests().iter().all(|r| r.authenticated));
}

#[test]
fn a_wrong_or_missing_password_is_refused() {
    let ca = TestCa::new();
    let server = GitServer::start(&ca, USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = ca.write_pem(dir.path());

    let wrong = credential_url(&server, USER, "not-the-password");
    let out = git(&ca_pem, dir.path(), &["ls-remote", &wrong]);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&server.head_commit()));

    let out = git(&ca_pem, dir.path(), &["clone", "-q", &wrong, "clone"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!dir.path().join("clone").join(FILE_NAME).exists());

    // The right password for another user is refused as well.
    let other_user = credential_url(&server, "someone-else", PASSWORD);
    let out = git(&ca_pem, dir.path(), &["ls-remote", &other_user]);
    assert!(!out.status.success(), "{}", describe(&out));

    // Without credentials (and without a prompt) git gives up.
    let out = git(&ca_pem, dir.path(), &["ls-remote", &server.repo_url()]);
    assert!(!out.status.success(), "{}", describe(&out));

    let requests = server.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| !r.authenticated), "{requests:#?}");
    assert!(
        server
            .received_authorizations()
            .iter()
            .all(|a| git::decode_basic(a).is_some_and(|(_, p)| p != PASSWORD)
                || git::decode_basic(a).is_some_and(|(u, _)| u == "someone-else")),
    );
}

#[test]
fn another_ca_is_not_trusted() {
    let ca = TestCa::new();
    let server = GitServer::start(&ca, USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new().write_pem(dir.path());
    let url = credential_url(&server, USER, PASSWORD);
    let out = git(&other, dir.path(), &["ls-remote", &url]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(server.request_count(), 0);
}

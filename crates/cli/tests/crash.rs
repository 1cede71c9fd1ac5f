//! Crash safety: `secret rotate` killed with SIGKILL at random points never leaves a secret
//! without an openable current version.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_model::{SecretName, TenantName, Timestamp};
use sequester_store::{DataDir, Store, StoreError};
use sequester_testkit::Cli;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const BIN: &str = env!("CARGO_BIN_EXE_sequester");
const TRIALS: usize = 40;

fn no_passphrase(_: bool) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Err(StoreError::PassphraseRequired)
}

fn random_below(n: u64) -> u64 {
    u64::from_le_bytes(sequester_crypto::random_bytes::<8>()) % n.max(1)
}

/// Opens the store as a fresh process would and returns (current version, value it opens to).
fn current(cli: &Cli, rt: &tokio::runtime::Runtime) -> (u32, Vec<u8>) {
    rt.block_on(async {
        let data = DataDir::new(cli.data_dir());
        let now = Timestamp::from_unix(
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            )
            .unwrap(),
        );
        let store = data.open(&no_passphrase, now).await.unwrap();
        let tenant = store
            .tenant(&TenantName::default_tenant())
            .await
            .unwrap()
            .id;
        let name = SecretName::parse("S").unwrap();
        let meta = store.secret(&tenant, &name).await.unwrap();
        let opened = store.open_usable(&tenant, &name, now).await.unwrap();
        assert!(opened[0].current);
        assert_eq!(opened[0].version, meta.current_version);
        #[expect(
            clippy::disallowed_methods,
            reason = "the test checks which value the current version holds"
        )]
        let value = opened[0].value.expose().to_vec();
        store.close().await;
        (meta.current_version, value)
    })
}

#[test]
fn killing_rotate_at_random_points_never_loses_the_current_version() {
    let cli = Cli::new(BIN);
    cli.ok(&["init"], None);
    cli.ok(
        &["secret", "add", "S", "--host", "api.example.com"],
        Some(b"value-1"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // How long one rotation takes, to spread the kills over its whole life: the fastest of
    // three (the first run of a process on a cold cache can take several times longer, and
    // kills spread over that would mostly land after the end).
    let mut full = Duration::MAX;
    for v in 2..=4 {
        let start = Instant::now();
        cli.ok(
            &["secret", "rotate", "S", "--grace", "1h"],
            Some(format!("value-{v}").as_bytes()),
        );
        full = full.min(start.elapsed());
    }
    let (mut version, value) = current(&cli, &rt);
    assert_eq!((version, value.as_slice()), (4, b"value-4".as_slice()));

    let mut killed_midway = 0;
    for trial in 0..TRIALS {
        let next_value = format!("value-{}", version + 1);
        let mut child = cli
            .command(&["secret", "rotate", "S", "--grace", "1h"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(next_value.as_bytes());
        drop(stdin);
        let delay_us = random_below(u64::try_from(full.as_micros() * 5 / 4).unwrap());
        std::thread::sleep(Duration::from_micros(delay_us));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        if !finished {
            killed_midway += 1;
        }

        let (now_version, now_value) = current(&cli, &rt);
        assert!(
            now_version == version || now_version == version + 1,
            "trial {trial}: version jumped from {version} to {now_version}"
        );
        let expected = if now_version == version {
            format!("value-{version}")
        } else {
            next_value
        };
        assert_eq!(
            now_value,
            expected.as_bytes(),
            "trial {trial}: current version holds the wrong value"
        );
        version = now_version;
    }
    assert!(
        killed_midway > TRIALS / 4,
        "only {killed_midway} of {TRIALS} kills landed before the end"
    );

    // The history stays consistent: exactly one current version.
    let history = cli.json(&["secret", "history", "S"], None);
    let current_count = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "current")
        .count();
    assert_eq!(current_count, 1, "{history}");
}

//! Store behaviour on the SQLite backend: sealing, integrity, keys, lifecycle, bad input.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use base64::Engine as _;
use common::*;
use sequester_crypto::TokenHash;
use sequester_model::{
    AgentName, ErrorCode, SecretName, SecretState, TenantName, Timestamp, VersionState,
};
use sequester_store::{DataDir, KeyMode, Store, StoreError};
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;
use zeroize::Zeroizing;

fn code<T>(r: Result<T, StoreError>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code(),
    }
}

/// All encodings of `value` that must never appear on disk.
fn forms(value: &str) -> Vec<Vec<u8>> {
    let b = value.as_bytes();
    let e = base64::engine::general_purpose::STANDARD;
    let u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        b.to_vec(),
        e.encode(b).into_bytes(),
        e.encode(b).trim_end_matches('=').as_bytes().to_vec(),
        u.encode(b).into_bytes(),
        hex::encode(b).into_bytes(),
        hex::encode_upper(b).into_bytes(),
        // A value stored as UTF-16 would slip past a byte search for the UTF-8 form.
        value.encode_utf16().flat_map(u16::to_le_bytes).collect(),
    ]
}

fn scan_dir(dir: &std::path::Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            for n in needles {
                if data.windows(n.len()).any(|w| w == n.as_slice()) {
                    hits.push(format!(
                        "{} in {}",
                        String::from_utf8_lossy(n),
                        path.display()
                    ));
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn no_value_or_token_is_on_disk_in_any_form() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    let agent = AgentName::parse("bot").unwrap();
    store.create_agent(&tenant, &agent, T0).await.unwrap();
    let values: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "sk-canary-{i}-{}",
                hex::encode(sequester_crypto::random_bytes::<12>())
            )
        })
        .collect();
    let mut needles = Vec::new();
    for (i, v) in values.iter().enumerate() {
        store
            .add_secret(
                &tenant,
                &new_secret(&format!("S{i}"), "api.example.com"),
                value(v),
                T0,
            )
            .await
            .unwrap();
        needles.extend(forms(v));
    }
    let rotated = format!(
        "sk-rotated-{}",
        hex::encode(sequester_crypto::random_bytes::<12>())
    );
    store
        .rotate_secret(
            &tenant,
            &SecretName::parse("S0").unwrap(),
            value(&rotated),
            Duration::from_secs(60),
            T0,
        )
        .await
        .unwrap();
    needles.extend(forms(&rotated));
    let (token, _) = store
        .issue_token(&tenant, &agent, &SecretName::parse("S1").unwrap(), None, T0)
        .await
        .unwrap();
    needles.extend(forms(token.reveal()));

    // Scan while the store is open (WAL and shared memory present) and after it closed.
    assert!(std::fs::read_dir(data.root()).unwrap().count() >= 2);
    let open_hits = scan_dir(data.root(), &needles);
    assert!(open_hits.is_empty(), "plaintext on disk: {open_hits:?}");
    store.close().await;
    let closed_hits = scan_dir(data.root(), &needles);
    assert!(closed_hits.is_empty(), "plaintext on disk: {closed_hits:?}");

    // The values are really there, sealed: they open with the key.
    let store = data.open(&no_passphrase, T0).await.unwrap();
    let opened = store
        .open_usable(&tenant, &SecretName::parse("S3").unwrap(), T0)
        .await
        .unwrap();
    assert_eq!(bytes(&opened[0].value), values[3].as_bytes());
}

#[tokio::test]
async fn swapped_sealed_values_fail_with_an_integrity_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    store
        .add_secret(
            &tenant,
            &new_secret("A", "a.example.com"),
            value("value-of-a"),
            T0,
        )
        .await
        .unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("B", "b.example.com"),
            value("value-of-b"),
            T0,
        )
        .await
        .unwrap();
    store.close().await;

    let pool = raw_pool(&data.database_path()).await;
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT s.name, v.sealed FROM secret_versions v JOIN secrets s ON s.id = v.secret_id ORDER BY s.name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (name, sealed) in [(&rows[0].0, &rows[1].1), (&rows[1].0, &rows[0].1)] {
        sqlx::query("UPDATE secret_versions SET sealed = ? WHERE secret_id = (SELECT id FROM secrets WHERE name = ?)")
            .bind(sealed)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = data.open(&no_passphrase, T0).await.unwrap();
    for name in ["A", "B"] {
        let err = store
            .open_usable(&tenant, &SecretName::parse(name).unwrap(), T0)
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), ErrorCode::IntegrityFailure);
        let msg = err.to_string();
        assert!(msg.contains(&format!("secret {name} version 1")), "{msg}");
        assert!(!msg.contains("value-of"), "{msg}");
    }
}

#[tokio::test]
async fn moving_a_version_to_another_version_number_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    let name = SecretName::parse("A").unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("A", "a.example.com"),
            value("v1-value"),
            T0,
        )
        .await
        .unwrap();
    store
        .rotate_secret(&tenant, &name, value("v2-value"), Duration::ZERO, T0)
        .await
        .unwrap();
    store.close().await;
    // Roll back to the old value by copying v1's blob into the current v2 row.
    let pool = raw_pool(&data.database_path()).await;
    sqlx::query("UPDATE secret_versions SET sealed = (SELECT sealed FROM secret_versions WHERE version = 1) WHERE version = 2")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = data.open(&no_passphrase, T0).await.unwrap();
    assert_eq!(
        code(store.open_usable(&tenant, &name, T0).await),
        ErrorCode::IntegrityFailure
    );
}

#[tokio::test]
async fn wrong_missing_or_exposed_key_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    store
        .add_secret(
            &tenant,
            &new_secret("A", "a.example.com"),
            value("value-a"),
            T0,
        )
        .await
        .unwrap();
    store.close().await;
    let db = data.database_path();
    let key = data.key_path();
    let before_rows = dump(&db).await;
    let before_bytes = std::fs::read(&db).unwrap();
    let good_key = std::fs::read(&key).unwrap();

    // Another data directory's key.
    let other = tempfile::tempdir().unwrap();
    let (other_data, other_store, _) = init(other.path()).await;
    other_store.close().await;
    std::fs::remove_file(&key).unwrap();
    std::fs::copy(other_data.key_path(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = data.open(&no_passphrase, T0).await.err().unwrap();
    assert_eq!(err.code(), ErrorCode::WrongMasterKey);
    assert!(
        err.to_string().contains("restore the right master.key"),
        "{err}"
    );

    // No key file at all.
    std::fs::remove_file(&key).unwrap();
    assert_eq!(
        code(data.open(&no_passphrase, T0).await),
        ErrorCode::KeyFileMissing
    );

    // The right key, readable by others.
    std::fs::write(&key, &good_key).unwrap();
    for mode in [0o644, 0o604, 0o640] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(
            code(data.open(&no_passphrase, T0).await),
            ErrorCode::KeyFileInsecure
        );
    }

    assert_eq!(dump(&db).await, before_rows);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before_bytes,
        "database file changed"
    );
    assert!(
        !data.root().join("sequester.db-wal").exists()
            || std::fs::metadata(data.root().join("sequester.db-wal"))
                .unwrap()
                .len()
                == 0
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = data.open(&no_passphrase, T0).await.unwrap();
    let opened = store
        .open_usable(&tenant, &SecretName::parse("A").unwrap(), T0)
        .await
        .unwrap();
    assert_eq!(bytes(&opened[0].value), b"value-a");
}

#[tokio::test]
async fn open_before_init_says_so_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path().join("absent"));
    assert_eq!(
        code(data.open(&no_passphrase, T0).await),
        ErrorCode::NotInitialized
    );
    assert!(!data.root().exists());
    let (data, store, _) = init(tmp.path()).await;
    store.close().await;
    assert_eq!(
        code(data.init(KeyMode::KeyFile, &no_passphrase, T0).await),
        ErrorCode::AlreadyInitialized
    );
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.root().to_owned()), 0o700);
    assert_eq!(mode(data.database_path()), 0o600);
    assert_eq!(mode(data.key_path()), 0o600);
}

#[tokio::test]
async fn rotation_keeps_the_previous_version_for_the_grace_window_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let name = SecretName::parse("OPENAI").unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("OPENAI", "api.openai.com"),
            value("old-value"),
            T0,
        )
        .await
        .unwrap();
    let t1 = T0.plus(Duration::from_secs(100));
    let meta = store
        .rotate_secret(
            &tenant,
            &name,
            value("new-value"),
            Duration::from_secs(3600),
            t1,
        )
        .await
        .unwrap();
    assert_eq!(meta.current_version, 2);
    assert_eq!(meta.rotated_at, Some(t1));

    let during = store
        .open_usable(&tenant, &name, t1.plus(Duration::from_secs(3599)))
        .await
        .unwrap();
    let got: Vec<(u32, bool, Vec<u8>)> = during
        .iter()
        .map(|v| (v.version, v.current, bytes(&v.value)))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, true, b"new-value".to_vec()),
            (1, false, b"old-value".to_vec())
        ]
    );

    let after = store
        .open_usable(&tenant, &name, t1.plus(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].version, bytes(&after[0].value)),
        (2, b"new-value".to_vec())
    );

    let history = store.secret_history(&tenant, &name).await.unwrap();
    let at = t1.plus(Duration::from_secs(10));
    let states: Vec<_> = history.iter().map(|v| (v.version, v.state(at))).collect();
    assert_eq!(
        states,
        vec![(2, VersionState::Current), (1, VersionState::Grace)]
    );

    // A second rotation ends the earlier grace window: only the version it replaces gets one.
    let t2 = t1.plus(Duration::from_secs(60));
    store
        .rotate_secret(
            &tenant,
            &name,
            value("third-value"),
            Duration::from_secs(600),
            t2,
        )
        .await
        .unwrap();
    let now = store
        .open_usable(&tenant, &name, t2.plus(Duration::from_secs(1)))
        .await
        .unwrap();
    let versions: Vec<u32> = now.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![3, 2]);

    // Without a grace window the old version is unusable at once.
    let t3 = t2.plus(Duration::from_secs(5));
    store
        .rotate_secret(&tenant, &name, value("fourth-value"), Duration::ZERO, t3)
        .await
        .unwrap();
    let now = store.open_usable(&tenant, &name, t3).await.unwrap();
    assert_eq!(now.iter().map(|v| v.version).collect::<Vec<_>>(), vec![4]);
}

#[tokio::test]
async fn revocation_and_expiry_are_reported_and_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let agent = AgentName::parse("bot").unwrap();
    store.create_agent(&tenant, &agent, T0).await.unwrap();
    let mut expiring = new_secret("EXPIRING", "api.example.com");
    expiring.expires_at = Some(T0.plus(Duration::from_secs(90 * 86400)));
    store
        .add_secret(&tenant, &expiring, value("exp-value"), T0)
        .await
        .unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("REVOKED", "api.example.com"),
            value("rev-value"),
            T0,
        )
        .await
        .unwrap();
    let exp = SecretName::parse("EXPIRING").unwrap();
    let rev = SecretName::parse("REVOKED").unwrap();

    let before = T0.plus(Duration::from_secs(90 * 86400 - 1));
    let after = T0.plus(Duration::from_secs(90 * 86400));
    assert_eq!(
        store.secret(&tenant, &exp).await.unwrap().state(before),
        SecretState::Active
    );
    assert_eq!(
        store.secret(&tenant, &exp).await.unwrap().state(after),
        SecretState::Expired
    );
    assert!(store.open_usable(&tenant, &exp, before).await.is_ok());
    assert_eq!(
        code(store.open_usable(&tenant, &exp, after).await),
        ErrorCode::SecretExpired
    );
    assert_eq!(
        code(store.issue_token(&tenant, &agent, &exp, None, after).await),
        ErrorCode::SecretExpired
    );

    let meta = store.revoke_secret(&tenant, &rev, T0).await.unwrap();
    assert_eq!(meta.state(T0), SecretState::Revoked);
    assert_eq!(meta.revoked_at, Some(T0));
    // Revoking again keeps the first revocation time.
    let again = store
        .revoke_secret(&tenant, &rev, T0.plus(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(T0));
    assert_eq!(
        code(store.open_usable(&tenant, &rev, T0).await),
        ErrorCode::SecretRevoked
    );
    assert_eq!(
        code(
            store
                .rotate_secret(&tenant, &rev, value("x"), Duration::ZERO, T0)
                .await
        ),
        ErrorCode::SecretRevoked
    );
    assert_eq!(
        code(store.issue_token(&tenant, &agent, &rev, None, T0).await),
        ErrorCode::SecretRevoked
    );
}

#[tokio::test]
async fn tokens_are_stored_as_hashes_and_lifecycle_works() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let agent = AgentName::parse("bot").unwrap();
    store.create_agent(&tenant, &agent, T0).await.unwrap();
    let secret = SecretName::parse("GH").unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("GH", "api.github.com"),
            value("ghp-value"),
            T0,
        )
        .await
        .unwrap();
    let (token, meta) = store
        .issue_token(
            &tenant,
            &agent,
            &secret,
            Some(Duration::from_secs(3600)),
            T0,
        )
        .await
        .unwrap();
    assert!(sequester_crypto::looks_like_token(token.reveal()));
    assert_eq!(meta.expires_at, Some(T0.plus(Duration::from_secs(3600))));
    let found = store.find_token(&token.hash()).await.unwrap().unwrap();
    assert_eq!(found, meta);
    assert_eq!(
        store.find_token(&TokenHash::of("sqt_nope")).await.unwrap(),
        None
    );
    assert_eq!(
        found.state(T0.plus(Duration::from_secs(3600))),
        sequester_model::TokenState::Expired
    );

    let revoked = store.revoke_token(&tenant, &meta.id, T0).await.unwrap();
    assert_eq!(revoked.state(T0), sequester_model::TokenState::Revoked);
    let unknown = sequester_model::TokenId::from_random([1; 12]);
    assert_eq!(
        code(store.revoke_token(&tenant, &unknown, T0).await),
        ErrorCode::TokenNotFound
    );

    // Disabled agents get no new tokens.
    let disabled = store.disable_agent(&tenant, &agent, T0).await.unwrap();
    assert!(disabled.disabled_at.is_some());
    assert_eq!(
        code(store.issue_token(&tenant, &agent, &secret, None, T0).await),
        ErrorCode::AgentDisabled
    );

    // Removing the secret removes its tokens.
    store.remove_secret(&tenant, &secret).await.unwrap();
    assert_eq!(store.find_token(&token.hash()).await.unwrap(), None);
    assert!(store.list_tokens(&tenant).await.unwrap().is_empty());
    assert_eq!(
        code(store.secret(&tenant, &secret).await),
        ErrorCode::SecretNotFound
    );
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    let agent = AgentName::parse("bot").unwrap();
    store.create_agent(&tenant, &agent, T0).await.unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("A", "a.example.com"),
            value("value-a"),
            T0,
        )
        .await
        .unwrap();
    let counter = store.change_counter().await.unwrap();
    let before = dump(&data.database_path()).await;
    let a = SecretName::parse("A").unwrap();
    let missing = SecretName::parse("MISSING").unwrap();

    let cases: Vec<(ErrorCode, Result<(), StoreError>)> = vec![
        (
            ErrorCode::SecretExists,
            store
                .add_secret(
                    &tenant,
                    &new_secret("A", "b.example.com"),
                    value("other"),
                    T0,
                )
                .await
                .map(drop),
        ),
        (
            ErrorCode::EmptyValue,
            store
                .add_secret(&tenant, &new_secret("B", "b.example.com"), value(""), T0)
                .await
                .map(drop),
        ),
        (
            ErrorCode::InvalidValue,
            store
                .add_secret(
                    &tenant,
                    &new_secret("B", "b.example.com"),
                    value("line\r\nInjected: 1"),
                    T0,
                )
                .await
                .map(drop),
        ),
        (
            ErrorCode::ValueTooLarge,
            store
                .add_secret(
                    &tenant,
                    &new_secret("B", "b.example.com"),
                    value(&"x".repeat(16 * 1024 + 1)),
                    T0,
                )
                .await
                .map(drop),
        ),
        (ErrorCode::InvalidHostPattern, {
            let mut s = new_secret("B", "b.example.com");
            s.hosts.clear();
            store
                .add_secret(&tenant, &s, value("v"), T0)
                .await
                .map(drop)
        }),
        (
            ErrorCode::EmptyValue,
            store
                .rotate_secret(&tenant, &a, value(""), Duration::ZERO, T0)
                .await
                .map(drop),
        ),
        (
            ErrorCode::SecretNotFound,
            store
                .rotate_secret(&tenant, &missing, value("v"), Duration::ZERO, T0)
                .await
                .map(drop),
        ),
        (
            ErrorCode::SecretNotFound,
            store.revoke_secret(&tenant, &missing, T0).await.map(drop),
        ),
        (
            ErrorCode::SecretNotFound,
            store.remove_secret(&tenant, &missing).await,
        ),
        (
            ErrorCode::SecretNotFound,
            store
                .issue_token(&tenant, &agent, &missing, None, T0)
                .await
                .map(drop),
        ),
        (
            ErrorCode::AgentNotFound,
            store
                .issue_token(&tenant, &AgentName::parse("ghost").unwrap(), &a, None, T0)
                .await
                .map(drop),
        ),
        (
            ErrorCode::AgentExists,
            store.create_agent(&tenant, &agent, T0).await.map(drop),
        ),
        (
            ErrorCode::TenantExists,
            store
                .create_tenant(&TenantName::default_tenant(), T0)
                .await
                .map(drop),
        ),
        (
            ErrorCode::AgentNotFound,
            store
                .disable_agent(&tenant, &AgentName::parse("ghost").unwrap(), T0)
                .await
                .map(drop),
        ),
    ];
    for (i, (want, got)) in cases.into_iter().enumerate() {
        let err = got.err().unwrap_or_else(|| panic!("case {i} succeeded"));
        assert_eq!(err.code(), want, "case {i}: {err}");
        assert!(!err.to_string().contains("value-a"));
    }
    assert_eq!(
        store.change_counter().await.unwrap(),
        counter,
        "a failed call committed"
    );
    assert_eq!(dump(&data.database_path()).await, before);
}

#[tokio::test]
async fn rekey_rewraps_atomically_and_recovers_an_interrupted_rename() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    let second = store
        .create_tenant(&TenantName::parse("team-b").unwrap(), T0)
        .await
        .unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("A", "a.example.com"),
            value("value-a"),
            T0,
        )
        .await
        .unwrap();
    store
        .add_secret(
            &second.id,
            &new_secret("A", "a.example.com"),
            value("value-b"),
            T0,
        )
        .await
        .unwrap();
    let old_key = std::fs::read(data.key_path()).unwrap();
    assert_eq!(data.rekey(&store, &no_passphrase).await.unwrap(), 2);
    store.close().await;
    let new_key = std::fs::read(data.key_path()).unwrap();
    assert_ne!(old_key, new_key);
    assert!(!data.root().join("master.key.next").exists());
    let mode = std::fs::metadata(data.key_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let a = SecretName::parse("A").unwrap();
    let store = data.open(&no_passphrase, T0).await.unwrap();
    assert_eq!(
        bytes(&store.open_usable(&tenant, &a, T0).await.unwrap()[0].value),
        b"value-a"
    );
    assert_eq!(
        bytes(&store.open_usable(&second.id, &a, T0).await.unwrap()[0].value),
        b"value-b"
    );
    store.close().await;

    // The old key no longer opens the directory.
    std::fs::write(data.key_path(), &old_key).unwrap();
    assert_eq!(
        code(data.open(&no_passphrase, T0).await),
        ErrorCode::WrongMasterKey
    );

    // A rekey that committed but stopped before the rename: master.key is old, .next is new.
    std::fs::write(data.root().join("master.key.next"), &new_key).unwrap();
    std::fs::set_permissions(
        data.root().join("master.key.next"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let store = data.open(&no_passphrase, T0).await.unwrap();
    assert_eq!(
        bytes(&store.open_usable(&tenant, &a, T0).await.unwrap()[0].value),
        b"value-a"
    );
    assert_eq!(std::fs::read(data.key_path()).unwrap(), new_key);
    assert!(!data.root().join("master.key.next").exists());
    store.close().await;

    // A rekey that stopped before its commit: .next is a stray key and is discarded.
    std::fs::write(data.root().join("master.key.next"), &old_key).unwrap();
    std::fs::set_permissions(
        data.root().join("master.key.next"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let store = data.open(&no_passphrase, T0).await.unwrap();
    assert!(!data.root().join("master.key.next").exists());
    assert_eq!(std::fs::read(data.key_path()).unwrap(), new_key);
    store.close().await;
}

#[tokio::test]
async fn passphrase_mode_derives_the_key_and_rejects_a_wrong_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path().join("data"));
    let right = |_: bool| Ok(Zeroizing::new(b"correct horse battery staple".to_vec()));
    let wrong = |_: bool| Ok(Zeroizing::new(b"incorrect horse battery".to_vec()));
    let short = |_: bool| Ok(Zeroizing::new(b"short".to_vec()));

    assert_eq!(
        code(data.init(KeyMode::Passphrase, &short, T0).await),
        ErrorCode::InvalidValue
    );
    assert!(
        !data.root().exists(),
        "a refused passphrase left files behind"
    );

    let store = data.init(KeyMode::Passphrase, &right, T0).await.unwrap();
    assert!(
        !data.key_path().exists(),
        "passphrase mode writes no key file"
    );
    let tenant = store
        .tenant(&TenantName::default_tenant())
        .await
        .unwrap()
        .id;
    store
        .add_secret(
            &tenant,
            &new_secret("A", "a.example.com"),
            value("value-a"),
            T0,
        )
        .await
        .unwrap();
    store.close().await;

    assert_eq!(code(data.open(&wrong, T0).await), ErrorCode::WrongMasterKey);
    let store = data.open(&right, T0).await.unwrap();
    let a = SecretName::parse("A").unwrap();
    assert_eq!(
        bytes(&store.open_usable(&tenant, &a, T0).await.unwrap()[0].value),
        b"value-a"
    );

    let newer = |_: bool| Ok(Zeroizing::new(b"a brand new passphrase".to_vec()));
    data.rekey(&store, &newer).await.unwrap();
    store.close().await;
    assert_eq!(code(data.open(&right, T0).await), ErrorCode::WrongMasterKey);
    let store = data.open(&newer, T0).await.unwrap();
    assert_eq!(
        bytes(&store.open_usable(&tenant, &a, T0).await.unwrap()[0].value),
        b"value-a"
    );
}

#[tokio::test]
async fn the_change_counter_moves_with_every_mutation() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let c0 = store.change_counter().await.unwrap();
    store
        .add_secret(&tenant, &new_secret("A", "a.example.com"), value("v"), T0)
        .await
        .unwrap();
    let c1 = store.change_counter().await.unwrap();
    assert!(c1 > c0);
    store
        .revoke_secret(&tenant, &SecretName::parse("A").unwrap(), T0)
        .await
        .unwrap();
    assert!(store.change_counter().await.unwrap() > c1);
    let _ = Timestamp::from_unix(0);
}

#[tokio::test]
async fn services_are_per_tenant() {
    use sequester_model::{BaseUrl, InjectionRule, ServiceName};
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let other = store
        .create_tenant(&TenantName::parse("b").unwrap(), T0)
        .await
        .unwrap();
    let name = ServiceName::parse("internal").unwrap();
    let url = BaseUrl::parse("https://api.internal.example/v2").unwrap();
    let rule = InjectionRule::parse("header:x-api-key:{value}").unwrap();
    let added = store
        .add_service(&tenant, &name, &url, Some(&rule), T0)
        .await
        .unwrap();
    assert_eq!(added.base_url, url);
    assert_eq!(
        code(store.add_service(&tenant, &name, &url, None, T0).await),
        ErrorCode::ServiceExists
    );
    assert_eq!(store.list_services(&tenant).await.unwrap(), vec![added]);
    assert!(store.list_services(&other.id).await.unwrap().is_empty());
    assert_eq!(
        code(store.remove_service(&other.id, &name).await),
        ErrorCode::ServiceNotFound
    );
    store.remove_service(&tenant, &name).await.unwrap();
    assert!(store.list_services(&tenant).await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshot_holds_everything_sealed_and_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let agent = AgentName::parse("bot").unwrap();
    store.create_agent(&tenant, &agent, T0).await.unwrap();
    let name = SecretName::parse("S").unwrap();
    store
        .add_secret(
            &tenant,
            &new_secret("S", "api.example.com"),
            value("snap-v1"),
            T0,
        )
        .await
        .unwrap();
    store
        .rotate_secret(
            &tenant,
            &name,
            value("snap-v2"),
            Duration::from_secs(60),
            T0,
        )
        .await
        .unwrap();
    let (token, meta) = store
        .issue_token(&tenant, &agent, &name, None, T0)
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.counter, store.change_counter().await.unwrap());
    assert_eq!(snap.tenants.len(), 1);
    assert_eq!(snap.agents.len(), 1);
    assert_eq!(snap.tokens, vec![(token.hash(), meta)]);
    let secret = &snap.secrets[0];
    assert_eq!(secret.meta.current_version, 2);
    let versions: Vec<u32> = secret.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![2, 1]);
    // Sealed values open with the tenant key from the snapshot.
    let (t, key) = &snap.tenants[0];
    let opened = sequester_crypto::open_version(
        key,
        &sequester_crypto::SecretVersionAad {
            tenant_id: t.id.as_str(),
            secret_id: secret.meta.id.as_str(),
            secret_name: "S",
            version: 2,
        },
        &secret.versions[0].sealed,
    )
    .unwrap();
    assert_eq!(bytes(&opened), b"snap-v2");
}

#[tokio::test]
async fn receipts_chain_and_head() {
    use sequester_store::{NewReceipt, ReceiptFilter};
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let counter = store.change_counter().await.unwrap();
    let receipt = |i: i64, denied: bool| NewReceipt {
        tenant_id: tenant.clone(),
        at_ms: 1000 + i,
        kind: if denied { "denial" } else { "intent" }.to_owned(),
        request_id: format!("req-{i}"),
        agent: Some("bot".to_owned()),
        secret: Some(if i % 2 == 0 { "A" } else { "B" }.to_owned()),
        denied,
        body: format!("{{\"i\":{i}}}"),
    };
    store
        .append_receipts(&[receipt(1, false), receipt(2, true)])
        .await
        .unwrap();
    store.append_receipts(&[receipt(3, false)]).await.unwrap();
    assert_eq!(
        store.change_counter().await.unwrap(),
        counter,
        "receipts moved the change counter"
    );
    let chain = store.receipt_chain(0, 100).await.unwrap();
    assert_eq!(
        chain.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let mut prev = [0u8; 32];
    for r in &chain {
        assert_eq!(r.prev_hash, prev);
        let h = sequester_crypto::chain_hash(&prev, r.receipt.body.as_bytes());
        assert_eq!(r.hash, h);
        prev = h;
    }
    assert_eq!(
        store.receipt_head().await.unwrap(),
        Some((3, prev.to_vec()))
    );
    let denied = store
        .list_receipts(&ReceiptFilter {
            denied_only: true,
            ..ReceiptFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].receipt.request_id, "req-2");
    let by_secret = store
        .list_receipts(&ReceiptFilter {
            secret: Some("B".into()),
            since_ms: Some(1002),
            ..ReceiptFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_secret.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    let newest = store
        .list_receipts(&ReceiptFilter {
            limit: Some(2),
            ..ReceiptFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(newest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
}

#[tokio::test]
async fn sanitizing_seals_once_and_gives_each_agent_a_stable_placeholder() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = init(tmp.path()).await;
    let a = store
        .create_agent(&tenant, &AgentName::parse("a").unwrap(), T0)
        .await
        .unwrap();
    let b = store
        .create_agent(&tenant, &AgentName::parse("b").unwrap(), T0)
        .await
        .unwrap();
    let hosts = vec![sequester_model::HostPattern::parse("api.github.com").unwrap()];
    let value_text = "ghp_sanitizeCanary0123456789abcdefABCD";
    let first = store
        .sanitize_secret(&tenant, &a.id, "github", &hosts, value(value_text), T0)
        .await
        .unwrap();
    assert!(first.created);
    assert!(
        sequester_crypto::looks_like_placeholder(&first.placeholder),
        "{}",
        first.placeholder
    );
    assert_eq!(
        first.secret.origin,
        sequester_model::SecretOrigin::Sanitized
    );
    assert_eq!(first.secret.hosts, hosts);
    assert!(first.secret.name.as_str().starts_with("github-"));
    // The same paste again: same secret, same placeholder.
    let again = store
        .sanitize_secret(&tenant, &a.id, "github", &hosts, value(value_text), T0)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.placeholder, first.placeholder);
    // Another agent pasting it gets its own placeholder for the same secret; asking for wider
    // hosts never widens the secret.
    let wider = vec![sequester_model::HostPattern::parse("evil.example").unwrap()];
    let other = store
        .sanitize_secret(&tenant, &b.id, "github", &wider, value(value_text), T0)
        .await
        .unwrap();
    assert_eq!(other.secret.id, first.secret.id);
    assert_ne!(other.placeholder, first.placeholder);
    assert_eq!(
        store
            .secret(&tenant, &first.secret.name)
            .await
            .unwrap()
            .hosts,
        hosts
    );
    // The placeholder resolves like a token of that agent.
    let found = store
        .find_token(&TokenHash::of(&first.placeholder))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.agent_id, a.id);
    assert_eq!(found.kind, sequester_model::TokenKind::Placeholder);
    let opened = store
        .open_usable(&tenant, &first.secret.name, T0)
        .await
        .unwrap();
    assert_eq!(bytes(&opened[0].value), value_text.as_bytes());
    store.close().await;
    let hits = scan_dir(data.root(), &forms(value_text));
    assert!(hits.is_empty(), "{hits:?}");
}

#[tokio::test]
async fn agent_keys_are_hashed_and_revocable() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = init(tmp.path()).await;
    let agent = AgentName::parse("bot").unwrap();
    store.create_agent(&tenant, &agent, T0).await.unwrap();
    let (key, meta) = store
        .issue_agent_key(&tenant, &agent, Some(Duration::from_secs(60)), T0)
        .await
        .unwrap();
    assert!(sequester_crypto::looks_like_agent_key(key.reveal()));
    assert_eq!(meta.expires_at, Some(T0.plus(Duration::from_secs(60))));
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.agent_keys, vec![(key.hash(), meta.clone())]);
    let revoked = store.revoke_agent_key(&tenant, &meta.id, T0).await.unwrap();
    assert_eq!(revoked.state(T0), sequester_model::TokenState::Revoked);
    assert_eq!(store.list_agent_keys(&tenant).await.unwrap(), vec![revoked]);
    store.disable_agent(&tenant, &agent, T0).await.unwrap();
    assert_eq!(
        code(store.issue_agent_key(&tenant, &agent, None, T0).await),
        ErrorCode::AgentDisabled
    );
}

#[tokio::test]
async fn the_interception_ca_key_is_sealed_and_survives_rekey() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, _tenant) = init(tmp.path()).await;
    assert!(store.interception_ca().await.unwrap().is_none());
    let key_der = b"ca-private-key-canary-0123456789".to_vec();
    store
        .set_interception_ca(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            &key_der,
        )
        .await
        .unwrap();
    let (cert, key) = store.interception_ca().await.unwrap().unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(key.as_slice(), key_der.as_slice());
    data.rekey(&store, &no_passphrase).await.unwrap();
    store.close().await;
    let store = data.open(&no_passphrase, T0).await.unwrap();
    assert_eq!(
        store.interception_ca().await.unwrap().unwrap().1.as_slice(),
        key_der.as_slice()
    );
    store.close().await;
    let hits = scan_dir(data.root(), &forms("ca-private-key-canary-0123456789"));
    assert!(hits.is_empty(), "the CA key is on disk: {hits:?}");
}

/// An intent receipt with a 2 KB body, so that a few thousand of them grow the WAL by megabytes.
fn padded_receipt(tenant: &sequester_model::TenantId, i: i64) -> sequester_store::NewReceipt {
    sequester_store::NewReceipt {
        tenant_id: tenant.clone(),
        at_ms: i,
        kind: "intent".to_owned(),
        request_id: format!("req-{i}"),
        agent: Some("bot".to_owned()),
        secret: Some("S".to_owned()),
        denied: false,
        body: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(2000)),
    }
}

/// A store and a second handle for receipts that leaves checkpoints to the caller, as the
/// broker's receipt writer does; and the path of the write-ahead log.
async fn store_with_manual_checkpoints(
    dir: &std::path::Path,
) -> (
    DataDir,
    sequester_store::SqliteStore,
    sequester_store::SqliteStore,
    sequester_model::TenantId,
    std::path::PathBuf,
) {
    let (data, store, tenant) = init(dir).await;
    let audit = store.reopen().await.unwrap();
    audit.manual_checkpoints().await.unwrap();
    let wal = data.root().join("sequester.db-wal");
    (data, store, audit, tenant, wal)
}

/// The receipt chain holds exactly `n` records, numbered 1 to `n`, and its recorded head is
/// the last of them.
async fn assert_whole_chain(store: &sequester_store::SqliteStore, n: i64) {
    let chain = store.receipt_chain(0, 5000).await.unwrap();
    assert_eq!(chain.len(), usize::try_from(n).unwrap());
    assert!(chain.iter().zip(1..).all(|(r, seq)| r.seq == seq));
    assert_eq!(
        store.receipt_head().await.unwrap().map(|(seq, _)| seq),
        Some(n)
    );
}

#[tokio::test]
async fn the_receipt_appender_restarts_a_large_log_and_reuses_the_file() {
    use sequester_store::NewReceipt;
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, audit, tenant, wal) = store_with_manual_checkpoints(tmp.path()).await;
    audit.restart_wal_above(1024 * 1024);
    // No checkpointer and no automatic checkpoints: only the appender keeps the log in bounds.
    let mut appender = audit.receipt_appender().unwrap().unwrap();
    let mut largest = 0;
    for batch in 0..60 {
        let rows: Vec<NewReceipt> = (0..20)
            .map(|i| padded_receipt(&tenant, batch * 20 + i))
            .collect();
        appender.append(&rows).unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // About 5 MB of receipts went through a log that never grew far past the 1 MB limit.
    assert!(largest < 3 * 1024 * 1024, "the log grew to {largest} bytes");
    // ... and was restarted about once per megabyte, not after every batch once the file had
    // reached the limit (a reused log keeps its length). The WAL header's checkpoint sequence
    // number (bytes 12..16, big-endian; sqlite.org/fileformat.html) counts the restarts. Only
    // the log is read here: SQLite holds no lock on it.
    let mut header = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open(&wal).unwrap(), &mut header).unwrap();
    let restarts = u32::from_be_bytes(header[12..16].try_into().unwrap());
    assert!(
        (2..=12).contains(&restarts),
        "{restarts} restarts for about 5 MB of log"
    );
    drop(appender);
    assert_whole_chain(&audit, 1200).await;
    audit.close().await;
    store.close().await;
}

#[tokio::test]
async fn the_checkpointer_keeps_the_log_bounded_while_receipts_skip_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, audit, tenant, wal) = store_with_manual_checkpoints(tmp.path()).await;
    let db = data.root().join("sequester.db");
    let receipt = |i: i64| padded_receipt(&tenant, i);
    // Without a checkpointer, the receipt connection lets the log grow past SQLite's
    // automatic checkpoint threshold (1000 pages).
    for batch in 0..40 {
        let rows: Vec<_> = (0..50).map(|i| receipt(batch * 50 + i)).collect();
        audit.append_receipts(&rows).await.unwrap();
    }
    let grown = std::fs::metadata(&wal).unwrap().len();
    assert!(
        grown > 4_000_000,
        "the log was checkpointed anyway: {grown} bytes"
    );
    let db_before = std::fs::metadata(&db).unwrap().len();

    // The checkpointer copies it into the database and, past the threshold, truncates it.
    let checkpointer = store
        .start_checkpointer(std::time::Duration::from_millis(20), 1024 * 1024)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&wal).map_or(0, |m| m.len()) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log was never truncated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(std::fs::metadata(&db).unwrap().len() > db_before + 3_000_000);
    // Writing goes on across checkpoints; the chain stays whole.
    audit.append_receipts(&[receipt(5000)]).await.unwrap();
    checkpointer.stop().await;
    assert_whole_chain(&audit, 2001).await;
    audit.close().await;
    store.close().await;
}

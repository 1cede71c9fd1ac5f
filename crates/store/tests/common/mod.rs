#![allow(dead_code)]

use sequester_crypto::SecretValue;
use sequester_model::{HostPattern, SecretName, TenantId, TenantName, Timestamp};
use sequester_store::{DataDir, KeyMode, NewSecret, SqliteStore, Store, StoreError};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use std::path::Path;
use zeroize::Zeroizing;

pub const T0: Timestamp = Timestamp::from_unix(1_800_000_000);

pub fn no_passphrase(_: bool) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    panic!("passphrase asked for in key-file mode")
}

pub async fn init(dir: &Path) -> (DataDir, SqliteStore, TenantId) {
    let data = DataDir::new(dir.join("data"));
    let store = data
        .init(KeyMode::KeyFile, &no_passphrase, T0)
        .await
        .unwrap();
    let tenant = store
        .tenant(&TenantName::default_tenant())
        .await
        .unwrap()
        .id;
    (data, store, tenant)
}

pub fn value(s: &str) -> SecretValue {
    SecretValue::new(s.as_bytes().to_vec())
}

#[expect(clippy::disallowed_methods, reason = "tests compare opened values")]
pub fn bytes(v: &SecretValue) -> Vec<u8> {
    v.expose().to_vec()
}

pub fn new_secret(name: &str, host: &str) -> NewSecret {
    NewSecret {
        name: SecretName::parse(name).unwrap(),
        hosts: vec![HostPattern::parse(host).unwrap()],
        injection: None,
        expires_at: None,
        env_var: None,
        body_substitution: false,
    }
}

/// Every row of every table, rendered with SQLite's `quote()`, for before/after comparisons.
pub async fn dump(db: &Path) -> Vec<String> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db).read_only(true))
        .await
        .unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut out = Vec::new();
    for (table,) in tables {
        let cols: Vec<String> = sqlx::query(&format!("PRAGMA table_info({table})"))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        let expr = cols
            .iter()
            .map(|c| format!("quote({c})"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let rows: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT {expr} FROM {table} ORDER BY rowid"))
                .fetch_all(&pool)
                .await
                .unwrap();
        out.extend(rows.into_iter().map(|(r,)| format!("{table}: {r}")));
    }
    pool.close().await;
    out
}

/// Opens a raw read-write pool on the database, for tests that tamper with rows.
pub async fn raw_pool(db: &Path) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db))
        .await
        .unwrap()
}

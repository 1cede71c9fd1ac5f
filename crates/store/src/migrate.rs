//! Schema migrations. Each entry runs once, in order, in its own transaction; the
//! `schema_migrations` table records which ran. Never edit a released migration: add one.

use crate::StoreError;
use sqlx::{Connection as _, SqliteConnection};

pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str)] = &[(1, SQLITE_V1), (2, SQLITE_V2)];

/// Secrets may opt in to substitution in request bodies (forward proxy).
const SQLITE_V2: &str = r#"
ALTER TABLE secrets ADD COLUMN body_substitution INTEGER NOT NULL DEFAULT 0
    CHECK (body_substitution IN (0, 1));
"#;

const SQLITE_V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE changes (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
) STRICT;
INSERT INTO changes (id, seq) VALUES (1, 0);

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    wrapped_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE agents (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
) STRICT;

CREATE TABLE secrets (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    id              TEXT NOT NULL PRIMARY KEY,
    name            TEXT NOT NULL,
    hosts           TEXT NOT NULL,
    injection       TEXT,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    rotated_at      INTEGER,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    origin          TEXT NOT NULL DEFAULT 'admin' CHECK (origin IN ('admin', 'sanitized')),
    -- Environment variable that `sequester run` fills with the agent's token for this secret.
    env_var         TEXT,
    -- Keyed hash of the value (sanitized secrets only), to recognise the same paste.
    value_mac       BLOB,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
) STRICT;
CREATE UNIQUE INDEX secrets_by_mac ON secrets (tenant_id, value_mac) WHERE value_mac IS NOT NULL;

CREATE TABLE secret_versions (
    tenant_id    TEXT NOT NULL,
    secret_id    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    sealed       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER,
    usable_until INTEGER,
    PRIMARY KEY (secret_id, version),
    FOREIGN KEY (tenant_id, secret_id) REFERENCES secrets (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- The right of an agent to use a secret. Later migrations narrow it (methods, paths, rate,
-- budget, expiry).
CREATE TABLE grants (
    tenant_id  TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    secret_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, secret_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, secret_id) REFERENCES secrets (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- Tokens (sqt_…) and placeholders (<<SECRET_…>>): both bind one agent to one secret.
CREATE TABLE tokens (
    tenant_id  TEXT NOT NULL,
    id         TEXT NOT NULL PRIMARY KEY,
    kind       TEXT NOT NULL DEFAULT 'token' CHECK (kind IN ('token', 'placeholder')),
    hash       BLOB NOT NULL UNIQUE,
    agent_id   TEXT NOT NULL,
    secret_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    FOREIGN KEY (tenant_id, agent_id, secret_id)
        REFERENCES grants (tenant_id, agent_id, secret_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX tokens_by_tenant ON tokens (tenant_id, created_at);

-- Agent keys (sqa_…): an agent's own credential for the agent API and the forward proxy.
CREATE TABLE agent_keys (
    tenant_id  TEXT NOT NULL,
    id         TEXT NOT NULL PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,
    agent_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- Custom services of a tenant (presets and config-file services are not stored).
CREATE TABLE services (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    base_url   TEXT NOT NULL,
    injection  TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- Egress rules of the forward proxy: per tenant (agent_id NULL) or per agent.
CREATE TABLE egress_rules (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    agent_id   TEXT,
    action     TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    pattern    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE UNIQUE INDEX egress_rules_unique ON egress_rules (tenant_id, COALESCE(agent_id, ''), action, pattern);

-- Audit receipts: one hash chain across the store. `body` is the canonical JSON of the record
-- (never a value or a token); `hash` = chain_hash(prev_hash, body). The other columns repeat
-- fields of the body for filtering; `receipts verify` checks that they agree. The head of the
-- chain (last seq and hash) is kept in `meta` so that a truncated tail is detected too.
CREATE TABLE receipts (
    seq        INTEGER PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    request_id TEXT NOT NULL,
    agent      TEXT,
    secret     TEXT,
    denied     INTEGER NOT NULL,
    body       TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
) STRICT;
CREATE INDEX receipts_by_tenant ON receipts (tenant_id, at_ms);
"#;

pub(crate) async fn current_version(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    let exists: Option<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if exists.is_none() {
        return Ok(0);
    }
    let (v,): (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?;
    Ok(v.unwrap_or(0))
}

pub(crate) fn latest() -> i64 {
    SQLITE_MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Applies the migrations the database has not seen yet.
pub(crate) async fn migrate(conn: &mut SqliteConnection, now: i64) -> Result<(), StoreError> {
    let found = current_version(conn).await?;
    if found > latest() {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: latest(),
        });
    }
    for (version, sql) in SQLITE_MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        let mut tx = conn.begin().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

//! The embedded SQLite backend (bundled SQLite, WAL, synchronous=FULL, foreign keys on).

use crate::appender::{AppendTuning, ReceiptAppender, SqliteAppender};
use crate::keyring::Keyring;
use crate::store::{
    NewReceipt, NewSecret, OpenedVersion, ReceiptFilter, ReceiptRow, Sanitized, SealedVersion,
    SnapshotData, SnapshotSecret, Store, validate_value,
};
use crate::{StoreError, migrate};
use async_trait::async_trait;
use sequester_crypto::{
    DataKey, IssuedToken, KeyCheck, MasterKey, SecretValue, SecretVersionAad, TokenHash,
    chain_hash, open_version, placeholder_from, random_bytes, seal_version,
};
use sequester_model::{
    Agent, AgentId, AgentKeyId, AgentKeyMeta, AgentName, BaseUrl, EgressAction, EgressRule,
    HostPattern, InjectionRule, SecretId, SecretMeta, SecretName, SecretOrigin, SecretState,
    Service, ServiceName, Tenant, TenantId, TenantName, Timestamp, TokenId, TokenKind, TokenMeta,
    VersionMeta,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _, Row as _, SqliteConnection};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// The SQLite-backed [`Store`]. Open it through [`DataDir`](crate::DataDir), which verifies the
/// master key first.
pub struct SqliteStore {
    /// One connection: SQLite admits one writer at a time, and closing a single connection
    /// is deterministic (the last close checkpoints the WAL and removes it). `None` once
    /// closed.
    conn: Mutex<Option<SqliteConnection>>,
    keys: Arc<Keyring>,
    path: PathBuf,
    /// How this handle's receipt appends sync and checkpoint, applied to its connection and
    /// to any [`receipt_appender`](Store::receipt_appender) it opens.
    tuning: std::sync::Mutex<AppendTuning>,
}

/// How long a statement waits for another connection's lock before it fails.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The chain head as the last receipt holds it: (seq, hash).
pub(crate) const SELECT_RECEIPT_HEAD: &str =
    "SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1";
/// Records the head after an append (see [`Linked::head_record`]).
pub(crate) const UPSERT_RECEIPT_HEAD: &str = "INSERT INTO meta (key, value) VALUES ('receipts_head', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The write-ahead log beside the database at `db`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

pub(crate) async fn connect(path: &Path, create: bool) -> Result<SqliteConnection, StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // Deleted pages are overwritten with zeros, so a removed sealed blob is gone from disk.
        .pragma("secure_delete", "ON");
    Ok(options.connect().await?)
}

/// A running WAL checkpointer (see [`SqliteStore::start_checkpointer`]).
pub struct Checkpointer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    /// Stops checkpointing and closes its connection.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Key settings kept in the `meta` table.
pub(crate) struct KeyMeta {
    pub mode: String,
    pub kdf: Option<String>,
    pub check: KeyCheck,
}

pub(crate) async fn read_key_meta(
    conn: &mut SqliteConnection,
) -> Result<Option<KeyMeta>, StoreError> {
    let has_meta: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
            .fetch_optional(&mut *conn)
            .await?;
    if has_meta.is_none() {
        return Ok(None);
    }
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, value FROM meta WHERE key IN ('key_mode', 'kdf', 'key_check')")
            .fetch_all(&mut *conn)
            .await?;
    let get = |k: &str| {
        rows.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let (Some(mode), Some(check)) = (get("key_mode"), get("key_check")) else {
        return Ok(None);
    };
    let text = |v: Vec<u8>| String::from_utf8(v).map_err(|_| StoreError::corrupt("meta"));
    Ok(Some(KeyMeta {
        mode: text(mode)?,
        kdf: get("kdf").map(text).transpose()?,
        check: KeyCheck(check),
    }))
}

async fn write_key_meta(conn: &mut SqliteConnection, meta: &KeyMeta) -> Result<(), StoreError> {
    let mut entries = vec![
        ("key_mode", meta.mode.as_bytes().to_vec()),
        ("key_check", meta.check.0.clone()),
    ];
    if let Some(kdf) = &meta.kdf {
        entries.push(("kdf", kdf.as_bytes().to_vec()));
    }
    for (key, value) in entries {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&mut *conn)
            .await?;
    }
    if meta.kdf.is_none() {
        sqlx::query("DELETE FROM meta WHERE key = 'kdf'")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// An insert's result, with a unique-constraint violation reported as `conflict()` (the
/// "already exists" error of that kind of row).
fn conflict_as<T>(
    result: Result<T, sqlx::Error>,
    conflict: impl FnOnce() -> StoreError,
) -> Result<T, StoreError> {
    match result {
        Err(e) if is_unique_violation(&e) => Err(conflict()),
        other => Ok(other?),
    }
}

fn ts(v: i64) -> Timestamp {
    Timestamp::from_unix(v)
}

fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_unix)
}

fn version_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::corrupt("version number"))
}

struct TenantRow {
    name: String,
    wrapped_key: Vec<u8>,
}

const SECRET_COLUMNS: &str = "id, tenant_id, name, hosts, injection, current_version, created_at, rotated_at, expires_at, revoked_at, origin, env_var, body_substitution";

fn secret_from_row(row: &SqliteRow) -> Result<SecretMeta, StoreError> {
    let name: String = row.try_get("name")?;
    let hosts_json: String = row.try_get("hosts")?;
    let hosts: Vec<String> = serde_json::from_str(&hosts_json)
        .map_err(|_| StoreError::corrupt(format!("hosts of secret {name}")))?;
    let hosts = hosts
        .iter()
        .map(|h| HostPattern::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::corrupt(format!("hosts of secret {name}")))?;
    let injection: Option<String> = row.try_get("injection")?;
    let injection = injection
        .map(|rule| InjectionRule::parse(&rule))
        .transpose()
        .map_err(|_| StoreError::corrupt(format!("injection rule of secret {name}")))?;
    Ok(SecretMeta {
        id: SecretId::from_stored(row.try_get("id")?),
        tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
        name: SecretName::parse(&name).map_err(|_| StoreError::corrupt("secret name"))?,
        hosts,
        injection,
        current_version: version_u32(row.try_get("current_version")?)?,
        created_at: ts(row.try_get("created_at")?),
        rotated_at: opt_ts(row.try_get("rotated_at")?),
        expires_at: opt_ts(row.try_get("expires_at")?),
        revoked_at: opt_ts(row.try_get("revoked_at")?),
        origin: match row.try_get::<String, _>("origin")?.as_str() {
            "admin" => SecretOrigin::Admin,
            "sanitized" => SecretOrigin::Sanitized,
            _ => return Err(StoreError::corrupt(format!("origin of secret {name}"))),
        },
        env_var: row.try_get("env_var")?,
        body_substitution: row.try_get::<i64, _>("body_substitution")? != 0,
    })
}

fn agent_from_row(row: &SqliteRow) -> Result<Agent, StoreError> {
    let name: String = row.try_get("name")?;
    Ok(Agent {
        id: AgentId::from_stored(row.try_get("id")?),
        tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
        name: AgentName::parse(&name).map_err(|_| StoreError::corrupt("agent name"))?,
        created_at: ts(row.try_get("created_at")?),
        disabled_at: opt_ts(row.try_get("disabled_at")?),
    })
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant, StoreError> {
    let name: String = row.try_get("name")?;
    Ok(Tenant {
        id: TenantId::from_stored(row.try_get("id")?),
        name: TenantName::parse(&name).map_err(|_| StoreError::corrupt("tenant name"))?,
        created_at: ts(row.try_get("created_at")?),
    })
}

const TOKEN_SELECT: &str = "SELECT t.id, t.kind, t.tenant_id, t.agent_id, a.name AS agent_name, t.secret_id, s.name AS secret_name, t.created_at, t.expires_at, t.revoked_at, t.hash
     FROM tokens t
     JOIN agents a ON a.tenant_id = t.tenant_id AND a.id = t.agent_id
     JOIN secrets s ON s.tenant_id = t.tenant_id AND s.id = t.secret_id";

fn token_from_row(row: &SqliteRow) -> Result<TokenMeta, StoreError> {
    let agent: String = row.try_get("agent_name")?;
    let secret: String = row.try_get("secret_name")?;
    Ok(TokenMeta {
        id: TokenId::from_stored(row.try_get("id")?),
        kind: match row.try_get::<String, _>("kind")?.as_str() {
            "token" => TokenKind::Token,
            "placeholder" => TokenKind::Placeholder,
            _ => return Err(StoreError::corrupt("token kind")),
        },
        tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
        agent_id: AgentId::from_stored(row.try_get("agent_id")?),
        agent: AgentName::parse(&agent).map_err(|_| StoreError::corrupt("agent name"))?,
        secret_id: SecretId::from_stored(row.try_get("secret_id")?),
        secret: SecretName::parse(&secret).map_err(|_| StoreError::corrupt("secret name"))?,
        created_at: ts(row.try_get("created_at")?),
        expires_at: opt_ts(row.try_get("expires_at")?),
        revoked_at: opt_ts(row.try_get("revoked_at")?),
    })
}

fn service_from_row(row: &SqliteRow) -> Result<Service, StoreError> {
    let name: String = row.try_get("name")?;
    let base_url: String = row.try_get("base_url")?;
    let injection: Option<String> = row.try_get("injection")?;
    Ok(Service {
        tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
        name: ServiceName::parse(&name).map_err(|_| StoreError::corrupt("service name"))?,
        base_url: BaseUrl::parse(&base_url)
            .map_err(|_| StoreError::corrupt(format!("base URL of service {name}")))?,
        injection: injection
            .map(|r| InjectionRule::parse(&r))
            .transpose()
            .map_err(|_| StoreError::corrupt(format!("injection rule of service {name}")))?,
        created_at: ts(row.try_get("created_at")?),
    })
}

const AGENT_KEY_SELECT: &str = "SELECT k.id, k.tenant_id, k.agent_id, a.name AS agent_name, k.created_at, k.expires_at, k.revoked_at, k.hash
     FROM agent_keys k JOIN agents a ON a.tenant_id = k.tenant_id AND a.id = k.agent_id";

fn agent_key_from_row(row: &SqliteRow) -> Result<AgentKeyMeta, StoreError> {
    let agent: String = row.try_get("agent_name")?;
    Ok(AgentKeyMeta {
        id: AgentKeyId::from_stored(row.try_get("id")?),
        tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
        agent_id: AgentId::from_stored(row.try_get("agent_id")?),
        agent: AgentName::parse(&agent).map_err(|_| StoreError::corrupt("agent name"))?,
        created_at: ts(row.try_get("created_at")?),
        expires_at: opt_ts(row.try_get("expires_at")?),
        revoked_at: opt_ts(row.try_get("revoked_at")?),
    })
}

fn hash_from_row(row: &SqliteRow) -> Result<TokenHash, StoreError> {
    let hash: Vec<u8> = row.try_get("hash")?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::corrupt("token hash"))?;
    Ok(TokenHash::from_bytes(hash))
}

/// Label binding the sealed interception CA key.
const INTERCEPT_CA_LABEL: &str = "interception CA key";

const EGRESS_SELECT: &str =
    "SELECT e.tenant_id, e.agent_id, a.name AS agent_name, e.action, e.pattern, e.created_at
     FROM egress_rules e LEFT JOIN agents a ON a.tenant_id = e.tenant_id AND a.id = e.agent_id";

fn egress_from_row(row: &SqliteRow) -> Result<EgressRule, StoreError> {
    let agent_id: Option<String> = row.try_get("agent_id")?;
    let agent: Option<String> = row.try_get("agent_name")?;
    let pattern: String = row.try_get("pattern")?;
    Ok(EgressRule {
        tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
        agent_id: agent_id.map(AgentId::from_stored),
        agent: agent
            .map(|a| AgentName::parse(&a))
            .transpose()
            .map_err(|_| StoreError::corrupt("agent name"))?,
        action: match row.try_get::<String, _>("action")?.as_str() {
            "allow" => EgressAction::Allow,
            "deny" => EgressAction::Deny,
            _ => return Err(StoreError::corrupt("egress action")),
        },
        pattern: HostPattern::parse(&pattern).map_err(|_| StoreError::corrupt("egress pattern"))?,
        created_at: ts(row.try_get("created_at")?),
    })
}

const RECEIPT_COLUMNS: &str =
    "seq, tenant_id, at_ms, kind, request_id, agent, secret, denied, body, prev_hash, hash";

fn receipt_from_row(row: &SqliteRow) -> Result<ReceiptRow, StoreError> {
    Ok(ReceiptRow {
        seq: row.try_get("seq")?,
        receipt: NewReceipt {
            tenant_id: TenantId::from_stored(row.try_get("tenant_id")?),
            at_ms: row.try_get("at_ms")?,
            kind: row.try_get("kind")?,
            request_id: row.try_get("request_id")?,
            agent: row.try_get("agent")?,
            secret: row.try_get("secret")?,
            denied: row.try_get::<i64, _>("denied")? != 0,
            body: row.try_get("body")?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn version_from_row(row: &SqliteRow) -> Result<VersionMeta, StoreError> {
    Ok(VersionMeta {
        version: version_u32(row.try_get("version")?)?,
        created_at: ts(row.try_get("created_at")?),
        retired_at: opt_ts(row.try_get("retired_at")?),
        usable_until: opt_ts(row.try_get("usable_until")?),
    })
}

/// A receipt with its place in the hash chain.
pub(crate) struct Linked<'a> {
    pub(crate) seq: i64,
    pub(crate) receipt: &'a NewReceipt,
    pub(crate) prev: [u8; 32],
    pub(crate) hash: [u8; 32],
}

impl Linked<'_> {
    /// The `receipts_head` meta record when this is the last receipt: seq (big-endian) and
    /// hash, so that removing receipts from the end of the chain is detected.
    pub(crate) fn head_record(&self) -> Vec<u8> {
        let mut head = self.seq.to_be_bytes().to_vec();
        head.extend_from_slice(&self.hash);
        head
    }
}

/// Links `batch` after the chain head `head` (seq, hash; `None` for an empty chain).
pub(crate) fn link_receipts(
    head: Option<(i64, Vec<u8>)>,
    batch: &[NewReceipt],
) -> Result<Vec<Linked<'_>>, StoreError> {
    let (mut seq, mut prev) = match head {
        Some((seq, hash)) => (
            seq,
            <[u8; 32]>::try_from(hash.as_slice())
                .map_err(|_| StoreError::corrupt("receipt hash"))?,
        ),
        None => (0, [0u8; 32]),
    };
    let mut linked = Vec::with_capacity(batch.len());
    for receipt in batch {
        seq += 1;
        let hash = chain_hash(&prev, receipt.body.as_bytes());
        linked.push(Linked {
            seq,
            receipt,
            prev,
            hash,
        });
        prev = hash;
    }
    Ok(linked)
}

impl SqliteStore {
    pub(crate) fn new(conn: SqliteConnection, master: MasterKey, path: PathBuf) -> Self {
        Self {
            conn: Mutex::new(Some(conn)),
            keys: Arc::new(Keyring::new(master)),
            path,
            tuning: std::sync::Mutex::default(),
        }
    }

    /// Relaxes this connection's durability to `synchronous=NORMAL`: a commit survives the
    /// process being killed but not the machine losing power. For the receipts connection when
    /// the operator chooses `[audit] sync = "normal"`.
    pub async fn relax_durability(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *self.lock().await?)
            .await?;
        self.tune(|t| t.relaxed = true);
        Ok(())
    }

    /// Leaves this connection's WAL checkpoints to a [`Checkpointer`]: its commits never stop
    /// to copy the log into the database file (which, with an fsync of the database, is what
    /// made the slowest receipt commits slow). Only together with a running checkpointer.
    pub async fn manual_checkpoints(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&mut *self.lock().await?)
            .await?;
        self.tune(|t| t.manual_checkpoints = true);
        Ok(())
    }

    /// Lets this handle's [`receipt_appender`](Store::receipt_appender) restart the WAL itself
    /// once it exceeds `limit` bytes, between two batches (with a passive
    /// [`Checkpointer`] running, that costs milliseconds); the file is then reused in place.
    pub fn restart_wal_above(&self, limit: u64) {
        self.tune(|t| t.restart_wal_above = Some(limit));
    }

    fn tune(&self, f: impl FnOnce(&mut AppendTuning)) {
        let mut tuning = self
            .tuning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut tuning);
    }

    /// Starts checkpointing the WAL every `every` from a connection of its own, off every
    /// writer's path. A passive checkpoint never blocks a writer; when the log has grown past
    /// `truncate_above` bytes (a writer that never pauses keeps it from being restarted) a
    /// truncating checkpoint follows, which waits for the current commit and holds the next
    /// one only for the few frames left.
    pub async fn start_checkpointer(
        &self,
        every: Duration,
        truncate_above: u64,
    ) -> Result<Checkpointer, StoreError> {
        let mut conn = connect(&self.path, false).await?;
        let wal = wal_path(&self.path);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                if size == 0 {
                    continue;
                }
                let mut statements = vec!["PRAGMA wal_checkpoint(PASSIVE)"];
                if size > truncate_above {
                    statements.push("PRAGMA wal_checkpoint(TRUNCATE)");
                }
                for sql in statements {
                    if let Err(e) = sqlx::query(sql).execute(&mut conn).await {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying at the next interval");
                        break;
                    }
                }
            }
            close_quietly(conn).await;
        });
        Ok(Checkpointer { stop, task })
    }

    /// A second handle on the same database with its own connection, sharing the keys (no
    /// second key check or passphrase). The audit writer uses one so that a slow receipt
    /// commit never blocks the control plane, and the other way round.
    pub async fn reopen(&self) -> Result<SqliteStore, StoreError> {
        Ok(Self {
            conn: Mutex::new(Some(connect(&self.path, false).await?)),
            keys: Arc::clone(&self.keys),
            path: self.path.clone(),
            tuning: std::sync::Mutex::default(),
        })
    }

    /// Closes the connection, checkpointing and removing the WAL. Later calls fail with
    /// `storage_unavailable`.
    pub async fn close(&self) {
        let conn = self.conn.lock().await.take();
        if let Some(conn) = conn {
            close_quietly(conn).await;
        }
    }

    /// The connection, exclusively for the duration of one store call.
    async fn lock(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        MutexGuard::try_map(self.conn.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))
    }

    /// Records the key settings of a freshly created database.
    pub(crate) async fn write_initial_meta(&self, meta: &KeyMeta) -> Result<(), StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        write_key_meta(&mut tx, meta).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Re-wraps every tenant's data key under `new_master` and records the new key settings,
    /// in one transaction: either everything moves to the new key or nothing does.
    pub(crate) async fn rewrap(
        &self,
        new_master: &MasterKey,
        meta: &KeyMeta,
    ) -> Result<usize, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenants: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, wrapped_key FROM tenants ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        for (id, wrapped) in &tenants {
            let key = self.keys.master().unwrap_data_key(id, wrapped)?;
            let rewrapped = new_master.wrap(&key, id)?;
            sqlx::query("UPDATE tenants SET wrapped_key = ? WHERE id = ?")
                .bind(rewrapped)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let ca_key: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT value FROM meta WHERE key = 'intercept_ca_key'")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((sealed,)) = ca_key {
            let key = self.keys.master().open_blob(INTERCEPT_CA_LABEL, &sealed)?;
            let resealed = new_master.seal_blob(INTERCEPT_CA_LABEL, &key)?;
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'intercept_ca_key'")
                .bind(resealed)
                .execute(&mut *tx)
                .await?;
        }
        write_key_meta(&mut tx, meta).await?;
        tx.commit().await?;
        Ok(tenants.len())
    }

    async fn tenant_row(
        conn: &mut SqliteConnection,
        tenant: &TenantId,
    ) -> Result<TenantRow, StoreError> {
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT name, wrapped_key FROM tenants WHERE id = ?")
                .bind(tenant.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        let (name, wrapped_key) = row.ok_or_else(|| StoreError::TenantNotFound {
            name: tenant.to_string(),
        })?;
        Ok(TenantRow { name, wrapped_key })
    }

    async fn data_key(
        &self,
        conn: &mut SqliteConnection,
        tenant: &TenantId,
    ) -> Result<(String, Arc<DataKey>), StoreError> {
        let row = Self::tenant_row(conn, tenant).await?;
        let key = self.keys.data_key(tenant, &row.wrapped_key)?;
        Ok((row.name, key))
    }

    async fn fetch_secret(
        conn: &mut SqliteConnection,
        tenant: &TenantId,
        tenant_name: &str,
        name: &SecretName,
    ) -> Result<SecretMeta, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE tenant_id = ? AND name = ?"
        ))
        .bind(tenant.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => secret_from_row(&row),
            None => Err(StoreError::SecretNotFound {
                tenant: tenant_name.to_owned(),
                name: name.to_string(),
            }),
        }
    }

    async fn fetch_agent(
        conn: &mut SqliteConnection,
        tenant: &TenantId,
        tenant_name: &str,
        name: &AgentName,
    ) -> Result<Agent, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, created_at, disabled_at FROM agents WHERE tenant_id = ? AND name = ?",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => agent_from_row(&row),
            None => Err(StoreError::AgentNotFound {
                tenant: tenant_name.to_owned(),
                name: name.to_string(),
            }),
        }
    }

    async fn fetch_token(
        conn: &mut SqliteConnection,
        tenant: &TenantId,
        id: &TokenId,
    ) -> Result<Option<TokenMeta>, StoreError> {
        let row = sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE t.tenant_id = ? AND t.id = ?"
        ))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    fn require_usable(secret: &SecretMeta, now: Timestamp) -> Result<(), StoreError> {
        match secret.state(now) {
            SecretState::Active => Ok(()),
            SecretState::Revoked => Err(StoreError::SecretRevoked {
                name: secret.name.to_string(),
            }),
            SecretState::Expired => Err(StoreError::SecretExpired {
                name: secret.name.to_string(),
            }),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, name: &TenantName, now: Timestamp) -> Result<Tenant, StoreError> {
        let id = TenantId::from_random(random_bytes());
        let (_key, wrapped) = self.keys.master().new_data_key(id.as_str())?;
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, wrapped_key, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(name.as_str())
        .bind(wrapped)
        .bind(now.unix())
        .execute(&mut *tx)
        .await;
        conflict_as(inserted, || StoreError::TenantExists {
            name: name.to_string(),
        })?;
        tx.commit().await?;
        Ok(Tenant {
            id,
            name: name.clone(),
            created_at: now,
        })
    }

    async fn tenant(&self, name: &TenantName) -> Result<Tenant, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *self.lock().await?)
            .await?;
        match row {
            Some(row) => tenant_from_row(&row),
            None => Err(StoreError::TenantNotFound {
                name: name.to_string(),
            }),
        }
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY name")
            .fetch_all(&mut *self.lock().await?)
            .await?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn create_agent(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        now: Timestamp,
    ) -> Result<Agent, StoreError> {
        let id = AgentId::from_random(random_bytes());
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let inserted =
            sqlx::query("INSERT INTO agents (tenant_id, id, name, created_at) VALUES (?, ?, ?, ?)")
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(name.as_str())
                .bind(now.unix())
                .execute(&mut *tx)
                .await;
        conflict_as(inserted, || StoreError::AgentExists {
            tenant: tenant_name.clone(),
            name: name.to_string(),
        })?;
        tx.commit().await?;
        Ok(Agent {
            id,
            tenant_id: tenant.clone(),
            name: name.clone(),
            created_at: now,
            disabled_at: None,
        })
    }

    async fn agent(&self, tenant: &TenantId, name: &AgentName) -> Result<Agent, StoreError> {
        let mut conn = self.lock().await?;
        let tenant_name = Self::tenant_row(&mut conn, tenant).await?.name;
        Self::fetch_agent(&mut conn, tenant, &tenant_name, name).await
    }

    async fn list_agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError> {
        sqlx::query(
            "SELECT id, tenant_id, name, created_at, disabled_at FROM agents WHERE tenant_id = ? ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *self.lock().await?)
        .await?
        .iter()
        .map(agent_from_row)
        .collect()
    }

    async fn disable_agent(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        now: Timestamp,
    ) -> Result<Agent, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        sqlx::query(
            "UPDATE agents SET disabled_at = COALESCE(disabled_at, ?) WHERE tenant_id = ? AND name = ?",
        )
        .bind(now.unix())
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        let agent = Self::fetch_agent(&mut tx, tenant, &tenant_name, name).await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn add_secret(
        &self,
        tenant: &TenantId,
        secret: &NewSecret,
        value: SecretValue,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError> {
        validate_value(&value)?;
        if secret.hosts.is_empty() {
            return Err(StoreError::NoHosts);
        }
        let id = SecretId::from_random(random_bytes());
        let hosts: Vec<String> = secret.hosts.iter().map(ToString::to_string).collect();
        let hosts_json =
            serde_json::to_string(&hosts).map_err(|_| StoreError::corrupt("host list"))?;

        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let (tenant_name, key) = self.data_key(&mut tx, tenant).await?;
        let sealed = seal_version(
            &key,
            &SecretVersionAad {
                tenant_id: tenant.as_str(),
                secret_id: id.as_str(),
                secret_name: secret.name.as_str(),
                version: 1,
            },
            &value,
        )?;
        drop(value);
        let inserted = sqlx::query(
            "INSERT INTO secrets (tenant_id, id, name, hosts, injection, current_version, created_at, expires_at, env_var, body_substitution)
             VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(secret.name.as_str())
        .bind(&hosts_json)
        .bind(secret.injection.as_ref().map(ToString::to_string))
        .bind(now.unix())
        .bind(secret.expires_at.map(Timestamp::unix))
        .bind(secret.env_var.as_deref())
        .bind(i64::from(secret.body_substitution))
        .execute(&mut *tx)
        .await;
        conflict_as(inserted, || StoreError::SecretExists {
            tenant: tenant_name.clone(),
            name: secret.name.to_string(),
        })?;
        sqlx::query(
            "INSERT INTO secret_versions (tenant_id, secret_id, version, sealed, created_at) VALUES (?, ?, 1, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(sealed)
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        let meta = Self::fetch_secret(&mut tx, tenant, &tenant_name, &secret.name).await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn secret(&self, tenant: &TenantId, name: &SecretName) -> Result<SecretMeta, StoreError> {
        let mut conn = self.lock().await?;
        let tenant_name = Self::tenant_row(&mut conn, tenant).await?.name;
        Self::fetch_secret(&mut conn, tenant, &tenant_name, name).await
    }

    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<SecretMeta>, StoreError> {
        sqlx::query(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE tenant_id = ? ORDER BY name"
        ))
        .bind(tenant.as_str())
        .fetch_all(&mut *self.lock().await?)
        .await?
        .iter()
        .map(secret_from_row)
        .collect()
    }

    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        value: SecretValue,
        grace: Duration,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError> {
        validate_value(&value)?;
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let (tenant_name, key) = self.data_key(&mut tx, tenant).await?;
        let current = Self::fetch_secret(&mut tx, tenant, &tenant_name, name).await?;
        Self::require_usable(&current, now)?;
        let next = current
            .current_version
            .checked_add(1)
            .ok_or_else(|| StoreError::corrupt("version number"))?;
        let sealed = seal_version(
            &key,
            &SecretVersionAad {
                tenant_id: tenant.as_str(),
                secret_id: current.id.as_str(),
                secret_name: name.as_str(),
                version: next,
            },
            &value,
        )?;
        drop(value);
        // Versions still in an earlier grace window end now: only the version being replaced
        // gets a grace window.
        sqlx::query(
            "UPDATE secret_versions SET usable_until = ?
             WHERE tenant_id = ? AND secret_id = ? AND retired_at IS NOT NULL AND usable_until > ?",
        )
        .bind(now.unix())
        .bind(tenant.as_str())
        .bind(current.id.as_str())
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE secret_versions SET retired_at = ?, usable_until = ?
             WHERE tenant_id = ? AND secret_id = ? AND version = ?",
        )
        .bind(now.unix())
        .bind(now.plus(grace).unix())
        .bind(tenant.as_str())
        .bind(current.id.as_str())
        .bind(i64::from(current.current_version))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO secret_versions (tenant_id, secret_id, version, sealed, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(current.id.as_str())
        .bind(i64::from(next))
        .bind(sealed)
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE secrets SET current_version = ?, rotated_at = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(i64::from(next))
        .bind(now.unix())
        .bind(tenant.as_str())
        .bind(current.id.as_str())
        .execute(&mut *tx)
        .await?;
        let meta = Self::fetch_secret(&mut tx, tenant, &tenant_name, name).await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn revoke_secret(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        sqlx::query(
            "UPDATE secrets SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND name = ?",
        )
        .bind(now.unix())
        .bind(tenant.as_str())
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        let meta = Self::fetch_secret(&mut tx, tenant, &tenant_name, name).await?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn remove_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<(), StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::SecretNotFound {
                tenant: tenant_name,
                name: name.to_string(),
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn secret_history(
        &self,
        tenant: &TenantId,
        name: &SecretName,
    ) -> Result<Vec<VersionMeta>, StoreError> {
        let mut conn = self.lock().await?;
        let tenant_name = Self::tenant_row(&mut conn, tenant).await?.name;
        let secret = Self::fetch_secret(&mut conn, tenant, &tenant_name, name).await?;
        sqlx::query(
            "SELECT version, created_at, retired_at, usable_until FROM secret_versions
             WHERE tenant_id = ? AND secret_id = ? ORDER BY version DESC",
        )
        .bind(tenant.as_str())
        .bind(secret.id.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(version_from_row)
        .collect()
    }

    async fn open_usable(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        now: Timestamp,
    ) -> Result<Vec<OpenedVersion>, StoreError> {
        let mut conn = self.lock().await?;
        let (tenant_name, key) = self.data_key(&mut conn, tenant).await?;
        let secret = Self::fetch_secret(&mut conn, tenant, &tenant_name, name).await?;
        Self::require_usable(&secret, now)?;
        let rows: Vec<(i64, Vec<u8>, Option<i64>)> = sqlx::query_as(
            "SELECT version, sealed, retired_at FROM secret_versions
             WHERE tenant_id = ? AND secret_id = ? AND (retired_at IS NULL OR usable_until > ?)
             ORDER BY retired_at IS NOT NULL, version DESC",
        )
        .bind(tenant.as_str())
        .bind(secret.id.as_str())
        .bind(now.unix())
        .fetch_all(&mut *conn)
        .await?;
        let mut opened = Vec::with_capacity(rows.len());
        for (version, sealed, retired_at) in rows {
            let version = version_u32(version)?;
            let value = open_version(
                &key,
                &SecretVersionAad {
                    tenant_id: tenant.as_str(),
                    secret_id: secret.id.as_str(),
                    secret_name: secret.name.as_str(),
                    version,
                },
                &sealed,
            )?;
            opened.push(OpenedVersion {
                version,
                current: retired_at.is_none(),
                value,
            });
        }
        match opened.first() {
            Some(v) if v.current && v.version == secret.current_version => Ok(opened),
            _ => Err(StoreError::corrupt(format!(
                "secret {name} has no current version"
            ))),
        }
    }

    async fn issue_token(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        secret: &SecretName,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<(IssuedToken, TokenMeta), StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let agent_row = Self::fetch_agent(&mut tx, tenant, &tenant_name, agent).await?;
        if agent_row.disabled_at.is_some() {
            return Err(StoreError::AgentDisabled {
                name: agent.to_string(),
            });
        }
        let secret_row = Self::fetch_secret(&mut tx, tenant, &tenant_name, secret).await?;
        Self::require_usable(&secret_row, now)?;
        sqlx::query(
            "INSERT INTO grants (tenant_id, agent_id, secret_id, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(agent_row.id.as_str())
        .bind(secret_row.id.as_str())
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        let token = IssuedToken::generate();
        let id = TokenId::from_random(random_bytes());
        let expires_at = ttl.map(|ttl| now.plus(ttl));
        sqlx::query(
            "INSERT INTO tokens (tenant_id, id, hash, agent_id, secret_id, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(token.hash().as_bytes().as_slice())
        .bind(agent_row.id.as_str())
        .bind(secret_row.id.as_str())
        .bind(now.unix())
        .bind(expires_at.map(Timestamp::unix))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let meta = TokenMeta {
            id,
            kind: TokenKind::Token,
            tenant_id: tenant.clone(),
            agent_id: agent_row.id,
            agent: agent_row.name,
            secret_id: secret_row.id,
            secret: secret_row.name,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        Ok((token, meta))
    }

    async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenMeta>, StoreError> {
        sqlx::query(&format!(
            "{TOKEN_SELECT} WHERE t.tenant_id = ? ORDER BY t.created_at, t.id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&mut *self.lock().await?)
        .await?
        .iter()
        .map(token_from_row)
        .collect()
    }

    async fn revoke_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
        now: Timestamp,
    ) -> Result<TokenMeta, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        sqlx::query(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?",
        )
        .bind(now.unix())
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let meta = Self::fetch_token(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| StoreError::TokenNotFound {
                tenant: tenant_name,
                id: id.to_string(),
            })?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn find_token(&self, hash: &TokenHash) -> Result<Option<TokenMeta>, StoreError> {
        let row = sqlx::query(&format!("{TOKEN_SELECT} WHERE t.hash = ?"))
            .bind(hash.as_bytes().as_slice())
            .fetch_optional(&mut *self.lock().await?)
            .await?;
        let Some(row) = row else { return Ok(None) };
        if !hash_from_row(&row)?.ct_eq(hash) {
            return Ok(None);
        }
        token_from_row(&row).map(Some)
    }

    async fn add_service(
        &self,
        tenant: &TenantId,
        name: &ServiceName,
        base_url: &BaseUrl,
        injection: Option<&InjectionRule>,
        now: Timestamp,
    ) -> Result<Service, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let inserted = sqlx::query(
            "INSERT INTO services (tenant_id, name, base_url, injection, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .bind(base_url.to_string())
        .bind(injection.map(ToString::to_string))
        .bind(now.unix())
        .execute(&mut *tx)
        .await;
        conflict_as(inserted, || StoreError::ServiceExists {
            tenant: tenant_name.clone(),
            name: name.to_string(),
        })?;
        tx.commit().await?;
        Ok(Service {
            tenant_id: tenant.clone(),
            name: name.clone(),
            base_url: base_url.clone(),
            injection: injection.cloned(),
            created_at: now,
        })
    }

    async fn list_services(&self, tenant: &TenantId) -> Result<Vec<Service>, StoreError> {
        sqlx::query(
            "SELECT tenant_id, name, base_url, injection, created_at FROM services WHERE tenant_id = ? ORDER BY name",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *self.lock().await?)
        .await?
        .iter()
        .map(service_from_row)
        .collect()
    }

    async fn remove_service(
        &self,
        tenant: &TenantId,
        name: &ServiceName,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let done = sqlx::query("DELETE FROM services WHERE tenant_id = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ServiceNotFound {
                tenant: tenant_name,
                name: name.to_string(),
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_egress_rule(
        &self,
        tenant: &TenantId,
        agent: Option<&AgentName>,
        action: EgressAction,
        pattern: &HostPattern,
        now: Timestamp,
    ) -> Result<EgressRule, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let agent_row = match agent {
            Some(a) => Some(Self::fetch_agent(&mut tx, tenant, &tenant_name, a).await?),
            None => None,
        };
        sqlx::query(
            "INSERT INTO egress_rules (tenant_id, agent_id, action, pattern, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(agent_row.as_ref().map(|a| a.id.as_str()))
        .bind(action.as_str())
        .bind(pattern.to_string())
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(EgressRule {
            tenant_id: tenant.clone(),
            agent_id: agent_row.as_ref().map(|a| a.id.clone()),
            agent: agent_row.map(|a| a.name),
            action,
            pattern: pattern.clone(),
            created_at: now,
        })
    }

    async fn remove_egress_rule(
        &self,
        tenant: &TenantId,
        agent: Option<&AgentName>,
        action: EgressAction,
        pattern: &HostPattern,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let agent_id = match agent {
            Some(a) => Some(
                Self::fetch_agent(&mut tx, tenant, &tenant_name, a)
                    .await?
                    .id,
            ),
            None => None,
        };
        let done = sqlx::query(
            "DELETE FROM egress_rules WHERE tenant_id = ? AND COALESCE(agent_id, '') = ? AND action = ? AND pattern = ?",
        )
        .bind(tenant.as_str())
        .bind(agent_id.as_ref().map_or("", |a| a.as_str()))
        .bind(action.as_str())
        .bind(pattern.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_egress_rules(&self, tenant: &TenantId) -> Result<Vec<EgressRule>, StoreError> {
        sqlx::query(&format!("{EGRESS_SELECT} WHERE e.tenant_id = ? ORDER BY e.agent_id IS NOT NULL, a.name, e.action, e.pattern"))
            .bind(tenant.as_str())
            .fetch_all(&mut *self.lock().await?)
            .await?
            .iter()
            .map(egress_from_row)
            .collect()
    }

    async fn interception_ca(
        &self,
    ) -> Result<Option<(String, zeroize::Zeroizing<Vec<u8>>)>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT key, value FROM meta WHERE key IN ('intercept_ca_cert', 'intercept_ca_key')",
        )
        .fetch_all(&mut *self.lock().await?)
        .await?;
        let get = |k: &str| rows.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        match (get("intercept_ca_cert"), get("intercept_ca_key")) {
            (Some(cert), Some(sealed)) => {
                let cert = String::from_utf8(cert.clone())
                    .map_err(|_| StoreError::corrupt("interception CA certificate"))?;
                let key = self.keys.master().open_blob(INTERCEPT_CA_LABEL, sealed)?;
                Ok(Some((cert, key)))
            }
            (None, None) => Ok(None),
            _ => Err(StoreError::corrupt(
                "interception CA (certificate without key)",
            )),
        }
    }

    async fn set_interception_ca(&self, cert_pem: &str, key_der: &[u8]) -> Result<(), StoreError> {
        let sealed = self.keys.master().seal_blob(INTERCEPT_CA_LABEL, key_der)?;
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        for (key, value) in [
            ("intercept_ca_cert", cert_pem.as_bytes().to_vec()),
            ("intercept_ca_key", sealed),
        ] {
            sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<SnapshotData, StoreError> {
        let mut conn = self.lock().await?;
        // One read transaction: every table is seen at the same commit.
        let mut tx = conn.begin().await?;
        let (counter,): (i64,) = sqlx::query_as("SELECT seq FROM changes WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let tenant_rows: Vec<(String, String, i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, name, created_at, wrapped_key FROM tenants ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        let mut tenants = Vec::with_capacity(tenant_rows.len());
        for (id, name, created_at, wrapped) in tenant_rows {
            let id = TenantId::from_stored(id);
            let key = self.keys.data_key(&id, &wrapped)?;
            let tenant = Tenant {
                name: TenantName::parse(&name).map_err(|_| StoreError::corrupt("tenant name"))?,
                id,
                created_at: ts(created_at),
            };
            tenants.push((tenant, key));
        }
        let agents = sqlx::query("SELECT id, tenant_id, name, created_at, disabled_at FROM agents")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let metas = sqlx::query(&format!("SELECT {SECRET_COLUMNS} FROM secrets"))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(secret_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut secrets: Vec<SnapshotSecret> = metas
            .into_iter()
            .map(|meta| SnapshotSecret {
                meta,
                versions: Vec::new(),
            })
            .collect();
        let index: std::collections::HashMap<String, usize> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.meta.id.to_string(), i))
            .collect();
        let versions: Vec<(String, i64, Vec<u8>, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT secret_id, version, sealed, retired_at, usable_until FROM secret_versions ORDER BY secret_id, version DESC",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (secret_id, version, sealed, retired_at, usable_until) in versions {
            let i = *index
                .get(&secret_id)
                .ok_or_else(|| StoreError::corrupt("a version without its secret"))?;
            secrets[i].versions.push(SealedVersion {
                version: version_u32(version)?,
                sealed,
                retired_at: opt_ts(retired_at),
                usable_until: opt_ts(usable_until),
            });
        }
        let tokens = sqlx::query(TOKEN_SELECT)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Ok((hash_from_row(row)?, token_from_row(row)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let agent_keys = sqlx::query(AGENT_KEY_SELECT)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Ok((hash_from_row(row)?, agent_key_from_row(row)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let egress_rules = sqlx::query(EGRESS_SELECT)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(egress_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let services =
            sqlx::query("SELECT tenant_id, name, base_url, injection, created_at FROM services")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(service_from_row)
                .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok(SnapshotData {
            counter,
            tenants,
            agents,
            secrets,
            tokens,
            agent_keys,
            services,
            egress_rules,
        })
    }

    fn receipt_appender(&self) -> Result<Option<Box<dyn ReceiptAppender>>, StoreError> {
        let tuning = *self
            .tuning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Some(Box::new(SqliteAppender::open(&self.path, tuning)?)))
    }

    async fn append_receipts(&self, batch: &[NewReceipt]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock().await?;
        // IMMEDIATE: take the write lock before reading the chain head, so two writers can
        // never link to the same predecessor.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let last: Option<(i64, Vec<u8>)> = sqlx::query_as(SELECT_RECEIPT_HEAD)
            .fetch_optional(&mut *tx)
            .await?;
        // Link every record first, then insert in multi-row statements: one round trip to
        // SQLite per chunk instead of one per receipt.
        let linked = link_receipts(last, batch)?;
        const ROWS_PER_STATEMENT: usize = 256;
        for chunk in linked.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO receipts (seq, tenant_id, at_ms, kind, request_id, agent, secret, denied, body, prev_hash, hash) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 {
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                });
            }
            let mut q = sqlx::query(&sql);
            for l in chunk {
                let r = l.receipt;
                q = q
                    .bind(l.seq)
                    .bind(r.tenant_id.as_str())
                    .bind(r.at_ms)
                    .bind(&r.kind)
                    .bind(&r.request_id)
                    .bind(&r.agent)
                    .bind(&r.secret)
                    .bind(i64::from(r.denied))
                    .bind(&r.body)
                    .bind(l.prev.as_slice())
                    .bind(l.hash.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(last) = linked.last() {
            sqlx::query(UPSERT_RECEIPT_HEAD)
                .bind(last.head_record())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_receipts(&self, filter: &ReceiptFilter) -> Result<Vec<ReceiptRow>, StoreError> {
        let mut sql = format!("SELECT {RECEIPT_COLUMNS} FROM receipts WHERE 1 = 1");
        if filter.tenant.is_some() {
            // Denials that could not be tied to a tenant (unknown tokens) are shown too.
            sql.push_str(" AND (tenant_id = ? OR tenant_id = '')");
        }
        if filter.agent.is_some() {
            sql.push_str(" AND agent = ?");
        }
        if filter.secret.is_some() {
            sql.push_str(" AND secret = ?");
        }
        if filter.since_ms.is_some() {
            sql.push_str(" AND at_ms >= ?");
        }
        if filter.denied_only {
            sql.push_str(" AND denied = 1");
        }
        sql.push_str(" ORDER BY seq DESC");
        if filter.limit.is_some() {
            sql.push_str(" LIMIT ?");
        }
        let mut q = sqlx::query(&sql);
        if let Some(t) = &filter.tenant {
            q = q.bind(t.as_str());
        }
        if let Some(a) = &filter.agent {
            q = q.bind(a);
        }
        if let Some(s) = &filter.secret {
            q = q.bind(s);
        }
        if let Some(since) = filter.since_ms {
            q = q.bind(since);
        }
        if let Some(limit) = filter.limit {
            q = q.bind(i64::from(limit));
        }
        let mut rows = q
            .fetch_all(&mut *self.lock().await?)
            .await?
            .iter()
            .map(receipt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    async fn receipt_chain(&self, after: i64, limit: u32) -> Result<Vec<ReceiptRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.lock().await?)
        .await?
        .iter()
        .map(receipt_from_row)
        .collect()
    }

    async fn receipt_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT value FROM meta WHERE key = 'receipts_head'")
                .fetch_optional(&mut *self.lock().await?)
                .await?;
        match row {
            None => Ok(None),
            Some((v,)) if v.len() == 40 => {
                let (seq, hash) = v.split_at(8);
                let seq: [u8; 8] = seq
                    .try_into()
                    .map_err(|_| StoreError::corrupt("receipt head"))?;
                Ok(Some((i64::from_be_bytes(seq), hash.to_vec())))
            }
            Some(_) => Err(StoreError::corrupt("receipt head")),
        }
    }

    async fn sanitize_secret(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        provider: &str,
        hosts: &[HostPattern],
        value: SecretValue,
        now: Timestamp,
    ) -> Result<Sanitized, StoreError> {
        validate_value(&value)?;
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let (tenant_name, key) = self.data_key(&mut tx, tenant).await?;
        #[expect(
            clippy::disallowed_methods,
            reason = "a keyed hash of the value recognises the same paste without storing it"
        )]
        let mac = key.mac("sanitize/value", &[value.expose()]);
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT name FROM secrets WHERE tenant_id = ? AND value_mac = ?")
                .bind(tenant.as_str())
                .bind(mac.as_slice())
                .fetch_optional(&mut *tx)
                .await?;
        let agent_row = sqlx::query(
            "SELECT id, tenant_id, name, created_at, disabled_at FROM agents WHERE tenant_id = ? AND id = ?",
        )
        .bind(tenant.as_str())
        .bind(agent.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::AgentNotFound {
            tenant: tenant_name.clone(),
            name: agent.to_string(),
        })?;
        let agent_row = agent_from_row(&agent_row)?;
        if agent_row.disabled_at.is_some() {
            return Err(StoreError::AgentDisabled {
                name: agent_row.name.to_string(),
            });
        }
        let (secret, created) = match existing {
            Some((name,)) => {
                let name =
                    SecretName::parse(&name).map_err(|_| StoreError::corrupt("secret name"))?;
                (
                    Self::fetch_secret(&mut tx, tenant, &tenant_name, &name).await?,
                    false,
                )
            }
            None => {
                let provider_label: String = provider
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .take(40)
                    .collect();
                let provider_label = if provider_label.is_empty() {
                    "secret".to_owned()
                } else {
                    provider_label.to_ascii_lowercase()
                };
                let name = SecretName::parse(&format!(
                    "{provider_label}-{}",
                    mac.iter()
                        .take(5)
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ))
                .map_err(|_| StoreError::corrupt("generated secret name"))?;
                let id = SecretId::from_random(random_bytes());
                let sealed = seal_version(
                    &key,
                    &SecretVersionAad {
                        tenant_id: tenant.as_str(),
                        secret_id: id.as_str(),
                        secret_name: name.as_str(),
                        version: 1,
                    },
                    &value,
                )?;
                let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
                let hosts_json =
                    serde_json::to_string(&hosts).map_err(|_| StoreError::corrupt("host list"))?;
                sqlx::query(
                    "INSERT INTO secrets (tenant_id, id, name, hosts, injection, current_version, created_at, origin, value_mac)
                     VALUES (?, ?, ?, ?, NULL, 1, ?, 'sanitized', ?)",
                )
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(name.as_str())
                .bind(&hosts_json)
                .bind(now.unix())
                .bind(mac.as_slice())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO secret_versions (tenant_id, secret_id, version, sealed, created_at) VALUES (?, ?, 1, ?, ?)",
                )
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(sealed)
                .bind(now.unix())
                .execute(&mut *tx)
                .await?;
                (
                    Self::fetch_secret(&mut tx, tenant, &tenant_name, &name).await?,
                    true,
                )
            }
        };
        drop(value);
        sqlx::query(
            "INSERT INTO grants (tenant_id, agent_id, secret_id, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(agent.as_str())
        .bind(secret.id.as_str())
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        let placeholder = placeholder_from(&key.mac(
            "sanitize/placeholder",
            &[agent.as_str().as_bytes(), secret.id.as_str().as_bytes()],
        ));
        sqlx::query(
            "INSERT INTO tokens (tenant_id, id, kind, hash, agent_id, secret_id, created_at)
             VALUES (?, ?, 'placeholder', ?, ?, ?, ?) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(TokenId::from_random(random_bytes()).as_str())
        .bind(TokenHash::of(&placeholder).as_bytes().as_slice())
        .bind(agent.as_str())
        .bind(secret.id.as_str())
        .bind(now.unix())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Sanitized {
            placeholder,
            secret,
            created,
        })
    }

    async fn issue_agent_key(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<(IssuedToken, AgentKeyMeta), StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        let agent_row = Self::fetch_agent(&mut tx, tenant, &tenant_name, agent).await?;
        if agent_row.disabled_at.is_some() {
            return Err(StoreError::AgentDisabled {
                name: agent.to_string(),
            });
        }
        let key = IssuedToken::agent_key();
        let id = AgentKeyId::from_random(random_bytes());
        let expires_at = ttl.map(|ttl| now.plus(ttl));
        sqlx::query(
            "INSERT INTO agent_keys (tenant_id, id, hash, agent_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(key.hash().as_bytes().as_slice())
        .bind(agent_row.id.as_str())
        .bind(now.unix())
        .bind(expires_at.map(Timestamp::unix))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((
            key,
            AgentKeyMeta {
                id,
                tenant_id: tenant.clone(),
                agent_id: agent_row.id,
                agent: agent_row.name,
                created_at: now,
                expires_at,
                revoked_at: None,
            },
        ))
    }

    async fn list_agent_keys(&self, tenant: &TenantId) -> Result<Vec<AgentKeyMeta>, StoreError> {
        sqlx::query(&format!(
            "{AGENT_KEY_SELECT} WHERE k.tenant_id = ? ORDER BY k.created_at, k.id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&mut *self.lock().await?)
        .await?
        .iter()
        .map(agent_key_from_row)
        .collect()
    }

    async fn revoke_agent_key(
        &self,
        tenant: &TenantId,
        id: &AgentKeyId,
        now: Timestamp,
    ) -> Result<AgentKeyMeta, StoreError> {
        let mut conn = self.lock().await?;
        let mut tx = begin_write(&mut conn).await?;
        let tenant_name = Self::tenant_row(&mut tx, tenant).await?.name;
        sqlx::query("UPDATE agent_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?")
            .bind(now.unix())
            .bind(tenant.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!(
            "{AGENT_KEY_SELECT} WHERE k.tenant_id = ? AND k.id = ?"
        ))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::TokenNotFound {
            tenant: tenant_name,
            id: id.to_string(),
        })?;
        let meta = agent_key_from_row(&row)?;
        tx.commit().await?;
        Ok(meta)
    }

    async fn change_counter(&self) -> Result<i64, StoreError> {
        let (seq,): (i64,) = sqlx::query_as("SELECT seq FROM changes WHERE id = 1")
            .fetch_one(&mut *self.lock().await?)
            .await?;
        Ok(seq)
    }
}

pub(crate) async fn run_migrations(
    conn: &mut SqliteConnection,
    now: Timestamp,
) -> Result<(), StoreError> {
    migrate::migrate(conn, now.unix()).await
}

/// Closes a connection, logging (not failing on) an error: there is nothing left to undo.
pub(crate) async fn close_quietly(conn: SqliteConnection) {
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the database failed");
    }
}

/// Starts a write transaction. Its first statement bumps the change counter, which takes
/// SQLite's write lock at once (so the busy timeout applies instead of a deadlock later).
async fn begin_write(
    conn: &mut SqliteConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
    let mut tx = conn.begin().await?;
    sqlx::query("UPDATE changes SET seq = seq + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

//! Receipt appends from a thread of their own.
//!
//! The audit writer commits every batch of receipts before the requests waiting on it may
//! inject a credential, so the time one commit takes is added to those requests. Through the
//! async driver a commit is five statements, each a hand-off to the connection's worker
//! thread and back; on a busy machine every hand-off waits for a core. The appender does the
//! whole transaction on the calling thread (the audit writer's own) with cached statements, so
//! a commit costs one wake-up plus SQLite's own work and the fsync.

use crate::sqlite::{
    BUSY_TIMEOUT, SELECT_RECEIPT_HEAD, UPSERT_RECEIPT_HEAD, link_receipts, wal_path,
};
use crate::{NewReceipt, StoreError};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;

/// Appends receipts synchronously, each batch one transaction linked into the hash chain.
/// For a writer that owns a thread; see [`Store::receipt_appender`](crate::Store).
pub trait ReceiptAppender: Send {
    fn append(&mut self, batch: &[NewReceipt]) -> Result<(), StoreError>;
}

/// Durability and checkpoint settings of the receipts connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AppendTuning {
    /// `synchronous=NORMAL` instead of `FULL` (`[audit] sync = "normal"`).
    pub(crate) relaxed: bool,
    /// No automatic checkpoints: a [`Checkpointer`](crate::Checkpointer) runs them.
    pub(crate) manual_checkpoints: bool,
    /// Past this many bytes of WAL, the appender itself restarts the log between two
    /// batches (see [`SqliteAppender::restart_wal_if_large`]).
    pub(crate) restart_wal_above: Option<u64>,
}

/// The SQLite appender: a connection of its own to the broker's database.
pub(crate) struct SqliteAppender {
    conn: Connection,
    wal: std::path::PathBuf,
    restart_wal_above: Option<u64>,
    /// The log's length when it was last restarted (at least the limit). A restarted log keeps
    /// its length and is written again from its start, so it is due for the next restart only
    /// once it grows past that length: the file's length alone says nothing about how much of
    /// it is in use.
    restart_past: u64,
}

impl SqliteAppender {
    pub(crate) fn open(path: &Path, tuning: AppendTuning) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The database is in WAL mode already (set when it was created); this connection
        // only chooses how it syncs and whether it checkpoints.
        conn.pragma_update(
            None,
            "synchronous",
            if tuning.relaxed { "NORMAL" } else { "FULL" },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        if tuning.manual_checkpoints {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::corrupt(format!(
                "journal mode {mode}, expected wal"
            )));
        }
        Ok(Self {
            conn,
            wal: wal_path(path),
            restart_wal_above: tuning.restart_wal_above,
            restart_past: tuning.restart_wal_above.unwrap_or(u64::MAX),
        })
    }

    /// Restarts the WAL once it has grown past the limit: the next commit writes from the
    /// start of the file again, over blocks already allocated (an fsync that extends the file
    /// also commits file-system metadata and measured ten times slower). A passive
    /// checkpointer running elsewhere has copied nearly all of the log already, so this
    /// copies the rest and syncs the database: a pause of milliseconds between two batches. Done
    /// here because this connection is the only writer: from another connection a restarting
    /// checkpoint waits for the writer through SQLite's busy handler, which sleeps in steps of
    /// up to 100 ms and holds every commit meanwhile. Readers in the middle of a snapshot make
    /// it fail at once (no busy wait); the next batch tries again. The log file keeps its
    /// size (about the limit) and is reused, so the next restart is due when writing has
    /// wrapped past that size again, about once per `limit` bytes of log.
    fn restart_wal_if_large(&mut self) {
        let Some(limit) = self.restart_wal_above else {
            return;
        };
        let len = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if len < self.restart_past {
            // Truncated (or removed) by another connection's checkpoint: grows from there.
            self.restart_past = len.max(limit);
        }
        if len <= self.restart_past {
            return;
        }
        let attempt = self.conn.busy_timeout(Duration::ZERO).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
        });
        if let Err(e) = self.conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!(error = %e, "cannot restore the receipt connection's busy timeout");
        }
        match attempt {
            Ok(0) => self.restart_past = len,
            Ok(_) => tracing::debug!("WAL restart deferred: a reader holds a snapshot"),
            Err(e) => tracing::debug!(error = %e, "WAL restart deferred"),
        }
    }
}

impl ReceiptAppender for SqliteAppender {
    fn append(&mut self, batch: &[NewReceipt]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // IMMEDIATE: the write lock is taken before the chain head is read, so another writer
        // (a second broker on the same directory) can never link to the same predecessor.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head: Option<(i64, Vec<u8>)> = tx
            .prepare_cached(SELECT_RECEIPT_HEAD)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let linked = link_receipts(head, batch)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO receipts (seq, tenant_id, at_ms, kind, request_id, agent, secret, denied, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?;
            for l in &linked {
                let r = l.receipt;
                insert.execute(params![
                    l.seq,
                    r.tenant_id.as_str(),
                    r.at_ms,
                    r.kind,
                    r.request_id,
                    r.agent,
                    r.secret,
                    i64::from(r.denied),
                    r.body,
                    l.prev.as_slice(),
                    l.hash.as_slice(),
                ])?;
            }
        }
        if let Some(last) = linked.last() {
            tx.prepare_cached(UPSERT_RECEIPT_HEAD)?
                .execute([last.head_record()])?;
        }
        tx.commit()?;
        self.restart_wal_if_large();
        Ok(())
    }
}

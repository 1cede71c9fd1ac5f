//! Sequester's persistent state.
//!
//! [`Store`] is the one interface to tenants, agents, secrets and their versions, grants,
//! tokens and receipts. [`SqliteStore`] is the embedded default; a PostgreSQL backend
//! implements the same trait. [`DataDir`] owns the on-disk layout: the database, the master key
//! file, `init`, `open` and `rekey`.
//!
//! Invariants:
//! - Every call that reads or writes tenant data takes the tenant, and every query filters by
//!   it; composite foreign keys make a cross-tenant row impossible at the schema level.
//! - Secret values enter as [`SecretValue`](sequester_crypto::SecretValue) and are sealed before
//!   any SQL runs; the database never sees plaintext. Tokens are stored only as hashes.
//! - Every mutation is one transaction: it happens completely or not at all, and bumps the
//!   change counter that running brokers watch to reload their snapshot.
//! - Nothing is written before the master key is verified.

mod appender;
mod datadir;
mod error;
mod keyring;
mod migrate;
mod sqlite;
mod store;

pub use appender::ReceiptAppender;
pub use datadir::{DataDir, KeyMode, PassphraseSource};
pub use error::StoreError;
pub use sqlite::{Checkpointer, SqliteStore};
pub use store::{
    MAX_VALUE_LEN, NewReceipt, NewSecret, OpenedVersion, ReceiptFilter, ReceiptRow, Sanitized,
    SealedVersion, SnapshotData, SnapshotSecret, Store, validate_value,
};

//! Receipts: the audit record of every use or denial of a secret.
//!
//! A [`Receipt`] says who (tenant, agent, token id), which secret by name and version, where
//! (service, method, host, path with credential-bearing query values redacted), the outcome
//! (decision, denial code, status), latency, bytes and the caller's run id. It never holds a
//! value or a token.
//!
//! A request that injects a value leaves two records: an **intent**, durable before the value
//! is injected ([`AuditWriter::record_durable`]), and a **completion** after the response. A
//! denial leaves one **denial** record. Records are written by one [`AuditWriter`] task that
//! commits whatever has queued in one transaction (group commit), so durability costs one
//! fsync per batch, not per request.
//!
//! Every record carries the hash of the previous one (the store links them); [`verify`] walks
//! the chain and the recorded head and reports an edited, removed or reordered record.

mod receipt;
mod verify;
mod writer;

pub use receipt::{Decision, Kind, Mode, Receipt, redact_query, run_id_from};
pub use verify::{VerifyError, VerifyReport, verify};
pub use writer::{
    AuditError, AuditStats, AuditStatsSnapshot, AuditWriter, BATCH_BUCKETS, COMMIT_BUCKETS,
};

//! The data plane's view of the world and its one decision.
//!
//! [`Snapshot`] is an immutable, in-memory index built from the store's
//! [`SnapshotData`](sequester_store::SnapshotData): token hash → token → agent and secret
//! (metadata and sealed versions) and the tenants' data keys. The data plane never queries the
//! database per request; it swaps in a new snapshot when the store's change counter moves.
//!
//! [`decide`] is a pure function from (snapshot, request, time) to [`Decision`]: it reads no
//! clock, file or socket, so it is tested with tables of cases. Anything it does not
//! positively allow is denied with a stable code.
//!
//! Invariants: a snapshot never holds a plaintext value; [`Grant::open`] opens the current
//! version for the moment of injection. A token only ever resolves within its own tenant.

mod decide;
mod snapshot;

pub use decide::{Decision, Denial, Grant, Request, decide};
pub use snapshot::{SecretEntry, Snapshot};

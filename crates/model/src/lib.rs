//! Plain data types shared by every Sequester crate.
//!
//! This crate is the bottom of the dependency graph. It holds ids, validated names, host
//! patterns, injection rules, timestamps and the stable error codes, and nothing that performs
//! I/O, reads a clock or touches a secret value.
//!
//! Invariants:
//! - Input is parsed once, at the edge, into these types ("parse, don't validate"); code that
//!   holds a [`SecretName`] or a [`HostPattern`] never re-checks the string.
//! - Ids are newtypes so that a tenant id cannot be passed where an agent id is expected.
//! - [`ErrorCode`] strings are a public contract: they appear in JSON bodies, receipts and exit
//!   statuses and never change meaning once released.

mod code;
mod host;
mod ids;
mod inject;
mod name;
mod records;
mod service;
mod time;

pub use code::ErrorCode;
pub use host::{HostPattern, ParseHostError};
pub use ids::{AgentId, AgentKeyId, SecretId, TenantId, TokenId};
pub use inject::{InjectionRule, ParseInjectionError};
pub use name::{AgentName, NAME_MAX_LEN, ParseNameError, SecretName, ServiceName, TenantName};
pub use records::{
    Agent, AgentKeyMeta, AgentState, EgressAction, EgressRule, SecretMeta, SecretOrigin,
    SecretState, Service, Tenant, TokenKind, TokenMeta, TokenState, VersionMeta, VersionState,
};
pub use service::{BaseUrl, ParseUrlError, Scheme};
pub use time::{ParseDurationError, Timestamp, parse_duration};

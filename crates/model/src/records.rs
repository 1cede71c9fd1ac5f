//! Metadata records as the store returns them. None of them holds a secret value or a token.

use crate::{
    AgentId, AgentKeyId, AgentName, BaseUrl, HostPattern, InjectionRule, SecretId, SecretName,
    ServiceName, TenantId, TenantName, Timestamp, TokenId,
};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: TenantName,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Active,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub name: AgentName,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

impl Agent {
    pub fn state(&self) -> AgentState {
        if self.disabled_at.is_some() {
            AgentState::Disabled
        } else {
            AgentState::Active
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretState {
    Active,
    Revoked,
    Expired,
}

impl SecretState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// How a secret came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretOrigin {
    /// Added by an operator (`secret add`).
    Admin,
    /// Detected in text an agent sent to the sanitizer, and sealed on the spot.
    Sanitized,
}

impl SecretOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Sanitized => "sanitized",
        }
    }
}

/// Everything about a secret except its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretMeta {
    pub id: SecretId,
    pub tenant_id: TenantId,
    pub name: SecretName,
    pub hosts: Vec<HostPattern>,
    /// How the value is attached; `None` means the service's default rule, or
    /// `Authorization: Bearer` where no service says otherwise.
    pub injection: Option<InjectionRule>,
    pub current_version: u32,
    pub created_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub origin: SecretOrigin,
    /// The environment variable `sequester run` sets to the agent's token for this secret.
    pub env_var: Option<String>,
    /// The forward proxy also replaces this secret's tokens in request bodies (opt-in: it
    /// buffers the body to rewrite it and fix up `Content-Length`).
    pub body_substitution: bool,
}

impl SecretMeta {
    /// Revocation wins over expiry: a revoked secret stays revoked.
    pub fn state(&self, now: Timestamp) -> SecretState {
        if self.revoked_at.is_some() {
            SecretState::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            SecretState::Expired
        } else {
            SecretState::Active
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// The version new requests use.
    Current,
    /// Superseded by a rotation but still accepted until its grace window ends.
    Grace,
    /// No longer usable.
    Retired,
}

/// One version of a secret, without its sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionMeta {
    pub version: u32,
    pub created_at: Timestamp,
    /// When a rotation superseded this version.
    pub retired_at: Option<Timestamp>,
    /// End of the grace window after a rotation; `None` while current.
    pub usable_until: Option<Timestamp>,
}

impl VersionMeta {
    pub fn state(&self, now: Timestamp) -> VersionState {
        match (self.retired_at, self.usable_until) {
            (None, _) => VersionState::Current,
            (Some(_), Some(until)) if now < until => VersionState::Grace,
            _ => VersionState::Retired,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Revoked,
    Expired,
}

/// What an agent holds for a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `sqt_…`, issued by an operator.
    Token,
    /// `<<SECRET_…>>`, handed back by the sanitizer for a secret the agent pasted.
    Placeholder,
}

/// An issued token's metadata. The token itself is shown once at issue and stored only as a
/// hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenMeta {
    pub id: TokenId,
    pub kind: TokenKind,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub agent: AgentName,
    pub secret_id: SecretId,
    pub secret: SecretName,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// Revocation wins over expiry; an expiry at or before `now` has passed.
fn credential_state(
    revoked_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> TokenState {
    if revoked_at.is_some() {
        TokenState::Revoked
    } else if expires_at.is_some_and(|e| e <= now) {
        TokenState::Expired
    } else {
        TokenState::Active
    }
}

impl TokenMeta {
    pub fn state(&self, now: Timestamp) -> TokenState {
        credential_state(self.revoked_at, self.expires_at, now)
    }
}

/// A custom service added to a tenant (presets and config-file services are not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub tenant_id: TenantId,
    pub name: ServiceName,
    pub base_url: BaseUrl,
    /// The injection rule for secrets that do not set their own.
    pub injection: Option<InjectionRule>,
    pub created_at: Timestamp,
}

/// An agent key's metadata: the agent's own credential for the agent API and the forward
/// proxy. The key itself is shown once and stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentKeyMeta {
    pub id: AgentKeyId,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub agent: AgentName,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl AgentKeyMeta {
    pub fn state(&self, now: Timestamp) -> TokenState {
        credential_state(self.revoked_at, self.expires_at, now)
    }
}

/// Whether an egress rule opens or closes a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressAction {
    Allow,
    Deny,
}

impl EgressAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// A forward-proxy egress rule of a tenant, or of one agent when `agent_id` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    pub tenant_id: TenantId,
    pub agent_id: Option<AgentId>,
    pub agent: Option<AgentName>,
    pub action: EgressAction,
    pub pattern: HostPattern,
    pub created_at: Timestamp,
}

use crate::StoreError;
use crate::appender::ReceiptAppender;
use async_trait::async_trait;
use sequester_crypto::{DataKey, IssuedToken, SecretValue, TokenHash};
use sequester_model::{
    Agent, AgentId, AgentKeyId, AgentKeyMeta, AgentName, BaseUrl, EgressAction, EgressRule,
    HostPattern, InjectionRule, SecretMeta, SecretName, Service, ServiceName, Tenant, TenantId,
    TenantName, Timestamp, TokenId, TokenMeta, VersionMeta,
};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Longest accepted secret value, in bytes.
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// Checks a value before it is sealed: not empty, not over [`MAX_VALUE_LEN`], and free of the
/// control characters (CR, LF, NUL) that would let it split an HTTP header when injected.
pub fn validate_value(value: &SecretValue) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::EmptyValue);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLarge { max: MAX_VALUE_LEN });
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "scans the value for forbidden bytes; nothing is copied or reported"
    )]
    let bytes = value.expose();
    if bytes.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(StoreError::InvalidValue {
            reason: "contains a line break or NUL byte, which cannot be sent in an HTTP header",
        });
    }
    Ok(())
}

/// A secret to add. The value is passed separately so that this struct can be logged.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub name: SecretName,
    pub hosts: Vec<HostPattern>,
    /// `None`: the service's default rule applies.
    pub injection: Option<InjectionRule>,
    pub expires_at: Option<Timestamp>,
    /// Environment variable for `sequester run` (validated by the caller: `[A-Z_][A-Z0-9_]*`).
    pub env_var: Option<String>,
    /// Replace this secret's tokens in request bodies too (forward proxy).
    pub body_substitution: bool,
}

/// One sealed version as the snapshot holds it: opened only at the moment of injection.
#[derive(Debug, Clone)]
pub struct SealedVersion {
    pub version: u32,
    pub sealed: Vec<u8>,
    pub retired_at: Option<Timestamp>,
    pub usable_until: Option<Timestamp>,
}

/// A secret with its sealed versions.
#[derive(Debug, Clone)]
pub struct SnapshotSecret {
    pub meta: SecretMeta,
    pub versions: Vec<SealedVersion>,
}

/// Everything the data plane needs, read in one consistent transaction. Values stay sealed;
/// tenant data keys are unwrapped so a value can be opened at injection time.
pub struct SnapshotData {
    pub counter: i64,
    pub tenants: Vec<(Tenant, Arc<DataKey>)>,
    pub agents: Vec<Agent>,
    pub secrets: Vec<SnapshotSecret>,
    pub tokens: Vec<(TokenHash, TokenMeta)>,
    pub agent_keys: Vec<(TokenHash, AgentKeyMeta)>,
    pub services: Vec<Service>,
    pub egress_rules: Vec<EgressRule>,
}

/// The outcome of sanitizing one detected value.
#[derive(Debug, Clone)]
pub struct Sanitized {
    /// `<<SECRET_…>>`: the same for the same agent and value, every time.
    pub placeholder: String,
    pub secret: SecretMeta,
    /// False when the value was already in the vault (pasted before).
    pub created: bool,
}

/// A receipt to append. The store assigns the sequence number and links it into the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReceipt {
    pub tenant_id: TenantId,
    pub at_ms: i64,
    pub kind: String,
    pub request_id: String,
    pub agent: Option<String>,
    pub secret: Option<String>,
    pub denied: bool,
    /// Canonical JSON of the whole record; the chain hash covers exactly these bytes.
    pub body: String,
}

/// A stored receipt with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    pub seq: i64,
    pub receipt: NewReceipt,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Which receipts to list.
#[derive(Debug, Clone, Default)]
pub struct ReceiptFilter {
    /// This tenant's receipts, plus denials that no tenant could be tied to.
    pub tenant: Option<TenantId>,
    pub agent: Option<String>,
    pub secret: Option<String>,
    pub since_ms: Option<i64>,
    pub denied_only: bool,
    pub limit: Option<u32>,
}

/// One opened, usable version of a secret.
pub struct OpenedVersion {
    pub version: u32,
    pub current: bool,
    pub value: SecretValue,
}

/// All persistent state. Every method that touches tenant data takes the tenant; none can
/// reach another tenant's rows. Methods that depend on time take `now` so that callers and
/// tests control the clock.
#[async_trait]
pub trait Store: Send + Sync {
    // Tenants.
    async fn create_tenant(&self, name: &TenantName, now: Timestamp) -> Result<Tenant, StoreError>;
    async fn tenant(&self, name: &TenantName) -> Result<Tenant, StoreError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    // Agents.
    async fn create_agent(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        now: Timestamp,
    ) -> Result<Agent, StoreError>;
    async fn agent(&self, tenant: &TenantId, name: &AgentName) -> Result<Agent, StoreError>;
    async fn list_agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError>;
    /// Disables an agent; its tokens stop working. Disabling twice is not an error.
    async fn disable_agent(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        now: Timestamp,
    ) -> Result<Agent, StoreError>;

    // Secrets.
    async fn add_secret(
        &self,
        tenant: &TenantId,
        secret: &NewSecret,
        value: SecretValue,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError>;
    async fn secret(&self, tenant: &TenantId, name: &SecretName) -> Result<SecretMeta, StoreError>;
    async fn list_secrets(&self, tenant: &TenantId) -> Result<Vec<SecretMeta>, StoreError>;
    /// Makes `value` the current version. The previous current version stays usable until
    /// `now + grace`; older versions stay retired.
    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        value: SecretValue,
        grace: Duration,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError>;
    /// Revokes a secret: no version of it can be used again. Revoking twice is not an error.
    async fn revoke_secret(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        now: Timestamp,
    ) -> Result<SecretMeta, StoreError>;
    /// Deletes a secret, its sealed versions, grants and tokens.
    async fn remove_secret(&self, tenant: &TenantId, name: &SecretName) -> Result<(), StoreError>;
    async fn secret_history(
        &self,
        tenant: &TenantId,
        name: &SecretName,
    ) -> Result<Vec<VersionMeta>, StoreError>;
    /// Opens the versions usable at `now`: the current one first, then any still in their grace
    /// window. Fails if the secret is revoked or expired, or if a sealed value does not open.
    async fn open_usable(
        &self,
        tenant: &TenantId,
        name: &SecretName,
        now: Timestamp,
    ) -> Result<Vec<OpenedVersion>, StoreError>;

    // Tokens.
    /// Grants `agent` the use of `secret` (if not granted yet) and issues a token for it.
    /// The returned [`IssuedToken`] is the only copy of the token; only its hash is stored.
    async fn issue_token(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        secret: &SecretName,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<(IssuedToken, TokenMeta), StoreError>;
    async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenMeta>, StoreError>;
    /// Revokes a token. Revoking twice is not an error.
    async fn revoke_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
        now: Timestamp,
    ) -> Result<TokenMeta, StoreError>;
    /// Looks a token up by its hash, across tenants: the token itself says which tenant it
    /// belongs to, and everything it resolves to is then read within that tenant.
    async fn find_token(&self, hash: &TokenHash) -> Result<Option<TokenMeta>, StoreError>;

    /// Seals a value detected in an agent's text as a secret of the agent's tenant (allowed
    /// only toward `hosts`; an existing secret with the same value is reused and its hosts are
    /// never widened), grants it to the agent, and returns the agent's placeholder for it.
    async fn sanitize_secret(
        &self,
        tenant: &TenantId,
        agent: &AgentId,
        provider: &str,
        hosts: &[HostPattern],
        value: SecretValue,
        now: Timestamp,
    ) -> Result<Sanitized, StoreError>;

    // Agent keys.
    /// Issues an agent key (`sqa_…`), the agent's own credential; shown once, stored hashed.
    async fn issue_agent_key(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<(IssuedToken, AgentKeyMeta), StoreError>;
    async fn list_agent_keys(&self, tenant: &TenantId) -> Result<Vec<AgentKeyMeta>, StoreError>;
    async fn revoke_agent_key(
        &self,
        tenant: &TenantId,
        id: &AgentKeyId,
        now: Timestamp,
    ) -> Result<AgentKeyMeta, StoreError>;

    // Services.
    async fn add_service(
        &self,
        tenant: &TenantId,
        name: &ServiceName,
        base_url: &BaseUrl,
        injection: Option<&InjectionRule>,
        now: Timestamp,
    ) -> Result<Service, StoreError>;
    async fn list_services(&self, tenant: &TenantId) -> Result<Vec<Service>, StoreError>;
    async fn remove_service(&self, tenant: &TenantId, name: &ServiceName)
    -> Result<(), StoreError>;

    // Egress rules of the forward proxy.
    /// Adds a rule for the tenant, or for one agent. Adding an existing rule is not an error.
    async fn add_egress_rule(
        &self,
        tenant: &TenantId,
        agent: Option<&AgentName>,
        action: EgressAction,
        pattern: &HostPattern,
        now: Timestamp,
    ) -> Result<EgressRule, StoreError>;
    /// Removes a rule; `false` if there was none.
    async fn remove_egress_rule(
        &self,
        tenant: &TenantId,
        agent: Option<&AgentName>,
        action: EgressAction,
        pattern: &HostPattern,
    ) -> Result<bool, StoreError>;
    async fn list_egress_rules(&self, tenant: &TenantId) -> Result<Vec<EgressRule>, StoreError>;

    // The interception CA of the forward proxy (one per broker).
    /// The CA certificate (PEM) and its private key (DER, opened from its sealed form).
    async fn interception_ca(&self) -> Result<Option<(String, Zeroizing<Vec<u8>>)>, StoreError>;
    /// Stores the CA, sealing its key with the master key. Replaces an existing one.
    async fn set_interception_ca(&self, cert_pem: &str, key_der: &[u8]) -> Result<(), StoreError>;

    // Data plane.
    /// A consistent view of everything the data plane needs.
    async fn snapshot(&self) -> Result<SnapshotData, StoreError>;
    /// A counter that grows with every committed change, for snapshot reloads. Receipts do
    /// not move it.
    async fn change_counter(&self) -> Result<i64, StoreError>;

    // Receipts.
    /// A synchronous appender on a connection of its own, for a writer that owns a thread
    /// (commits then cost no async hand-offs); `None` if this backend has none, and the
    /// writer calls [`append_receipts`](Store::append_receipts). It follows this handle's
    /// durability settings.
    fn receipt_appender(&self) -> Result<Option<Box<dyn ReceiptAppender>>, StoreError> {
        Ok(None)
    }
    /// Appends receipts in one transaction, linking each into the hash chain.
    async fn append_receipts(&self, batch: &[NewReceipt]) -> Result<(), StoreError>;
    /// Receipts matching `filter`, oldest first (the newest `limit` if set).
    async fn list_receipts(&self, filter: &ReceiptFilter) -> Result<Vec<ReceiptRow>, StoreError>;
    /// Up to `limit` receipts of every tenant with `seq > after`, in chain order.
    async fn receipt_chain(&self, after: i64, limit: u32) -> Result<Vec<ReceiptRow>, StoreError>;
    /// The chain head recorded with the last append: (seq, hash).
    async fn receipt_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
}

use sequester_crypto::{DataKey, TokenHash};
use sequester_model::{
    Agent, AgentId, AgentKeyMeta, ErrorCode, SecretId, SecretMeta, Service, ServiceName, TenantId,
    Timestamp, TokenMeta,
};
use sequester_store::{SealedVersion, SnapshotData};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A secret as the data plane sees it: metadata and sealed versions, newest first.
#[derive(Debug)]
pub struct SecretEntry {
    pub meta: SecretMeta,
    pub versions: Vec<SealedVersion>,
}

impl SecretEntry {
    /// The current version, if the store's data is consistent.
    pub fn current(&self) -> Option<&SealedVersion> {
        self.versions
            .iter()
            .find(|v| v.version == self.meta.current_version && v.retired_at.is_none())
    }
}

/// An immutable index of everything `decide` needs.
pub struct Snapshot {
    counter: i64,
    tokens: HashMap<TokenHash, TokenMeta>,
    agent_keys: HashMap<TokenHash, AgentKeyMeta>,
    agents: HashMap<AgentId, Agent>,
    secrets: HashMap<SecretId, Arc<SecretEntry>>,
    keys: HashMap<TenantId, Arc<DataKey>>,
    services: HashMap<(TenantId, ServiceName), Service>,
    egress: Vec<sequester_model::EgressRule>,
    /// Agents holding a token of a secret that opted in to body substitution.
    body_agents: HashSet<AgentId>,
}

impl Snapshot {
    /// An empty snapshot: every request is denied. Installed when loading fails, so a broken
    /// store never leaves a stale or half-built view in place.
    pub fn empty() -> Self {
        Self {
            counter: -1,
            tokens: HashMap::new(),
            agent_keys: HashMap::new(),
            agents: HashMap::new(),
            secrets: HashMap::new(),
            keys: HashMap::new(),
            services: HashMap::new(),
            egress: Vec::new(),
            body_agents: HashSet::new(),
        }
    }

    pub fn build(data: SnapshotData) -> Self {
        let body_secrets: HashSet<&SecretId> = data
            .secrets
            .iter()
            .filter(|s| s.meta.body_substitution)
            .map(|s| &s.meta.id)
            .collect();
        let body_agents = data
            .tokens
            .iter()
            .filter(|(_, t)| t.revoked_at.is_none() && body_secrets.contains(&t.secret_id))
            .map(|(_, t)| t.agent_id.clone())
            .collect();
        Self {
            body_agents,
            counter: data.counter,
            tokens: data.tokens.into_iter().collect(),
            agent_keys: data.agent_keys.into_iter().collect(),
            agents: data.agents.into_iter().map(|a| (a.id.clone(), a)).collect(),
            secrets: data
                .secrets
                .into_iter()
                .map(|s| {
                    (
                        s.meta.id.clone(),
                        Arc::new(SecretEntry {
                            meta: s.meta,
                            versions: s.versions,
                        }),
                    )
                })
                .collect(),
            keys: data
                .tenants
                .into_iter()
                .map(|(t, key)| (t.id, key))
                .collect(),
            services: data
                .services
                .into_iter()
                .map(|s| ((s.tenant_id.clone(), s.name.clone()), s))
                .collect(),
            egress: data.egress_rules,
        }
    }

    /// The store change counter this snapshot reflects (`-1` for the empty snapshot).
    pub fn counter(&self) -> i64 {
        self.counter
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The tenant a token belongs to, before any decision: routing needs it to find the
    /// tenant's own services.
    pub fn token_tenant(&self, hash: &TokenHash) -> Option<&TenantId> {
        self.tokens.get(hash).map(|t| &t.tenant_id)
    }

    pub(crate) fn token(&self, hash: &TokenHash) -> Option<(&TokenHash, &TokenMeta)> {
        self.tokens.get_key_value(hash)
    }

    pub(crate) fn agent(&self, id: &AgentId) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub(crate) fn secret(&self, id: &SecretId) -> Option<&Arc<SecretEntry>> {
        self.secrets.get(id)
    }

    pub(crate) fn key(&self, tenant: &TenantId) -> Option<&Arc<DataKey>> {
        self.keys.get(tenant)
    }

    /// The agent an agent key (`sqa_…`) authenticates, if the key and the agent are active.
    pub fn authenticate_agent(
        &self,
        key: &TokenHash,
        now: Timestamp,
    ) -> Result<(&AgentKeyMeta, &Agent), (ErrorCode, &'static str)> {
        let Some((stored, meta)) = self.agent_keys.get_key_value(key) else {
            return Err((
                ErrorCode::UnknownToken,
                "the agent key is not known to this broker",
            ));
        };
        if !stored.ct_eq(key) {
            return Err((
                ErrorCode::UnknownToken,
                "the agent key is not known to this broker",
            ));
        }
        if meta.revoked_at.is_some() {
            return Err((ErrorCode::TokenRevoked, "this agent key was revoked"));
        }
        if meta.expires_at.is_some_and(|e| e <= now) {
            return Err((ErrorCode::TokenExpired, "this agent key has expired"));
        }
        let Some(agent) = self
            .agents
            .get(&meta.agent_id)
            .filter(|a| a.tenant_id == meta.tenant_id)
        else {
            return Err((ErrorCode::UnknownToken, "the key's agent no longer exists"));
        };
        if agent.disabled_at.is_some() {
            return Err((ErrorCode::AgentDisabled, "this agent is disabled"));
        }
        Ok((meta, agent))
    }

    /// Opens every version usable at `now` (current or in grace) of every active secret: the
    /// exact values the broker's log redaction must never let through. Versions that fail to
    /// open are skipped (the request path reports them).
    pub fn open_all_usable(
        &self,
        now: Timestamp,
    ) -> Vec<(SecretId, sequester_crypto::SecretValue)> {
        let mut out = Vec::new();
        for secret in self.secrets.values() {
            let meta = &secret.meta;
            if meta.revoked_at.is_some() {
                continue;
            }
            let Some(key) = self.keys.get(&meta.tenant_id) else {
                continue;
            };
            for v in &secret.versions {
                let usable = v.retired_at.is_none() || v.usable_until.is_some_and(|u| now < u);
                if !usable {
                    continue;
                }
                if let Ok(value) = sequester_crypto::open_version(
                    key,
                    &sequester_crypto::SecretVersionAad {
                        tenant_id: meta.tenant_id.as_str(),
                        secret_id: meta.id.as_str(),
                        secret_name: meta.name.as_str(),
                        version: v.version,
                    },
                    &v.sealed,
                ) {
                    out.push((meta.id.clone(), value));
                }
            }
        }
        out
    }

    /// The egress rules of a tenant (agent-less) and of one of its agents.
    pub fn egress_rules<'a>(
        &'a self,
        tenant: &'a TenantId,
        agent: &'a AgentId,
    ) -> impl Iterator<Item = &'a sequester_model::EgressRule> + 'a {
        self.egress.iter().filter(move |r| {
            &r.tenant_id == tenant && r.agent_id.as_ref().is_none_or(|a| a == agent)
        })
    }

    /// Does this agent hold a token of a secret whose tokens are also replaced in request
    /// bodies? Only then does the forward proxy buffer and inspect its request bodies.
    pub fn inspects_bodies_of(&self, agent: &AgentId) -> bool {
        self.body_agents.contains(agent)
    }

    /// The token entry for a hash, without any decision (to tell whose token it is).
    pub fn token_meta(&self, hash: &TokenHash) -> Option<&TokenMeta> {
        self.tokens.get(hash)
    }

    /// A tenant's custom service by name.
    pub fn service(&self, tenant: &TenantId, name: &ServiceName) -> Option<&Service> {
        self.services.get(&(tenant.clone(), name.clone()))
    }
}

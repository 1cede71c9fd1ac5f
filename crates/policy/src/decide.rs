use crate::{SecretEntry, Snapshot};
use sequester_crypto::{
    CryptoError, DataKey, SecretValue, SecretVersionAad, TokenHash, open_version,
};
use sequester_model::{Agent, ErrorCode, Timestamp, TokenMeta};
use sequester_store::SealedVersion;
use std::sync::Arc;

/// What the data plane asks: may this token's value go to this destination now?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub token: &'a TokenHash,
    /// Destination host in ASCII form (IPv6 without brackets or with, both match).
    pub host: &'a str,
    pub port: u16,
    pub method: &'a str,
    pub path: &'a str,
    pub now: Timestamp,
}

/// Permission to inject one secret version for one request. Holds the tenant's data key, so
/// it has no `Debug`.
pub struct Grant<'s> {
    pub token: &'s TokenMeta,
    pub agent: &'s Agent,
    pub secret: Arc<SecretEntry>,
    version: u32,
    key: Arc<DataKey>,
}

impl Grant<'_> {
    /// The version that will be injected (the current one).
    pub fn version(&self) -> u32 {
        self.version
    }

    fn sealed(&self, version: u32) -> Option<&SealedVersion> {
        self.secret.versions.iter().find(|v| v.version == version)
    }

    fn open_one(&self, v: &SealedVersion) -> Result<SecretValue, CryptoError> {
        let meta = &self.secret.meta;
        open_version(
            &self.key,
            &SecretVersionAad {
                tenant_id: meta.tenant_id.as_str(),
                secret_id: meta.id.as_str(),
                secret_name: meta.name.as_str(),
                version: v.version,
            },
            &v.sealed,
        )
    }

    /// Opens the granted version, for the moment of injection.
    pub fn open(&self) -> Result<SecretValue, CryptoError> {
        let v = self
            .sealed(self.version)
            .ok_or_else(|| CryptoError::Integrity {
                what: format!("secret {} version {}", self.secret.meta.name, self.version),
            })?;
        self.open_one(v)
    }

    /// Opens every version usable at `now` (current and in grace), for scrubbing responses.
    pub fn open_usable(&self, now: Timestamp) -> Result<Vec<SecretValue>, CryptoError> {
        self.secret
            .versions
            .iter()
            .filter(|v| v.retired_at.is_none() || v.usable_until.is_some_and(|u| now < u))
            .map(|v| self.open_one(v))
            .collect()
    }
}

/// Why a request is refused, with whatever identity was established before the refusal (for
/// the receipt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: ErrorCode,
    pub message: String,
    pub token: Option<TokenMeta>,
}

pub enum Decision<'s> {
    Allow(Grant<'s>),
    Deny(Denial),
}

fn deny<'s>(
    code: ErrorCode,
    message: impl Into<String>,
    token: Option<&TokenMeta>,
) -> Decision<'s> {
    Decision::Deny(Denial {
        code,
        message: message.into(),
        token: token.cloned(),
    })
}

/// Decides whether `req`'s token may have its secret injected toward its destination.
/// Pure: reads only its arguments. Anything not positively allowed is denied.
pub fn decide<'s>(snap: &'s Snapshot, req: &Request<'_>) -> Decision<'s> {
    let Some((stored_hash, token)) = snap.token(req.token) else {
        return deny(
            ErrorCode::UnknownToken,
            "the token is not known to this broker; ask the operator for a token (`sequester token issue`)",
            None,
        );
    };
    if !stored_hash.ct_eq(req.token) {
        return deny(
            ErrorCode::UnknownToken,
            "the token is not known to this broker",
            None,
        );
    }
    if token.revoked_at.is_some() {
        return deny(
            ErrorCode::TokenRevoked,
            "this token was revoked; ask the operator for a new one",
            Some(token),
        );
    }
    if token.expires_at.is_some_and(|e| e <= req.now) {
        return deny(
            ErrorCode::TokenExpired,
            "this token has expired; ask the operator for a new one",
            Some(token),
        );
    }
    let Some(agent) = snap
        .agent(&token.agent_id)
        .filter(|a| a.tenant_id == token.tenant_id)
    else {
        return deny(
            ErrorCode::UnknownToken,
            "the token's agent no longer exists",
            Some(token),
        );
    };
    if agent.disabled_at.is_some() {
        return deny(
            ErrorCode::AgentDisabled,
            format!("agent {} is disabled", agent.name),
            Some(token),
        );
    }
    let Some(secret) = snap
        .secret(&token.secret_id)
        .filter(|s| s.meta.tenant_id == token.tenant_id)
    else {
        return deny(
            ErrorCode::UnknownToken,
            "the token's secret no longer exists",
            Some(token),
        );
    };
    if secret.meta.revoked_at.is_some() {
        return deny(
            ErrorCode::SecretRevoked,
            format!("secret {} was revoked", secret.meta.name),
            Some(token),
        );
    }
    if secret.meta.expires_at.is_some_and(|e| e <= req.now) {
        return deny(
            ErrorCode::SecretExpired,
            format!("secret {} has expired", secret.meta.name),
            Some(token),
        );
    }
    if !secret
        .meta
        .hosts
        .iter()
        .any(|h| h.matches(req.host, req.port))
    {
        return deny(
            ErrorCode::HostNotAllowed,
            format!(
                "secret {} may not be sent to {}:{}; its allowed hosts are {}",
                secret.meta.name,
                req.host,
                req.port,
                secret
                    .meta
                    .hosts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(token),
        );
    }
    let Some(current) = secret.current() else {
        return deny(
            ErrorCode::IntegrityFailure,
            format!("secret {} has no current version", secret.meta.name),
            Some(token),
        );
    };
    let Some(key) = snap.key(&token.tenant_id) else {
        return deny(
            ErrorCode::IntegrityFailure,
            "the tenant's data key is missing",
            Some(token),
        );
    };
    Decision::Allow(Grant {
        token,
        agent,
        version: current.version,
        secret: Arc::clone(secret),
        key: Arc::clone(key),
    })
}

//! The agent API: what an agent may ask the broker directly, authenticated with its agent
//! key (`Authorization: Bearer sqa_…`).
//!
//! `POST /v1/sanitize` `{"text": "…"}` → `{"text": "… <<SECRET_…>> …", "secrets": [...]}`:
//! every credential detected in the text is sealed into the agent's tenant (allowed only toward
//! the provider's usual hosts, never widened by the agent), granted to the agent, and replaced
//! by the agent's placeholder for it, which then works in the broker like a token. The same
//! value pasted again maps to the same placeholder.

use crate::DataPlane;
use crate::body::ProxyBody;
use crate::respond;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use sequester_crypto::{SecretValue, TokenHash, looks_like_agent_key};
use sequester_model::{ErrorCode, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Largest text accepted by the sanitizer.
pub const MAX_SANITIZE_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SanitizeRequest {
    text: String,
}

#[derive(Serialize)]
struct SanitizedSecret {
    placeholder: String,
    provider: String,
    rule: String,
    secret: String,
    suggested_hosts: Vec<String>,
    new: bool,
}

fn now() -> Timestamp {
    Timestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    )
}

impl DataPlane {
    pub(crate) async fn sanitize(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let request_id = crate::gateway::request_id();
        // Authenticate the agent.
        let key = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| looks_like_agent_key(k))
            .map(TokenHash::of);
        let Some(key) = key else {
            return respond::error(
                ErrorCode::UnknownToken,
                "send the agent key as Authorization: Bearer sqa_… (`sequester agent key issue`)",
                &request_id,
            );
        };
        let now = now();
        let snapshot = self.live.load();
        let (tenant, agent_id, agent_name) = match snapshot.authenticate_agent(&key, now) {
            Ok((meta, agent)) => (meta.tenant_id.clone(), agent.id.clone(), agent.name.clone()),
            Err((code, message)) => return respond::error(code, message, &request_id),
        };
        drop(snapshot);

        // Read the body, bounded.
        let body = match Limited::new(req.into_body(), MAX_SANITIZE_BYTES)
            .collect()
            .await
        {
            Ok(b) => Zeroizing::new(b.to_bytes().to_vec()),
            Err(_) => {
                return respond::error(
                    ErrorCode::InvalidRequest,
                    "the body is unreadable or larger than 1 MiB",
                    &request_id,
                );
            }
        };
        let parsed: SanitizeRequest = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(_) => {
                return respond::error(
                    ErrorCode::InvalidRequest,
                    "send JSON {\"text\": \"…\"}",
                    &request_id,
                );
            }
        };
        let text = Zeroizing::new(parsed.text);

        // Detect, seal, replace.
        let findings = self.detector.detect(text.as_bytes());
        let mut out = String::with_capacity(text.len());
        let mut secrets: Vec<SanitizedSecret> = Vec::new();
        let mut last = 0;
        // A credential's public half (an AWS access key id) stays readable; its secret half is
        // what gets sealed.
        for f in findings.iter().filter(|f| !f.is_identifier()) {
            let (Some(before), Some(secret)) =
                (text.get(last..f.span.start), text.get(f.span.clone()))
            else {
                continue;
            };
            let value = SecretValue::new(secret.as_bytes().to_vec());
            let sealed = self
                .store
                .sanitize_secret(
                    &tenant,
                    &agent_id,
                    f.provider(),
                    f.suggested_hosts(),
                    value,
                    now,
                )
                .await;
            let sealed = match sealed {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(%request_id, code = %e.code(), error = %e, "sanitize could not seal a detected value");
                    return respond::error(
                        e.code(),
                        "a detected secret could not be sealed; the text was not changed",
                        &request_id,
                    );
                }
            };
            out.push_str(before);
            out.push_str(&sealed.placeholder);
            last = f.span.end;
            if !secrets.iter().any(|s| s.placeholder == sealed.placeholder) {
                secrets.push(SanitizedSecret {
                    placeholder: sealed.placeholder,
                    provider: f.provider().to_owned(),
                    rule: f.rule_id().to_owned(),
                    secret: sealed.secret.name.to_string(),
                    suggested_hosts: sealed
                        .secret
                        .hosts
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    new: sealed.created,
                });
            }
        }
        out.push_str(text.get(last..).unwrap_or_default());
        if !secrets.is_empty() {
            // The placeholders work from the moment they are handed out.
            self.live.reload(self.store.as_ref(), &self.metrics).await;
        }
        tracing::info!(%request_id, agent = %agent_name, found = findings.len(), secrets = secrets.len(), "sanitized text");
        respond::json(
            StatusCode::OK,
            &serde_json::json!({"text": out, "secrets": secrets, "request_id": request_id}),
        )
    }
}

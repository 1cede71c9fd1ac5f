//! The reverse gateway: `/{service}/…` with an opaque token in place of the API key.
//!
//! One function, in the order of the architecture:
//! route → identify → decide → audit intent → inject → forward → scrub → receipt.

use crate::DataPlane;
use crate::body::{End, ProxyBody, ScrubBody, counted};
use crate::identify::{IdentifyError, extract};
use crate::inject::inject;
use crate::respond;
use crate::route::{RouteError, route};
use crate::scrub::Scrubber;
use crate::services::resolve;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use sequester_audit::{Decision as Verdict, Kind, Mode, Receipt, redact_query, run_id_from};
use sequester_model::{ErrorCode, Timestamp};
use sequester_policy::{Decision, Request as PolicyRequest, decide};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the
/// gateway's own.
static HOP_BY_HOP: [HeaderName; 12] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    HeaderName::from_static("x-run-id"),
    HeaderName::from_static(crate::framing::CONFLICT_HEADER),
];

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A request id, unique within the process and not revealing how many requests came before:
/// a counter from a random start, mixed by a bijective 64-bit finalizer (splitmix64) and a
/// random key. No system call per request.
pub(crate) fn request_id() -> String {
    use std::sync::OnceLock;
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (offset, key) = *KEYS.get_or_init(|| {
        let r: [u8; 16] = sequester_crypto::random_bytes();
        let (a, b) = r.split_at(8);
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        (word(a), word(b))
    });
    let mut z = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(offset);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let bytes = (z ^ key).to_be_bytes();
    let mut id = String::with_capacity(20);
    id.push_str("req_");
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 15)]));
    }
    id
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are connection-specific too (rare: only then allocate).
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for name in &listed {
            headers.remove(name.as_str());
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What is known about a request so far, for its receipt.
pub(crate) struct Context {
    pub(crate) request_id: String,
    pub(crate) started: Instant,
    pub(crate) at_ms: i64,
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) service: Option<String>,
    pub(crate) run_id: Option<String>,
    pub(crate) mode: Mode,
}

impl Context {
    pub(crate) fn receipt(&self, kind: Kind, decision: Verdict) -> Receipt {
        Receipt {
            kind,
            request_id: self.request_id.clone(),
            at_ms: self.at_ms,
            tenant_id: String::new(),
            agent: None,
            agent_id: None,
            token_id: None,
            secret: None,
            secret_version: None,
            mode: self.mode,
            service: self.service.clone(),
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            decision,
            code: None,
            status: None,
            upstream_ms: None,
            total_ms: None,
            bytes_in: None,
            bytes_out: None,
            run_id: self.run_id.clone(),
        }
    }
}

impl DataPlane {
    /// Refuses, records a denial receipt and counts it.
    pub(crate) async fn deny(
        &self,
        ctx: &Context,
        mut receipt: Receipt,
        code: ErrorCode,
        message: &str,
    ) -> Response<ProxyBody> {
        receipt.code = Some(code.as_str().to_owned());
        receipt.status = Some(respond::status_for(code).as_u16());
        receipt.total_ms =
            Some(u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        tracing::info!(request_id = %ctx.request_id, code = %code, service = ctx.service.as_deref().unwrap_or("-"), token_id = receipt.token_id.as_deref().unwrap_or("-"), "request denied");
        self.audit.record(&receipt).await;
        self.metrics.request(
            ctx.service.as_deref().unwrap_or("-"),
            false,
            Some(code.as_str()),
            receipt.status,
            ctx.started.elapsed(),
        );
        respond::error(code, message, &ctx.request_id)
    }

    /// Is `host` (from the Host header or the HTTP/2 authority) a name this gateway answers
    /// to? IP literals and `localhost` always; DNS names only if configured. Refusing other
    /// names defeats DNS rebinding against a broker on loopback.
    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
            _ => host,
        };
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>().is_ok()
            || bare.eq_ignore_ascii_case("localhost")
            || self
                .config
                .gateway_hostnames
                .iter()
                .any(|h| h.eq_ignore_ascii_case(bare))
    }

    pub(crate) async fn gateway(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let ctx = Context {
            request_id: request_id(),
            started: Instant::now(),
            at_ms: now_ms(),
            method: parts.method.to_string(),
            host: String::new(),
            path: redact_query(&path_and_query),
            service: None,
            run_id: run_id_from(
                parts.headers.get("x-run-id").map(HeaderValue::as_bytes),
                parts.headers.get("traceparent").map(HeaderValue::as_bytes),
            ),
            mode: Mode::Gateway,
        };
        let denied = |ctx: &Context| ctx.receipt(Kind::Denial, Verdict::Deny);

        // Framing and addressing that a gateway never accepts.
        if parts.version < Version::HTTP_2 && parts.uri.scheme().is_some() {
            return self
                .deny(
                    &ctx,
                    denied(&ctx),
                    ErrorCode::InvalidRequest,
                    "absolute-form request targets go to the forward proxy, not the gateway",
                )
                .await;
        }
        if parts.headers.contains_key(crate::framing::CONFLICT_HEADER)
            || (parts.headers.contains_key(header::TRANSFER_ENCODING)
                && parts.headers.contains_key(header::CONTENT_LENGTH))
        {
            return self
                .deny(
                    &ctx,
                    denied(&ctx),
                    ErrorCode::InvalidRequest,
                    "a request may not carry both Content-Length and Transfer-Encoding",
                )
                .await;
        }
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        if let Some(authority) = &authority
            && !self.host_allowed(authority)
        {
            return self.deny(&ctx, denied(&ctx), ErrorCode::MisdirectedRequest, "this gateway does not answer to that Host; add it to gateway_hostnames in the config").await;
        }

        // Route.
        let (service_name, rest) = match route(parts.uri.path()) {
            Ok(r) => r,
            Err(e @ RouteError::NoService) | Err(e @ RouteError::BadService(_)) => {
                return self
                    .deny(
                        &ctx,
                        denied(&ctx),
                        ErrorCode::UnknownService,
                        &e.to_string(),
                    )
                    .await;
            }
            Err(e) => {
                return self
                    .deny(
                        &ctx,
                        denied(&ctx),
                        ErrorCode::InvalidRequest,
                        &e.to_string(),
                    )
                    .await;
            }
        };
        let rest = rest.to_owned();
        let ctx = Context {
            service: Some(service_name.to_string()),
            ..ctx
        };

        // Identify.
        let (presented, query) = extract(&mut parts.headers, parts.uri.query());
        let presented = match presented {
            Ok(t) => t,
            Err(IdentifyError::Missing) => {
                return self.deny(&ctx, denied(&ctx), ErrorCode::UnknownToken, "no Sequester token found; send it where the SDK sends its API key (Authorization: Bearer sqt_…, x-api-key, or a key query parameter)").await;
            }
            Err(IdentifyError::Several) => {
                return self
                    .deny(
                        &ctx,
                        denied(&ctx),
                        ErrorCode::InvalidRequest,
                        "the request carries several different Sequester tokens",
                    )
                    .await;
            }
        };
        let token = presented.hash;
        let snapshot = self.live.load();
        let tenant = snapshot.token_tenant(&token).cloned();

        // Resolve the service within the token's tenant, then decide.
        let resolved = tenant
            .as_ref()
            .and_then(|t| resolve(&snapshot, &self.config, t, &service_name));
        let (dest_host, dest_port) = match &resolved {
            Some(s) => (s.base_url.host().to_owned(), s.base_url.port()),
            None if tenant.is_none() => (String::new(), 0),
            None => {
                let mut r = denied(&ctx);
                r.tenant_id = tenant.as_ref().map(ToString::to_string).unwrap_or_default();
                return self
                    .deny(
                        &ctx,
                        r,
                        ErrorCode::UnknownService,
                        &format!(
                            "no service named {service_name}; `sequester service list` shows them"
                        ),
                    )
                    .await;
            }
        };
        let ctx = Context {
            host: dest_host.clone(),
            ..ctx
        };
        let now = Timestamp::from_unix(ctx.at_ms / 1000);
        let grant = match decide(
            &snapshot,
            &PolicyRequest {
                token: &token,
                host: dest_host.trim_start_matches('[').trim_end_matches(']'),
                port: dest_port,
                method: parts.method.as_str(),
                path: &rest,
                now,
            },
        ) {
            Decision::Allow(grant) => grant,
            Decision::Deny(d) => {
                let mut r = denied(&ctx);
                if let Some(t) = &d.token {
                    r.tenant_id = t.tenant_id.to_string();
                    r.agent = Some(t.agent.to_string());
                    r.agent_id = Some(t.agent_id.to_string());
                    r.token_id = Some(t.id.to_string());
                    r.secret = Some(t.secret.to_string());
                }
                return self.deny(&ctx, r, d.code, &d.message).await;
            }
        };
        let Some(service) = resolved else {
            return self
                .deny(
                    &ctx,
                    denied(&ctx),
                    ErrorCode::UnknownService,
                    "no such service",
                )
                .await;
        };

        // Audit intent: durable before anything is injected.
        let mut intent = ctx.receipt(Kind::Intent, Verdict::Allow);
        intent.tenant_id = grant.token.tenant_id.to_string();
        intent.agent = Some(grant.agent.name.to_string());
        intent.agent_id = Some(grant.agent.id.to_string());
        intent.token_id = Some(grant.token.id.to_string());
        intent.secret = Some(grant.secret.meta.name.to_string());
        intent.secret_version = Some(grant.version());
        let durable = tokio::time::timeout(
            self.config.timeouts.audit(),
            self.audit.record_durable(&intent),
        )
        .await;
        if !matches!(durable, Ok(Ok(()))) {
            self.metrics.audit_failure();
            let mut r = intent.clone();
            r.kind = Kind::Denial;
            r.decision = Verdict::Deny;
            return self
                .deny(
                    &ctx,
                    r,
                    ErrorCode::AuditUnavailable,
                    "the audit log cannot be written, so no credential is used; try again later",
                )
                .await;
        }

        // Inject.
        let rule = grant
            .secret
            .meta
            .injection
            .clone()
            .unwrap_or(service.inject.clone());
        let mut query = query;
        let scrubber = {
            let value = match grant.open() {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(request_id = %ctx.request_id, code = %e.code(), error = %e, "cannot open the secret");
                    let mut r = intent.clone();
                    r.kind = Kind::Completion;
                    r.decision = Verdict::Deny;
                    return self.deny(&ctx, r, e.code(), "the secret cannot be opened; the operator should check `sequester secret show`").await;
                }
            };
            strip_hop_by_hop(&mut parts.headers);
            if let Err(e) = inject(&rule, &value, &mut parts.headers, &mut query) {
                let mut r = intent.clone();
                r.kind = Kind::Completion;
                r.decision = Verdict::Deny;
                return self
                    .deny(&ctx, r, ErrorCode::InvalidValue, &e.to_string())
                    .await;
            }
            // Patterns compiled at snapshot load cover every usable version; a secret whose
            // versions could not all be opened then falls back to the injected value alone.
            match self.live.scrub_patterns(&grant.secret.meta.id) {
                Some(patterns) => Some(Scrubber::with_patterns(
                    patterns,
                    presented.token.as_bytes(),
                )),
                None => {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "scrubbing: the response is searched for the injected value"
                    )]
                    let injected = value.expose();
                    Scrubber::new(&[injected], presented.token.as_bytes())
                }
            }
        };

        // Forward.
        let mut path = format!("{}{}", service.base_url.path(), rest);
        if path.is_empty() {
            path.push('/');
        }
        if let Some(q) = &query {
            path.push('?');
            path.push_str(q);
        }
        let uri = match Uri::builder()
            .scheme(service.base_url.scheme().as_str())
            .authority(service.base_url.authority())
            .path_and_query(path)
            .build()
        {
            Ok(u) => u,
            Err(_) => {
                let mut r = intent.clone();
                r.kind = Kind::Completion;
                r.decision = Verdict::Deny;
                return self
                    .deny(
                        &ctx,
                        r,
                        ErrorCode::InvalidRequest,
                        "the request path cannot be forwarded",
                    )
                    .await;
            }
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let Ok(host) = HeaderValue::from_str(&service.base_url.authority()) {
            parts.headers.insert(header::HOST, host);
        }
        let bytes_in = Arc::new(AtomicU64::new(0));
        let upstream_req = Request::from_parts(parts, counted(body, Arc::clone(&bytes_in)));
        let sent_at = Instant::now();
        let result = tokio::time::timeout(
            self.config.timeouts.first_byte(),
            self.client.request(upstream_req),
        )
        .await;
        let upstream_ms = u64::try_from(sent_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.metrics
            .upstream(service.name.as_str(), sent_at.elapsed());
        let mut completion = intent.clone();
        completion.kind = Kind::Completion;
        completion.upstream_ms = Some(upstream_ms);
        let response = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(request_id = %ctx.request_id, service = %service.name, error = %e, "upstream request failed");
                completion.bytes_in = Some(bytes_in.load(Ordering::Relaxed));
                return self
                    .deny(
                        &ctx,
                        completion,
                        ErrorCode::UpstreamUnavailable,
                        "the upstream could not be reached",
                    )
                    .await;
            }
            Err(_) => {
                completion.bytes_in = Some(bytes_in.load(Ordering::Relaxed));
                return self
                    .deny(
                        &ctx,
                        completion,
                        ErrorCode::UpstreamTimeout,
                        "the upstream did not answer in time",
                    )
                    .await;
            }
        };

        // Scrub and stream back; the completion receipt is written when the body ends.
        let (mut parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        let mut scrubber = scrubber;
        if let Some(s) = &mut scrubber {
            s.scrub_headers(&mut parts.headers);
        }
        if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
            parts.headers.insert("x-sequester-request-id", id);
        }
        let audit = self.audit.clone();
        let metrics = Arc::clone(&self.metrics);
        let started = ctx.started;
        let service_label = service.name.to_string();
        completion.status = Some(status);
        let request_id = ctx.request_id.clone();
        let on_end = Box::new(move |how: End, sent: u64, scrubbed: u64| {
            if scrubbed > 0 {
                tracing::warn!(%request_id, service = %service_label, scrubbed, "the upstream echoed the credential; it was replaced by the token in the response");
            }
            completion.bytes_in = Some(bytes_in.load(Ordering::Relaxed));
            completion.bytes_out = Some(sent);
            completion.total_ms =
                Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            let end_code = match how {
                End::Complete => None,
                End::IdleTimeout => Some("upstream_idle_timeout"),
                End::UpstreamError => Some("upstream_stream_error"),
                End::ClientGone => Some("client_disconnected"),
            };
            completion.code = end_code.map(str::to_owned);
            metrics.request(
                &service_label,
                true,
                end_code,
                Some(status),
                started.elapsed(),
            );
            audit.record_nowait(&completion);
        });
        let body = ScrubBody::new(body, scrubber, self.config.timeouts.idle(), on_end);
        Response::from_parts(parts, body.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn request_ids_are_distinct_and_not_sequential_looking() {
        let ids: Vec<String> = (0..10_000).map(|_| request_id()).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.starts_with("req_"), "{id}");
            assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        // Consecutive ids share no long common prefix, as counters would.
        let shared = ids.windows(2).filter(|w| w[0][..12] == w[1][..12]).count();
        assert!(shared < 5, "{shared} consecutive pairs look sequential");
    }
}

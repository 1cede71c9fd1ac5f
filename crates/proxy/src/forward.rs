//! The forward proxy: HTTP/1.1 absolute-form requests and `CONNECT` tunnels, with TLS
//! interception, placeholder substitution and the egress guard.
//!
//! An agent started by `sequester run` holds only tokens and placeholders and sends its
//! traffic here (`HTTPS_PROXY`, authenticated with its agent key as the Basic password). For a
//! `CONNECT host:port` the egress guard decides first (resolving DNS once); then, unless the
//! host is `no_intercept`, the broker terminates TLS with a leaf minted for the SNI (which must
//! name the CONNECT host) and serves HTTP/2 or HTTP/1.1 inside. Each request inside, in order:
//! Host check → find tokens and placeholders (headers, Basic credentials, query, percent-encoded
//! copies) → for each, `decide` toward this destination: the agent's own and allowed ones are
//! replaced in place by the real value, anything else refuses the whole request
//! (`exfiltration_blocked` for a credential headed to a host it is not for) → durable intent
//! receipt → forward to the checked address with verified TLS → scrub the response.

use crate::DataPlane;
use crate::body::{End, ProxyBody, ScrubBody, counted, full};
use crate::egress::{
    Action, CheckedConnector, EgressPolicy, LayeredPolicy, check_host_header,
    check_sni_matches_host,
};
use crate::gateway::{Context, now_ms, request_id, strip_hop_by_hop};
use crate::identify::{percent_decode, tokens_in};
use crate::intercept_ca::LeafCache;
use crate::respond;
use crate::scrub::Scrubber;
use crate::substitute::{
    BodyKind, Swap, body_views, substitute_body, substitute_header, substitute_path,
};
use base64::Engine as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sequester_audit::{Decision as Verdict, Kind, Mode, Receipt, redact_query, run_id_from};
use sequester_crypto::{TokenHash, looks_like_agent_key};
use sequester_model::{AgentId, EgressAction, ErrorCode, TenantId, Timestamp};
use sequester_policy::{Decision, Request as PolicyRequest, decide};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use zeroize::Zeroizing;

/// The client of one destination: verified TLS, or plain HTTP for absolute-form requests.
#[derive(Clone)]
enum TunnelClient {
    Https(Client<hyper_rustls::HttpsConnector<CheckedConnector>, ProxyBody>),
    Http(Client<CheckedConnector, ProxyBody>),
}

impl TunnelClient {
    fn request(&self, req: Request<ProxyBody>) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Self::Https(c) => c.request(req),
            Self::Http(c) => c.request(req),
        }
    }
}

/// A request body on its way out: streamed untouched, or buffered to substitute in it.
enum RequestBody {
    Streaming(Incoming),
    Buffered(bytes::Bytes),
}

/// What makes two tunnels' upstream connections interchangeable: the same tenant, scheme,
/// host, port and checked addresses. Connections are never shared across tenants, and a DNS
/// answer that changes gives a new pool that can reach only the newly checked addresses.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    tenant: TenantId,
    scheme: &'static str,
    host: String,
    port: u16,
    addrs: Vec<std::net::SocketAddr>,
}

/// Most destinations whose connection pools are kept; past it the least recently used goes.
const POOLED_DESTINATIONS: usize = 512;

/// Upstream clients shared by the tunnels to one destination, so keep-alive connections
/// outlive a client's CONNECT and a new tunnel skips the upstream TLS handshake.
#[derive(Default)]
pub(crate) struct ClientPool {
    clients: std::sync::Mutex<PoolState>,
}

/// A use counter and, per destination, the counter value of its last use and its client.
type PoolState = (u64, std::collections::HashMap<PoolKey, (u64, TunnelClient)>);

impl ClientPool {
    fn get_or_insert(&self, key: PoolKey, make: impl FnOnce() -> TunnelClient) -> TunnelClient {
        let mut guard = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (clock, map) = &mut *guard;
        *clock += 1;
        let now = *clock;
        if let Some((used, client)) = map.get_mut(&key) {
            *used = now;
            return client.clone();
        }
        if map.len() >= POOLED_DESTINATIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let client = make();
        map.insert(key, (now, client.clone()));
        client
    }
}

/// Who is using the proxy, established by the agent key.
#[derive(Clone)]
struct Caller {
    tenant: TenantId,
    agent: AgentId,
    agent_name: String,
}

/// One destination: a CONNECT tunnel, or the origin of an absolute-form request.
struct Tunnel {
    caller: Caller,
    host: String,
    port: u16,
    scheme: &'static str,
    /// The checked addresses (for blind tunnels).
    addrs: Vec<std::net::SocketAddr>,
    client: TunnelClient,
}

/// The certificate for a tunnel: the SNI's leaf, or the CONNECT host's when the client sent no
/// SNI (clients omit it for IP-literal hosts).
#[derive(Debug)]
struct TunnelResolver {
    cache: Arc<LeafCache>,
    connect_host: String,
}

impl ResolvesServerCert for TunnelResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or(&self.connect_host);
        self.cache.certified_key(name).ok()
    }
}

fn proxy_auth_required(message: &str, request_id: &str) -> Response<ProxyBody> {
    let mut r = respond::error(ErrorCode::UnknownToken, message, request_id);
    *r.status_mut() = StatusCode::PROXY_AUTHENTICATION_REQUIRED;
    r.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sequester\""),
    );
    r
}

/// The agent key from `Proxy-Authorization: Basic base64(user:key)` (or the key as user).
fn agent_key(req: &Request<Incoming>) -> Option<TokenHash> {
    let v = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, cred) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(cred.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, pass) = text.split_once(':').unwrap_or((text, ""));
    [pass, user]
        .into_iter()
        .find(|k| looks_like_agent_key(k))
        .map(TokenHash::of)
}

fn host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let uri_auth: http::uri::Authority = authority.parse().ok()?;
    let host = uri_auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some((host, uri_auth.port_u16().unwrap_or(default_port)))
}

impl DataPlane {
    fn egress_policy(&self, tenant: &TenantId, agent: &AgentId) -> LayeredPolicy {
        let snapshot = self.live.load();
        let (mut t_allow, mut t_deny, mut a_allow, mut a_deny) = (vec![], vec![], vec![], vec![]);
        for rule in snapshot.egress_rules(tenant, agent) {
            let list = match (rule.agent_id.is_some(), rule.action) {
                (false, EgressAction::Allow) => &mut t_allow,
                (false, EgressAction::Deny) => &mut t_deny,
                (true, EgressAction::Allow) => &mut a_allow,
                (true, EgressAction::Deny) => &mut a_deny,
            };
            list.push(rule.pattern.clone());
        }
        let default = match self.config.egress.default {
            crate::config::EgressDefault::Allow => Action::Allow,
            crate::config::EgressDefault::Deny => Action::Deny,
        };
        LayeredPolicy::new(
            EgressPolicy::new(default, t_allow, t_deny),
            Some(EgressPolicy::new(Action::Allow, a_allow, a_deny)),
        )
    }

    fn proxy_context(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Context {
        Context {
            request_id: request_id(),
            started: Instant::now(),
            at_ms: now_ms(),
            method: method.to_owned(),
            host: host.to_owned(),
            path: redact_query(path),
            service: None,
            run_id: run_id_from(
                headers.get("x-run-id").map(HeaderValue::as_bytes),
                headers.get("traceparent").map(HeaderValue::as_bytes),
            ),
            mode: Mode::Proxy,
        }
    }

    fn caller_receipt(ctx: &Context, caller: &Caller, kind: Kind, verdict: Verdict) -> Receipt {
        let mut r = ctx.receipt(kind, verdict);
        r.tenant_id = caller.tenant.to_string();
        r.agent = Some(caller.agent_name.clone());
        r.agent_id = Some(caller.agent.to_string());
        r
    }

    /// Entry point of the proxy listener.
    pub(crate) async fn proxy(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(key) = agent_key(&req) else {
            return proxy_auth_required(
                "authenticate with your agent key: HTTPS_PROXY=http://agent:sqa_…@host:port (`sequester run` sets it)",
                &request_id(),
            );
        };
        let now = Timestamp::from_unix(now_ms() / 1000);
        let caller = {
            let snapshot = self.live.load();
            match snapshot.authenticate_agent(&key, now) {
                Ok((meta, agent)) => Caller {
                    tenant: meta.tenant_id.clone(),
                    agent: agent.id.clone(),
                    agent_name: agent.name.to_string(),
                },
                Err((_, message)) => return proxy_auth_required(message, &request_id()),
            }
        };
        if req.method() == Method::CONNECT {
            return self.connect(req, caller).await;
        }
        // Absolute-form plain HTTP.
        let Some(authority) = req.uri().authority().map(ToString::to_string) else {
            return respond::error(
                ErrorCode::InvalidRequest,
                "send absolute-form requests (http://host/path) or CONNECT",
                &request_id(),
            );
        };
        if req.uri().scheme_str() != Some("http") {
            return respond::error(
                ErrorCode::InvalidRequest,
                "only http:// requests are proxied in absolute form; use CONNECT for https",
                &request_id(),
            );
        }
        let Some((host, port)) = host_port(&authority, 80) else {
            return respond::error(
                ErrorCode::InvalidRequest,
                "the request target has no valid host",
                &request_id(),
            );
        };
        let ctx = self.proxy_context(
            req.method().as_str(),
            &host,
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            req.headers(),
        );
        let tunnel = match self.open_tunnel(&caller, &host, port, "http").await {
            Ok(t) => t,
            Err((code, message)) => {
                let r = Self::caller_receipt(&ctx, &caller, Kind::Denial, Verdict::Deny);
                return self.deny(&ctx, r, code, &message).await;
            }
        };
        self.intercepted(req, Arc::new(tunnel)).await
    }

    /// Checks egress and builds the client that can reach only the checked addresses.
    async fn open_tunnel(
        &self,
        caller: &Caller,
        host: &str,
        port: u16,
        scheme: &'static str,
    ) -> Result<Tunnel, (ErrorCode, String)> {
        let policy = self.egress_policy(&caller.tenant, &caller.agent);
        let dest = self
            .guard
            .check(&policy, host, port)
            .await
            .map_err(|e| (e.code(), e.to_string()))?;
        let addrs = dest.addrs().to_vec();
        let key = PoolKey {
            tenant: caller.tenant.clone(),
            scheme,
            host: host.to_owned(),
            port,
            addrs: addrs.clone(),
        };
        let client = self.tunnel_clients.get_or_insert(key, || {
            let connector =
                CheckedConnector::new(dest).with_connect_timeout(self.config.timeouts.connect());
            if scheme == "https" {
                TunnelClient::Https(
                    crate::upstream::client_builder()
                        .build(connector.https(self.tls_client.clone())),
                )
            } else {
                TunnelClient::Http(crate::upstream::client_builder().build(connector))
            }
        });
        Ok(Tunnel {
            caller: caller.clone(),
            host: host.to_owned(),
            port,
            scheme,
            addrs,
            client,
        })
    }

    async fn connect(
        self: Arc<Self>,
        req: Request<Incoming>,
        caller: Caller,
    ) -> Response<ProxyBody> {
        let authority = req
            .uri()
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default();
        let ctx = self.proxy_context("CONNECT", &authority, "", req.headers());
        let Some((host, port)) = host_port(&authority, 443) else {
            let r = Self::caller_receipt(&ctx, &caller, Kind::Denial, Verdict::Deny);
            return self
                .deny(
                    &ctx,
                    r,
                    ErrorCode::InvalidRequest,
                    "CONNECT needs host:port",
                )
                .await;
        };
        let ctx = Context {
            host: host.clone(),
            ..ctx
        };
        let blind = self
            .config
            .no_intercept
            .iter()
            .any(|p| p.matches(&host, port));
        let tunnel = match self.open_tunnel(&caller, &host, port, "https").await {
            Ok(t) => t,
            Err((code, message)) => {
                let r = Self::caller_receipt(&ctx, &caller, Kind::Denial, Verdict::Deny);
                return self.deny(&ctx, r, code, &message).await;
            }
        };
        let Some(cache) = self.intercept.clone() else {
            let r = Self::caller_receipt(&ctx, &caller, Kind::Denial, Verdict::Deny);
            return self
                .deny(
                    &ctx,
                    r,
                    ErrorCode::Internal,
                    "the interception CA is not loaded",
                )
                .await;
        };
        let plane = Arc::clone(&self);
        let request_id = ctx.request_id.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => TokioIo::new(u),
                Err(e) => {
                    tracing::debug!(%request_id, error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            if blind {
                plane.blind_tunnel(upgraded, tunnel).await;
                return;
            }
            let mut config = match rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            {
                Ok(b) => b
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(TunnelResolver {
                        cache,
                        connect_host: tunnel.host.clone(),
                    })),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the interception TLS config");
                    return;
                }
            };
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let tls = match acceptor.accept(upgraded).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%request_id, host = %tunnel.host, error = %e, "TLS handshake with the client failed (does it trust the Sequester CA?)");
                    return;
                }
            };
            if let Some(sni) = tls.get_ref().1.server_name()
                && let Err(refusal) = check_sni_matches_host(&tunnel.host, sni)
            {
                tracing::warn!(%request_id, host = %tunnel.host, sni, "SNI does not match the CONNECT host; closing");
                let ctx = plane.proxy_context("CONNECT", &tunnel.host, "", &http::HeaderMap::new());
                let r = Self::caller_receipt(&ctx, &tunnel.caller, Kind::Denial, Verdict::Deny);
                let _ = plane.deny(&ctx, r, refusal.code(), refusal.message()).await;
                return;
            }
            let tunnel = Arc::new(tunnel);
            let service = hyper::service::service_fn(move |req| {
                let plane = Arc::clone(&plane);
                let tunnel = Arc::clone(&tunnel);
                async move { Ok::<_, std::convert::Infallible>(plane.intercepted(req, tunnel).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(error = %e, "intercepted connection ended with an error");
            }
        });
        Response::new(full(""))
    }

    async fn blind_tunnel(&self, mut client: TokioIo<hyper::upgrade::Upgraded>, tunnel: Tunnel) {
        let Some(addr) = tunnel.addrs.first().copied() else {
            return;
        };
        match tokio::net::TcpStream::connect(addr).await {
            Ok(mut upstream) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => {
                tracing::info!(host = %tunnel.host, error = %e, "blind tunnel: cannot connect")
            }
        }
    }

    /// One request inside a tunnel (or an absolute-form request): substitute, forward, scrub.
    async fn intercepted(
        &self,
        req: Request<Incoming>,
        tunnel: Arc<Tunnel>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let ctx = self.proxy_context(
            parts.method.as_str(),
            &tunnel.host,
            &path_and_query,
            &parts.headers,
        );
        let caller = &tunnel.caller;
        let denied = |ctx: &Context| Self::caller_receipt(ctx, caller, Kind::Denial, Verdict::Deny);

        // The Host (or :authority) must name the tunnel's host.
        let host_header = parts
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
        if let Some(h) = &host_header
            && let Err(refusal) = check_host_header(&tunnel.host, h)
        {
            return self
                .deny(&ctx, denied(&ctx), refusal.code(), refusal.message())
                .await;
        }

        // Find every token and placeholder, in every form we can see.
        let now = Timestamp::from_unix(ctx.at_ms / 1000);
        let snapshot = self.live.load();
        let mut found: Vec<Zeroizing<String>> = Vec::new();
        let mut hidden: Vec<Zeroizing<String>> = Vec::new();
        for (_, v) in parts.headers.iter() {
            tokens_in(v.as_bytes(), &mut found);
            if let Ok(text) = v.to_str() {
                tokens_in(&percent_decode(text), &mut found);
                for word in text.split([' ', ',', ';', '=', ':']) {
                    if word.len() >= 16
                        && let Ok(decoded) =
                            base64::engine::general_purpose::STANDARD.decode(word.trim())
                    {
                        let decoded = Zeroizing::new(decoded);
                        tokens_in(&decoded, &mut hidden);
                    }
                }
            }
        }
        tokens_in(path_and_query.as_bytes(), &mut found);
        tokens_in(&percent_decode(&path_and_query), &mut found);
        for part in path_and_query.split(['?', '&', '=', '/']) {
            if part.len() >= 16 {
                for engine in [
                    base64::engine::general_purpose::STANDARD,
                    base64::engine::general_purpose::URL_SAFE,
                ] {
                    if let Ok(decoded) = engine.decode(percent_decode(part).as_slice()) {
                        tokens_in(&Zeroizing::new(decoded), &mut hidden);
                    }
                }
            }
        }
        // Basic credentials are base64 by design: those are substituted, not hidden.
        let basic_tokens: Vec<Zeroizing<String>> = parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .filter_map(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c.trim())
                    .ok()
            })
            .flat_map(|d| {
                let mut t = Vec::new();
                tokens_in(&Zeroizing::new(d), &mut t);
                t
            })
            .collect();
        found.extend(basic_tokens.iter().cloned());

        // A credential only visible through an encoding we cannot substitute in: refused.
        if hidden
            .iter()
            .any(|h| !basic_tokens.iter().any(|b| b.as_str() == h.as_str()))
        {
            let hidden_meta = hidden
                .iter()
                .find_map(|h| snapshot.token_meta(&TokenHash::of(h)).cloned());
            let mut r = denied(&ctx);
            if let Some(t) = hidden_meta {
                r.token_id = Some(t.id.to_string());
                r.secret = Some(t.secret.to_string());
            }
            tracing::warn!(request_id = %ctx.request_id, agent = %caller.agent_name, host = %tunnel.host, "ALERT exfiltration blocked: an encoded token or placeholder");
            return self
                .deny(
                    &ctx,
                    r,
                    ErrorCode::ExfiltrationBlocked,
                    "an encoded copy of a Sequester token or placeholder may not leave the broker",
                )
                .await;
        }

        // The body, only for an agent holding a secret that opted in to body substitution:
        // buffered (bounded) and searched like the headers. Other bodies stream untouched.
        let body_kind = BodyKind::of(
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
        );
        let mut in_body: Vec<Zeroizing<String>> = Vec::new();
        let body = if snapshot.inspects_bodies_of(&caller.agent)
            && !http_body::Body::is_end_stream(&body)
        {
            if parts
                .headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            {
                return self
                    .deny(
                        &ctx,
                        denied(&ctx),
                        ErrorCode::InvalidRequest,
                        "a compressed request body cannot be searched for placeholders; send it uncompressed",
                    )
                    .await;
            }
            let limit = self.config.max_inspected_body;
            let collected = tokio::time::timeout(
                self.config.timeouts.idle(),
                http_body_util::Limited::new(body, limit).collect(),
            )
            .await;
            let bytes = match collected {
                Ok(Ok(c)) => c.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return self
                        .deny(
                            &ctx,
                            denied(&ctx),
                            ErrorCode::BodyTooLarge,
                            &format!("request bodies sent with a body-substitution secret are searched for placeholders up to {limit} bytes (max_inspected_body)"),
                        )
                        .await;
                }
                Ok(Err(_)) | Err(_) => {
                    return self
                        .deny(
                            &ctx,
                            denied(&ctx),
                            ErrorCode::InvalidRequest,
                            "the request body could not be read",
                        )
                        .await;
                }
            };
            tokens_in(&bytes, &mut in_body);
            for view in body_views(&bytes, body_kind) {
                tokens_in(&view, &mut in_body);
            }
            found.extend(in_body.iter().cloned());
            RequestBody::Buffered(bytes)
        } else {
            RequestBody::Streaming(body)
        };
        // Each credential is decided once, wherever and however often it appears.
        found.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        found.dedup_by(|a, b| a.as_str() == b.as_str());

        // Decide for each; every one must be the caller's and allowed toward this host.
        let mut swaps: Vec<Swap> = Vec::new();
        let mut intents: Vec<Receipt> = Vec::new();
        for token in &found {
            let hash = TokenHash::of(token);
            let mut r = denied(&ctx);
            match snapshot.token_meta(&hash) {
                Some(meta) if meta.agent_id != caller.agent || meta.tenant_id != caller.tenant => {
                    r.token_id = Some(meta.id.to_string());
                    tracing::warn!(request_id = %ctx.request_id, agent = %caller.agent_name, token_id = %meta.id, "ALERT another agent's token or placeholder");
                    return self
                        .deny(
                            &ctx,
                            r,
                            ErrorCode::UnknownToken,
                            "that token or placeholder does not belong to this agent",
                        )
                        .await;
                }
                _ => {}
            }
            match decide(
                &snapshot,
                &PolicyRequest {
                    token: &hash,
                    host: &tunnel.host,
                    port: tunnel.port,
                    method: parts.method.as_str(),
                    path: parts.uri.path(),
                    now,
                },
            ) {
                Decision::Allow(grant) => {
                    if !grant.secret.meta.body_substitution
                        && in_body.iter().any(|b| b.as_str() == token.as_str())
                    {
                        r.token_id = Some(grant.token.id.to_string());
                        r.secret = Some(grant.secret.meta.name.to_string());
                        let message = format!(
                            "secret {} is not replaced in request bodies; send its placeholder in a header or the query, or ask an admin to add the secret with --body",
                            grant.secret.meta.name
                        );
                        return self
                            .deny(&ctx, r, ErrorCode::InvalidRequest, &message)
                            .await;
                    }
                    let value = match grant.open() {
                        Ok(v) => v,
                        Err(e) => {
                            return self
                                .deny(&ctx, r, e.code(), "the secret cannot be opened")
                                .await;
                        }
                    };
                    let mut intent =
                        Self::caller_receipt(&ctx, caller, Kind::Intent, Verdict::Allow);
                    intent.token_id = Some(grant.token.id.to_string());
                    intent.secret = Some(grant.secret.meta.name.to_string());
                    intent.secret_version = Some(grant.version());
                    intents.push(intent);
                    swaps.push(Swap {
                        token: token.clone(),
                        value,
                        secret: grant.secret.meta.id.clone(),
                    });
                }
                Decision::Deny(d) => {
                    if let Some(t) = &d.token {
                        r.token_id = Some(t.id.to_string());
                        r.secret = Some(t.secret.to_string());
                    }
                    let (code, message) = if d.code == ErrorCode::HostNotAllowed {
                        tracing::warn!(request_id = %ctx.request_id, agent = %caller.agent_name, host = %tunnel.host, secret = r.secret.as_deref().unwrap_or("-"), "ALERT exfiltration blocked: a credential headed to a host it is not for");
                        (
                            ErrorCode::ExfiltrationBlocked,
                            format!("{} (the request was not sent)", d.message),
                        )
                    } else {
                        (d.code, d.message)
                    };
                    return self.deny(&ctx, r, code, &message).await;
                }
            }
        }

        // Fail closed: every intent durable before any value goes out.
        for intent in &intents {
            let ok = matches!(
                tokio::time::timeout(
                    self.config.timeouts.audit(),
                    self.audit.record_durable(intent)
                )
                .await,
                Ok(Ok(()))
            );
            if !ok {
                self.metrics.audit_failure();
                return self.deny(&ctx, denied(&ctx), ErrorCode::AuditUnavailable, "the audit log cannot be written, so no credential is used; try again later").await;
            }
        }

        // Substitute in headers (raw, percent-encoded, inside Basic) and in the query.
        strip_hop_by_hop(&mut parts.headers);
        let rewritten = crate::scrub::rewrite_headers(&mut parts.headers, |v| {
            match substitute_header(v.as_bytes(), &swaps) {
                Some(new) => HeaderValue::from_bytes(&new)
                    .map(|mut hv| {
                        hv.set_sensitive(true);
                        Some(hv)
                    })
                    .map_err(|_| ()),
                None => Ok(None),
            }
        });
        if rewritten.is_err() {
            return self
                .deny(
                    &ctx,
                    denied(&ctx),
                    ErrorCode::InvalidValue,
                    "the value cannot be carried in that header",
                )
                .await;
        }
        let path = substitute_path(&path_and_query, &swaps);
        let uri = match Uri::builder()
            .scheme(tunnel.scheme)
            .authority(
                if (tunnel.scheme == "https" && tunnel.port == 443)
                    || (tunnel.scheme == "http" && tunnel.port == 80)
                {
                    host_authority(&tunnel.host)
                } else {
                    format!("{}:{}", host_authority(&tunnel.host), tunnel.port)
                },
            )
            .path_and_query(path.as_str())
            .build()
        {
            Ok(u) => u,
            Err(_) => {
                return self
                    .deny(
                        &ctx,
                        denied(&ctx),
                        ErrorCode::InvalidRequest,
                        "the request cannot be forwarded",
                    )
                    .await;
            }
        };
        drop(path);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        // One secret (the common case): the patterns compiled at snapshot load. Several:
        // a matcher for this request's values.
        let scrubber = match swaps.first() {
            None => None,
            Some(first) if swaps.iter().all(|s| s.secret == first.secret) => {
                match self.live.scrub_patterns(&first.secret) {
                    Some(patterns) => {
                        Some(Scrubber::with_patterns(patterns, first.token.as_bytes()))
                    }
                    None => {
                        #[expect(
                            clippy::disallowed_methods,
                            reason = "scrubbing: responses are searched for the value sent"
                        )]
                        let value = first.value.expose();
                        Scrubber::new(&[value], first.token.as_bytes())
                    }
                }
            }
            Some(first) => {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "scrubbing: responses are searched for the values sent"
                )]
                let values: Vec<&[u8]> = swaps.iter().map(|s| s.value.expose()).collect();
                Scrubber::new(&values, first.token.as_bytes())
            }
        };

        let bytes_in = Arc::new(AtomicU64::new(0));
        let body = match body {
            RequestBody::Streaming(body) => counted(body, Arc::clone(&bytes_in)),
            RequestBody::Buffered(bytes) => {
                let bytes = substitute_body(&bytes, body_kind, &swaps).unwrap_or(bytes);
                // The whole body is known now: sent with its length, not chunked.
                parts.headers.remove(header::TRANSFER_ENCODING);
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                bytes_in.store(
                    u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                full(bytes)
            }
        };
        drop(swaps);
        let sent_at = Instant::now();
        let result = tokio::time::timeout(
            self.config.timeouts.first_byte(),
            tunnel.client.request(Request::from_parts(parts, body)),
        )
        .await;
        let upstream_ms = u64::try_from(sent_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut completions: Vec<Receipt> = intents
            .into_iter()
            .map(|mut r| {
                r.kind = Kind::Completion;
                r.upstream_ms = Some(upstream_ms);
                r
            })
            .collect();
        let response = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::info!(request_id = %ctx.request_id, host = %tunnel.host, error = %e, "upstream request failed");
                let r = completions.pop().unwrap_or_else(|| {
                    Self::caller_receipt(&ctx, caller, Kind::Completion, Verdict::Allow)
                });
                for c in completions {
                    self.audit.record(&c).await;
                }
                return self
                    .deny(
                        &ctx,
                        r,
                        ErrorCode::UpstreamUnavailable,
                        "the upstream could not be reached",
                    )
                    .await;
            }
            Err(_) => {
                let r = completions.pop().unwrap_or_else(|| {
                    Self::caller_receipt(&ctx, caller, Kind::Completion, Verdict::Allow)
                });
                for c in completions {
                    self.audit.record(&c).await;
                }
                return self
                    .deny(
                        &ctx,
                        r,
                        ErrorCode::UpstreamTimeout,
                        "the upstream did not answer in time",
                    )
                    .await;
            }
        };
        let (mut parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        strip_hop_by_hop(&mut parts.headers);
        let mut scrubber = scrubber;
        if scrubber.is_some() {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        if let Some(s) = &mut scrubber {
            s.scrub_headers(&mut parts.headers);
        }
        if completions.is_empty() {
            // Nothing injected: pass the body through, no receipt beyond the denial-free path.
            let audit = self.audit.clone();
            let mut plain = Self::caller_receipt(&ctx, caller, Kind::Completion, Verdict::Allow);
            plain.status = Some(status);
            let started = ctx.started;
            let on_end = Box::new(move |_how: End, sent: u64, _scrubbed: u64| {
                plain.bytes_out = Some(sent);
                plain.bytes_in = Some(bytes_in.load(Ordering::Relaxed));
                plain.total_ms =
                    Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                audit.record_nowait(&plain);
            });
            let body = ScrubBody::new(body, None, self.config.timeouts.idle(), on_end);
            return Response::from_parts(parts, body.boxed());
        }
        let audit = self.audit.clone();
        let started = ctx.started;
        let metrics = Arc::clone(&self.metrics);
        let on_end = Box::new(move |how: End, sent: u64, _scrubbed: u64| {
            for mut c in completions {
                c.status = Some(status);
                c.bytes_out = Some(sent);
                c.bytes_in = Some(bytes_in.load(Ordering::Relaxed));
                c.total_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                if how != End::Complete {
                    c.code = Some("stream_ended_early".to_owned());
                }
                audit.record_nowait(&c);
            }
            metrics.request("proxy", true, None, Some(status), started.elapsed());
        });
        let body = ScrubBody::new(body, scrubber, self.config.timeouts.idle(), on_end);
        Response::from_parts(parts, body.boxed())
    }
}

fn host_authority(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

//! The egress guard: where the forward proxy may connect (Smokescreen-style).
//!
//! An agent that sends its traffic through Sequester (`HTTPS_PROXY`) must not be able to use
//! the broker as a stepping stone into the broker's own network: its loopback services, the
//! private network it sits in, or the cloud metadata endpoint that hands out the machine's
//! credentials. This module decides, for one `(host, port)` an agent asked for, whether the
//! broker may connect, and to exactly which socket addresses.
//!
//! # Threat model
//!
//! The agent is not trusted. It chooses the CONNECT authority, the TLS server name and the
//! `Host` header, and it may control the DNS zone of the names it asks for. It will try:
//! - private and metadata addresses by literal (`169.254.169.254`), by alternative spellings
//!   (`::ffff:169.254.169.254`, `2002:a9fe:a9fe::`, `64:ff9b::a9fe:a9fe`, `2130706433`), and by
//!   names that resolve to them (`localtest.me`, its own zone);
//! - DNS rebinding: a name that resolves to a public address when checked and to a private one
//!   when connected (TTL 0, alternating answers);
//! - a CONNECT to an allowed host with a TLS server name or `Host` header naming another one.
//!
//! # Flow
//!
//! [`EgressGuard::check`] runs, in this order, and is the only way to obtain a
//! [`CheckedDestination`]:
//! 1. the host is normalised (lowercase, no trailing dot, no brackets) and must be a DNS name of
//!    letters, digits, `-`, `_` and `.`, or an IP literal; a name whose last label is all digits
//!    (`2130706433`, `127.1`) is refused rather than handed to the system resolver;
//! 2. the host policy is decided ([`LayeredPolicy::decide`]); a denied host is refused with
//!    `host_not_allowed` *before* any DNS query, so a denied name never leaks through DNS;
//! 3. the host is resolved **once** through the [`Resolver`] (an IP literal is not resolved);
//! 4. every answer is checked ([`LayeredPolicy::check_answers`]): if any answer is refused, the
//!    whole destination is refused (mixed answers are a sign of rebinding or misconfiguration);
//!    the port always comes from the request, never from the resolver;
//! 5. the checked answers are returned inside a [`CheckedDestination`].
//!
//! [`CheckedConnector`] connects only to the addresses inside one [`CheckedDestination`] and
//! holds no resolver, so a DNS answer that changes between the check and the connection cannot
//! be reached: there is no second lookup to change. TLS on top of it (see
//! [`CheckedConnector::https`]) is still verified against the real host name, which is also the
//! SNI.
//!
//! # Precedence of rules
//!
//! A [`LayeredPolicy`] has a tenant layer and, optionally, an agent layer; each layer is an
//! [`EgressPolicy`] with a default, an allow list and a deny list of [`HostPattern`]s. For a
//! `(host, port)`, the first of these that matches decides:
//!
//! | step | rule | result |
//! |---|---|---|
//! | 1 | an agent **deny** rule matches | deny |
//! | 2 | an agent **allow** rule matches | allow |
//! | 3 | a tenant **deny** rule matches | deny |
//! | 4 | a tenant **allow** rule matches | allow |
//! | 5 | no rule matches | allow only if **every** layer's default is `Allow`, else deny |
//!
//! So the agent layer is more specific than the tenant layer (an agent allow rule opens a host
//! the tenant denies, an agent deny rule closes a host the tenant allows), deny wins within one
//! layer, and defaults combine fail-closed: an agent policy with default `Allow` cannot widen a
//! tenant whose default is `Deny` except through explicit allow rules.
//!
//! # Forbidden addresses and what unlocks them
//!
//! [`classify`] sorts every address into an [`AddressClass`]. Embedded IPv4 forms are classified
//! by the IPv4 address they carry: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
//! (`::a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
//! (`2002::/16`). Teredo (`2001::/32`) and local-use NAT64 (`64:ff9b:1::/48`) are refused as
//! reserved (the embedded endpoint cannot be checked reliably), as is every IPv6 address
//! outside global unicast `2000::/3` that is not otherwise classified.
//!
//! An answer in a forbidden class is still accepted when a rule unlocks it, decided per answer:
//! - a rule whose pattern is that **IP literal** (`sequester egress allow 10.0.0.5`; an IPv4
//!   rule also covers the IPv4-mapped IPv6 form) is evaluated with the same layer precedence:
//!   an allow unlocks the address for every host name that resolves to it, a deny refuses it
//!   for every host name (`host_not_allowed`), even a public one;
//! - otherwise, if the host was allowed by an **exact** (non-wildcard) host rule, that host's
//!   private answers are accepted: naming one host is a statement that it lives inside. A
//!   wildcard allow rule or an `Allow` default never unlocks a private answer;
//! - [`AddressClass::Metadata`] answers are unlocked only by a rule naming the literal address;
//! - [`AddressClass::Unspecified`], [`AddressClass::Multicast`] and
//!   [`AddressClass::Broadcast`] are never unlocked (`0.0.0.0` reaches the local host on Linux).
//!
//! Refusals carry stable codes: `host_not_allowed` for policy denials, `destination_forbidden`
//! for forbidden addresses and for a TLS server name or `Host` header that does not match the
//! CONNECT host. Messages say what to do next.

use hyper_util::rt::TokioIo;
use sequester_model::{ErrorCode, HostPattern};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// How long one DNS resolution may take before the destination is reported unreachable.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a TCP connection to one checked address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest host name accepted (RFC 1035).
const MAX_HOST_LEN: usize = 253;

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// What a rule or a default does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

/// One layer of egress policy: a default, an allow list and a deny list.
///
/// Within one layer the deny list wins over the allow list; the default applies when neither
/// matches. Layers combine as described in the module docs ([`LayeredPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    default: Action,
    allow: Vec<HostPattern>,
    deny: Vec<HostPattern>,
}

impl EgressPolicy {
    pub fn new(default: Action, allow: Vec<HostPattern>, deny: Vec<HostPattern>) -> Self {
        Self {
            default,
            allow,
            deny,
        }
    }

    /// Default `Allow`, no rules: every public destination.
    pub fn allow_all() -> Self {
        Self::new(Action::Allow, Vec::new(), Vec::new())
    }

    /// Default `Deny`, no rules: nothing. The fail-closed policy to install when a
    /// configuration does not load.
    pub fn deny_all() -> Self {
        Self::new(Action::Deny, Vec::new(), Vec::new())
    }

    pub fn default_action(&self) -> Action {
        self.default
    }

    pub fn allow_rules(&self) -> &[HostPattern] {
        &self.allow
    }

    pub fn deny_rules(&self) -> &[HostPattern] {
        &self.deny
    }

    /// The first matching rule of this layer: deny rules before allow rules.
    fn matching(&self, host: &str, port: u16) -> Option<(Action, &HostPattern)> {
        if let Some(p) = self.deny.iter().find(|p| p.matches(host, port)) {
            return Some((Action::Deny, p));
        }
        self.allow
            .iter()
            .find(|p| p.matches(host, port))
            .map(|p| (Action::Allow, p))
    }
}

/// Which layer of a [`LayeredPolicy`] a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Agent,
    Tenant,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Agent => "agent",
            Self::Tenant => "tenant",
        })
    }
}

/// Why a [`Decision`] came out the way it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// A rule of `layer` matched.
    Rule { layer: Layer, pattern: HostPattern },
    /// No rule matched; the combined default applied.
    Default,
}

/// The outcome of [`LayeredPolicy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub basis: Basis,
}

impl Decision {
    /// Whether this decision was made by an exact (non-wildcard) allow rule, which unlocks the
    /// host's private answers (see the module docs).
    fn allowed_by_exact_rule(&self) -> bool {
        match (&self.action, &self.basis) {
            (Action::Allow, Basis::Rule { pattern, .. }) => {
                !pattern.host_string().starts_with("*.")
            }
            _ => false,
        }
    }
}

/// A tenant policy, optionally refined by an agent policy. See the module docs for the exact
/// precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayeredPolicy {
    tenant: EgressPolicy,
    agent: Option<EgressPolicy>,
}

impl LayeredPolicy {
    pub fn new(tenant: EgressPolicy, agent: Option<EgressPolicy>) -> Self {
        Self { tenant, agent }
    }

    /// Only a tenant layer.
    pub fn tenant(tenant: EgressPolicy) -> Self {
        Self::new(tenant, None)
    }

    /// The first matching rule, agent layer first; within a layer deny before allow.
    fn matching_rule(&self, host: &str, port: u16) -> Option<(Layer, Action, &HostPattern)> {
        let agent = self.agent.as_ref().map(|a| (Layer::Agent, a));
        agent
            .into_iter()
            .chain(std::iter::once((Layer::Tenant, &self.tenant)))
            .find_map(|(layer, policy)| {
                policy
                    .matching(host, port)
                    .map(|(action, p)| (layer, action, p))
            })
    }

    fn combined_default(&self) -> Action {
        let agent_allows = self
            .agent
            .as_ref()
            .is_none_or(|a| a.default == Action::Allow);
        if self.tenant.default == Action::Allow && agent_allows {
            Action::Allow
        } else {
            Action::Deny
        }
    }

    /// Decides `(host, port)` by the rules alone: a pure function, no DNS. `host` is an ASCII
    /// DNS name or an IP literal (IPv6 with or without brackets).
    pub fn decide(&self, host: &str, port: u16) -> Decision {
        match self.matching_rule(host, port) {
            Some((layer, action, pattern)) => Decision {
                action,
                basis: Basis::Rule {
                    layer,
                    pattern: pattern.clone(),
                },
            },
            None => Decision {
                action: self.combined_default(),
                basis: Basis::Default,
            },
        }
    }

    /// Decides the host and refuses it with `host_not_allowed` when denied. `host` must already
    /// be normalised (see [`EgressGuard::check`]).
    fn check_host(&self, host: &Target, port: u16) -> Result<Decision, Refusal> {
        let shown = host.to_string();
        let decision = self.decide(&shown, port);
        match (&decision.action, &decision.basis) {
            (Action::Allow, _) => Ok(decision),
            (Action::Deny, Basis::Rule { layer, pattern }) => {
                Err(Refusal::host_not_allowed(format!(
                    "`{shown}:{port}` is denied by the {layer} egress rule `{pattern}`; \
                     remove that deny rule if this agent should reach it"
                )))
            }
            (Action::Deny, Basis::Default) => Err(Refusal::host_not_allowed(format!(
                "`{shown}:{port}` is not on the egress allow list; add `sequester egress allow \
                     {}` to let agents reach it",
                host.pattern_form(),
            ))),
        }
    }

    /// Checks `host` and every address it resolved to: the whole decision of
    /// [`EgressGuard::check`] without the DNS query. Returns the answers to connect to (port
    /// from the request, duplicates removed, order kept), or the refusal for the host or for
    /// the first refused answer. Pure: no DNS, no clock.
    pub fn check_answers(
        &self,
        host: &str,
        port: u16,
        answers: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let target = Target::parse(host)?;
        let decision = self.check_host(&target, port)?;
        self.check_resolved(&target.to_string(), port, &decision, answers)
    }

    /// [`LayeredPolicy::check_answers`] for a normalised host already allowed by `decision`
    /// (which only [`LayeredPolicy::check_host`] makes, so a caller cannot fabricate an
    /// unlocking decision).
    fn check_resolved(
        &self,
        host: &str,
        port: u16,
        host_decision: &Decision,
        answers: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, Refusal> {
        if answers.is_empty() {
            return Err(Refusal::destination_forbidden(format!(
                "`{host}` resolved to no address; check the host name"
            )));
        }
        let mut out: Vec<SocketAddr> = Vec::with_capacity(answers.len());
        for answer in answers {
            let addr = SocketAddr::new(answer.ip(), port);
            self.check_address(host, port, host_decision, addr.ip())?;
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Ok(out)
    }

    /// Checks one answer; see the module docs for the unlock rules.
    fn check_address(
        &self,
        host: &str,
        port: u16,
        host_decision: &Decision,
        ip: IpAddr,
    ) -> Result<(), Refusal> {
        let class = classify(ip);
        // An IPv4 rule also names the IPv4-mapped form of that address.
        let literal = ip.to_canonical().to_string();
        let shown = bracketed(ip);
        let via = if host_is_ip(host) {
            String::new()
        } else {
            format!(" (`{host}` resolves to it)")
        };
        match self.matching_rule(&literal, port) {
            Some((layer, Action::Deny, pattern)) => {
                return Err(Refusal::host_not_allowed(format!(
                    "the address {shown}{via} is denied by the {layer} egress rule `{pattern}`; \
                     remove that deny rule if this agent should reach it"
                )));
            }
            Some((_, Action::Allow, _)) if class.unlock() != Unlock::Never => return Ok(()),
            _ => {}
        }
        match class.unlock() {
            Unlock::NotNeeded => Ok(()),
            Unlock::Never => Err(Refusal::destination_forbidden(format!(
                "the address {shown}{via} is {}; the broker never connects there",
                class.describe()
            ))),
            Unlock::LiteralRule => Err(Refusal::destination_forbidden(format!(
                "the address {shown}{via} is {}; the broker does not connect there unless a rule \
                 names the address: add `sequester egress allow {shown}` only if agents must \
                 reach it",
                class.describe()
            ))),
            Unlock::LiteralOrExactHostRule => {
                if host_decision.allowed_by_exact_rule() {
                    Ok(())
                } else {
                    let host_hint = if host_is_ip(host) {
                        String::new()
                    } else {
                        format!(" (or `sequester egress allow {host}` for this host's addresses)")
                    };
                    Err(Refusal::destination_forbidden(format!(
                        "the address {shown}{via} is {}; the broker does not connect to private, \
                         loopback, link-local or reserved addresses unless a rule names them: add \
                         `sequester egress allow {shown}`{host_hint}",
                        class.describe()
                    )))
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals and errors
// ---------------------------------------------------------------------------------------------

/// A destination the guard will not connect to, with a stable code
/// (`destination_forbidden` or `host_not_allowed`) and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn host_not_allowed(message: String) -> Self {
        Self {
            code: ErrorCode::HostNotAllowed,
            message,
        }
    }

    fn destination_forbidden(message: String) -> Self {
        Self {
            code: ErrorCode::DestinationForbidden,
            message,
        }
    }

    /// [`ErrorCode::HostNotAllowed`] or [`ErrorCode::DestinationForbidden`].
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Why [`EgressGuard::check`] produced no destination.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("could not resolve `{host}`: {message}; check the host name and the broker's DNS")]
    Unresolved { host: String, message: String },
    #[error("resolving `{host}` timed out; check the broker's DNS")]
    ResolveTimeout { host: String },
}

impl EgressError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused(r) => r.code(),
            Self::Unresolved { .. } => ErrorCode::UpstreamUnavailable,
            Self::ResolveTimeout { .. } => ErrorCode::UpstreamTimeout,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Address classification
// ---------------------------------------------------------------------------------------------

/// What kind of address an IP is, for egress purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// Globally routable: allowed without a rule.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, `fec0::/10`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// `100.64/10` (carrier-grade NAT).
    SharedAddressSpace,
    /// Cloud metadata and host-agent endpoints (`169.254.169.254`, `fd00:ec2::254`,
    /// `100.100.100.200`, …): unlocked only by a rule naming the literal address.
    Metadata,
    /// `0.0.0.0/8`, `::`: never unlocked.
    Unspecified,
    /// `224/4`, `ff00::/8`: never unlocked.
    Multicast,
    /// `255.255.255.255`: never unlocked.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Everything else that is not globally routable: `240/4`, `198.18/15`, `192.0.0/24`,
    /// `192.88.99/24`, Teredo, ORCHID, discard-only, local-use NAT64, IPv6 outside `2000::/3`.
    Reserved,
}

/// How an address class can be unlocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlock {
    NotNeeded,
    LiteralOrExactHostRule,
    LiteralRule,
    Never,
}

impl AddressClass {
    /// Whether an address of this class is refused without a rule.
    pub fn is_forbidden(self) -> bool {
        self != Self::Public
    }

    fn unlock(self) -> Unlock {
        match self {
            Self::Public => Unlock::NotNeeded,
            Self::Loopback
            | Self::Private
            | Self::LinkLocal
            | Self::SharedAddressSpace
            | Self::Documentation
            | Self::Reserved => Unlock::LiteralOrExactHostRule,
            Self::Metadata => Unlock::LiteralRule,
            Self::Unspecified | Self::Multicast | Self::Broadcast => Unlock::Never,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Public => "a public address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private-network address",
            Self::LinkLocal => "a link-local address",
            Self::SharedAddressSpace => "a carrier-grade NAT (100.64.0.0/10) address",
            Self::Metadata => "a cloud metadata endpoint",
            Self::Unspecified => "an unspecified (this-host) address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation-only address",
            Self::Reserved => "a reserved, non-routable address",
        }
    }
}

/// Cloud metadata and host-agent endpoints: AWS/GCP/Azure/OCI IMDS, ECS task metadata, EKS pod
/// identity, Azure WireServer, Alibaba Cloud, legacy Oracle Cloud.
const METADATA_V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS IMDS and EKS pod identity over IPv6.
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0023),
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

/// Classifies an address; see [`AddressClass`] and the module docs for embedded forms.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    if METADATA_V4.contains(&ip) {
        return Metadata;
    }
    if ip == Ipv4Addr::BROADCAST {
        return Broadcast;
    }
    let table: [([u8; 4], u32, AddressClass); 15] = [
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Reserved),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map_or(Public, |(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    if ip.is_unspecified() {
        return Unspecified;
    }
    if ip.is_loopback() {
        return Loopback;
    }
    if METADATA_V6.contains(&ip) {
        return Metadata;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let table: [(u128, u32, AddressClass); 11] = [
        // Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the operator.
        (0x0064_ff9b_0001 << 80, 48, Reserved),
        // Discard-only (RFC 6666).
        (0x0100 << 112, 64, Reserved),
        // Teredo (RFC 4380): the embedded client address is obfuscated; refuse outright.
        (0x2001_0000 << 96, 32, Reserved),
        // Benchmarking (RFC 5180), ORCHID and ORCHIDv2 (RFC 7343).
        (0x2001_0002_0000 << 80, 48, Reserved),
        (0x2001_0010 << 96, 28, Reserved),
        (0x2001_0020 << 96, 28, Reserved),
        (0x2001_0db8 << 96, 32, Documentation),
        (0x3fff << 112, 20, Documentation),
        (0xfc00 << 112, 7, Private),
        (0xfe80 << 112, 10, LinkLocal),
        (0xfec0 << 112, 10, Private),
    ];
    if let Some((_, _, class)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return *class;
    }
    if in_v6(ip, 0xff00 << 112, 8) {
        return Multicast;
    }
    // Only global unicast is public.
    if !in_v6(ip, 0x2000 << 112, 3) {
        return Reserved;
    }
    Public
}

/// The IPv4 address carried by an IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64
/// well-known-prefix or 6to4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // ::a.b.c.d (compatible, deprecated); :: and ::1 are handled before.
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        // ::ffff:0:a.b.c.d (translated, RFC 2765)
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052)
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 2002:AABB:CCDD::/48 (6to4, RFC 3056)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Host names, SNI and Host header
// ---------------------------------------------------------------------------------------------

/// A normalised request host: a lowercase DNS name without trailing dot, or an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Name(String),
    Ip(IpAddr),
}

impl Target {
    /// Parses a host as it appears in a CONNECT authority (without the port).
    fn parse(host: &str) -> Result<Self, Refusal> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = IpAddr::from_str(bare) {
            return Ok(Self::Ip(ip));
        }
        let invalid = || {
            Refusal::host_not_allowed(format!(
                "`{}` is not a valid host name; give a DNS name such as api.example.com or an IP \
                 address in standard form",
                host.chars().take(80).collect::<String>()
            ))
        };
        let name = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
        if name.is_empty()
            || name.len() > MAX_HOST_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || name.split('.').any(|l| l.is_empty() || l.len() > 63)
        {
            return Err(invalid());
        }
        // `127.1`, `2130706433`, `0x7f.1`: the system resolver would turn these into addresses;
        // ask for the standard form instead.
        if name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()) || tld.starts_with("0x"))
        {
            return Err(invalid());
        }
        Ok(Self::Name(name))
    }

    /// The form a rule for this host is written in (`[v6]` bracketed).
    fn pattern_form(&self) -> String {
        match self {
            Self::Name(n) => n.clone(),
            Self::Ip(ip) => bracketed(*ip),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn host_is_ip(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    IpAddr::from_str(bare).is_ok()
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal into the host part
/// (brackets removed) and the optional port text.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.matches(':').count() {
        1 => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
        // No port, or a bare IPv6 literal.
        _ => (authority, None),
    }
}

/// Two hosts compare equal when they are the same IP, or the same DNS name ignoring case and a
/// trailing dot.
fn same_host(a: &str, b: &str) -> bool {
    match (IpAddr::from_str(a), IpAddr::from_str(b)) {
        (Ok(x), Ok(y)) => x.to_canonical() == y.to_canonical(),
        (Err(_), Err(_)) => {
            let a = a.strip_suffix('.').unwrap_or(a);
            let b = b.strip_suffix('.').unwrap_or(b);
            !a.is_empty() && a.eq_ignore_ascii_case(b)
        }
        _ => false,
    }
}

fn valid_port(port: Option<&str>) -> bool {
    port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    })
}

/// Checks that the TLS server name a client sent matches the host of its CONNECT request
/// (`host`, `host:port`, `[v6]:port`). Case-insensitive; a trailing dot on either side is
/// ignored; IP literals compare by value. A mismatch is `destination_forbidden`: the policy
/// was checked for the CONNECT host, so the tunnel may only carry traffic for it.
pub fn check_sni_matches_host(connect_host: &str, sni: &str) -> Result<(), Refusal> {
    let (host, port) = split_authority(connect_host);
    // A server name never carries a port; a colon is only valid inside an IPv6 literal.
    let sni_ok = !sni.contains(':') || IpAddr::from_str(sni).is_ok();
    if valid_port(port) && sni_ok && same_host(host, sni) {
        return Ok(());
    }
    Err(Refusal::destination_forbidden(format!(
        "the TLS server name `{}` does not match the CONNECT host `{}`; send the request to the \
         host the tunnel was opened for",
        sni.chars().take(80).collect::<String>(),
        connect_host.chars().take(80).collect::<String>(),
    )))
}

/// Checks that an HTTP `Host` header (or `:authority`) inside an intercepted tunnel names the
/// TLS server name. The header's port, if any, must be a valid port number; the name compares
/// as in [`check_sni_matches_host`].
pub fn check_host_header(sni: &str, host_header: &str) -> Result<(), Refusal> {
    let (host, port) = split_authority(host_header);
    if valid_port(port) && same_host(host, sni) {
        return Ok(());
    }
    Err(Refusal::destination_forbidden(format!(
        "the Host header `{}` does not match the TLS server name `{}`; send each request to \
         the host its connection was opened for",
        host_header.chars().take(80).collect::<String>(),
        sni.chars().take(80).collect::<String>(),
    )))
}

// ---------------------------------------------------------------------------------------------
// DNS and the guard
// ---------------------------------------------------------------------------------------------

/// The future a [`Resolver`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves a host name to socket addresses. Object-safe, so tests and deployments can swap
/// it (`Arc<dyn Resolver>`).
pub trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver through tokio's `lookup_host` (getaddrinfo on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A destination that passed the egress checks: the host, the port, and the only addresses
/// the broker may connect to for it. Only [`EgressGuard::check`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDestination {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    decision: Decision,
}

impl CheckedDestination {
    /// The normalised host (lowercase, no trailing dot, IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The checked addresses, in the resolver's order. Never empty.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The host policy decision, for receipts.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
}

/// Resolves and checks destinations against a [`LayeredPolicy`].
#[derive(Clone)]
pub struct EgressGuard {
    resolver: Arc<dyn Resolver>,
    resolve_timeout: Duration,
}

impl fmt::Debug for EgressGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressGuard")
            .field("resolve_timeout", &self.resolve_timeout)
            .finish_non_exhaustive()
    }
}

impl EgressGuard {
    pub fn new(resolver: Arc<dyn Resolver>) -> Self {
        Self {
            resolver,
            resolve_timeout: RESOLVE_TIMEOUT,
        }
    }

    /// A guard on the system resolver.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemResolver))
    }

    pub fn with_resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// Checks `(host, port)` for one request: policy first (no DNS for a denied host), then
    /// one resolution, then every answer. See the module docs.
    pub async fn check(
        &self,
        policy: &LayeredPolicy,
        host: &str,
        port: u16,
    ) -> Result<CheckedDestination, EgressError> {
        let target = Target::parse(host)?;
        let decision = policy.check_host(&target, port)?;
        let shown = target.to_string();
        let answers = match &target {
            Target::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Target::Name(name) => {
                match tokio::time::timeout(self.resolve_timeout, self.resolver.resolve(name, port))
                    .await
                {
                    Ok(Ok(answers)) => answers,
                    Ok(Err(e)) => {
                        return Err(EgressError::Unresolved {
                            host: shown,
                            message: e.to_string(),
                        });
                    }
                    Err(_) => return Err(EgressError::ResolveTimeout { host: shown }),
                }
            }
        };
        if answers.is_empty() {
            return Err(EgressError::Unresolved {
                host: shown,
                message: "no addresses".to_owned(),
            });
        }
        let addrs = policy.check_resolved(&shown, port, &decision, &answers)?;
        Ok(CheckedDestination {
            host: shown,
            port,
            addrs,
            decision,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The connector
// ---------------------------------------------------------------------------------------------

/// Why [`CheckedConnector`] could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "this connection was checked for `{checked}` but asked to reach `{requested}`; check the \
         new destination with the egress guard first"
    )]
    Misdirected { checked: String, requested: String },
    #[error("could not connect to `{host}` ({addrs}): {source}")]
    Unreachable {
        host: String,
        addrs: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to `{host}` ({addrs}) timed out")]
    Timeout { host: String, addrs: String },
}

impl ConnectError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Misdirected { .. } => ErrorCode::DestinationForbidden,
            Self::Unreachable { .. } => ErrorCode::UpstreamUnavailable,
            Self::Timeout { .. } => ErrorCode::UpstreamTimeout,
        }
    }
}

/// A hyper-util connector bound to one [`CheckedDestination`]: it connects only to the checked
/// addresses, in order, and refuses a `Uri` for any other host or port. It has no resolver,
/// so nothing between the check and the connection can change where it goes.
///
/// Build one per destination (for the forward proxy: per CONNECT tunnel) and a hyper client on
/// it; wrap it with [`CheckedConnector::https`] for verified TLS.
#[derive(Debug, Clone)]
pub struct CheckedConnector {
    dest: Arc<CheckedDestination>,
    connect_timeout: Duration,
}

impl CheckedConnector {
    pub fn new(dest: CheckedDestination) -> Self {
        Self {
            dest: Arc::new(dest),
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn destination(&self) -> &CheckedDestination {
        &self.dest
    }

    /// This connector under rustls: `https` URIs only, SNI and certificate verification for
    /// the URI's host (the checked host), ALPN `h2` and `http/1.1`. Build `tls` on the ring
    /// provider.
    pub fn https(self, tls: rustls::ClientConfig) -> hyper_rustls::HttpsConnector<Self> {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(self)
    }

    fn addrs_text(&self) -> String {
        self.dest
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The connector's future.
pub type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send>>;

impl tower_service::Service<http::Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let host_bare = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if port != this.dest.port || !same_host(host_bare, &this.dest.host) {
                return Err(ConnectError::Misdirected {
                    checked: format!("{}:{}", this.dest.host, this.dest.port),
                    requested: format!("{host}:{port}"),
                });
            }
            let mut last = None;
            for addr in &this.dest.addrs {
                match tokio::time::timeout(this.connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(TokioIo::new(stream));
                    }
                    Ok(Err(e)) => last = Some(e),
                    Err(_) => {
                        last = Some(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                    }
                }
            }
            let host = this.dest.host.clone();
            let addrs = this.addrs_text();
            Err(match last {
                Some(e) if e.kind() == io::ErrorKind::TimedOut => {
                    ConnectError::Timeout { host, addrs }
                }
                Some(source) => ConnectError::Unreachable {
                    host,
                    addrs,
                    source,
                },
                None => ConnectError::Unreachable {
                    host,
                    addrs,
                    source: io::Error::new(io::ErrorKind::NotFound, "no checked address"),
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip(s), port)
    }

    fn allow_default() -> LayeredPolicy {
        LayeredPolicy::tenant(EgressPolicy::allow_all())
    }

    fn policy(default: Action, allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy::new(
            default,
            allow.iter().map(|s| p(s)).collect(),
            deny.iter().map(|s| p(s)).collect(),
        )
    }

    /// Checks `host` resolving to `answer` under `policy`, as the guard does.
    fn check(policy: &LayeredPolicy, host: &str, answer: &str) -> Result<Vec<SocketAddr>, Refusal> {
        policy.check_answers(host, 443, &[sa(answer, 443)])
    }

    #[test]
    fn classification_table() {
        use AddressClass::*;
        let table: &[(&str, AddressClass)] = &[
            // IPv4
            ("8.8.8.8", Public),
            ("93.184.216.34", Public),
            ("1.1.1.1", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.5", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("172.15.255.255", Public),
            ("192.168.1.1", Private),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("169.254.170.2", Metadata),
            ("100.100.100.200", Metadata),
            ("168.63.129.16", Metadata),
            ("192.0.0.192", Metadata),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("100.128.0.0", Public),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            // IPv6
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001:80b::200e", Public),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fd00:ec2::254", Metadata),
            ("fd00:ec2::23", Metadata),
            ("ff02::1", Multicast),
            ("ff05::2", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("100::1", Reserved),
            ("2001::1", Reserved),
            ("2001:2::1", Reserved),
            ("2001:10::1", Reserved),
            ("2001:20::1", Reserved),
            ("64:ff9b:1::a00:1", Reserved),
            ("4000::1", Reserved),
            ("5f00::1", Reserved),
            // IPv4-mapped
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:100.64.1.1", SharedAddressSpace),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:255.255.255.255", Broadcast),
            ("::ffff:8.8.8.8", Public),
            // IPv4-compatible (deprecated)
            ("::127.0.0.1", Loopback),
            ("::169.254.169.254", Metadata),
            ("::10.0.0.1", Private),
            ("::8.8.8.8", Public),
            // IPv4-translated (SIIT)
            ("::ffff:0:127.0.0.1", Loopback),
            ("::ffff:0:169.254.169.254", Metadata),
            // NAT64 well-known prefix
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("64:ff9b::192.168.0.1", Private),
            ("64:ff9b::8.8.8.8", Public),
            // 6to4
            ("2002:7f00:1::", Loopback),
            ("2002:a9fe:a9fe::1", Metadata),
            ("2002:c0a8:101::", Private),
            ("2002:0a00:0001:1::1", Private),
            ("2002:0808:0808::1", Public),
        ];
        for (addr, class) in table {
            assert_eq!(classify(ip(addr)), *class, "{addr}");
        }
    }

    /// Every class, v4 and v6 forms, under a default-Allow policy with no rules.
    #[test]
    fn answers_without_rules() {
        let policy = allow_default();
        let table: &[(&str, Option<ErrorCode>)] = &[
            ("93.184.216.34", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2002:0808:0808::1", None),
            ("127.0.0.1", Some(ErrorCode::DestinationForbidden)),
            ("127.1.2.3", Some(ErrorCode::DestinationForbidden)),
            ("::1", Some(ErrorCode::DestinationForbidden)),
            ("10.0.0.5", Some(ErrorCode::DestinationForbidden)),
            ("172.20.1.1", Some(ErrorCode::DestinationForbidden)),
            ("192.168.0.10", Some(ErrorCode::DestinationForbidden)),
            ("fd00::1", Some(ErrorCode::DestinationForbidden)),
            ("169.254.1.1", Some(ErrorCode::DestinationForbidden)),
            ("fe80::1", Some(ErrorCode::DestinationForbidden)),
            ("169.254.169.254", Some(ErrorCode::DestinationForbidden)),
            ("fd00:ec2::254", Some(ErrorCode::DestinationForbidden)),
            ("100.100.100.200", Some(ErrorCode::DestinationForbidden)),
            ("100.64.0.1", Some(ErrorCode::DestinationForbidden)),
            ("0.0.0.0", Some(ErrorCode::DestinationForbidden)),
            ("::", Some(ErrorCode::DestinationForbidden)),
            ("224.0.0.251", Some(ErrorCode::DestinationForbidden)),
            ("ff02::fb", Some(ErrorCode::DestinationForbidden)),
            ("255.255.255.255", Some(ErrorCode::DestinationForbidden)),
            ("192.0.2.1", Some(ErrorCode::DestinationForbidden)),
            ("2001:db8::1", Some(ErrorCode::DestinationForbidden)),
            ("::ffff:127.0.0.1", Some(ErrorCode::DestinationForbidden)),
            (
                "::ffff:169.254.169.254",
                Some(ErrorCode::DestinationForbidden),
            ),
            ("::127.0.0.1", Some(ErrorCode::DestinationForbidden)),
            ("::ffff:0:10.0.0.1", Some(ErrorCode::DestinationForbidden)),
            (
                "64:ff9b::169.254.169.254",
                Some(ErrorCode::DestinationForbidden),
            ),
            ("2002:a9fe:a9fe::", Some(ErrorCode::DestinationForbidden)),
            ("2002:7f00:0001::", Some(ErrorCode::DestinationForbidden)),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some(ErrorCode::DestinationForbidden),
            ),
        ];
        for (addr, expected) in table {
            let got = check(&policy, "svc.example.com", addr);
            match expected {
                None => assert_eq!(got.unwrap(), vec![sa(addr, 443)], "{addr}"),
                Some(code) => {
                    let refusal = got.expect_err(addr);
                    assert_eq!(refusal.code(), *code, "{addr}");
                    assert!(refusal.message().contains("svc.example.com"), "{refusal}");
                }
            }
            // The same address as a literal host.
            let literal = if addr.contains(':') {
                format!("[{addr}]")
            } else {
                (*addr).to_owned()
            };
            assert_eq!(
                check(&policy, &literal, addr).is_ok(),
                expected.is_none(),
                "literal {literal}"
            );
        }
    }

    #[test]
    fn refusal_messages_say_what_to_do() {
        let policy = allow_default();
        let r = check(&policy, "internal.corp.example", "10.0.0.5").unwrap_err();
        assert!(
            r.message().contains("`sequester egress allow 10.0.0.5`"),
            "{r}"
        );
        assert!(
            r.message()
                .contains("`sequester egress allow internal.corp.example`"),
            "{r}"
        );
        let r = check(&policy, "[::1]", "::1").unwrap_err();
        assert!(
            r.message().contains("`sequester egress allow [::1]`"),
            "{r}"
        );
        let r = check(&policy, "x.example.com", "169.254.169.254").unwrap_err();
        assert!(r.message().contains("metadata"), "{r}");
        assert!(
            r.message()
                .contains("`sequester egress allow 169.254.169.254`"),
            "{r}"
        );
        let r = check(&policy, "x.example.com", "0.0.0.0").unwrap_err();
        assert!(r.message().contains("never"), "{r}");
        let deny = LayeredPolicy::tenant(EgressPolicy::deny_all());
        let r = check(&deny, "api.example.com", "93.184.216.34").unwrap_err();
        assert_eq!(r.code(), ErrorCode::HostNotAllowed);
        assert!(
            r.message()
                .contains("`sequester egress allow api.example.com`"),
            "{r}"
        );
    }

    #[test]
    fn rules_unlock_forbidden_answers() {
        type Row<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a str,
            &'a str,
            Option<ErrorCode>,
        );
        let df = Some(ErrorCode::DestinationForbidden);
        let hna = Some(ErrorCode::HostNotAllowed);
        #[rustfmt::skip]
        let table: &[Row] = &[
            // A literal rule unlocks that address, whatever name resolved to it.
            (&["127.0.0.1"], &[], "localhost", "127.0.0.1", None),
            (&["127.0.0.1"], &[], "anything.test", "127.0.0.1", None),
            (&["127.0.0.1"], &[], "anything.test", "127.0.0.2", df),
            (&["127.0.0.1"], &[], "127.0.0.1", "127.0.0.1", None),
            // ... and its IPv4-mapped form.
            (&["127.0.0.1"], &[], "anything.test", "::ffff:127.0.0.1", None),
            // ... but not other embeddings (another endpoint).
            (&["127.0.0.1"], &[], "anything.test", "64:ff9b::127.0.0.1", df),
            (&["[::1]"], &[], "anything.test", "::1", None),
            (&["10.0.0.5:8443"], &[], "svc.test", "10.0.0.5", df), // port 443 ≠ 8443
            // An exact host rule unlocks that host's private answers.
            (&["localhost"], &[], "localhost", "127.0.0.1", None),
            (&["internal.corp.example"], &[], "internal.corp.example", "10.0.0.5", None),
            (&["internal.corp.example"], &[], "other.corp.example", "10.0.0.5", df),
            // A wildcard does not.
            (&["*.corp.example"], &[], "internal.corp.example", "10.0.0.5", df),
            (&["*.corp.example"], &[], "internal.corp.example", "93.184.216.34", None),
            // Metadata needs the literal.
            (&["metadata.google.internal"], &[], "metadata.google.internal", "169.254.169.254", df),
            (&["169.254.169.254"], &[], "metadata.google.internal", "169.254.169.254", None),
            (&["[fd00:ec2::254]"], &[], "imds.test", "fd00:ec2::254", None),
            // Never: unspecified, multicast, broadcast.
            (&["0.0.0.0"], &[], "zero.test", "0.0.0.0", df),
            (&["zero.test"], &[], "zero.test", "0.0.0.0", df),
            (&["255.255.255.255"], &[], "b.test", "255.255.255.255", df),
            (&["224.0.0.1"], &[], "m.test", "224.0.0.1", df),
            // A deny rule naming an address refuses it for every host, even a public one.
            (&[], &["93.184.216.34"], "example.com", "93.184.216.34", hna),
            (&["example.com"], &["93.184.216.34"], "example.com", "93.184.216.34", hna),
        ];
        for (allow, deny, host, answer, expected) in table {
            let pol = LayeredPolicy::tenant(policy(Action::Allow, allow, deny));
            let got = check(&pol, host, answer);
            assert_eq!(
                got.as_ref().err().map(Refusal::code),
                *expected,
                "allow {allow:?} deny {deny:?} {host} -> {answer}: {got:?}"
            );
        }
    }

    #[test]
    fn agent_literal_deny_overrides_tenant_literal_allow() {
        let pol = LayeredPolicy::new(
            policy(Action::Allow, &["10.0.0.5"], &[]),
            Some(policy(Action::Allow, &[], &["10.0.0.5"])),
        );
        assert_eq!(
            check(&pol, "svc.test", "10.0.0.5").unwrap_err().code(),
            ErrorCode::HostNotAllowed
        );
        let pol = LayeredPolicy::new(
            policy(Action::Allow, &[], &["10.0.0.5"]),
            Some(policy(Action::Allow, &["10.0.0.5"], &[])),
        );
        assert!(check(&pol, "svc.test", "10.0.0.5").is_ok());
    }

    #[test]
    fn mixed_answers_are_refused_whole() {
        let pol = allow_default();
        let r = pol
            .check_answers(
                "mixed.test",
                443,
                &[sa("93.184.216.34", 443), sa("127.0.0.1", 443)],
            )
            .unwrap_err();
        assert_eq!(r.code(), ErrorCode::DestinationForbidden);
        assert!(r.message().contains("127.0.0.1"));
    }

    #[test]
    fn answers_take_the_request_port_and_are_deduplicated() {
        let pol = allow_default();
        let got = pol
            .check_answers(
                "svc.test",
                443,
                &[
                    sa("93.184.216.34", 80),
                    sa("93.184.216.34", 443),
                    sa("2606:2800:220:1::1", 9),
                ],
            )
            .unwrap();
        assert_eq!(
            got,
            vec![sa("93.184.216.34", 443), sa("2606:2800:220:1::1", 443)]
        );
        assert!(pol.check_answers("svc.test", 443, &[]).is_err());
    }

    /// Precedence: agent deny > agent allow > tenant deny > tenant allow > combined default.
    #[test]
    fn precedence_table() {
        use Action::{Allow, Deny};
        type Spec<'a> = (Action, &'a [&'a str], &'a [&'a str]);
        #[rustfmt::skip]
        let table: &[(&str, Spec, Option<Spec>, &str, Action)] = &[
            ("no rules, default allow", (Allow, &[], &[]), None, "a.test", Allow),
            ("no rules, default deny", (Deny, &[], &[]), None, "a.test", Deny),
            ("tenant allow rule", (Deny, &["a.test"], &[]), None, "a.test", Allow),
            ("tenant deny beats tenant allow", (Allow, &["a.test"], &["a.test"]), None, "a.test", Deny),
            ("tenant deny wildcard beats exact allow", (Allow, &["a.ex.test"], &["*.ex.test"]), None, "a.ex.test", Deny),
            ("tenant deny rule, default allow", (Allow, &[], &["a.test"]), None, "a.test", Deny),
            ("rule port mismatch falls to default", (Deny, &["a.test:8443"], &[]), None, "a.test", Deny),
            ("agent allow beats tenant deny", (Allow, &[], &["a.test"]), Some((Allow, &["a.test"], &[])), "a.test", Allow),
            ("agent deny beats tenant allow", (Deny, &["a.test"], &[]), Some((Allow, &[], &["a.test"])), "a.test", Deny),
            ("agent deny beats agent allow", (Allow, &[], &[]), Some((Allow, &["a.test"], &["a.test"])), "a.test", Deny),
            ("agent rule for another host: tenant decides", (Deny, &["a.test"], &[]), Some((Deny, &["b.test"], &[])), "a.test", Allow),
            ("defaults: tenant deny, agent allow -> deny", (Deny, &[], &[]), Some((Allow, &[], &[])), "a.test", Deny),
            ("defaults: tenant allow, agent deny -> deny", (Allow, &[], &[]), Some((Deny, &[], &[])), "a.test", Deny),
            ("defaults: both allow -> allow", (Allow, &[], &[]), Some((Allow, &[], &[])), "a.test", Allow),
            ("agent allow opens a default-deny tenant", (Deny, &[], &[]), Some((Allow, &["a.test"], &[])), "a.test", Allow),
        ];
        for (name, tenant, agent, host, expected) in table {
            let t = policy(tenant.0, tenant.1, tenant.2);
            let a = agent.map(|a| policy(a.0, a.1, a.2));
            let decision = LayeredPolicy::new(t, a).decide(host, 443);
            assert_eq!(decision.action, *expected, "{name}: {decision:?}");
        }
        // The basis names the deciding layer and pattern.
        let pol = LayeredPolicy::new(
            policy(Allow, &[], &["a.test"]),
            Some(policy(Allow, &["a.test"], &[])),
        );
        assert_eq!(
            pol.decide("a.test", 443).basis,
            Basis::Rule {
                layer: Layer::Agent,
                pattern: p("a.test")
            }
        );
    }

    #[test]
    fn host_normalisation() {
        for (input, expected) in [
            ("API.Example.COM", Some("api.example.com")),
            ("api.example.com.", Some("api.example.com")),
            ("_acme.example.com", Some("_acme.example.com")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("[::ffff:127.0.0.1]", Some("::ffff:127.0.0.1")),
            ("", None),
            (".", None),
            ("a..b", None),
            ("2130706433", None),
            ("127.1", None),
            ("0x7f.0x1", None),
            ("evil.com/x", None),
            ("evil.com:443", None),
            ("evil com", None),
            ("bücher.example", None),
        ] {
            let got = Target::parse(input).ok().map(|t| t.to_string());
            assert_eq!(got.as_deref(), expected, "{input:?}");
        }
        let too_long = format!("{}.com", "a.".repeat(130));
        assert!(Target::parse(&too_long).is_err());
        assert_eq!(
            Target::parse("2130706433").unwrap_err().code(),
            ErrorCode::HostNotAllowed
        );
    }

    #[test]
    fn sni_and_host_header() {
        for (connect, sni, ok) in [
            ("api.example.com", "api.example.com", true),
            ("api.example.com:443", "api.example.com", true),
            ("API.example.com.:443", "api.example.com", true),
            ("api.example.com", "API.EXAMPLE.COM.", true),
            ("api.example.com:443", "evil.example.com", false),
            ("api.example.com:443", "api.example.com.evil.net", false),
            ("api.example.com:https", "api.example.com", false),
            ("api.example.com:99999", "api.example.com", false),
            ("127.0.0.1:443", "127.0.0.1", true),
            ("[::1]:443", "::1", true),
            ("[::1]", "0:0:0:0:0:0:0:1", true),
            ("::1", "::1", true),
            ("127.0.0.1:443", "localhost", false),
            ("api.example.com", "", false),
            ("", "", false),
            ("api.example.com", "api.example.com:443", false),
        ] {
            let got = check_sni_matches_host(connect, sni);
            assert_eq!(got.is_ok(), ok, "{connect} / {sni}: {got:?}");
            if let Err(r) = got {
                assert_eq!(r.code(), ErrorCode::DestinationForbidden);
            }
        }
        for (sni, host, ok) in [
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "api.example.com:443", true),
            ("api.example.com", "API.Example.Com.:8443", true),
            ("api.example.com", "other.example.com", false),
            ("api.example.com", "api.example.com:", false),
            ("api.example.com", "api.example.com:x", false),
            ("api.example.com", "api.example.com@evil.com", false),
            ("::1", "[::1]:443", true),
            ("api.example.com", "", false),
        ] {
            let got = check_host_header(sni, host);
            assert_eq!(got.is_ok(), ok, "{sni} / {host}: {got:?}");
            if let Err(r) = got {
                assert_eq!(r.code(), ErrorCode::DestinationForbidden);
            }
        }
    }

    /// Answers from a script, one list per call; counts calls.
    struct Scripted {
        answers: Mutex<VecDeque<io::Result<Vec<SocketAddr>>>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(answers: Vec<io::Result<Vec<SocketAddr>>>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into()),
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Resolver for Scripted {
        fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> ResolveFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Ok(Vec::new()));
            Box::pin(async move { next })
        }
    }

    #[tokio::test]
    async fn denied_host_is_never_resolved() {
        let resolver = Scripted::new(vec![Ok(vec![sa("93.184.216.34", 443)])]);
        let guard = EgressGuard::new(resolver.clone());
        let pol = LayeredPolicy::tenant(policy(Action::Allow, &[], &["*.exfil.test"]));
        let err = guard
            .check(&pol, "c2VjcmV0.exfil.test", 443)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::HostNotAllowed);
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
        // An IP literal is not resolved either.
        let dest = guard
            .check(&allow_default(), "93.184.216.34", 443)
            .await
            .unwrap();
        assert_eq!(dest.addrs(), [sa("93.184.216.34", 443)]);
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn resolution_failures() {
        let resolver = Scripted::new(vec![Err(io::Error::other("NXDOMAIN")), Ok(Vec::new())]);
        let guard = EgressGuard::new(resolver);
        let pol = allow_default();
        let e = guard.check(&pol, "nx.test", 443).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::UpstreamUnavailable);
        assert!(e.to_string().contains("nx.test"), "{e}");
        let e = guard.check(&pol, "empty.test", 443).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::UpstreamUnavailable);

        struct Never;
        impl Resolver for Never {
            fn resolve<'a>(&'a self, _: &'a str, _: u16) -> ResolveFuture<'a> {
                Box::pin(std::future::pending())
            }
        }
        let guard =
            EgressGuard::new(Arc::new(Never)).with_resolve_timeout(Duration::from_millis(10));
        let e = guard.check(&pol, "slow.test", 443).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::UpstreamTimeout);
    }

    /// DNS rebinding without sockets: the first answer is checked and kept; the connector has
    /// only that answer; a later check sees the forbidden one and refuses it.
    #[tokio::test]
    async fn rebinding_keeps_the_checked_answer() {
        for evil in [
            "169.254.169.254",
            "127.0.0.1",
            "::ffff:169.254.169.254",
            "10.0.0.1",
        ] {
            let resolver = Scripted::new(vec![
                Ok(vec![sa("93.184.216.34", 443)]),
                Ok(vec![sa(evil, 443)]),
                Ok(vec![sa(evil, 443)]),
            ]);
            let guard = EgressGuard::new(resolver.clone());
            let pol = allow_default();
            let dest = guard.check(&pol, "rebind.test", 443).await.unwrap();
            let connector = CheckedConnector::new(dest);
            assert_eq!(connector.destination().addrs(), [sa("93.184.216.34", 443)]);
            // The resolver now answers `evil`; the connector never asks it.
            let again = guard.check(&pol, "rebind.test", 443).await.unwrap_err();
            assert_eq!(again.code(), ErrorCode::DestinationForbidden, "{evil}");
            assert_eq!(connector.destination().addrs(), [sa("93.184.216.34", 443)]);
            assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
        }
    }

    #[tokio::test]
    async fn connector_refuses_other_hosts() {
        let resolver = Scripted::new(vec![Ok(vec![sa("93.184.216.34", 443)])]);
        let guard = EgressGuard::new(resolver);
        let dest = guard
            .check(&allow_default(), "api.example.com", 443)
            .await
            .unwrap();
        let mut connector = CheckedConnector::new(dest);
        use tower_service::Service as _;
        for uri in [
            "https://evil.example.com/",
            "https://api.example.com:8443/",
            "http://api.example.com/",
            "https://169.254.169.254/",
        ] {
            let err = connector.call(uri.parse().unwrap()).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::DestinationForbidden, "{uri}");
            assert!(matches!(err, ConnectError::Misdirected { .. }), "{uri}");
        }
    }

    // --- property tests ---------------------------------------------------------------------

    /// An independent oracle: CIDR strings, parsed here, not the classifier's tables.
    const FORBIDDEN_V4: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "168.63.129.16/32",
    ];
    const FORBIDDEN_V6: &[&str] = &[
        "2001::/32",
        "2001:2::/48",
        "2001:10::/28",
        "2001:20::/28",
        "2001:db8::/32",
        "3fff::/20",
    ];

    fn cidr_v4(s: &str) -> (u32, u32) {
        let (net, len) = s.split_once('/').unwrap();
        (
            u32::from(net.parse::<Ipv4Addr>().unwrap()),
            len.parse().unwrap(),
        )
    }

    fn cidr_v6(s: &str) -> (u128, u32) {
        let (net, len) = s.split_once('/').unwrap();
        (
            u128::from(net.parse::<Ipv6Addr>().unwrap()),
            len.parse().unwrap(),
        )
    }

    fn within(addr: u128, net: u128, len: u32, width: u32) -> bool {
        len == 0 || (addr ^ net) >> (width - len) == 0
    }

    fn oracle_v4_forbidden(a: u32) -> bool {
        FORBIDDEN_V4.iter().any(|c| {
            let (net, len) = cidr_v4(c);
            within(u128::from(a), u128::from(net), len, 32)
        })
    }

    fn oracle_forbidden(addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(v4) => oracle_v4_forbidden(u32::from(v4)),
            IpAddr::V6(v6) => {
                let a = u128::from(v6);
                let low32 = (a & 0xffff_ffff) as u32;
                let top96 = a >> 32;
                if top96 == 0
                    || top96 == 0xffff
                    || top96 == 0xffff_0000
                    || top96 == (0x64_ff9b << 64)
                {
                    return oracle_v4_forbidden(low32);
                }
                if a >> 112 == 0x2002 {
                    return oracle_v4_forbidden(((a >> 80) & 0xffff_ffff) as u32);
                }
                a >> 125 != 0b001
                    || FORBIDDEN_V6.iter().any(|c| {
                        let (net, len) = cidr_v6(c);
                        within(a, net, len, 128)
                    })
            }
        }
    }

    /// A v4 address inside one of the forbidden ranges.
    fn forbidden_v4() -> impl Strategy<Value = Ipv4Addr> {
        (0..FORBIDDEN_V4.len(), any::<u32>()).prop_map(|(i, bits)| {
            let (net, len) = cidr_v4(FORBIDDEN_V4[i]);
            let host_mask = u32::MAX.checked_shr(len).unwrap_or(0);
            Ipv4Addr::from((net & !host_mask) | (bits & host_mask))
        })
    }

    /// The same v4 address in every embedding the guard understands.
    fn embed(v4: Ipv4Addr, form: u8) -> IpAddr {
        let v = u128::from(u32::from(v4));
        IpAddr::V6(Ipv6Addr::from(match form {
            0 => return IpAddr::V4(v4),
            1 => (0xffff << 32) | v,
            2 => v,
            3 => (0xffff_0000 << 32) | v,
            4 => (0x64_ff9b << 96) | v,
            _ => (0x2002 << 112) | (v << 80) | 0x1,
        }))
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            // Mostly global unicast, where the interesting exceptions live.
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from((a >> 3) | (1 << 125)))),
            (any::<u32>(), 0u8..6).prop_map(|(a, f)| embed(Ipv4Addr::from(a), f)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No address in a forbidden range, in any form, is returned without a rule.
        #[test]
        fn forbidden_never_returned_without_rule(v4 in forbidden_v4(), form in 0u8..6, wildcard in any::<bool>()) {
            let addr = embed(v4, form);
            // Default allow, and a wildcard rule for the host: neither unlocks.
            let allow: &[&str] = if wildcard { &["*.example.com"] } else { &[] };
            let pol = LayeredPolicy::tenant(policy(Action::Allow, allow, &[]));
            let got = pol.check_answers("svc.example.com", 443, &[SocketAddr::new(addr, 443)]);
            prop_assert!(got.is_err(), "{addr} was returned");
            prop_assert!(classify(addr).is_forbidden());
        }

        /// Whatever the address, it is returned only if the oracle calls it public.
        #[test]
        fn returned_only_if_public(addr in any_ip()) {
            let pol = allow_default();
            let got = pol.check_answers("svc.example.com", 443, &[SocketAddr::new(addr, 443)]);
            prop_assert_eq!(got.is_ok(), !oracle_forbidden(addr), "{}", addr);
        }

        /// A literal rule unlocks exactly its address, never a neighbour.
        #[test]
        fn literal_rule_unlocks_only_itself(v4 in forbidden_v4(), other in forbidden_v4()) {
            prop_assume!(v4 != other);
            let class = classify(IpAddr::V4(v4));
            prop_assume!(!matches!(class, AddressClass::Unspecified | AddressClass::Multicast | AddressClass::Broadcast));
            let pol = LayeredPolicy::tenant(policy(Action::Allow, &[&v4.to_string()], &[]));
            let ok = pol.check_answers("svc.example.com", 443, &[SocketAddr::new(IpAddr::V4(v4), 443)]);
            prop_assert!(ok.is_ok());
            let refused = pol.check_answers("svc.example.com", 443, &[SocketAddr::new(IpAddr::V4(other), 443)]);
            prop_assert!(refused.is_err());
        }
    }
}

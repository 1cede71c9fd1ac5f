//! `decide` as a table: every denial code it can return, and the allow path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use proptest::prelude::*;
use sequester_crypto::{MasterKey, SecretValue, SecretVersionAad, TokenHash, seal_version};
use sequester_model::{
    Agent, AgentId, AgentName, ErrorCode, HostPattern, SecretId, SecretMeta, SecretName, Tenant,
    TenantId, TenantName, Timestamp, TokenId, TokenMeta,
};
use sequester_model::{SecretOrigin, TokenKind};
use sequester_policy::{Decision, Request, Snapshot, decide};
use sequester_store::{SealedVersion, SnapshotData, SnapshotSecret};
use std::sync::Arc;

const NOW: Timestamp = Timestamp::from_unix(2_000_000_000);

fn id<T>(f: fn([u8; 12]) -> T, n: u8) -> T {
    f([n; 12])
}

/// Tenants 1 and 2; in each an agent and a secret for `api.example.com`; tokens by name.
fn world(tweak: impl FnOnce(&mut SnapshotData)) -> Snapshot {
    let mut data = SnapshotData {
        counter: 1,
        tenants: vec![],
        agents: vec![],
        secrets: vec![],
        tokens: vec![],
        agent_keys: vec![],
        services: vec![],
        egress_rules: vec![],
    };
    for t in [1u8, 2] {
        let tenant = Tenant {
            id: id(TenantId::from_random, t),
            name: TenantName::parse(&format!("t{t}")).unwrap(),
            created_at: NOW,
        };
        let (key, _) = MasterKey::generate()
            .new_data_key(tenant.id.as_str())
            .unwrap();
        let agent = Agent {
            id: id(AgentId::from_random, t),
            tenant_id: tenant.id.clone(),
            name: AgentName::parse("bot").unwrap(),
            created_at: NOW,
            disabled_at: None,
        };
        let secret = SecretMeta {
            id: id(SecretId::from_random, t),
            tenant_id: tenant.id.clone(),
            name: SecretName::parse("S").unwrap(),
            hosts: vec![
                HostPattern::parse("api.example.com").unwrap(),
                HostPattern::parse("*.example.org:8443").unwrap(),
            ],
            injection: None,
            current_version: 1,
            created_at: NOW,
            rotated_at: None,
            expires_at: None,
            revoked_at: None,
            origin: SecretOrigin::Admin,
            env_var: None,
            body_substitution: false,
        };
        let sealed = seal_version(
            &key,
            &SecretVersionAad {
                tenant_id: tenant.id.as_str(),
                secret_id: secret.id.as_str(),
                secret_name: "S",
                version: 1,
            },
            &SecretValue::new(format!("value-of-tenant-{t}").into_bytes()),
        )
        .unwrap();
        data.tokens.push((
            TokenHash::of(&format!("token-{t}")),
            TokenMeta {
                id: id(TokenId::from_random, t),
                kind: TokenKind::Token,
                tenant_id: tenant.id.clone(),
                agent_id: agent.id.clone(),
                agent: agent.name.clone(),
                secret_id: secret.id.clone(),
                secret: secret.name.clone(),
                created_at: NOW,
                expires_at: None,
                revoked_at: None,
            },
        ));
        data.secrets.push(SnapshotSecret {
            meta: secret,
            versions: vec![SealedVersion {
                version: 1,
                sealed,
                retired_at: None,
                usable_until: None,
            }],
        });
        data.agents.push(agent);
        data.tenants.push((tenant, Arc::new(key)));
    }
    tweak(&mut data);
    Snapshot::build(data)
}

fn ask(snap: &Snapshot, token: &str, host: &str, port: u16) -> Result<Vec<u8>, ErrorCode> {
    let hash = TokenHash::of(token);
    let req = Request {
        token: &hash,
        host,
        port,
        method: "GET",
        path: "/",
        now: NOW,
    };
    match decide(snap, &req) {
        Decision::Allow(grant) => {
            let v = grant.open().unwrap();
            #[expect(
                clippy::disallowed_methods,
                reason = "the test checks which value would be injected"
            )]
            let bytes = v.expose().to_vec();
            Ok(bytes)
        }
        Decision::Deny(d) => Err(d.code),
    }
}

#[test]
fn table_of_decisions() {
    let past = Timestamp::from_unix(NOW.unix() - 1);
    type Tweak = Box<dyn FnOnce(&mut SnapshotData)>;
    // (case, change to the world, token, host, port, expected value or denial)
    type Case = (
        &'static str,
        Tweak,
        &'static str,
        &'static str,
        u16,
        Result<&'static [u8], ErrorCode>,
    );
    let cases: Vec<Case> = vec![
        (
            "allow",
            Box::new(|_| {}),
            "token-1",
            "api.example.com",
            443,
            Ok(b"value-of-tenant-1"),
        ),
        (
            "allow other tenant",
            Box::new(|_| {}),
            "token-2",
            "api.example.com",
            443,
            Ok(b"value-of-tenant-2"),
        ),
        (
            "case-insensitive host",
            Box::new(|_| {}),
            "token-1",
            "API.Example.COM",
            443,
            Ok(b"value-of-tenant-1"),
        ),
        (
            "wildcard host with port",
            Box::new(|_| {}),
            "token-1",
            "a.example.org",
            8443,
            Ok(b"value-of-tenant-1"),
        ),
        (
            "wildcard wrong port",
            Box::new(|_| {}),
            "token-1",
            "a.example.org",
            443,
            Err(ErrorCode::HostNotAllowed),
        ),
        (
            "unknown token",
            Box::new(|_| {}),
            "token-3",
            "api.example.com",
            443,
            Err(ErrorCode::UnknownToken),
        ),
        (
            "other host",
            Box::new(|_| {}),
            "token-1",
            "evil.example.net",
            443,
            Err(ErrorCode::HostNotAllowed),
        ),
        (
            "suffix trick",
            Box::new(|_| {}),
            "token-1",
            "api.example.com.evil.net",
            443,
            Err(ErrorCode::HostNotAllowed),
        ),
        (
            "token revoked",
            Box::new(move |d| d.tokens[0].1.revoked_at = Some(past)),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::TokenRevoked),
        ),
        (
            "token expired",
            Box::new(move |d| d.tokens[0].1.expires_at = Some(NOW)),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::TokenExpired),
        ),
        (
            "token not yet expired",
            Box::new(|d| d.tokens[0].1.expires_at = Some(Timestamp::from_unix(NOW.unix() + 1))),
            "token-1",
            "api.example.com",
            443,
            Ok(b"value-of-tenant-1"),
        ),
        (
            "agent disabled",
            Box::new(move |d| d.agents[0].disabled_at = Some(past)),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::AgentDisabled),
        ),
        (
            "secret revoked",
            Box::new(move |d| d.secrets[0].meta.revoked_at = Some(past)),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::SecretRevoked),
        ),
        (
            "secret expired",
            Box::new(move |d| d.secrets[0].meta.expires_at = Some(NOW)),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::SecretExpired),
        ),
        (
            "revocation wins over a wrong host",
            Box::new(move |d| d.secrets[0].meta.revoked_at = Some(past)),
            "token-1",
            "evil.example.net",
            443,
            Err(ErrorCode::SecretRevoked),
        ),
        (
            "token pointing at another tenant's secret",
            Box::new(|d| d.tokens[0].1.secret_id = d.secrets[1].meta.id.clone()),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::UnknownToken),
        ),
        (
            "token pointing at another tenant's agent",
            Box::new(|d| d.tokens[0].1.agent_id = d.agents[1].id.clone()),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::UnknownToken),
        ),
        (
            "no current version",
            Box::new(|d| d.secrets[0].meta.current_version = 2),
            "token-1",
            "api.example.com",
            443,
            Err(ErrorCode::IntegrityFailure),
        ),
    ];
    for (name, tweak, token, host, port, want) in cases {
        let snap = world(tweak);
        let got = ask(&snap, token, host, port);
        assert_eq!(got, want.map(<[u8]>::to_vec), "case {name}");
    }
}

#[test]
fn the_empty_snapshot_denies_everything() {
    let snap = Snapshot::empty();
    assert_eq!(
        ask(&snap, "token-1", "api.example.com", 443),
        Err(ErrorCode::UnknownToken)
    );
}

proptest! {
    /// Whatever the destination, a token's value only goes to hosts its secret allows.
    #[test]
    fn never_allows_a_host_outside_the_patterns(host in "[a-z0-9.-]{1,30}", port in 1u16..) {
        let snap = world(|_| {});
        let allowed = HostPattern::parse("api.example.com").unwrap().matches(&host, port)
            || HostPattern::parse("*.example.org:8443").unwrap().matches(&host, port);
        let got = ask(&snap, "token-1", &host, port);
        prop_assert_eq!(got.is_ok(), allowed);
        if !allowed {
            prop_assert_eq!(got, Err(ErrorCode::HostNotAllowed));
        }
    }
}

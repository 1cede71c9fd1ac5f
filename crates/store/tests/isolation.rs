//! Tenant isolation, as a property: whatever names two tenants use, nothing reached through
//! tenant A's calls or tokens ever resolves to tenant B's agents, secrets, tokens or values.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod common;

use common::*;
use proptest::prelude::*;
use sequester_model::{AgentName, ErrorCode, SecretName, TenantName};
use sequester_store::Store;
use std::collections::BTreeSet;
use std::time::Duration;

fn names() -> impl Strategy<Value = BTreeSet<String>> {
    // A small alphabet so that the two tenants often share names.
    proptest::collection::btree_set("[a-c][a-c0-1]{0,2}", 1..5)
}

fn run(
    a_agents: BTreeSet<String>,
    a_secrets: BTreeSet<String>,
    b_agents: BTreeSet<String>,
    b_secrets: BTreeSet<String>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tmp = tempfile::tempdir().unwrap();
        let (_data, store, a) = init(tmp.path()).await;
        let b = store
            .create_tenant(&TenantName::parse("b").unwrap(), T0)
            .await
            .unwrap()
            .id;

        let value_of = |tenant: &str, secret: &str| format!("{tenant}-value-{secret}");
        let mut tokens = Vec::new();
        for (tenant, tname, agents, secrets) in [
            (&a, "a", &a_agents, &a_secrets),
            (&b, "b", &b_agents, &b_secrets),
        ] {
            for ag in agents {
                store
                    .create_agent(tenant, &AgentName::parse(ag).unwrap(), T0)
                    .await
                    .unwrap();
            }
            for s in secrets {
                store
                    .add_secret(
                        tenant,
                        &new_secret(s, &format!("{tname}.example.com")),
                        value(&value_of(tname, s)),
                        T0,
                    )
                    .await
                    .unwrap();
                for ag in agents {
                    let (token, meta) = store
                        .issue_token(
                            tenant,
                            &AgentName::parse(ag).unwrap(),
                            &SecretName::parse(s).unwrap(),
                            None,
                            T0,
                        )
                        .await
                        .unwrap();
                    tokens.push((tname, token, meta));
                }
            }
        }

        // Every token resolves within its own tenant, to its own tenant's value.
        for (tname, token, meta) in &tokens {
            let found = store.find_token(&token.hash()).await.unwrap().unwrap();
            assert_eq!(&found, meta);
            let own = if *tname == "a" { &a } else { &b };
            assert_eq!(&found.tenant_id, own);
            let secret = store.secret(own, &found.secret).await.unwrap();
            assert_eq!(secret.id, found.secret_id);
            assert_eq!(secret.tenant_id, *own);
            let opened = store.open_usable(own, &found.secret, T0).await.unwrap();
            assert_eq!(
                bytes(&opened[0].value),
                value_of(tname, found.secret.as_str()).as_bytes()
            );
        }

        // Names that exist only in B are invisible through A, through every call.
        for s in b_secrets.difference(&a_secrets) {
            let name = SecretName::parse(s).unwrap();
            assert_eq!(
                store.secret(&a, &name).await.err().unwrap().code(),
                ErrorCode::SecretNotFound
            );
            assert_eq!(
                store.open_usable(&a, &name, T0).await.err().unwrap().code(),
                ErrorCode::SecretNotFound
            );
            assert_eq!(
                store.secret_history(&a, &name).await.err().unwrap().code(),
                ErrorCode::SecretNotFound
            );
            assert_eq!(
                store
                    .rotate_secret(&a, &name, value("evil"), Duration::ZERO, T0)
                    .await
                    .err()
                    .unwrap()
                    .code(),
                ErrorCode::SecretNotFound
            );
            assert_eq!(
                store
                    .revoke_secret(&a, &name, T0)
                    .await
                    .err()
                    .unwrap()
                    .code(),
                ErrorCode::SecretNotFound
            );
            assert_eq!(
                store.remove_secret(&a, &name).await.err().unwrap().code(),
                ErrorCode::SecretNotFound
            );
            for ag in &a_agents {
                assert_eq!(
                    store
                        .issue_token(&a, &AgentName::parse(ag).unwrap(), &name, None, T0)
                        .await
                        .err()
                        .unwrap()
                        .code(),
                    ErrorCode::SecretNotFound
                );
            }
        }
        for ag in b_agents.difference(&a_agents) {
            let name = AgentName::parse(ag).unwrap();
            assert_eq!(
                store.agent(&a, &name).await.err().unwrap().code(),
                ErrorCode::AgentNotFound
            );
            assert_eq!(
                store
                    .disable_agent(&a, &name, T0)
                    .await
                    .err()
                    .unwrap()
                    .code(),
                ErrorCode::AgentNotFound
            );
            for s in &a_secrets {
                assert_eq!(
                    store
                        .issue_token(&a, &name, &SecretName::parse(s).unwrap(), None, T0)
                        .await
                        .err()
                        .unwrap()
                        .code(),
                    ErrorCode::AgentNotFound
                );
            }
        }
        // B's tokens cannot be revoked through A.
        for (tname, _, meta) in tokens.iter().filter(|(t, _, _)| *t == "b") {
            assert_eq!(*tname, "b");
            assert_eq!(
                store
                    .revoke_token(&a, &meta.id, T0)
                    .await
                    .err()
                    .unwrap()
                    .code(),
                ErrorCode::TokenNotFound
            );
        }

        // Listings stay within their tenant.
        assert!(
            store
                .list_secrets(&a)
                .await
                .unwrap()
                .iter()
                .all(|s| s.tenant_id == a)
        );
        assert!(
            store
                .list_agents(&a)
                .await
                .unwrap()
                .iter()
                .all(|s| s.tenant_id == a)
        );
        assert!(
            store
                .list_tokens(&a)
                .await
                .unwrap()
                .iter()
                .all(|t| t.tenant_id == a)
        );
        assert_eq!(store.list_secrets(&a).await.unwrap().len(), a_secrets.len());
        assert_eq!(
            store.list_tokens(&b).await.unwrap().len(),
            b_agents.len() * b_secrets.len()
        );

        // After all of A's attempts, B is untouched: every B token works and opens B's value.
        for (tname, token, meta) in tokens.iter().filter(|(t, _, _)| *t == "b") {
            let found = store.find_token(&token.hash()).await.unwrap().unwrap();
            assert_eq!(found.revoked_at, None);
            let opened = store.open_usable(&b, &meta.secret, T0).await.unwrap();
            assert_eq!(opened.len(), 1);
            assert_eq!(
                bytes(&opened[0].value),
                value_of(tname, meta.secret.as_str()).as_bytes()
            );
        }
        store.close().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn tenants_never_resolve_each_others_secrets(
        a_agents in names(), a_secrets in names(), b_agents in names(), b_secrets in names()
    ) {
        run(a_agents, a_secrets, b_agents, b_secrets);
    }
}

#[test]
fn the_schema_refuses_a_cross_tenant_grant() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let (data, store, a) = init(tmp.path()).await;
        let b = store.create_tenant(&TenantName::parse("b").unwrap(), T0).await.unwrap().id;
        let agent = store.create_agent(&a, &AgentName::parse("bot").unwrap(), T0).await.unwrap();
        let secret = store.add_secret(&b, &new_secret("S", "b.example.com"), value("b-value"), T0).await.unwrap();
        store.close().await;
        // Even a hand-written row cannot tie A's agent to B's secret.
        let pool = raw_pool(&data.database_path()).await;
        sqlx::query("PRAGMA foreign_keys = ON").execute(&pool).await.unwrap();
        for tenant in [&a, &b] {
            let err = sqlx::query("INSERT INTO grants (tenant_id, agent_id, secret_id, created_at) VALUES (?, ?, ?, 0)")
                .bind(tenant.as_str())
                .bind(agent.id.as_str())
                .bind(secret.id.as_str())
                .execute(&pool)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        }
        pool.close().await;
    });
}

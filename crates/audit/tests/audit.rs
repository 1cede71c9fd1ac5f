//! The group-commit writer and chain verification against a real SQLite store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use sequester_audit::{AuditWriter, Decision, Kind, Mode, Receipt, VerifyError, verify};
use sequester_model::{TenantName, Timestamp};
use sequester_store::{DataDir, KeyMode, SqliteStore, Store, StoreError};
use std::sync::Arc;
use zeroize::Zeroizing;

fn no_passphrase(_: bool) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Err(StoreError::PassphraseRequired)
}

async fn store(dir: &std::path::Path) -> (DataDir, Arc<SqliteStore>, String) {
    let data = DataDir::new(dir.join("data"));
    let store = data
        .init(
            KeyMode::KeyFile,
            &no_passphrase,
            Timestamp::from_unix(1_800_000_000),
        )
        .await
        .unwrap();
    let tenant = store
        .tenant(&TenantName::default_tenant())
        .await
        .unwrap()
        .id
        .to_string();
    (data, Arc::new(store), tenant)
}

fn receipt(tenant: &str, i: u64, kind: Kind) -> Receipt {
    Receipt {
        kind,
        request_id: format!("req-{i}"),
        at_ms: 1_800_000_000_000 + i64::try_from(i).unwrap(),
        tenant_id: tenant.to_owned(),
        agent: Some("bot".into()),
        agent_id: Some("agt_1".into()),
        token_id: Some("tok_1".into()),
        secret: Some("openai".into()),
        secret_version: Some(1),
        mode: Mode::Gateway,
        service: Some("openai".into()),
        method: "POST".into(),
        host: "api.openai.com".into(),
        path: "/v1/chat/completions".into(),
        decision: if kind == Kind::Denial {
            Decision::Deny
        } else {
            Decision::Allow
        },
        code: (kind == Kind::Denial).then(|| "host_not_allowed".into()),
        status: (kind == Kind::Completion).then_some(200),
        upstream_ms: None,
        total_ms: None,
        bytes_in: None,
        bytes_out: None,
        run_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_receipts_are_batched_and_chained() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = store(tmp.path()).await;
    let (writer, handle) = AuditWriter::start(store.clone());
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let writer = writer.clone();
        let r = receipt(&tenant, i, Kind::Intent);
        tasks.push(tokio::spawn(async move { writer.record_durable(&r).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    writer.record(&receipt(&tenant, 999, Kind::Denial)).await;
    drop(writer);
    handle.await.unwrap();
    let report = verify(store.as_ref()).await.unwrap();
    assert_eq!(report.records, 201);
    let ids: std::collections::HashSet<String> = store
        .receipt_chain(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.receipt.request_id)
        .collect();
    assert_eq!(ids.len(), 201);
}

async fn tamper(data: &DataDir, sql: &str) {
    use sqlx::Connection as _;
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", data.database_path().display()))
            .await
            .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn verify_catches_edits_removals_and_reordering() {
    for (attack, sql, want_seq) in [
        (
            "edit",
            "UPDATE receipts SET body = replace(body, 'api.openai.com', 'evil.example') WHERE seq = 3",
            3,
        ),
        (
            "edit a column",
            "UPDATE receipts SET secret = 'other' WHERE seq = 2",
            2,
        ),
        ("delete middle", "DELETE FROM receipts WHERE seq = 2", 2),
        ("delete tail", "DELETE FROM receipts WHERE seq = 5", 4),
        (
            "swap",
            "UPDATE receipts SET body = CASE seq WHEN 2 THEN (SELECT body FROM receipts WHERE seq = 3) ELSE (SELECT body FROM receipts WHERE seq = 2) END, hash = CASE seq WHEN 2 THEN (SELECT hash FROM receipts WHERE seq = 3) ELSE (SELECT hash FROM receipts WHERE seq = 2) END WHERE seq IN (2, 3)",
            2,
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (data, store, tenant) = store(tmp.path()).await;
        let (writer, handle) = AuditWriter::start(store.clone());
        for i in 1..=5 {
            writer
                .record_durable(&receipt(&tenant, i, Kind::Intent))
                .await
                .unwrap();
        }
        drop(writer);
        handle.await.unwrap();
        assert_eq!(verify(store.as_ref()).await.unwrap().records, 5);
        store.close().await;
        tamper(&data, sql).await;
        let store = data
            .open(&no_passphrase, Timestamp::from_unix(1_800_000_000))
            .await
            .unwrap();
        match verify(&store).await {
            Err(VerifyError::Broken { seq, reason }) => {
                assert_eq!(seq, want_seq, "{attack}: {reason}");
            }
            other => panic!("{attack}: verify returned {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unwritable_store_fails_durable_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, store, tenant) = store(tmp.path()).await;
    let (writer, handle) = AuditWriter::start(store.clone());
    writer
        .record_durable(&receipt(&tenant, 1, Kind::Intent))
        .await
        .unwrap();
    // Every insert into the receipts table now fails, as on a full or failing disk.
    tamper(
        &data,
        "CREATE TRIGGER refuse BEFORE INSERT ON receipts BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )
    .await;
    let err = writer
        .record_durable(&receipt(&tenant, 2, Kind::Intent))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be written"), "{err}");
    // Nothing of the failed batch was written: the chain still ends at the first receipt.
    tamper(&data, "DROP TRIGGER refuse").await;
    writer
        .record_durable(&receipt(&tenant, 3, Kind::Intent))
        .await
        .unwrap();
    drop(writer);
    handle.await.unwrap();
    let chain = store.receipt_chain(0, 10).await.unwrap();
    let ids: Vec<&str> = chain
        .iter()
        .map(|r| r.receipt.request_id.as_str())
        .collect();
    assert_eq!(ids, ["req-1", "req-3"]);
    assert_eq!(verify(store.as_ref()).await.unwrap().records, 2);
}

#[tokio::test]
async fn the_thread_appender_and_the_async_append_share_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = store(tmp.path()).await;
    let mut appender = store
        .receipt_appender()
        .unwrap()
        .expect("SQLite has a thread appender");
    for i in 0..12u64 {
        let rows = [
            receipt(&tenant, 2 * i, Kind::Intent).to_row().unwrap(),
            receipt(&tenant, 2 * i + 1, Kind::Completion)
                .to_row()
                .unwrap(),
        ];
        if i % 3 == 0 {
            store.append_receipts(&rows).await.unwrap();
        } else {
            appender.append(&rows).unwrap();
        }
    }
    appender.append(&[]).unwrap();
    let report = verify(store.as_ref()).await.unwrap();
    assert_eq!(report.records, 24);
    let chain = store.receipt_chain(0, 100).await.unwrap();
    assert!(
        chain
            .iter()
            .enumerate()
            .all(|(i, r)| r.receipt.request_id == format!("req-{i}")),
        "receipts out of order"
    );
    let head = store.receipt_head().await.unwrap().unwrap();
    assert_eq!(head.0, 24);
}

/// A receipt nobody waits for (a completion) does not cost a commit of its own when an intent
/// follows soon: both go in the intent's commit. (Without riding along, each completion would
/// be committed alone by the idle writer: 40 commits. A few may still go alone if this test's
/// thread stalls past the ride-along window between the two sends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_ride_along_with_the_next_intent() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = store(tmp.path()).await;
    let (writer, handle) = AuditWriter::start(store.clone());
    for i in 0..20u64 {
        writer
            .record(&receipt(&tenant, 1000 + i, Kind::Completion))
            .await;
        // Time for the writer to take the completion alone.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        writer
            .record_durable(&receipt(&tenant, i, Kind::Intent))
            .await
            .unwrap();
    }
    let stats = writer.stats();
    assert_eq!((stats.receipts, stats.durable), (40, 20));
    assert!(
        stats.batches <= 24,
        "{} commits for 20 pairs",
        stats.batches
    );
    drop(writer);
    handle.await.unwrap();
    assert_eq!(verify(store.as_ref()).await.unwrap().records, 40);
}

/// With no intent coming, a receipt nobody waits for is still committed soon, without the
/// writer being stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_completion_is_committed_without_an_intent() {
    let tmp = tempfile::tempdir().unwrap();
    let (_data, store, tenant) = store(tmp.path()).await;
    let (writer, handle) = AuditWriter::start(store.clone());
    writer.record(&receipt(&tenant, 1, Kind::Denial)).await;
    let started = std::time::Instant::now();
    while store.receipt_chain(0, 10).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the denial was not committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(writer.stats().batches, 1);
    drop(writer);
    handle.await.unwrap();
}

//! What one receipt costs the audit writer: commits batches of gateway-sized receipts through
//! the SQLite appender, set up as `sequester serve` sets it up (its own connection, fsync'd
//! commits, a passive checkpointer every 100 ms, the WAL restarted past 32 MB), and reports
//! the writer thread's CPU time (user and system, from `/proc/thread-self/schedstat`) and the
//! wall time per commit and per receipt.
//!
//! ```text
//! cargo run --release -p sequester-store --example append_bench -- [BATCH] [COMMITS] [normal]
//! ```
//!
//! `BATCH` receipts per commit (default 25, what the gateway benchmark's 32 connections
//! produce), `COMMITS` commits (default 4000), `normal` for `[audit] sync = "normal"` (no
//! fsync per commit, SQLite's own checkpoints). The database lives in a temporary directory
//! next to the working directory (the disk, not a tmpfs).

use sequester_model::{TenantName, Timestamp};
use sequester_store::{DataDir, KeyMode, NewReceipt, Store as _, StoreError};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// CPU time of the whole process (every thread: the writer and the checkpointer), in clock
/// ticks of 10 ms.
fn process_cpu() -> Duration {
    let ticks: u64 = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn no_passphrase(_: bool) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Err(StoreError::PassphraseRequired)
}

// The checkpointer runs on the runtime's worker while the main thread appends.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let batch: usize = args.first().map_or(Ok(25), |a| a.parse())?;
    let commits: usize = args.get(1).map_or(Ok(4000), |a| a.parse())?;
    let normal = args.iter().any(|a| a == "normal");

    let tmp = tempfile::tempdir_in(".")?;
    let data = DataDir::new(tmp.path().join("data"));
    let store = data
        .init(
            KeyMode::KeyFile,
            &no_passphrase,
            Timestamp::from_unix(1_800_000_000),
        )
        .await?;
    let tenant = store.tenant(&TenantName::default_tenant()).await?.id;
    let audit = store.reopen().await?;
    let checkpointer = if normal {
        audit.relax_durability().await?;
        None
    } else {
        let c = store
            .start_checkpointer(Duration::from_millis(100), 256 * 1024 * 1024)
            .await?;
        audit.manual_checkpoints().await?;
        audit.restart_wal_above(32 * 1024 * 1024);
        Some(c)
    };
    let mut appender = audit
        .receipt_appender()?
        .ok_or("this store has no synchronous appender")?;

    // A gateway completion as the broker writes it (455 bytes of canonical JSON).
    let receipt = |i: usize| NewReceipt {
        tenant_id: tenant.clone(),
        at_ms: 1_796_583_616_348 + i as i64,
        kind: "completion".to_owned(),
        request_id: format!("req_{i:016x}"),
        agent: Some("bot".to_owned()),
        secret: Some("S".to_owned()),
        denied: false,
        body: format!(
            concat!(
                r#"{{"kind":"completion","request_id":"req_{:016x}","at_ms":{},"#,
                r#""tenant_id":"ten_7826497f756782069fd32cca","agent":"bot","#,
                r#""agent_id":"agt_d19ba682c65e03224c15c73c","token_id":"tok_b14643ba2fb46c9a5be4d2cd","#,
                r#""secret":"S","secret_version":1,"mode":"gateway","service":"up","method":"GET","#,
                r#""host":"127.0.0.1","path":"/up/json","decision":"allow","code":null,"status":200,"#,
                r#""upstream_ms":3,"total_ms":7,"bytes_in":0,"bytes_out":97,"run_id":null}}"#
            ),
            i,
            1_796_583_616_348 + i as i64
        ),
    };

    // Rows are made before the clock starts; the first tenth warms the log file up.
    let warm = commits / 10;
    let batches: Vec<Vec<NewReceipt>> = (0..commits)
        .map(|c| (0..batch).map(|i| receipt(c * batch + i)).collect())
        .collect();
    let mut lat = Vec::with_capacity(commits);
    let (mut cpu, mut all_cpu, mut wall) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (c, rows) in batches.iter().enumerate() {
        if c == warm {
            (cpu, all_cpu, wall) = (thread_cpu(), process_cpu(), Duration::ZERO);
        }
        let t0 = Instant::now();
        appender.append(rows)?;
        let took = t0.elapsed();
        if c >= warm {
            wall += took;
            lat.push(took);
        }
    }
    cpu = thread_cpu() - cpu;
    all_cpu = process_cpu() - all_cpu;
    lat.sort();
    let measured = lat.len().max(1);
    let per = |d: Duration, k: usize| d.as_secs_f64() * 1e6 / k as f64;
    println!(
        "batch {batch}, {measured} commits measured ({}): writer CPU {:.1} µs/commit = {:.2} µs/receipt \
         (whole process {:.2} µs/receipt); wall {:.1} µs/commit (p50 {:.3} ms, p99 {:.3} ms)",
        if normal { "sync normal" } else { "sync full" },
        per(cpu, measured),
        per(cpu, measured * batch),
        per(all_cpu, measured * batch),
        per(wall, measured),
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 99 / 100].as_secs_f64() * 1e3,
    );
    drop(appender);
    if let Some(c) = checkpointer {
        c.stop().await;
    }
    audit.close().await;
    store.close().await;
    Ok(())
}

use crate::Receipt;
use sequester_store::{NewReceipt, ReceiptAppender, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Most receipts committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Receipts that may wait for the writer before callers feel back-pressure.
const QUEUE: usize = 16 * 1024;

/// Why a receipt could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit store cannot be written: {0}")]
    Unavailable(String),
    #[error("the audit writer has stopped")]
    Stopped,
}

struct Job {
    row: NewReceipt,
    done: Option<oneshot::Sender<Result<(), AuditError>>>,
}

/// Upper bounds (seconds) of the commit-duration histogram in [`AuditStats`].
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds (receipts) of the batch-size histogram in [`AuditStats`].
pub const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// What the writer has done since it started, for metrics: how many batches and receipts it
/// committed, how long each commit took and how large batches were. Updated by the writer
/// alone, read at any time; counts are cumulative (Prometheus histogram buckets).
#[derive(Default)]
pub struct AuditStats {
    batches: AtomicU64,
    receipts: AtomicU64,
    /// Receipts a request waited for (intents).
    durable: AtomicU64,
    commit_nanos: AtomicU64,
    commit_le: [AtomicU64; COMMIT_BUCKETS.len()],
    batch_le: [AtomicU64; BATCH_BUCKETS.len()],
}

/// A copy of [`AuditStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditStatsSnapshot {
    pub batches: u64,
    pub receipts: u64,
    pub durable: u64,
    pub commit_seconds: f64,
    /// Cumulative counts per [`COMMIT_BUCKETS`] bound.
    pub commit_le: Vec<u64>,
    /// Cumulative counts per [`BATCH_BUCKETS`] bound.
    pub batch_le: Vec<u64>,
}

impl AuditStats {
    fn batch(&self, receipts: usize, durable: usize, took: std::time::Duration) {
        let add = |a: &AtomicU64, n: u64| a.fetch_add(n, Ordering::Relaxed);
        add(&self.batches, 1);
        add(&self.receipts, receipts as u64);
        add(&self.durable, durable as u64);
        add(
            &self.commit_nanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
        let secs = took.as_secs_f64();
        for (le, count) in COMMIT_BUCKETS.iter().zip(&self.commit_le) {
            if secs <= *le {
                add(count, 1);
            }
        }
        for (le, count) in BATCH_BUCKETS.iter().zip(&self.batch_le) {
            if receipts as u64 <= *le {
                add(count, 1);
            }
        }
    }

    pub fn snapshot(&self) -> AuditStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AuditStatsSnapshot {
            batches: get(&self.batches),
            receipts: get(&self.receipts),
            durable: get(&self.durable),
            commit_seconds: get(&self.commit_nanos) as f64 / 1e9,
            commit_le: self.commit_le.iter().map(get).collect(),
            batch_le: self.batch_le.iter().map(get).collect(),
        }
    }
}

/// The single writer of receipts. Cloning is cheap; all clones feed one task that commits
/// whatever has queued as one batch.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    stats: Arc<AuditStats>,
}

impl AuditWriter {
    /// Starts the writer task on the current runtime. It ends when every clone is dropped,
    /// after committing what is queued; await the handle to flush on shutdown.
    ///
    /// When the store offers a synchronous appender the writer runs on a blocking thread of its
    /// own, so a commit costs no async hand-offs; if opening the appender fails, it falls back
    /// to the store's async append.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(AuditStats::default());
        let writer_stats = Arc::clone(&stats);
        let handle = match store.receipt_appender() {
            Ok(Some(appender)) => tokio::task::spawn_blocking(move || {
                run_blocking(appender, rx, &writer_stats);
            }),
            Ok(None) => tokio::spawn(async move { run(store, rx, &writer_stats).await }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the receipt appender; receipts go through the async store");
                tokio::spawn(async move { run(store, rx, &writer_stats).await })
            }
        };
        (Self { tx, stats }, handle)
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> AuditStatsSnapshot {
        self.stats.snapshot()
    }

    fn job(receipt: &Receipt) -> Result<NewReceipt, AuditError> {
        receipt
            .to_row()
            .map_err(|e| AuditError::Unavailable(format!("cannot encode a receipt: {e}")))
    }

    /// Queues `receipt` and waits until it is committed. The data plane injects nothing
    /// before this returns `Ok`.
    pub async fn record_durable(&self, receipt: &Receipt) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                row: Self::job(receipt)?,
                done: Some(done),
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)?
    }

    /// Queues `receipt` from synchronous code (a response body finishing or being dropped)
    /// without waiting. If the queue is full the receipt is lost and logged as an error.
    pub fn record_nowait(&self, receipt: &Receipt) {
        match Self::job(receipt) {
            Ok(row) => {
                if let Err(e) = self.tx.try_send(Job { row, done: None }) {
                    tracing::error!(request_id = %receipt.request_id, error = %e, "receipt lost: audit queue full or stopped");
                }
            }
            Err(e) => tracing::error!(request_id = %receipt.request_id, error = %e, "receipt lost"),
        }
    }

    /// Queues `receipt` without waiting (completions and denials: nothing depends on them
    /// being durable first). A failure is logged by the writer.
    pub async fn record(&self, receipt: &Receipt) {
        match Self::job(receipt) {
            Ok(row) => {
                if self.tx.send(Job { row, done: None }).await.is_err() {
                    tracing::error!(request_id = %receipt.request_id, "audit writer stopped; receipt lost");
                }
            }
            Err(e) => tracing::error!(request_id = %receipt.request_id, error = %e, "receipt lost"),
        }
    }
}

/// A waiter for a batch's outcome (`None` for receipts nobody waits on).
type Waiter = Option<oneshot::Sender<Result<(), AuditError>>>;

/// `first` and everything queued behind it (up to [`MAX_BATCH`]): the rows to commit and who
/// waits for them.
fn next_batch(first: Job, rx: &mut mpsc::Receiver<Job>) -> (Vec<NewReceipt>, Vec<Waiter>) {
    let mut rows = vec![first.row];
    let mut waiters = vec![first.done];
    while rows.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => {
                rows.push(job.row);
                waiters.push(job.done);
            }
            Err(_) => break,
        }
    }
    (rows, waiters)
}

/// Tells every waiter of a committed (or failed) batch its outcome and counts the batch.
fn settle(
    result: Result<(), sequester_store::StoreError>,
    count: usize,
    waiters: Vec<Waiter>,
    started: Instant,
    stats: &AuditStats,
) {
    let result = result.map_err(|e| AuditError::Unavailable(e.to_string()));
    match &result {
        Ok(()) => {
            let durable = waiters.iter().filter(|w| w.is_some()).count();
            stats.batch(count, durable, started.elapsed());
        }
        Err(e) => {
            tracing::error!(error = %e, receipts = count, "receipts not written; requests waiting on them are denied");
        }
    }
    for done in waiters.into_iter().flatten() {
        let _ = done.send(result.clone());
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, stats: &AuditStats) {
    while let Some(first) = rx.recv().await {
        let (rows, waiters) = next_batch(first, &mut rx);
        let started = Instant::now();
        let result = store.append_receipts(&rows).await;
        settle(result, rows.len(), waiters, started, stats);
    }
}

fn run_blocking(
    mut appender: Box<dyn ReceiptAppender>,
    mut rx: mpsc::Receiver<Job>,
    stats: &AuditStats,
) {
    while let Some(first) = rx.blocking_recv() {
        let (rows, waiters) = next_batch(first, &mut rx);
        let started = Instant::now();
        let result = appender.append(&rows);
        settle(result, rows.len(), waiters, started, stats);
    }
}

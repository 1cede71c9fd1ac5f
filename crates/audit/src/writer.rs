use crate::Receipt;
use sequester_store::{NewReceipt, ReceiptAppender, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most receipts committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How long receipts nobody waits for (completions, denials) may stay queued for a commit
/// that someone does wait for (an intent), so that they do not cost a synced commit of their
/// own nor hold up, with one, the intent that arrives meanwhile. Past it (or at
/// [`RIDE_ALONG_ROWS`]) they are committed alone. Nothing is lost by waiting: the writer
/// commits what is queued when it stops.
const RIDE_ALONG: Duration = Duration::from_millis(20);
/// Queued receipts nobody waits for that are committed without waiting for an intent.
const RIDE_ALONG_ROWS: usize = 256;
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
/// Rows to commit in one transaction and, for each, who waits for it.
type Batch = (Vec<NewReceipt>, Vec<Waiter>);

/// The receipts taken from the queue and not committed yet.
#[derive(Default)]
struct Pending {
    rows: Vec<NewReceipt>,
    waiters: Vec<Waiter>,
    /// When the oldest of `rows` was taken.
    since: Option<Instant>,
    /// Whether someone waits for one of `rows`.
    waited: bool,
}

impl Pending {
    /// Adds `job` and everything queued behind it (up to [`MAX_BATCH`] rows in all).
    fn take(&mut self, job: Job, rx: &mut mpsc::Receiver<Job>) {
        self.push(job);
        while self.rows.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => self.push(job),
                Err(_) => break,
            }
        }
    }

    fn push(&mut self, job: Job) {
        self.since.get_or_insert_with(Instant::now);
        self.waited |= job.done.is_some();
        self.rows.push(job.row);
        self.waiters.push(job.done);
    }

    /// Whether to commit now rather than wait for more: someone waits, the batch is large,
    /// or its oldest row has waited [`RIDE_ALONG`].
    fn due(&self, now: Instant) -> bool {
        self.waited
            || self.rows.len() >= RIDE_ALONG_ROWS
            || self.deadline().is_some_and(|d| d <= now)
    }

    /// Until when the writer may wait for an intent before committing what it holds.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + RIDE_ALONG)
    }

    /// The rows to commit and who waits for them, leaving nothing pending.
    fn batch(&mut self) -> Batch {
        let taken = std::mem::take(self);
        (taken.rows, taken.waiters)
    }
}

/// What the writer's wait for the queue ended with.
enum Next {
    Job(Job),
    /// The pending rows' deadline passed.
    Due,
    /// Every sender is gone: commit what is pending and stop.
    Closed,
}

impl From<Option<Job>> for Next {
    fn from(job: Option<Job>) -> Self {
        job.map_or(Self::Closed, Self::Job)
    }
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

/// Adds what the wait for the queue brought to `pending`; returns the batch to commit now, if
/// any, and whether the writer stops after it.
fn after_wait(
    pending: &mut Pending,
    waited: Next,
    rx: &mut mpsc::Receiver<Job>,
) -> (Option<Batch>, bool) {
    let closed = match waited {
        Next::Job(job) => {
            pending.take(job, rx);
            false
        }
        Next::Due => false,
        Next::Closed => true,
    };
    let commit = !pending.rows.is_empty() && (closed || pending.due(Instant::now()));
    (commit.then(|| pending.batch()), closed)
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, stats: &AuditStats) {
    let mut pending = Pending::default();
    loop {
        let waited = match pending.deadline() {
            None => rx.recv().await.into(),
            Some(d) => tokio::time::timeout_at(d.into(), rx.recv())
                .await
                .map_or(Next::Due, Next::from),
        };
        let (batch, stop) = after_wait(&mut pending, waited, &mut rx);
        if let Some((rows, waiters)) = batch {
            let started = Instant::now();
            let result = store.append_receipts(&rows).await;
            settle(result, rows.len(), waiters, started, stats);
        }
        if stop {
            return;
        }
    }
}

/// [`run`] on a thread of its own, with a synchronous appender.
fn run_blocking(
    mut appender: Box<dyn ReceiptAppender>,
    mut rx: mpsc::Receiver<Job>,
    stats: &AuditStats,
) {
    let mut pending = Pending::default();
    loop {
        let waited = match pending.deadline() {
            None => rx.blocking_recv().into(),
            Some(d) => recv_until(&mut rx, d),
        };
        let (batch, stop) = after_wait(&mut pending, waited, &mut rx);
        if let Some((rows, waiters)) = batch {
            let started = Instant::now();
            let result = appender.append(&rows);
            settle(result, rows.len(), waiters, started, stats);
        }
        if stop {
            return;
        }
    }
}

/// `blocking_recv` with a deadline, for the writer's own thread: polls the queue with a waker
/// that unparks the thread and parks in between (no runtime timer, so it works whatever
/// runtime the senders are on, also while that runtime shuts down).
fn recv_until(rx: &mut mpsc::Receiver<Job>, deadline: Instant) -> Next {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(job) = rx.poll_recv(&mut cx) {
            return job.into();
        }
        let now = Instant::now();
        if now >= deadline {
            return Next::Due;
        }
        // Woken by a sender, or spuriously: the loop polls again either way.
        std::thread::park_timeout(deadline - now);
    }
}

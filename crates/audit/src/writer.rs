use crate::Receipt;
use sequester_store::{NewReceipt, ReceiptAppender, Store};
use std::sync::Arc;
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

/// The single writer of receipts. Cloning is cheap; all clones feed one task that commits
/// whatever has queued as one batch.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
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
        let handle = match store.receipt_appender() {
            Ok(Some(appender)) => tokio::task::spawn_blocking(move || run_blocking(appender, rx)),
            Ok(None) => tokio::spawn(run(store, rx)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the receipt appender; receipts go through the async store");
                tokio::spawn(run(store, rx))
            }
        };
        (Self { tx }, handle)
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

/// Tells every waiter of a committed (or failed) batch its outcome.
fn settle(result: Result<(), sequester_store::StoreError>, count: usize, waiters: Vec<Waiter>) {
    let result = result.map_err(|e| AuditError::Unavailable(e.to_string()));
    if let Err(e) = &result {
        tracing::error!(error = %e, receipts = count, "receipts not written; requests waiting on them are denied");
    }
    for done in waiters.into_iter().flatten() {
        let _ = done.send(result.clone());
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let (rows, waiters) = next_batch(first, &mut rx);
        let result = store.append_receipts(&rows).await;
        settle(result, rows.len(), waiters);
    }
}

fn run_blocking(mut appender: Box<dyn ReceiptAppender>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let (rows, waiters) = next_batch(first, &mut rx);
        let result = appender.append(&rows);
        settle(result, rows.len(), waiters);
    }
}

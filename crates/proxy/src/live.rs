//! The live snapshot: swapped atomically when the store's change counter moves.

use crate::log_redact::LogRedactor;
use crate::metrics::Metrics;
use sequester_policy::Snapshot;
use sequester_store::Store;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How often the change counter is polled. Changes made by the CLI take effect within this
/// plus the time to load a snapshot.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(200);

pub struct LiveSnapshot {
    current: RwLock<(Arc<Snapshot>, Instant)>,
    log_redactor: Arc<LogRedactor>,
}

impl LiveSnapshot {
    pub fn new(snapshot: Snapshot, log_redactor: Arc<LogRedactor>) -> Self {
        Self {
            current: RwLock::new((Arc::new(snapshot), Instant::now())),
            log_redactor,
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        )
    }

    pub fn age(&self) -> Duration {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .elapsed()
    }

    fn install(&self, snapshot: Snapshot) {
        // The log redactor learns the new values before any request can use them.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.log_redactor
            .set_values(&snapshot.open_all_usable(sequester_model::Timestamp::from_unix(now)));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            (Arc::new(snapshot), Instant::now());
    }

    /// Loads a snapshot now. On failure installs the empty snapshot (deny everything) rather
    /// than keep serving a view of unknown age.
    pub async fn reload(&self, store: &dyn Store, metrics: &Metrics) {
        match store.snapshot().await {
            Ok(data) => {
                let snapshot = Snapshot::build(data);
                tracing::debug!(
                    counter = snapshot.counter(),
                    tokens = snapshot.token_count(),
                    "snapshot loaded"
                );
                self.install(snapshot);
                metrics.snapshot_reload(true);
            }
            Err(e) => {
                tracing::error!(code = %e.code(), error = %e, "cannot load the policy snapshot; denying every request until it loads");
                self.install(Snapshot::empty());
                metrics.snapshot_reload(false);
            }
        }
    }
}

/// Polls the change counter and reloads on change, until the task is aborted.
pub fn spawn_reloader(
    store: Arc<dyn Store>,
    live: Arc<LiveSnapshot>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(RELOAD_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match store.change_counter().await {
                Ok(counter) if counter == live.load().counter() => {}
                Ok(_) => live.reload(store.as_ref(), &metrics).await,
                Err(e) => {
                    tracing::error!(code = %e.code(), error = %e, "cannot read the change counter; denying every request");
                    live.install(Snapshot::empty());
                    metrics.snapshot_reload(false);
                }
            }
        }
    })
}

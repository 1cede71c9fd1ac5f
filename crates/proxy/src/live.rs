//! The live snapshot: swapped atomically when the store's change counter moves.

use crate::log_redact::LogRedactor;
use crate::metrics::Metrics;
use crate::scrub::ScrubPatterns;
use sequester_crypto::SecretValue;
use sequester_model::SecretId;
use sequester_policy::Snapshot;
use sequester_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How often the change counter is polled. Changes made by the CLI take effect within this
/// plus the time to load a snapshot.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(200);

/// The current snapshot, when it was loaded, and the compiled scrub patterns of each secret.
struct Current {
    snapshot: Arc<Snapshot>,
    loaded: Instant,
    scrub: Arc<HashMap<SecretId, Arc<ScrubPatterns>>>,
}

pub struct LiveSnapshot {
    current: RwLock<Current>,
    log_redactor: Arc<LogRedactor>,
}

impl LiveSnapshot {
    pub fn new(snapshot: Snapshot, log_redactor: Arc<LogRedactor>) -> Self {
        Self {
            current: RwLock::new(Current {
                snapshot: Arc::new(snapshot),
                loaded: Instant::now(),
                scrub: Arc::new(HashMap::new()),
            }),
            log_redactor,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn load(&self) -> Arc<Snapshot> {
        Arc::clone(&self.read().snapshot)
    }

    /// The compiled response-scrubbing patterns for a secret's usable values.
    pub fn scrub_patterns(&self, secret: &SecretId) -> Option<Arc<ScrubPatterns>> {
        self.read().scrub.get(secret).cloned()
    }

    pub fn age(&self) -> Duration {
        self.read().loaded.elapsed()
    }

    fn install(&self, snapshot: Snapshot) {
        // The log redactor learns the new values before any request can use them.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let opened = snapshot.open_all_usable(sequester_model::Timestamp::from_unix(now));
        let mut by_secret: HashMap<SecretId, Vec<&SecretValue>> = HashMap::new();
        for (id, value) in &opened {
            by_secret.entry(id.clone()).or_default().push(value);
        }
        let scrub: HashMap<SecretId, Arc<ScrubPatterns>> = by_secret
            .into_iter()
            .filter_map(|(id, values)| {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "scrubbing: responses are searched for these values"
                )]
                let raw: Vec<&[u8]> = values.iter().map(|v| v.expose()).collect();
                ScrubPatterns::new(&raw).map(|p| (id, p))
            })
            .collect();
        let values: Vec<SecretValue> = opened.into_iter().map(|(_, v)| v).collect();
        self.log_redactor.set_values(&values);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
            snapshot: Arc::new(snapshot),
            loaded: Instant::now(),
            scrub: Arc::new(scrub),
        };
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

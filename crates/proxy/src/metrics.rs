//! Prometheus metrics, rendered in the text exposition format. Labels never hold a value or
//! a token: service names, decisions, codes and status classes only.

use sequester_audit::{AuditStatsSnapshot, BATCH_BUCKETS, COMMIT_BUCKETS};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Requests of one service by decision, denial code and status.
#[derive(Default)]
struct ServiceStats {
    requests: BTreeMap<(&'static str, &'static str, Option<u16>), u64>,
    latency: Histogram,
    upstream: Histogram,
}

#[derive(Default)]
struct Inner {
    /// Keyed by service name; after a service's first request no request allocates here.
    services: BTreeMap<String, ServiceStats>,
    audit_failures: u64,
    snapshot_reloads: u64,
    snapshot_failures: u64,
}

impl Inner {
    fn with_service(&mut self, name: &str, f: impl FnOnce(&mut ServiceStats)) {
        match self.services.get_mut(name) {
            Some(stats) => f(stats),
            None => f(self.services.entry(name.to_owned()).or_default()),
        }
    }
}

/// The data plane's counters and histograms.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// One finished request. `status` is `None` when no response status applies; `code` is a
    /// stable error code (or an end-of-stream code), never free text.
    pub fn request(
        &self,
        service: &str,
        allowed: bool,
        code: Option<&'static str>,
        status: Option<u16>,
        total: Duration,
    ) {
        let decision = if allowed { "allow" } else { "deny" };
        self.with(|m| {
            m.with_service(service, |stats| {
                *stats
                    .requests
                    .entry((decision, code.unwrap_or(""), status))
                    .or_default() += 1;
                stats.latency.observe(total.as_secs_f64());
            });
        });
    }

    pub fn upstream(&self, service: &str, latency: Duration) {
        self.with(|m| {
            m.with_service(service, |stats| {
                stats.upstream.observe(latency.as_secs_f64());
            });
        });
    }

    pub fn audit_failure(&self) {
        self.with(|m| m.audit_failures += 1);
    }

    pub fn snapshot_reload(&self, ok: bool) {
        self.with(|m| {
            if ok {
                m.snapshot_reloads += 1;
            } else {
                m.snapshot_failures += 1;
            }
        });
    }

    /// The exposition text. `snapshot_age` is the time since the live snapshot was loaded,
    /// `audit` what the receipt writer has done.
    pub fn render(
        &self,
        snapshot_age: Duration,
        snapshot_counter: i64,
        audit: &AuditStatsSnapshot,
    ) -> String {
        let mut out = String::new();
        self.with(|m| {
            let _ = writeln!(out, "# HELP sequester_requests_total Data-plane requests by service, decision, denial code and status.");
            let _ = writeln!(out, "# TYPE sequester_requests_total counter");
            for (service, stats) in &m.services {
                let service = escape(service);
                for ((decision, code, status), n) in &stats.requests {
                    let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
                    let _ = writeln!(
                        out,
                        "sequester_requests_total{{service=\"{service}\",decision=\"{decision}\",code=\"{}\",status=\"{status}\"}} {n}",
                        escape(code)
                    );
                }
            }
            for (name, help, upstream) in [
                ("sequester_request_duration_seconds", "Time from request to the end of the response.", false),
                ("sequester_upstream_duration_seconds", "Time from sending upstream to the response headers.", true),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} histogram");
                for (service, stats) in &m.services {
                    let h = if upstream { &stats.upstream } else { &stats.latency };
                    if h.count == 0 {
                        continue;
                    }
                    let service = escape(service);
                    for (le, c) in BUCKETS.iter().zip(&h.counts) {
                        let _ = writeln!(out, "{name}_bucket{{service=\"{service}\",le=\"{le}\"}} {c}");
                    }
                    let _ = writeln!(out, "{name}_bucket{{service=\"{service}\",le=\"+Inf\"}} {}", h.count);
                    let _ = writeln!(out, "{name}_sum{{service=\"{service}\"}} {}", h.sum);
                    let _ = writeln!(out, "{name}_count{{service=\"{service}\"}} {}", h.count);
                }
            }
            let _ = writeln!(out, "# HELP sequester_audit_failures_total Receipts that could not be made durable (requests denied).");
            let _ = writeln!(out, "# TYPE sequester_audit_failures_total counter");
            let _ = writeln!(out, "sequester_audit_failures_total {}", m.audit_failures);
            let _ = writeln!(out, "# HELP sequester_snapshot_reloads_total Snapshot reloads, by outcome.");
            let _ = writeln!(out, "# TYPE sequester_snapshot_reloads_total counter");
            let _ = writeln!(out, "sequester_snapshot_reloads_total{{outcome=\"ok\"}} {}", m.snapshot_reloads);
            let _ = writeln!(out, "sequester_snapshot_reloads_total{{outcome=\"failed\"}} {}", m.snapshot_failures);
        });
        let _ = writeln!(
            out,
            "# HELP sequester_snapshot_age_seconds Seconds since the policy snapshot was loaded."
        );
        let _ = writeln!(out, "# TYPE sequester_snapshot_age_seconds gauge");
        let _ = writeln!(
            out,
            "sequester_snapshot_age_seconds {}",
            snapshot_age.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP sequester_snapshot_change_counter Store change counter the snapshot reflects."
        );
        let _ = writeln!(out, "# TYPE sequester_snapshot_change_counter gauge");
        let _ = writeln!(out, "sequester_snapshot_change_counter {snapshot_counter}");
        render_audit(&mut out, audit);
        out
    }
}

/// The receipt writer's commits: how many, how large, how long.
fn render_audit(out: &mut String, audit: &AuditStatsSnapshot) {
    let _ = writeln!(
        out,
        "# HELP sequester_audit_receipts_total Receipts committed, and those a request waited for (intents)."
    );
    let _ = writeln!(out, "# TYPE sequester_audit_receipts_total counter");
    let _ = writeln!(
        out,
        "sequester_audit_receipts_total{{durable=\"waited\"}} {}",
        audit.durable
    );
    let _ = writeln!(
        out,
        "sequester_audit_receipts_total{{durable=\"queued\"}} {}",
        audit.receipts.saturating_sub(audit.durable)
    );
    let _ = writeln!(
        out,
        "# HELP sequester_audit_commit_seconds Time to commit one batch of receipts (group commit, fsync included)."
    );
    let _ = writeln!(out, "# TYPE sequester_audit_commit_seconds histogram");
    for (le, c) in COMMIT_BUCKETS.iter().zip(&audit.commit_le) {
        let _ = writeln!(
            out,
            "sequester_audit_commit_seconds_bucket{{le=\"{le}\"}} {c}"
        );
    }
    let _ = writeln!(
        out,
        "sequester_audit_commit_seconds_bucket{{le=\"+Inf\"}} {}",
        audit.batches
    );
    let _ = writeln!(
        out,
        "sequester_audit_commit_seconds_sum {}",
        audit.commit_seconds
    );
    let _ = writeln!(
        out,
        "sequester_audit_commit_seconds_count {}",
        audit.batches
    );
    let _ = writeln!(
        out,
        "# HELP sequester_audit_batch_receipts Receipts per committed batch."
    );
    let _ = writeln!(out, "# TYPE sequester_audit_batch_receipts histogram");
    for (le, c) in BATCH_BUCKETS.iter().zip(&audit.batch_le) {
        let _ = writeln!(
            out,
            "sequester_audit_batch_receipts_bucket{{le=\"{le}\"}} {c}"
        );
    }
    let _ = writeln!(
        out,
        "sequester_audit_batch_receipts_bucket{{le=\"+Inf\"}} {}",
        audit.batches
    );
    let _ = writeln!(out, "sequester_audit_batch_receipts_sum {}", audit.receipts);
    let _ = writeln!(
        out,
        "sequester_audit_batch_receipts_count {}",
        audit.batches
    );
}

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
            header(&mut out, "sequester_requests_total", "counter", "Data-plane requests by service, decision, denial code and status.");
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
                header(&mut out, name, "histogram", help);
                for (service, stats) in &m.services {
                    let h = if upstream { &stats.upstream } else { &stats.latency };
                    if h.count == 0 {
                        continue;
                    }
                    let labels = format!("service=\"{}\"", escape(service));
                    histogram(&mut out, name, &labels, BUCKETS.iter().zip(&h.counts), h.sum, h.count);
                }
            }
            header(&mut out, "sequester_audit_failures_total", "counter", "Receipts that could not be made durable (requests denied).");
            let _ = writeln!(out, "sequester_audit_failures_total {}", m.audit_failures);
            header(&mut out, "sequester_snapshot_reloads_total", "counter", "Snapshot reloads, by outcome.");
            let _ = writeln!(out, "sequester_snapshot_reloads_total{{outcome=\"ok\"}} {}", m.snapshot_reloads);
            let _ = writeln!(out, "sequester_snapshot_reloads_total{{outcome=\"failed\"}} {}", m.snapshot_failures);
        });
        header(
            &mut out,
            "sequester_snapshot_age_seconds",
            "gauge",
            "Seconds since the policy snapshot was loaded.",
        );
        let _ = writeln!(
            out,
            "sequester_snapshot_age_seconds {}",
            snapshot_age.as_secs_f64()
        );
        header(
            &mut out,
            "sequester_snapshot_change_counter",
            "gauge",
            "Store change counter the snapshot reflects.",
        );
        let _ = writeln!(out, "sequester_snapshot_change_counter {snapshot_counter}");
        render_audit(&mut out, audit);
        out
    }
}

/// The `# HELP` and `# TYPE` lines of one metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One histogram series: the cumulative count at each upper bound, `+Inf`, sum and count.
/// `labels` is empty or the series' own labels (`service="openai"`), without braces.
fn histogram<'a>(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: impl Iterator<Item = (impl std::fmt::Display, &'a u64)>,
    sum: impl std::fmt::Display,
    count: u64,
) {
    let (within, alone) = if labels.is_empty() {
        (String::new(), String::new())
    } else {
        (format!("{labels},"), format!("{{{labels}}}"))
    };
    for (le, c) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{within}le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{within}le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{alone} {sum}");
    let _ = writeln!(out, "{name}_count{alone} {count}");
}

/// The receipt writer's commits: how many, how large, how long.
fn render_audit(out: &mut String, audit: &AuditStatsSnapshot) {
    header(
        out,
        "sequester_audit_receipts_total",
        "counter",
        "Receipts committed, and those a request waited for (intents).",
    );
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
    let name = "sequester_audit_commit_seconds";
    header(
        out,
        name,
        "histogram",
        "Time to commit one batch of receipts (group commit, fsync included).",
    );
    let buckets = COMMIT_BUCKETS.iter().zip(&audit.commit_le);
    histogram(out, name, "", buckets, audit.commit_seconds, audit.batches);
    let name = "sequester_audit_batch_receipts";
    header(out, name, "histogram", "Receipts per committed batch.");
    let buckets = BATCH_BUCKETS.iter().zip(&audit.batch_le);
    histogram(out, name, "", buckets, audit.receipts, audit.batches);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines() {
        let m = Metrics::default();
        m.request("up", true, None, Some(200), Duration::from_millis(3));
        m.upstream("up", Duration::from_millis(2));
        let audit = AuditStatsSnapshot {
            batches: 2,
            receipts: 5,
            durable: 3,
            commit_seconds: 0.003,
            commit_le: vec![0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2],
            batch_le: vec![0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2],
        };
        let text = m.render(Duration::from_secs(1), 7, &audit);
        for line in [
            "# TYPE sequester_request_duration_seconds histogram",
            "sequester_request_duration_seconds_bucket{service=\"up\",le=\"0.0025\"} 0",
            "sequester_request_duration_seconds_bucket{service=\"up\",le=\"0.005\"} 1",
            "sequester_request_duration_seconds_bucket{service=\"up\",le=\"+Inf\"} 1",
            "sequester_request_duration_seconds_sum{service=\"up\"} 0.003",
            "sequester_upstream_duration_seconds_count{service=\"up\"} 1",
            "sequester_snapshot_change_counter 7",
            "sequester_audit_receipts_total{durable=\"waited\"} 3",
            "sequester_audit_receipts_total{durable=\"queued\"} 2",
            "# TYPE sequester_audit_commit_seconds histogram",
            "sequester_audit_commit_seconds_bucket{le=\"0.001\"} 1",
            "sequester_audit_commit_seconds_bucket{le=\"+Inf\"} 2",
            "sequester_audit_commit_seconds_sum 0.003",
            "sequester_audit_commit_seconds_count 2",
            "sequester_audit_batch_receipts_bucket{le=\"2\"} 1",
            "sequester_audit_batch_receipts_sum 5",
            "sequester_audit_batch_receipts_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }
}

//! Process metrics in the Prometheus text format (0.0.4), served on the admin listener.
//!
//! Hand-written rather than `prometheus-client`, on a measurement (`cargo bench --bench micro
//! -- request_metrics`, which times both on one request's figures; see README "Performance"):
//! that crate's histograms take a mutex on every observation (one mutex for the unlabelled
//! upstream histogram, which every proxied request would take) and its families take a lock
//! and hash the label set on every increment. It also writes OpenMetrics (`# EOF`,
//! `le="1.0"`, `# TYPE` without `_total`), where the scrapers and the tests read this format.
//!
//! Here what every request records (`request`) lands in fixed atomic slots found by index: no
//! lock, no hashing, no allocation. The rarer counters (`count`: SCIM operations, refusals,
//! reloads, platform calls) take `&'static str` labels, so counting allocates nothing either;
//! they live in a sharded map, and a label set is inserted once, the first time it is seen.

use crate::router::Route;
use dashmap::DashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// `BUCKETS` as the `le` label has always spelt them (Rust's `{}` of the bound).
const LE: [&str; 12] = [
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

/// Routes in the order they are rendered (sorted by name, as before).
const ROUTES: [Route; 3] = [Route::Ambiguous, Route::PassThrough, Route::Scim];
/// HTTP status codes are 100..=999 (what `http::StatusCode` admits).
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 900;

fn route_index(route: Route) -> usize {
    match route {
        Route::Ambiguous => 0,
        Route::PassThrough => 1,
        Route::Scim => 2,
    }
}

/// Observations per bucket, not cumulative (one increment per observation; the cumulative
/// counts are summed when rendered), plus one slot above the last bound.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Cumulative bucket counts; the last is `+Inf`, which is also `_count`, so the two always
    /// agree even while requests are being counted.
    fn cumulative(&self) -> [u64; BUCKETS.len() + 1] {
        let mut out = [0u64; BUCKETS.len() + 1];
        let mut total = 0u64;
        for (slot, bucket) in out.iter_mut().zip(&self.buckets) {
            total = total.saturating_add(bucket.load(Ordering::Relaxed));
            *slot = total;
        }
        out
    }

    fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let counts = self.cumulative();
        let count = counts[BUCKETS.len()];
        if count == 0 {
            return;
        }
        for (le, n) in LE.iter().zip(&counts) {
            let _ = writeln!(out, "{name}_bucket{} {n}", render_labels(labels, Some(le)));
        }
        let _ = writeln!(
            out,
            "{name}_bucket{} {count}",
            render_labels(labels, Some("+Inf"))
        );
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{} {sum}", render_labels(labels, None));
        let _ = writeln!(out, "{name}_count{} {count}", render_labels(labels, None));
    }
}

/// Most labels any `count` call carries (the SCIM operations: version, operation, status).
const MAX_LABELS: usize = 3;

/// A counter's name and labels, without allocation: every part is `&'static str`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Series {
    name: &'static str,
    labels: [(&'static str, &'static str); MAX_LABELS],
    len: usize,
}

pub struct Metrics {
    /// `scimgate_requests_total`, by route and status: `route_index * STATUSES + status - 100`.
    requests: Box<[AtomicU64]>,
    /// `scimgate_request_duration_seconds`, by route.
    request_duration: [Histogram; ROUTES.len()],
    upstream_duration: Histogram,
    /// Keyed by the gateway's own static names, never by anything a client sends, so a fast
    /// hash without flooding resistance is safe (SipHash was about 1% of a SCIM read's CPU).
    counters: DashMap<Series, AtomicU64, rustc_hash::FxBuildHasher>,
    open_connections: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: (0..ROUTES.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            request_duration: Default::default(),
            upstream_duration: Histogram::default(),
            counters: DashMap::default(),
            open_connections: AtomicI64::new(0),
        }
    }
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "scimgate_requests_total",
        "counter",
        "Requests answered, by route class and status",
    ),
    (
        "scimgate_request_duration_seconds",
        "histogram",
        "Time to answer a request, body included",
    ),
    (
        "scimgate_upstream_duration_seconds",
        "histogram",
        "Time until the platform's response headers",
    ),
    (
        "scimgate_scim_operations_total",
        "counter",
        "SCIM operations by version, operation and status",
    ),
    (
        "scimgate_policy_refusals_total",
        "counter",
        "Requests refused by a provisioning rule",
    ),
    (
        "scimgate_auth_failures_total",
        "counter",
        "SCIM authentication failures by reason",
    ),
    (
        "scimgate_jwks_refreshes_total",
        "counter",
        "JWKS fetches by result",
    ),
    (
        "scimgate_platform_calls_total",
        "counter",
        "Native platform calls by result",
    ),
    (
        "scimgate_reloads_total",
        "counter",
        "Configuration reloads by result",
    ),
    (
        "scimgate_certificate_reloads_total",
        "counter",
        "Listener certificate reloads by result (content changes only)",
    ),
    (
        "scimgate_open_connections",
        "gauge",
        "Client connections open on the gateway listeners",
    ),
];

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// A status code as a `&'static str` label value (`http::StatusCode::as_str` borrows from the
/// code), from one string made the first time it is needed.
pub fn status_label(status: u16) -> &'static str {
    static DIGITS: OnceLock<String> = OnceLock::new();
    let digits = DIGITS.get_or_init(|| {
        (FIRST_STATUS..FIRST_STATUS + STATUSES as u16)
            .map(|s| s.to_string())
            .collect()
    });
    let Some(index) = status
        .checked_sub(FIRST_STATUS)
        .map(usize::from)
        .filter(|i| *i < STATUSES)
    else {
        return "other";
    };
    digits.get(index * 3..index * 3 + 3).unwrap_or("other")
}

impl Metrics {
    /// What every answered request records: its route and status, how long it took, and how
    /// long the platform took to answer (pass-through only).
    pub fn request(
        &self,
        route: Route,
        status: u16,
        elapsed: Duration,
        upstream: Option<Duration>,
    ) {
        let r = route_index(route);
        if let Some(s) = status
            .checked_sub(FIRST_STATUS)
            .map(usize::from)
            .filter(|s| *s < STATUSES)
        {
            if let Some(c) = self.requests.get(r * STATUSES + s) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.request_duration[r].observe(elapsed);
        if let Some(upstream) = upstream {
            self.upstream_duration.observe(upstream);
        }
    }

    /// Counts one event of a counter named in `HELP`. More than `MAX_LABELS` labels is a
    /// programming error; the extra ones are dropped rather than failing a request.
    pub fn count(&self, name: &'static str, pairs: &[(&'static str, &'static str)]) {
        debug_assert!(pairs.len() <= MAX_LABELS, "{name}: too many labels");
        let mut labels = [("", ""); MAX_LABELS];
        let len = pairs.len().min(MAX_LABELS);
        labels[..len].copy_from_slice(&pairs[..len]);
        let series = Series { name, labels, len };
        // The common case, a series seen before, takes a shard's read lock only.
        if let Some(c) = self.counters.get(&series) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters
            .entry(series)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counters: Vec<(Series, u64)> = self
            .counters
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        counters.sort_unstable_by_key(|(series, _)| *series);
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *name {
                "scimgate_requests_total" => self.render_requests(&mut out),
                "scimgate_request_duration_seconds" => {
                    for route in ROUTES {
                        self.request_duration[route_index(route)].render(
                            &mut out,
                            name,
                            &[("route", route.as_str())],
                        );
                    }
                }
                "scimgate_upstream_duration_seconds" => {
                    self.upstream_duration.render(&mut out, name, &[]);
                }
                "scimgate_open_connections" => {
                    let _ = writeln!(
                        out,
                        "{name} {}",
                        self.open_connections.load(Ordering::Relaxed)
                    );
                }
                _ => {}
            }
            for (series, value) in counters.iter().filter(|(s, _)| s.name == *name) {
                let labels = &series.labels[..series.len];
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
            }
        }
        out
    }

    fn render_requests(&self, out: &mut String) {
        for route in ROUTES {
            let base = route_index(route) * STATUSES;
            for s in 0..STATUSES {
                let n = self
                    .requests
                    .get(base + s)
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                if n == 0 {
                    continue;
                }
                let status = status_label(FIRST_STATUS + s as u16);
                let labels = [("route", route.as_str()), ("status", status)];
                let _ = writeln!(
                    out,
                    "scimgate_requests_total{} {n}",
                    render_labels(&labels, None)
                );
            }
        }
    }
}

fn render_labels(labels: &[(&str, &str)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(Route::Scim, 401, Duration::from_millis(3), None);
        m.request(Route::Scim, 401, Duration::from_millis(30), None);
        m.request(
            Route::PassThrough,
            200,
            Duration::from_secs(20),
            Some(Duration::from_millis(1)),
        );
        m.count("scimgate_auth_failures_total", &[("reason", "missing")]);
        m.count("scimgate_auth_failures_total", &[("reason", "missing")]);
        m.connection_opened();
        let text = m.render();
        assert!(
            text.contains("scimgate_requests_total{route=\"scim\",status=\"401\"} 2"),
            "{text}"
        );
        assert!(text.contains("scimgate_requests_total{route=\"passthrough\",status=\"200\"} 1"));
        assert!(!text.contains("route=\"ambiguous\""), "{text}");
        assert!(text
            .contains("scimgate_request_duration_seconds_bucket{route=\"scim\",le=\"0.005\"} 1"));
        assert!(text
            .contains("scimgate_request_duration_seconds_bucket{route=\"scim\",le=\"0.001\"} 0"));
        assert!(
            text.contains("scimgate_request_duration_seconds_bucket{route=\"scim\",le=\"0.05\"} 2")
        );
        assert!(text.contains("scimgate_request_duration_seconds_count{route=\"scim\"} 2"));
        assert!(text.contains("scimgate_request_duration_seconds_sum{route=\"scim\"} 0.033"));
        assert!(text.contains(
            "scimgate_request_duration_seconds_bucket{route=\"passthrough\",le=\"10\"} 0"
        ));
        assert!(text.contains(
            "scimgate_request_duration_seconds_bucket{route=\"passthrough\",le=\"+Inf\"} 1"
        ));
        assert!(text.contains("scimgate_upstream_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("scimgate_upstream_duration_seconds_count 1"));
        assert!(text.contains("scimgate_auth_failures_total{reason=\"missing\"} 2"));
        assert!(text.contains("scimgate_open_connections 1"));
        assert!(text.contains("# TYPE scimgate_requests_total counter"));
    }

    #[test]
    fn le_labels_are_the_bounds_as_always_written() {
        for (bound, le) in BUCKETS.iter().zip(LE) {
            assert_eq!(format!("{bound}"), le);
        }
    }

    #[test]
    fn status_labels_are_the_codes() {
        assert_eq!(status_label(100), "100");
        assert_eq!(status_label(401), "401");
        assert_eq!(status_label(999), "999");
        assert_eq!(status_label(99), "other");
        assert_eq!(status_label(1000), "other");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.count("scimgate_reloads_total", &[("result", "a\"b")]);
        assert!(m.render().contains("result=\"a\\\"b\""));
    }
}

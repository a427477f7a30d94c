//! Process metrics in the Prometheus text format, served on the admin listener. A small
//! registry of counters, gauges and histograms keyed by label sets: enough for the gateway's
//! own figures without a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
    open_connections: AtomicI64,
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

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn count(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((name, labels(pairs))).or_insert(0) += 1;
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], value: Duration) {
        let seconds = value.as_secs_f64();
        let mut h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let entry = h.entry((name, labels(pairs))).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                entry.buckets[i] += 1;
            }
        }
        entry.count += 1;
        entry.sum += seconds;
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let histograms = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match *kind {
                "counter" => {
                    for ((n, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
                        let _ = writeln!(out, "{n}{} {v}", render_labels(l, None));
                    }
                }
                "histogram" => {
                    for ((n, l), h) in histograms.iter().filter(|((n, _), _)| n == name) {
                        for (i, bound) in BUCKETS.iter().enumerate() {
                            let le = format!("{bound}");
                            let _ = writeln!(
                                out,
                                "{n}_bucket{} {}",
                                render_labels(l, Some(&le)),
                                h.buckets[i]
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{n}_bucket{} {}",
                            render_labels(l, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{n}_sum{} {}", render_labels(l, None), h.sum);
                        let _ = writeln!(out, "{n}_count{} {}", render_labels(l, None), h.count);
                    }
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "{name} {}",
                        self.open_connections.load(Ordering::Relaxed)
                    );
                }
            }
        }
        out
    }
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
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
        m.count(
            "scimgate_requests_total",
            &[("route", "scim"), ("status", "401")],
        );
        m.count(
            "scimgate_requests_total",
            &[("route", "scim"), ("status", "401")],
        );
        m.observe(
            "scimgate_request_duration_seconds",
            &[("route", "scim")],
            Duration::from_millis(3),
        );
        m.connection_opened();
        let text = m.render();
        assert!(
            text.contains("scimgate_requests_total{route=\"scim\",status=\"401\"} 2"),
            "{text}"
        );
        assert!(text
            .contains("scimgate_request_duration_seconds_bucket{route=\"scim\",le=\"0.005\"} 1"));
        assert!(text
            .contains("scimgate_request_duration_seconds_bucket{route=\"scim\",le=\"0.001\"} 0"));
        assert!(text.contains("scimgate_request_duration_seconds_count{route=\"scim\"} 1"));
        assert!(text.contains("scimgate_open_connections 1"));
        assert!(text.contains("# TYPE scimgate_requests_total counter"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.count("scimgate_reloads_total", &[("result", "a\"b")]);
        assert!(m.render().contains("result=\"a\\\"b\""));
    }
}

//! Prometheus text metrics without a metrics framework.
//!
//! The hot path touches only atomics: per-request counters are a dense
//! route-class × status-class array. Modules with their own figures (media scrubbing,
//! egress, expiry, shield) implement [`MetricsSource`] and register it; `/metrics`
//! concatenates them. Labels never carry a client address or pseudonym.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::proxy::contract::{RouteClass, budget::Budgets};

/// Something that can append its metrics in Prometheus text format.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut String);
}

/// A latency histogram with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

/// Buckets from 1 ms to 30 s: local upstreams answer in milliseconds, Tor in hundreds.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.total.fetch_add(1, Relaxed);
    }

    /// Writes `name_bucket`, `name_sum`, `name_count` lines; `labels` like `kind="x"` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let total = self.total.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The relay's own metrics, plus every registered source.
pub struct Metrics {
    requests: [[AtomicU64; 5]; RouteClass::ALL.len()],
    upstream_latency: Histogram,
    open_connections: AtomicI64,
    upstream_errors: AtomicU64,
    sources: Mutex<Vec<Arc<dyn MetricsSource>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            upstream_latency: Histogram::new(LATENCY_BUCKETS),
            open_connections: AtomicI64::new(0),
            upstream_errors: AtomicU64::new(0),
            sources: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    pub fn register(&self, source: Arc<dyn MetricsSource>) {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).push(source);
    }

    pub fn request_done(&self, route: RouteClass, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[route.index()][class].fetch_add(1, Relaxed);
    }

    pub fn upstream_latency(&self, d: Duration) {
        self.upstream_latency.observe(d);
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Relaxed);
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP pavise_requests_total Requests answered, by route class and status class.\n");
        out.push_str("# TYPE pavise_requests_total counter\n");
        for route in RouteClass::ALL {
            for (i, status) in STATUS_CLASSES.iter().enumerate() {
                let n = self.requests[route.index()][i].load(Relaxed);
                let _ =
                    writeln!(out, "pavise_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", route.config_name());
            }
        }
        out.push_str(
            "# HELP pavise_upstream_latency_seconds Time from forwarding a request to the instance's response head.\n",
        );
        out.push_str("# TYPE pavise_upstream_latency_seconds histogram\n");
        self.upstream_latency.render(&mut out, "pavise_upstream_latency_seconds", "");
        out.push_str("# HELP pavise_upstream_errors_total Requests the instance could not be reached for.\n");
        out.push_str("# TYPE pavise_upstream_errors_total counter\n");
        let _ = writeln!(out, "pavise_upstream_errors_total {}", self.upstream_errors.load(Relaxed));
        out.push_str("# HELP pavise_open_connections Client connections open on the public listener.\n");
        out.push_str("# TYPE pavise_open_connections gauge\n");
        let _ = writeln!(out, "pavise_open_connections {}", self.open_connections());
        for source in self.sources.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            source.render(&mut out);
        }
        out
    }
}

/// `/metrics`: what the body budget holds and how often it turned a request away.
impl MetricsSource for Budgets {
    fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP pavise_body_memory_bytes Request-body bytes held in memory before the instance has them (public.body_memory).\n",
        );
        out.push_str("# TYPE pavise_body_memory_bytes gauge\n");
        let _ = writeln!(out, "pavise_body_memory_bytes {}", self.body_held());
        out.push_str("# HELP pavise_body_memory_refused_total Requests turned away because a body budget was full.\n");
        out.push_str("# TYPE pavise_body_memory_refused_total counter\n");
        let _ = writeln!(out, "pavise_body_memory_refused_total {}", self.refused());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.request_done(RouteClass::Inbox, http::StatusCode::ACCEPTED);
        m.upstream_latency(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("pavise_requests_total{route=\"inbox\",status=\"2xx\"} 1"), "{text}");
        assert!(text.contains("pavise_upstream_latency_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("pavise_upstream_latency_seconds_count 1"), "{text}");
    }
}

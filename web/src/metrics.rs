//! Request metrics for any axum router: counts by route template, method and
//! status, and a latency histogram. Route templates (not raw paths) keep label
//! cardinality bounded however many keys clients use.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl HttpMetrics {
    /// Registers `simcache_http_requests_total` and
    /// `simcache_http_request_duration_seconds` in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "simcache_http_requests_total",
                "HTTP requests served, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "simcache_http_request_duration_seconds",
                "HTTP request latency, by route and method.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(HttpMetrics { requests, latency })
    }

    /// The series of one route, method and status, resolved once for a path
    /// that answers outside the router (same labels as `track` gives it).
    pub fn series(&self, route: &str, method: &str, status: &str) -> RouteSeries {
        RouteSeries {
            requests: self.requests.with_label_values(&[route, method, status]),
            latency: self.latency.with_label_values(&[route, method]),
        }
    }
}

/// One route's request counter and latency histogram.
#[derive(Clone)]
pub struct RouteSeries {
    requests: prometheus::IntCounter,
    latency: prometheus::Histogram,
}

impl RouteSeries {
    pub fn record(&self, started: Instant) {
        self.requests.inc();
        self.latency.observe(started.elapsed().as_secs_f64());
    }
}

/// Middleware: `axum::middleware::from_fn_with_state(metrics, track)`.
pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // MatchedPath and Method clone without allocating (shared / inline).
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = resp.status();
    m.requests
        .with_label_values(&[route, method.as_str(), status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[route, method.as_str()])
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Every binary's standard series: `simcache_build_info{version, binary} 1`
/// (which build answers, for dashboards and for joining onto other series)
/// and the `process_*` series.
pub fn register_build_info(
    registry: &Registry,
    binary: &str,
    version: &str,
) -> prometheus::Result<()> {
    register_process(registry)?;
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "simcache_build_info",
            "Always 1; the labels say which simcache build this is",
        ),
        &["binary", "version"],
    )?;
    info.with_label_values(&[binary, version]).set(1);
    registry.register(Box::new(info))
}

/// The standard `process_*` series (CPU seconds, resident and virtual
/// memory, open and maximum file descriptors, start time), read from /proc
/// at each scrape.
fn register_process(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}

/// A gauge whose value is read when Prometheus scrapes (the size of an
/// in-memory structure, say), so nothing has to keep it up to date.
pub fn register_sampled_gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    read: impl Fn() -> i64 + Send + Sync + 'static,
) -> prometheus::Result<()> {
    let gauge = prometheus::IntGauge::new(name, help)?;
    registry.register(Box::new(Sampled {
        gauge,
        read: Box::new(read),
    }))
}

struct Sampled {
    gauge: prometheus::IntGauge,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl prometheus::core::Collector for Sampled {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.set((self.read)());
        self.gauge.collect()
    }
}

/// The sizes of the authenticator's in-memory structures.
pub fn register_auth_sizes(
    registry: &Registry,
    cached_sessions: impl Fn() -> i64 + Send + Sync + 'static,
    limiter_buckets: impl Fn() -> i64 + Send + Sync + 'static,
) -> prometheus::Result<()> {
    register_sampled_gauge(
        registry,
        "simcache_auth_session_cache_entries",
        "Sessions cached in memory (bounded: at most 100,000; then re-read from the store)",
        cached_sessions,
    )?;
    register_sampled_gauge(
        registry,
        "simcache_auth_login_limiter_buckets",
        "Login rate-limit buckets in memory (bounded: at most 100,000, least recently used go)",
        limiter_buckets,
    )
}

#[cfg(test)]
mod sampled_tests {
    use super::*;

    #[test]
    fn a_sampled_gauge_reads_its_value_at_scrape_time() {
        let r = Registry::new();
        let n = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(3));
        let m = n.clone();
        register_sampled_gauge(&r, "x_size", "x", move || {
            m.load(std::sync::atomic::Ordering::Relaxed)
        })
        .unwrap();
        assert!(render(&r).contains("x_size 3"));
        n.store(7, std::sync::atomic::Ordering::Relaxed);
        assert!(render(&r).contains("x_size 7"));
    }
}

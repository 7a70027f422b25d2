//! The SOR cache's Prometheus metrics. `sor` is the configured name; every
//! other label is from a fixed set.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct SorMetrics {
    /// route: object, meta, list, prefetch, evict, invalidate, stats, entries,
    /// function, compat; result: hit-memory, hit-disk, miss, revalidated,
    /// stale, passthrough, not-modified, or the error class.
    pub requests: IntCounterVec,
    /// kind: get, revalidate, range, head, list; status: ok, not-modified,
    /// not-found, changed, denied, unavailable, corrupt.
    pub fetches: IntCounterVec,
    pub fetch_bytes: IntCounterVec,
    pub fetch_duration: HistogramVec,
    pub coalesced: IntCounterVec,
    pub stale_served: IntCounterVec,
    /// tier: memory, disk.
    pub cache_bytes: IntGaugeVec,
    pub cache_objects: IntGaugeVec,
    /// reason: capacity, invalidated, evicted, changed, deleted.
    pub evictions: IntCounterVec,
    pub function_duration: HistogramVec,
    /// reason: queue-full, budget, timeout, output-cap, bad-arguments.
    pub function_rejections: IntCounterVec,
}

impl SorMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = SorMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_requests_total",
                    "Requests to the system-of-record cache by SOR, route and result",
                ),
                &["sor", "route", "result"],
            )?,
            fetches: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_fetch_total",
                    "Requests the cache made to a system of record, by kind and status",
                ),
                &["sor", "kind", "status"],
            )?,
            fetch_bytes: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_fetch_bytes_total",
                    "Bytes read from a system of record",
                ),
                &["sor"],
            )?,
            fetch_duration: HistogramVec::new(
                HistogramOpts::new(
                    "simcache_sor_fetch_duration_seconds",
                    "Time to the first byte of a request to a system of record",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
                &["sor", "kind"],
            )?,
            coalesced: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_coalesced_total",
                    "Reads that joined a fill already in flight instead of asking the SOR",
                ),
                &["sor"],
            )?,
            stale_served: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_stale_served_total",
                    "Cached copies served past freshness because the SOR failed",
                ),
                &["sor"],
            )?,
            cache_bytes: IntGaugeVec::new(
                Opts::new("simcache_sor_cache_bytes", "Bytes held by each cache tier"),
                &["tier"],
            )?,
            cache_objects: IntGaugeVec::new(
                Opts::new(
                    "simcache_sor_cache_objects",
                    "Objects held by each cache tier",
                ),
                &["tier"],
            )?,
            evictions: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_evictions_total",
                    "Objects removed from a cache tier, by reason",
                ),
                &["tier", "reason"],
            )?,
            function_duration: HistogramVec::new(
                HistogramOpts::new(
                    "simcache_sor_function_duration_seconds",
                    "Time a function took on cached data (uncached results only)",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                &["function"],
            )?,
            function_rejections: IntCounterVec::new(
                Opts::new(
                    "simcache_sor_function_rejections_total",
                    "Function calls refused or stopped by a bound, by reason",
                ),
                &["function", "reason"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.fetches.clone()))?;
        registry.register(Box::new(m.fetch_bytes.clone()))?;
        registry.register(Box::new(m.fetch_duration.clone()))?;
        registry.register(Box::new(m.coalesced.clone()))?;
        registry.register(Box::new(m.stale_served.clone()))?;
        registry.register(Box::new(m.evictions.clone()))?;
        registry.register(Box::new(m.function_duration.clone()))?;
        registry.register(Box::new(m.function_rejections.clone()))?;
        Ok(m)
    }
}

/// The tier gauges, read when Prometheus scrapes.
pub(crate) struct TierGauges {
    pub bytes: IntGaugeVec,
    pub objects: IntGaugeVec,
    pub sample: Box<dyn Fn() + Send + Sync>,
}

impl prometheus::core::Collector for TierGauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.bytes.desc();
        d.extend(self.objects.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        (self.sample)();
        let mut m = self.bytes.collect();
        m.extend(self.objects.collect());
        m
    }
}

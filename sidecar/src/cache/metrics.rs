//! Prometheus metrics of the cache (names follow Prometheus conventions).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounterVec,
    /// `hits{tier="memory"}` and `hits{tier="store"}`, resolved once: a
    /// label lookup per hit hashes the label and takes a lock.
    pub memory_hits: IntCounter,
    pub store_hits: IntCounter,
    pub misses: IntCounter,
    pub writes: IntCounter,
    pub invalidations: IntCounter,
    pub evictions: IntCounterVec,
    pub entries: IntGauge,
    pub bytes: IntGauge,
    pub memory_entries: IntGauge,
    pub memory_bytes: IntGauge,
    pub coherence_connected: IntGauge,
    pub flush_failures: IntCounter,
}

impl CacheMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        fn reg<M: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            m: M,
        ) -> prometheus::Result<M> {
            r.register(Box::new(m.clone()))?;
            Ok(m)
        }
        let hits = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "simcache_cache_hits_total",
                    "Cache lookups answered, by tier (memory, store).",
                ),
                &["tier"],
            )?,
        )?;
        Ok(CacheMetrics {
            memory_hits: hits.with_label_values(&["memory"]),
            store_hits: hits.with_label_values(&["store"]),
            hits,
            misses: reg(
                r,
                IntCounter::new(
                    "simcache_cache_misses_total",
                    "Cache lookups that found no live entry.",
                )?,
            )?,
            writes: reg(
                r,
                IntCounter::new("simcache_cache_writes_total", "Cache entries written.")?,
            )?,
            invalidations: reg(
                r,
                IntCounter::new(
                    "simcache_cache_invalidations_total",
                    "Cache entries invalidated by invalidation requests.",
                )?,
            )?,
            evictions: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "simcache_cache_evictions_total",
                        "Entries evicted, by tier and reason (size, expired).",
                    ),
                    &["tier", "reason"],
                )?,
            )?,
            entries: reg(
                r,
                IntGauge::new("simcache_cache_entries", "Live entries in the store.")?,
            )?,
            bytes: reg(
                r,
                IntGauge::new(
                    "simcache_cache_bytes",
                    "Bytes of live entries in the store.",
                )?,
            )?,
            memory_entries: reg(
                r,
                IntGauge::new(
                    "simcache_cache_memory_entries",
                    "Entries held by the memory tier.",
                )?,
            )?,
            memory_bytes: reg(
                r,
                IntGauge::new(
                    "simcache_cache_memory_bytes",
                    "Bytes held by the memory tier.",
                )?,
            )?,
            coherence_connected: reg(
                r,
                IntGauge::new(
                    "simcache_cache_coherence_connected",
                    "1 while the memory tier hears other processes' changes (always 1 on SQLite).",
                )?,
            )?,
            flush_failures: reg(
                r,
                IntCounter::new(
                    "simcache_cache_hit_flush_failures_total",
                    "Failed writes of batched hit counts (kept and retried).",
                )?,
            )?,
        })
    }
}

//! The cache service: the store behind a memory tier, with batched hit counts.

pub mod coherence;
pub mod hits;
pub mod hot;
pub mod key;
pub mod metrics;
pub mod request;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use simcache_store::StoreError;
use simcache_store::cache::{
    CacheEntry, CacheStore, InvalidationFilter, InvalidationRecord, KeyPattern, ListQuery,
    StoreStats,
};
use simcache_store::clock::now_ms;

use hits::HitBuffer;
use hot::{HotEntry, HotTier};
use metrics::CacheMetrics;

/// A lookup's answer: the entry and its hit count including this hit.
pub struct Hit {
    pub entry: Arc<HotEntry>,
    pub hit_count: i64,
}

pub struct CacheService {
    store: Arc<dyn CacheStore>,
    hot: HotTier,
    hits: HitBuffer,
    /// Held from taking the buffered counts until they are written, so a
    /// reader that flushes first (stats, list) waits for a flush already
    /// under way instead of reading the store before its counts land.
    flushing: tokio::sync::Mutex<()>,
    metrics: CacheMetrics,
    origin: String,
}

impl CacheService {
    /// `shared` says whether other processes write the same store (PostgreSQL):
    /// then the memory tier stays off until the event channel is connected.
    pub fn new(
        store: Arc<dyn CacheStore>,
        memory_bytes: u64,
        shared: bool,
        metrics: CacheMetrics,
        origin: String,
    ) -> Self {
        metrics.coherence_connected.set(if shared { 0 } else { 1 });
        CacheService {
            store,
            hot: HotTier::new(memory_bytes, !shared),
            hits: HitBuffer::default(),
            flushing: tokio::sync::Mutex::new(()),
            metrics,
            origin,
        }
    }

    pub fn hot(&self) -> &HotTier {
        &self.hot
    }
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }
    pub fn origin(&self) -> &str {
        &self.origin
    }
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// A hit from the memory tier, counted; `None` when the tier lacks the
    /// key (then `get` asks the store).
    pub fn get_hot(&self, key: &str) -> Option<Hit> {
        let now = now_ms();
        let e = self.hot.get(key, now)?;
        let hit_count = e.hit_count.fetch_add(1, Ordering::Relaxed) + 1;
        self.hits.record_hit(key, now);
        self.metrics.memory_hits.inc();
        Some(Hit {
            entry: e,
            hit_count,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Hit>, StoreError> {
        if let Some(hit) = self.get_hot(key) {
            return Ok(Some(hit));
        }
        let now = now_ms();
        let epoch = self.hot.epoch();
        match self.store.get(key, now).await? {
            Some(entry) => {
                // Counts not yet flushed are this process's; the row has the rest.
                let hit_count = entry.hit_count + 1;
                let e = Arc::new(HotEntry::new(entry, hit_count));
                self.hot.insert_loaded(e.clone(), epoch);
                self.hits.record_hit(key, now);
                self.metrics.store_hits.inc();
                Ok(Some(Hit {
                    entry: e,
                    hit_count,
                }))
            }
            None => {
                self.hits.record_miss();
                self.metrics.misses.inc();
                Ok(None)
            }
        }
    }

    pub async fn put(&self, entry: CacheEntry) -> Result<(), StoreError> {
        self.store.put(entry.clone()).await?;
        self.metrics.writes.inc();
        self.hot.insert_written(Arc::new(HotEntry::new(entry, 0)));
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete(key).await?;
        self.hot.remove(key);
        Ok(existed)
    }

    pub async fn delete_all(&self) -> Result<u64, StoreError> {
        let n = self.store.delete_all().await?;
        self.hot.clear();
        Ok(n)
    }

    pub async fn invalidate(
        &self,
        filter: &InvalidationFilter,
        pattern: Option<&KeyPattern>,
        record: &InvalidationRecord,
    ) -> Result<u64, StoreError> {
        let n = self.store.invalidate(filter, pattern, record).await?;
        self.hot.invalidate(filter, pattern);
        self.metrics.invalidations.inc_by(n);
        Ok(n)
    }

    /// Figures including this process's unflushed counts (it flushes first).
    pub async fn stats(&self, simulation_id: Option<i64>) -> Result<StoreStats, StoreError> {
        self.flush().await?;
        self.store.stats(simulation_id, now_ms()).await
    }

    pub async fn list(&self, q: &ListQuery) -> Result<(Vec<CacheEntry>, i64), StoreError> {
        self.flush().await?;
        self.store.list(q).await
    }

    /// Writes batched hit and miss counts; on failure they are kept for the next try.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.flushing.lock().await;
        let (deltas, misses) = self.hits.take();
        if deltas.is_empty() && misses == 0 {
            return Ok(());
        }
        if let Err(e) = self.store.record_accesses(&deltas, misses).await {
            self.metrics.flush_failures.inc();
            self.hits.restore(deltas, misses);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes expired entries and refreshes the size gauges.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let n = self.store.sweep_expired(now_ms()).await?;
        self.metrics
            .evictions
            .with_label_values(&["store", "expired"])
            .inc_by(n);
        let s = self.store.stats(None, now_ms()).await?;
        self.metrics.entries.set(s.total_entries);
        self.metrics.bytes.set(s.total_size_bytes);
        Ok(n)
    }

    /// Brings gauges that are cheap to read up to date (called on scrape).
    pub fn refresh_gauges(&self) {
        self.metrics
            .memory_entries
            .set(self.hot.entry_count() as i64);
        self.metrics
            .memory_bytes
            .set(self.hot.weighted_bytes() as i64);
        let size = self
            .metrics
            .evictions
            .with_label_values(&["memory", "size"]);
        let seen = self.hot.size_evictions();
        if seen > size.get() {
            size.inc_by(seen - size.get());
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

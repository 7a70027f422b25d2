//! The memory tier: a byte-bounded LRU of live entries in front of the store.
//!
//! It must never serve what was invalidated or expired. Expiry is checked on
//! every read. Invalidations bump an epoch; a reader that loaded an entry from
//! the store only puts it here if no invalidation happened since it started
//! reading, so a stale row read just before an invalidation cannot slip in
//! after it. When changes from other processes may be missed (the PostgreSQL
//! event channel is down) the tier is emptied and bypassed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use moka::notification::RemovalCause;
use simcache_store::cache::{CacheEntry, InvalidationFilter, KeyPattern};

use super::wire::EntryBody;

/// A cached entry, its running hit count, and the JSON it is served as
/// (prepared once, not on every hit).
#[derive(Debug)]
pub struct HotEntry {
    pub entry: CacheEntry,
    pub hit_count: AtomicI64,
    /// The entry's JSON around its hit count; an error names why the entry
    /// cannot be written as JSON (it is answered with a 500).
    pub body: Result<EntryBody, serde_json::Error>,
}

impl HotEntry {
    pub fn new(entry: CacheEntry, hit_count: i64) -> Self {
        HotEntry {
            body: EntryBody::new(&entry),
            hit_count: AtomicI64::new(hit_count),
            entry,
        }
    }
}

/// What moka keeps per entry besides key and value (its entry record, the
/// LRU node, the hash table's bucket), measured: see `tests/memory_tier.rs`.
const CACHE_OVERHEAD_BYTES: usize = 300;
/// What the allocator adds to each allocation (glibc: 8 bytes of header,
/// rounded to 16).
const ALLOC_OVERHEAD_BYTES: usize = 16;

/// Bytes of one heap allocation of `n` bytes (none for zero).
fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + ALLOC_OVERHEAD_BYTES).next_multiple_of(16)
    }
}

/// The heap bytes under a JSON value. A `serde_json::Map` is a B-tree whose
/// every node has room for 11 keys and values however few it holds, so
/// even a one-key object costs a whole node; larger ones fill nodes about
/// two thirds.
fn json_heap(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => alloc(s.capacity()),
        Value::Array(a) => {
            alloc(a.capacity() * std::mem::size_of::<Value>())
                + a.iter().map(json_heap).sum::<usize>()
        }
        Value::Object(m) => {
            const SLOTS: usize = 11;
            let node = SLOTS * (std::mem::size_of::<String>() + std::mem::size_of::<Value>()) + 16;
            let nodes = if m.len() <= SLOTS {
                usize::from(!m.is_empty())
            } else {
                m.len().div_ceil(SLOTS * 2 / 3)
            };
            nodes * alloc(node)
                + m.iter()
                    .map(|(k, v)| alloc(k.capacity()) + json_heap(v))
                    .sum::<usize>()
        }
        _ => 0,
    }
}

/// What an entry costs in memory: the map's key, the shared entry and its
/// strings, its metadata as parsed JSON, the prepared response, and the
/// cache's own bookkeeping. (Not the run database it names: that is on disk.)
pub fn footprint(key: &str, v: &HotEntry) -> u64 {
    let e = &v.entry;
    let strings: usize = [
        &e.cache_key,
        &e.simulation_name,
        &e.simulation_version,
        &e.execution_id,
        &e.squid_id,
        &e.input_hash,
    ]
    .iter()
    .map(|s| alloc(s.capacity()))
    .sum::<usize>()
        + e.run_db_path.as_ref().map_or(0, |p| alloc(p.capacity()))
        + e.metadata.as_ref().map_or(0, json_heap);
    let body = v.body.as_ref().map_or(0, EntryBody::heap_bytes);
    // The Arc's block: two counters and the entry itself.
    let shared = alloc(16 + std::mem::size_of::<HotEntry>());
    (alloc(key.len()) + shared + strings + body + CACHE_OVERHEAD_BYTES) as u64
}

pub struct HotTier {
    cache: moka::sync::Cache<String, Arc<HotEntry>>,
    epoch: AtomicU64,
    coherent: AtomicBool,
    evictions: Arc<AtomicU64>,
}

impl HotTier {
    /// `coherent` says whether the tier may serve from the start (true when
    /// nothing else can write the store).
    pub fn new(max_bytes: u64, coherent: bool) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let ev = evictions.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Arc<HotEntry>| {
                u32::try_from(footprint(k, v)).unwrap_or(u32::MAX)
            })
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    ev.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        HotTier {
            cache,
            epoch: AtomicU64::new(0),
            coherent: AtomicBool::new(coherent),
            evictions,
        }
    }

    pub fn enabled(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str, now_ms: i64) -> Option<Arc<HotEntry>> {
        if !self.enabled() {
            return None;
        }
        let e = self.cache.get(key)?;
        if e.entry.is_live(now_ms) {
            Some(e)
        } else {
            self.cache.invalidate(key);
            None
        }
    }

    /// Caches an entry read from the store, unless something was invalidated
    /// since `epoch_before` was taken (the read may be stale).
    pub fn insert_loaded(&self, entry: Arc<HotEntry>, epoch_before: u64) {
        if self.enabled() && self.epoch() == epoch_before {
            self.cache.insert(entry.entry.cache_key.clone(), entry);
        }
    }

    /// Caches an entry this process just wrote (the write is the newest truth).
    pub fn insert_written(&self, entry: Arc<HotEntry>) {
        self.bump();
        if self.enabled() {
            self.cache.insert(entry.entry.cache_key.clone(), entry);
        }
    }

    pub fn remove(&self, key: &str) {
        self.bump();
        self.cache.invalidate(key);
    }

    pub fn clear(&self) {
        self.bump();
        self.cache.invalidate_all();
    }

    /// Drops entries matching `filter`; `pattern` is `filter.pattern` parsed.
    pub fn invalidate(&self, filter: &InvalidationFilter, pattern: Option<&KeyPattern>) {
        self.bump();
        if filter.is_everything() {
            self.cache.invalidate_all();
            return;
        }
        for (k, v) in self.cache.iter() {
            if filter.matches(pattern, &v.entry) {
                self.cache.invalidate(k.as_str());
            }
        }
    }

    /// Drops entries matching a filter heard from another process. A pattern
    /// that does not parse here cannot be matched, so everything goes.
    pub fn invalidate_remote(&self, filter: &InvalidationFilter) {
        match filter.pattern.as_deref().map(KeyPattern::parse).transpose() {
            Ok(p) => self.invalidate(filter, p.as_ref()),
            Err(_) => self.clear(),
        }
    }

    /// The event channel is up (true) or lost (false). Either way what we hold
    /// may have missed changes, so it is dropped.
    pub fn set_coherent(&self, coherent: bool) {
        self.coherent.store(coherent, Ordering::Release);
        self.clear();
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    pub fn weighted_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    pub fn size_evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_store::cache::EntryStatus;

    fn entry(key: &str, sim: i64, expires: Option<i64>) -> Arc<HotEntry> {
        Arc::new(HotEntry::new(
            CacheEntry {
                cache_key: key.into(),
                simulation_id: sim,
                simulation_name: "s".into(),
                simulation_version: "1".into(),
                execution_id: "e".into(),
                squid_id: "q".into(),
                input_hash: "h".into(),
                run_db_path: None,
                metadata: None,
                user_id: None,
                created_at_ms: 0,
                expires_at_ms: expires,
                last_accessed_ms: 0,
                access_count: 0,
                hit_count: 0,
                size_bytes: 100,
                status: EntryStatus::Valid,
            },
            0,
        ))
    }

    #[test]
    fn never_serves_expired() {
        let t = HotTier::new(1 << 20, true);
        t.insert_written(entry("a", 1, Some(1000)));
        assert!(t.get("a", 999).is_some());
        assert!(t.get("a", 1000).is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let t = HotTier::new(1 << 20, true);
        let before = t.epoch();
        let by_sim = InvalidationFilter {
            simulation_id: Some(1),
            ..Default::default()
        };
        t.invalidate(&by_sim, None);
        t.insert_loaded(entry("a", 1, None), before);
        assert!(t.get("a", 0).is_none());
        let now = t.epoch();
        t.insert_loaded(entry("a", 1, None), now);
        assert!(t.get("a", 0).is_some());
    }

    #[test]
    fn invalidation_by_filter_and_pattern() {
        let t = HotTier::new(1 << 20, true);
        t.insert_written(entry("x/1", 1, None));
        t.insert_written(entry("x/2", 2, None));
        t.insert_written(entry("y/1", 1, None));
        let filter = InvalidationFilter {
            simulation_id: Some(1),
            pattern: Some("x/*".into()),
            ..Default::default()
        };
        t.invalidate(&filter, Some(&KeyPattern::parse("x/*").unwrap()));
        assert!(t.get("x/1", 0).is_none());
        assert!(t.get("x/2", 0).is_some());
        assert!(t.get("y/1", 0).is_some());
        // The same filter heard from another process parses its own pattern.
        t.insert_written(entry("x/1", 1, None));
        t.invalidate_remote(&filter);
        assert!(t.get("x/1", 0).is_none());
        assert!(t.get("x/2", 0).is_some());
    }

    #[test]
    fn an_unparseable_remote_pattern_drops_everything() {
        let t = HotTier::new(1 << 20, true);
        t.insert_written(entry("x/1", 1, None));
        t.invalidate_remote(&InvalidationFilter {
            pattern: Some("run[0-9".into()),
            ..Default::default()
        });
        assert!(t.get("x/1", 0).is_none());
    }

    #[test]
    fn bypassed_while_incoherent() {
        let t = HotTier::new(1 << 20, true);
        t.insert_written(entry("a", 1, None));
        t.set_coherent(false);
        assert!(t.get("a", 0).is_none());
        t.insert_written(entry("a", 1, None));
        assert!(t.get("a", 0).is_none());
        t.set_coherent(true);
        assert!(t.get("a", 0).is_none(), "reconnecting starts empty");
    }

    #[test]
    fn bounded_by_bytes_with_lru_eviction() {
        let t = HotTier::new(10 * 400, true);
        for i in 0..100 {
            t.insert_written(entry(&format!("k{i}"), 1, None));
        }
        assert!(t.weighted_bytes() <= 10 * 400);
        assert!(t.entry_count() <= 11);
        assert!(t.size_evictions() > 0);
    }
}

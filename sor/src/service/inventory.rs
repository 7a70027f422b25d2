//! What the cache holds: entries, statistics and gauges.

use super::*;

impl SorService {
    /// What this process holds for `sor`.
    pub fn entries(&self, sor: &str) -> Vec<Entry> {
        self.memory.run_pending_tasks();
        let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
        for m in self.disk.entries(sor) {
            by_key.insert(m.key.clone(), self.entry(&m, false, true));
        }
        for (_, v) in self.memory.iter() {
            if let MemValue::Object(o) = v
                && o.0.sor == sor
            {
                let e = by_key
                    .entry(o.0.key.clone())
                    .or_insert_with(|| self.entry(&o.0, true, false));
                e.tiers = if e.tiers.contains(&"disk") {
                    vec!["memory", "disk"]
                } else {
                    vec!["memory"]
                };
            }
        }
        by_key.into_values().collect()
    }

    pub(super) fn entry(&self, m: &Meta, memory: bool, disk: bool) -> Entry {
        entry_of(m, &self.rules, memory, disk)
    }

    pub fn stats(&self, sor: &str) -> Result<serde_json::Value, ReadError> {
        let src = self.source(sor)?;
        self.memory.run_pending_tasks();
        let (disk_bytes, disk_objects) = self.disk.amounts(sor);
        let (mut mem_bytes, mut mem_objects) = (0u64, 0usize);
        for (_, v) in self.memory.iter() {
            if let MemValue::Object(o) = v
                && o.0.sor == sor
            {
                mem_bytes += o.1.len() as u64;
                mem_objects += 1;
            }
        }
        let r = |route: &str, result: &str| -> u64 {
            self.metrics
                .requests
                .with_label_values(&[sor, route, result])
                .get()
        };
        let hits = r("object", "hit-memory") + r("object", "hit-disk") + r("object", "revalidated");
        let misses = r("object", "miss");
        let hit_rate = hit_rate(hits, misses);
        let (used, reserved, _) = self.disk.totals();
        Ok(serde_json::json!({
            "sor": sor,
            "location": src.display,
            "validation": self.rules.validation.as_str(),
            "ttl_seconds": self.rules.ttl.as_secs(),
            "stale_if_error_seconds": self.rules.stale_if_error.as_secs(),
            "memory": { "objects": mem_objects, "bytes": mem_bytes, "capacity_bytes": self.limits.memory_bytes },
            "disk": { "objects": disk_objects, "bytes": disk_bytes, "capacity_bytes": self.limits.disk_bytes,
                      "used_bytes_all_sors": used, "reserved_bytes": reserved },
            "hits": hits,
            "misses": misses,
            "stale_served": self.metrics.stale_served.with_label_values(&[sor]).get(),
            "coalesced": self.metrics.coalesced.with_label_values(&[sor]).get(),
            "hit_rate": hit_rate,
        }))
    }

    /// Registers the tier gauges, sampled at each scrape.
    pub fn register_gauges(
        self: &Arc<Self>,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<()> {
        let weak = Arc::downgrade(self);
        registry.register(Box::new(crate::metrics::TierGauges {
            bytes: self.metrics.cache_bytes.clone(),
            objects: self.metrics.cache_objects.clone(),
            sample: Box::new(move || {
                if let Some(s) = weak.upgrade() {
                    s.sample_gauges();
                }
            }),
        }))
    }

    /// Sets the tier gauges.
    pub fn sample_gauges(&self) {
        self.memory.run_pending_tasks();
        let (used, _, n) = self.disk.totals();
        self.metrics
            .cache_bytes
            .with_label_values(&["disk"])
            .set(used as i64);
        self.metrics
            .cache_objects
            .with_label_values(&["disk"])
            .set(n as i64);
        self.metrics
            .cache_bytes
            .with_label_values(&["memory"])
            .set(self.memory.weighted_size() as i64);
        self.metrics
            .cache_objects
            .with_label_values(&["memory"])
            .set(self.memory.entry_count() as i64);
    }

    /// (bytes used, bytes reserved, objects) of the disk tier.
    pub fn disk_totals(&self) -> (u64, u64, usize) {
        self.disk.totals()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory.run_pending_tasks();
        self.memory.weighted_size()
    }
}

/// How one cached copy is listed: its tiers, and when it is next checked
/// against the SOR under `rules` (never, for immutable data).
fn entry_of(m: &Meta, rules: &Rules, memory: bool, disk: bool) -> Entry {
    let fresh_until = match rules.validation {
        crate::config::Validation::Never => None,
        crate::config::Validation::Always => Some(m.validated_at_ms),
        crate::config::Validation::Ttl => Some(m.validated_at_ms + rules.ttl.as_millis() as u64),
    };
    let tiers = [(memory, "memory"), (disk, "disk")]
        .into_iter()
        .filter_map(|(held, tier)| held.then_some(tier))
        .collect();
    Entry {
        key: m.key.clone(),
        size: m.info.size,
        etag: m.info.http_etag(),
        last_modified_ms: m.info.last_modified_ms,
        fetched_at_ms: m.fetched_at_ms,
        validated_at_ms: m.validated_at_ms,
        fresh_until_ms: fresh_until,
        tiers,
    }
}

/// Hits over reads; 0 before any read.
fn hit_rate(hits: u64, misses: u64) -> f64 {
    if hits + misses > 0 {
        hits as f64 / (hits + misses) as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Validation;
    use std::time::Duration;

    fn meta() -> Meta {
        Meta {
            sor: "data".into(),
            key: "a/b.json".into(),
            info: ObjectInfo {
                etag: "\"e1\"".into(),
                last_modified_ms: 5,
                size: 42,
            },
            fetched_at_ms: 1_000,
            validated_at_ms: 2_000,
        }
    }

    fn rules(validation: Validation) -> Rules {
        Rules {
            validation,
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(0),
        }
    }

    #[test]
    fn an_entry_says_when_it_is_next_checked_and_where_it_is_held() {
        let e = entry_of(&meta(), &rules(Validation::Ttl), true, true);
        assert_eq!(e.fresh_until_ms, Some(62_000), "validated + ttl");
        assert_eq!(e.tiers, vec!["memory", "disk"]);
        assert_eq!((e.key.as_str(), e.size), ("a/b.json", 42));
        let e = entry_of(&meta(), &rules(Validation::Always), false, true);
        assert_eq!(e.fresh_until_ms, Some(2_000), "checked on every read");
        assert_eq!(e.tiers, vec!["disk"]);
        let e = entry_of(&meta(), &rules(Validation::Never), true, false);
        assert_eq!(e.fresh_until_ms, None, "immutable: never checked");
        assert_eq!(e.tiers, vec!["memory"]);
    }

    #[test]
    fn the_hit_rate_is_zero_before_any_read() {
        assert_eq!(hit_rate(0, 0), 0.0);
        assert_eq!(hit_rate(3, 1), 0.75);
    }
}

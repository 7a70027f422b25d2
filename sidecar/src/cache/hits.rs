//! Hit and miss counts gathered in memory and written to the store in batches,
//! so a GET never costs a database write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;
use simcache_store::cache::HitDelta;

#[derive(Default)]
pub struct HitBuffer {
    hits: Mutex<HashMap<String, (i64, i64)>>,
    misses: AtomicI64,
}

impl HitBuffer {
    pub fn record_hit(&self, key: &str, now_ms: i64) {
        let mut m = self.hits.lock();
        if let Some(v) = m.get_mut(key) {
            v.0 += 1;
            v.1 = v.1.max(now_ms);
        } else {
            m.insert(key.to_string(), (1, now_ms));
        }
    }

    pub fn record_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes everything gathered so far.
    pub fn take(&self) -> (Vec<HitDelta>, i64) {
        let hits = std::mem::take(&mut *self.hits.lock());
        let misses = self.misses.swap(0, Ordering::Relaxed);
        let deltas = hits
            .into_iter()
            .map(|(cache_key, (hits, last_accessed_ms))| HitDelta {
                cache_key,
                hits,
                last_accessed_ms,
            })
            .collect();
        (deltas, misses)
    }

    /// Puts back a batch whose write failed, so no count is lost.
    pub fn restore(&self, deltas: Vec<HitDelta>, misses: i64) {
        let mut m = self.hits.lock();
        for d in deltas {
            let v = m.entry(d.cache_key).or_insert((0, 0));
            v.0 += d.hits;
            v.1 = v.1.max(d.last_accessed_ms);
        }
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_restores() {
        let b = HitBuffer::default();
        b.record_hit("a", 5);
        b.record_hit("a", 9);
        b.record_hit("b", 1);
        b.record_miss();
        let (mut d, m) = b.take();
        d.sort_by(|x, y| x.cache_key.cmp(&y.cache_key));
        assert_eq!(
            d[0],
            HitDelta {
                cache_key: "a".into(),
                hits: 2,
                last_accessed_ms: 9
            }
        );
        assert_eq!(m, 1);
        assert_eq!(b.take(), (vec![], 0));
        b.restore(d, m);
        b.record_hit("a", 10);
        let (d, m) = b.take();
        let a = d.iter().find(|x| x.cache_key == "a").unwrap();
        assert_eq!((a.hits, a.last_accessed_ms, m), (3, 10, 1));
    }
}

//! Sessions recently read from the store, keyed by the token's SHA-256.
//!
//! Every authenticated request looks here first, so the lookup is kept to a
//! hash-map read: the key is the raw digest (no hex string per request) and
//! entries carry the time they were read, so a revoked or extended session is
//! read again after `ttl` (what other processes changed becomes visible).
//! It was a moka cache; its per-read bookkeeping for LRU and expiry cost
//! more than the rest of authentication, and a session cache needs neither:
//! sessions are few and all of them are hot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

pub type TokenDigest = [u8; 32];

pub struct SessionCache<S> {
    map: RwLock<HashMap<TokenDigest, (Arc<S>, Instant)>>,
    ttl: Duration,
    capacity: usize,
}

impl<S> SessionCache<S> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        SessionCache {
            map: RwLock::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The cached session, if it was read from the store less than `ttl` ago.
    pub fn get(&self, key: &TokenDigest) -> Option<Arc<S>> {
        let map = self.map.read();
        let (s, read_at) = map.get(key)?;
        (read_at.elapsed() < self.ttl).then(|| s.clone())
    }

    /// Remembers a session. When full, stale entries go first; if all are
    /// fresh (more live sessions than `capacity` within one `ttl`), the cache
    /// starts over rather than grow: they are read from the store again.
    pub fn insert(&self, key: TokenDigest, session: Arc<S>) {
        let mut map = self.map.write();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            let ttl = self.ttl;
            map.retain(|_, (_, read_at)| read_at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (session, Instant::now()));
    }

    pub fn invalidate(&self, key: &TokenDigest) {
        self.map.write().remove(key);
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl_and_can_be_invalidated() {
        // TTLs of seconds, not milliseconds: a loaded machine may pause a
        // thread for tens of milliseconds between two lines.
        let c = SessionCache::new(Duration::from_secs(2), 10);
        c.insert([1; 32], Arc::new("a"));
        assert_eq!(c.get(&[1; 32]).as_deref(), Some(&"a"));
        assert!(c.get(&[2; 32]).is_none());
        c.invalidate(&[1; 32]);
        assert!(c.get(&[1; 32]).is_none());
        c.insert([3; 32], Arc::new("c"));
        std::thread::sleep(Duration::from_millis(2100));
        assert!(
            c.get(&[3; 32]).is_none(),
            "read again from the store after the ttl"
        );
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let c = SessionCache::new(Duration::from_secs(60), 3);
        for i in 0..10u8 {
            c.insert([i; 32], Arc::new(i));
            assert!(c.len() <= 3);
            assert_eq!(c.get(&[i; 32]).as_deref(), Some(&i), "the newest is kept");
        }
        // Stale entries make room before fresh ones are dropped.
        let c = SessionCache::new(Duration::from_secs(2), 2);
        c.insert([1; 32], Arc::new(1));
        std::thread::sleep(Duration::from_millis(2100));
        c.insert([2; 32], Arc::new(2));
        c.insert([3; 32], Arc::new(3));
        assert!(c.get(&[2; 32]).is_some() && c.get(&[3; 32]).is_some());
    }
}

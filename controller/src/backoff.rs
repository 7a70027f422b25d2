//! Per-object exponential backoff with jitter for failed reconciliations,
//! as controller-runtime's default rate limiter does: each object's delay
//! doubles with each consecutive failure (from 500 ms, capped at 5
//! minutes), and a success forgets it. Jitter (±20 %) keeps objects that
//! failed together from retrying together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const BASE: Duration = Duration::from_millis(500);
const CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 for the first failure);
/// `jitter` in [0, 1) spreads it over ±20 %.
pub fn delay(failures: u32, jitter: f64) -> Duration {
    let doubled = BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let capped = doubled.min(CAP);
    capped.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// Consecutive failures per object (by namespace/name).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// One more failure of `key`: how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let jitter = simcache_store::random::bytes::<2>()
            .map(|b| f64::from(u16::from_le_bytes(b)) / 65536.0)
            .unwrap_or(0.5);
        delay(n, jitter)
    }

    /// `key` reconciled fine: its next failure starts over.
    pub fn succeeded(&self, key: &str) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }

    #[cfg(test)]
    fn failures(&self, key: &str) -> u32 {
        let m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_failure_within_the_jitter_and_cap() {
        assert_eq!(delay(1, 0.5), Duration::from_millis(500));
        assert_eq!(delay(2, 0.5), Duration::from_secs(1));
        assert_eq!(delay(4, 0.5), Duration::from_secs(4));
        assert_eq!(delay(1, 0.0), Duration::from_millis(400));
        let top = delay(1, 0.999_999);
        assert!(top > Duration::from_millis(599) && top < Duration::from_millis(600));
        assert_eq!(delay(30, 0.5), CAP);
        assert_eq!(delay(u32::MAX, 0.5), CAP);
    }

    #[test]
    fn objects_back_off_separately_and_a_success_resets() {
        let b = Backoff::default();
        let first = b.failed("ns/a");
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        b.failed("ns/a");
        let third = b.failed("ns/a");
        assert!(third >= Duration::from_millis(1600), "{third:?}");
        assert_eq!(b.failures("ns/a"), 3);
        assert_eq!(b.failures("ns/b"), 0, "per object");
        b.succeeded("ns/a");
        assert_eq!(b.failures("ns/a"), 0);
    }
}

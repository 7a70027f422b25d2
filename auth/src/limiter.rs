//! Login rate limiting: a sliding window of attempts per (client IP, username).
//! Every attempt takes a slot; a successful login frees the bucket. Buckets live
//! in a bounded cache that forgets idle ones, so memory does not grow with the
//! number of distinct clients.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct LoginLimiter {
    max_attempts: usize,
    window: Duration,
    buckets: moka::sync::Cache<(IpAddr, String), Arc<Mutex<VecDeque<Instant>>>>,
}

impl LoginLimiter {
    /// Buckets kept at most; the least recently used go first.
    pub const CAPACITY: u64 = 100_000;

    pub fn new(max_attempts: usize, window: Duration) -> Self {
        LoginLimiter {
            max_attempts,
            window,
            buckets: moka::sync::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .time_to_idle(window)
                .build(),
        }
    }

    /// Records an attempt; false when the bucket is already full.
    pub fn attempt(&self, ip: IpAddr, username: &str) -> bool {
        self.attempt_at(ip, username, Instant::now())
    }

    fn attempt_at(&self, ip: IpAddr, username: &str, now: Instant) -> bool {
        let bucket = self
            .buckets
            .get_with((ip, username.to_lowercase()), Default::default);
        let mut q = bucket.lock();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max_attempts {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Buckets held now.
    pub fn buckets(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }

    pub fn reset(&self, ip: IpAddr, username: &str) {
        self.buckets.invalidate(&(ip, username.to_lowercase()));
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which
/// case the right-most `X-Forwarded-For` hop that is not itself trusted.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    xff.rsplit(',')
        .filter_map(|h| h.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_per_window_per_client_and_name() {
        let l = LoginLimiter::new(5, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.attempt_at(ip, "Alice", t0));
        }
        assert!(
            !l.attempt_at(ip, "alice", t0),
            "usernames are case-insensitive"
        );
        assert!(
            l.attempt_at(ip, "bob", t0),
            "another name has its own bucket"
        );
        assert!(
            l.attempt_at(ip, "alice", t0 + Duration::from_secs(61)),
            "window slides"
        );
        l.reset(ip, "alice");
        for _ in 0..5 {
            assert!(l.attempt_at(ip, "alice", t0 + Duration::from_secs(62)));
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let xff = Some("1.2.3.4, 198.51.100.7, 10.1.1.1");
        assert_eq!(client_ip(peer, xff, &[]), peer);
        assert_eq!(
            client_ip(peer, xff, &[peer]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }
}

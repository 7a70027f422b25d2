//! The login limiter stops growing at its bound: attempts from three times
//! its capacity of distinct clients hold no more memory than its capacity.
//! (Alone in this test binary, so nothing else allocates meanwhile.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use simcache_auth::limiter::LoginLimiter;
use simcache_testkit::memory::rss_bytes;

#[test]
fn the_login_limiter_holds_no_more_than_its_capacity() {
    let cap = LoginLimiter::CAPACITY as u32;
    let limiter = LoginLimiter::new(5, Duration::from_secs(3600));
    let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
    let before = rss_bytes();
    for i in 0..cap {
        limiter.attempt(ip(i), "admin");
    }
    let at_capacity = rss_bytes() - before;
    for i in cap..3 * cap {
        limiter.attempt(ip(i), "admin");
    }
    let buckets = limiter.buckets();
    let past = rss_bytes() - before;
    eprintln!("{buckets} buckets; at capacity {at_capacity} bytes, past it {past} bytes");
    assert!(buckets <= LoginLimiter::CAPACITY, "{buckets} buckets");
    assert!(
        past as f64 <= at_capacity as f64 * 1.25,
        "grew past its bound: {past} bytes vs {at_capacity} at capacity"
    );
}

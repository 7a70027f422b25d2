//! The session cache stops growing at its bound: filled with three times
//! its capacity of sessions, the process holds no more than at capacity.
//! (Alone in this test binary, so nothing else allocates meanwhile.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::sync::Arc;
use std::time::Duration;

use simcache_auth::session_cache::SessionCache;
use simcache_testkit::memory::rss_bytes;

/// A session's size as the authenticator keeps one.
#[allow(dead_code)]
struct Held {
    username: String,
    token_hash: String,
    privileges: Vec<String>,
}

fn session(i: usize) -> Arc<Held> {
    Arc::new(Held {
        username: format!("user-{i}"),
        token_hash: format!("{i:064x}"),
        privileges: vec!["read_cache".into(), "write_cache".into()],
    })
}

#[test]
fn the_session_cache_holds_no_more_than_its_capacity() {
    const CAP: usize = 50_000;
    let cache = SessionCache::new(Duration::from_secs(3600), CAP);
    let key = |i: usize| {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(i as u64).to_le_bytes());
        k
    };
    let before = rss_bytes();
    for i in 0..CAP {
        cache.insert(key(i), session(i));
    }
    let at_capacity = rss_bytes() - before;
    for i in CAP..3 * CAP {
        cache.insert(key(i), session(i));
    }
    let past = rss_bytes() - before;
    assert!(cache.len() <= CAP, "{} held", cache.len());
    eprintln!("at capacity {at_capacity} bytes, past it {past} bytes");
    assert!(
        past as f64 <= at_capacity as f64 * 1.25,
        "grew past its bound: {past} bytes vs {at_capacity} at capacity"
    );
}

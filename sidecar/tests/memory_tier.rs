//! The memory tier's bound is what the process really spends: filled past
//! its configured bytes with entries shaped like real ones, the process's
//! resident memory grows by the configured bytes, within 25 %. (Alone in
//! this test binary, so nothing else allocates meanwhile.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::sync::Arc;

use serde_json::json;
use simcache_sidecar::cache::hot::{HotEntry, HotTier, footprint};
use simcache_store::cache::{CacheEntry, EntryStatus};
use simcache_testkit::memory::rss_bytes;

/// An entry as a simulation's client writes one: a readable key, ids, a
/// run database path and a few outputs with provenance.
fn entry(i: usize) -> Arc<HotEntry> {
    let key = format!("thermal_sim/1.0.0/{i:016x}{i:048x}");
    Arc::new(HotEntry::new(
        CacheEntry {
            cache_key: key.clone(),
            simulation_id: 42,
            simulation_name: "thermal_sim".into(),
            simulation_version: "1.0.0".into(),
            execution_id: format!("exec-{i:08}"),
            squid_id: format!("thermal_sim/1.0.0/{i:012x}"),
            input_hash: format!("{i:064x}"),
            run_db_path: Some(format!("/simcache/runs/exec-{i:08}.db")),
            metadata: Some(json!({
                "outputs": {"max_stress": 1.0e8 + i as f64, "max_temp": 350.5, "converged": true},
                "node": "compute-17", "duration_seconds": 12.5, "produced_by": "ns/run"
            })),
            user_id: None,
            created_at_ms: 1_700_000_000_000,
            expires_at_ms: None,
            last_accessed_ms: 1_700_000_000_000,
            access_count: 0,
            hit_count: 0,
            size_bytes: 4096,
            status: EntryStatus::Valid,
        },
        0,
    ))
}

#[test]
fn the_tier_costs_what_it_says_within_a_quarter() {
    const BOUND: u64 = 48 << 20;
    let tier = HotTier::new(BOUND, true);
    let one = entry(0);
    let per_entry = footprint(&one.entry.cache_key, &one);
    drop(one);
    let fits = (BOUND / per_entry) as usize;
    // Warm the allocator and the tier's tables, then measure from here.
    let before = rss_bytes();
    for i in 0..fits * 3 / 2 {
        tier.insert_written(entry(i));
    }
    let weighed = tier.weighted_bytes();
    let grown = rss_bytes().saturating_sub(before);
    let ratio = grown as f64 / weighed as f64;
    eprintln!(
        "{} entries of {per_entry} bytes weighed {weighed} bytes; RSS grew {grown} bytes ({ratio:.2}x)",
        tier.entry_count()
    );
    assert!(weighed <= BOUND, "within its bound: {weighed}");
    assert!(weighed > BOUND * 9 / 10, "filled to its bound: {weighed}");
    assert!(
        (0.75..=1.25).contains(&ratio),
        "the process grew {grown} bytes for {weighed} weighed ({ratio:.2}x)"
    );
}

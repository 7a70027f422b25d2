//! The cache API's behaviour over real HTTP, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::time::Duration;

use common::Ctx;
use reqwest::StatusCode;
use serde_json::json;
use simcache_store::Stores;

simcache_testkit::on_both_backends!(
    put_then_get_returns_the_seed_entry,
    misses_hits_and_stats_add_up,
    ttl_zero_and_short_ttls_expire,
    invalidation_by_id_pattern_and_both,
    invalidated_entries_are_not_served_from_memory,
    delete_one_and_delete_all,
    entries_are_paginated_and_filtered,
    overwrite_resets_counters_and_status,
    keys_with_slashes_and_escapes_round_trip,
    health_names_the_backend,
    metrics_are_exported,
    hit_counts_are_batched_not_written_per_get,
    the_memory_tier_answers_as_the_router_would,
    concurrent_puts_all_land_and_a_bad_one_fails_alone,
);

async fn put_then_get_returns_the_seed_entry(c: Ctx) {
    let b = c.put_entry("thermal_sim/350K/result", 42, json!({})).await;
    assert_eq!(
        b,
        json!({"success": true, "cache_key": "thermal_sim/350K/result"})
    );
    let (s, e) = c.get("/cache/thermal_sim/350K/result", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    for (k, v) in [
        ("cache_key", json!("thermal_sim/350K/result")),
        ("simulation_id", json!(42)),
        ("simulation_name", json!("thermal_sim")),
        ("simulation_version", json!("1.0.0")),
        ("execution_id", json!("exec-001")),
        ("squid_id", json!("thermal_sim/1.0.0/xyz")),
        ("input_hash", json!("hash123")),
        ("run_db_path", json!("/path/to/run.db")),
        ("ttl_hours", json!(24.0)),
        ("hit_count", json!(1)),
        ("metadata", json!({"node": "n1"})),
    ] {
        assert_eq!(e[k], v, "field {k} in {e}");
    }
    let created = e["created_at"].as_str().unwrap();
    assert_eq!(
        created.len(),
        19,
        "naive ISO seconds like the seed: {created}"
    );
    assert_eq!(&created[10..11], "T");
    assert!(e["expires_at"].as_str().unwrap() > created);
    let (_, e2) = c.get("/cache/thermal_sim/350K/result", Some(&c.user)).await;
    assert_eq!(e2["hit_count"], 2);
}

async fn misses_hits_and_stats_add_up(c: Ctx) {
    c.put_entry("a/1", 7, json!({})).await;
    c.put_entry("b/1", 8, json!({})).await;
    for _ in 0..2 {
        assert_eq!(c.get("/cache/a/1", Some(&c.user)).await.0, StatusCode::OK);
    }
    let (s, b) = c.get("/cache/missing/key", Some(&c.user)).await;
    assert_eq!(
        (s, b),
        (StatusCode::NOT_FOUND, json!({"error": "Not found"}))
    );
    let (s, st) = c.get("/cache/stats", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["total_entries"], 2);
    assert_eq!(st["total_hits"], 2);
    assert_eq!(st["total_misses"], 1);
    assert_eq!(st["total_accesses"], 3);
    assert_eq!(st["hit_rate"], 0.6667);
    assert_eq!(st["hit_rate_percent"], 66.67);
    assert!(st["total_size_bytes"].as_i64().unwrap() > 50);
    assert_eq!(st["invalidation_count"], 0);
    let (_, one) = c.get("/cache/stats?simulation_id=7", Some(&c.user)).await;
    assert_eq!(
        (one["total_entries"].clone(), one["total_hits"].clone()),
        (json!(1), json!(2))
    );
}

async fn ttl_zero_and_short_ttls_expire(c: Ctx) {
    c.put_entry("ttl/zero", 1, json!({"ttl_seconds": 0, "ttl_hours": null}))
        .await;
    assert_eq!(
        c.get("/cache/ttl/zero", Some(&c.user)).await.0,
        StatusCode::NOT_FOUND
    );
    c.put_entry(
        "ttl/short",
        1,
        json!({"ttl_seconds": "3", "ttl_hours": null}),
    )
    .await;
    c.put_entry("ttl/none", 1, json!({"ttl_hours": null})).await;
    assert_eq!(
        c.get("/cache/ttl/short", Some(&c.user)).await.0,
        StatusCode::OK
    );
    let (_, e) = c.get("/cache/ttl/none", Some(&c.user)).await;
    assert_eq!(
        (e["expires_at"].clone(), e["ttl_hours"].clone()),
        (json!(null), json!(null))
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        c.get("/cache/ttl/short", Some(&c.user)).await.0,
        StatusCode::NOT_FOUND,
        "memory tier must not outlive the TTL"
    );
    let (_, st) = c.get("/cache/stats", Some(&c.user)).await;
    assert_eq!(
        st["total_entries"], 1,
        "expired entries are not counted: {st}"
    );
    // The sweep deletes expired rows; the unexpired one stays.
    assert_eq!(c.srv.cache.sweep().await.unwrap(), 2);
    let (_, l) = c.get("/cache/entries", Some(&c.user)).await;
    assert_eq!(l["total"], 1);
    assert!(
        c.metrics()
            .await
            .contains("simcache_cache_evictions_total{reason=\"expired\",tier=\"store\"} 2")
    );
}

async fn invalidation_by_id_pattern_and_both(c: Ctx) {
    for (k, sim) in [
        ("thermal_sim/350K", 42),
        ("thermal_sim/400K", 42),
        ("thermal_sim/x/deep", 43),
        ("other/1", 42),
        ("thermal_sim_2/1", 42),
    ] {
        c.put_entry(k, sim, json!({})).await;
    }
    // Both filters: only sim 42 under thermal_sim/.
    let (s, b) = c
        .post("/cache/invalidate", Some(&c.dev), json!({"simulation_id": 42, "pattern": "thermal_sim/*", "reason": "new version released"}))
        .await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"success": true, "invalidated_count": 2})
        )
    );
    assert_eq!(
        c.get("/cache/thermal_sim/350K", Some(&c.user)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/cache/thermal_sim/x/deep", Some(&c.user)).await.0,
        StatusCode::OK
    );
    // sim2l's SQL-style %, with _ literal: thermal_sim_2 matches, thermalXsim would not.
    let (_, b) = c
        .post(
            "/cache/invalidate",
            Some(&c.dev),
            json!({"pattern": "thermal_sim_%"}),
        )
        .await;
    assert_eq!(b["invalidated_count"], 1);
    let (_, b) = c
        .post(
            "/cache/invalidate",
            Some(&c.dev),
            json!({"simulation_id": 43}),
        )
        .await;
    assert_eq!(b["invalidated_count"], 1);
    let (_, b) = c
        .post(
            "/cache/invalidate",
            Some(&c.dev),
            json!({"pattern": "nothing/*"}),
        )
        .await;
    assert_eq!(b["invalidated_count"], 0);
    assert_eq!(
        c.get("/cache/other/1", Some(&c.user)).await.0,
        StatusCode::OK
    );
    let (_, st) = c.get("/cache/stats", Some(&c.user)).await;
    assert_eq!(
        (
            st["total_entries"].clone(),
            st["invalidation_count"].clone()
        ),
        (json!(1), json!(4))
    );
    // Invalidated rows are kept, with their status, and listed on request.
    let (_, l) = c
        .get("/cache/entries?status=invalidated", Some(&c.user))
        .await;
    assert_eq!(l["total"], 4);
    assert!(
        l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "invalidated")
    );
}

async fn invalidated_entries_are_not_served_from_memory(c: Ctx) {
    c.put_entry("hot/key", 5, json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            c.get("/cache/hot/key", Some(&c.user)).await.0,
            StatusCode::OK
        );
    }
    assert!(
        c.metrics()
            .await
            .contains("simcache_cache_hits_total{tier=\"memory\"}")
    );
    c.post(
        "/cache/invalidate",
        Some(&c.dev),
        json!({"simulation_name": "thermal_sim", "simulation_version": "1.0.0"}),
    )
    .await;
    assert_eq!(
        c.get("/cache/hot/key", Some(&c.user)).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn delete_one_and_delete_all(c: Ctx) {
    c.put_entry("d/1", 1, json!({})).await;
    c.put_entry("d/2", 1, json!({})).await;
    let (s, b) = c.delete("/cache/d/1", Some(&c.dev)).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"deleted_count": 1, "cache_key": "d/1"})
        )
    );
    assert_eq!(
        c.get("/cache/d/1", Some(&c.user)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.delete("/cache/d/1", Some(&c.dev)).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = c.delete("/cache", Some(&c.dev)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "clearing the cache is for admins");
    assert_eq!(
        c.get("/cache/d/2", Some(&c.user)).await.0,
        StatusCode::OK,
        "a refused clear changes nothing"
    );
    let (s, b) = c.delete("/cache", Some(&c.admin)).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"deleted": 1})));
    assert_eq!(
        c.get("/cache/d/2", Some(&c.user)).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn entries_are_paginated_and_filtered(c: Ctx) {
    for i in 0..30 {
        let name = if i % 3 == 0 { "alpha" } else { "beta" };
        c.put_entry(&format!("p/{i:02}"), i, json!({"simulation_name": name}))
            .await;
    }
    let (s, l) = c
        .get("/cache/entries?limit=10&offset=25", Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (l["total"].clone(), l["limit"].clone(), l["offset"].clone()),
        (json!(30), json!(10), json!(25))
    );
    assert_eq!(l["entries"].as_array().unwrap().len(), 5);
    let (_, l) = c
        .get(
            "/cache/entries?simulation_name=alpha&limit=100",
            Some(&c.user),
        )
        .await;
    assert_eq!(l["total"], 10);
    let (_, l) = c.get("/cache/entries?simulation_id=4", Some(&c.user)).await;
    assert_eq!(l["entries"][0]["cache_key"], "p/04");
    assert_eq!(l["entries"][0]["status"], "valid");
    let (_, l) = c.get("/cache/entries", Some(&c.user)).await;
    assert_eq!(
        l["entries"].as_array().unwrap().len(),
        25,
        "default page size"
    );
}

async fn overwrite_resets_counters_and_status(c: Ctx) {
    c.put_entry("o/1", 1, json!({})).await;
    c.get("/cache/o/1", Some(&c.user)).await;
    c.post("/cache/invalidate", Some(&c.dev), json!({"pattern": "o/*"}))
        .await;
    c.put_entry("o/1", 1, json!({"execution_id": "exec-002"}))
        .await;
    let (s, e) = c.get("/cache/o/1", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (e["execution_id"].clone(), e["hit_count"].clone()),
        (json!("exec-002"), json!(1))
    );
}

async fn keys_with_slashes_and_escapes_round_trip(c: Ctx) {
    let key = "sim/1.0/a b%20c?d#e";
    c.put_entry(key, 1, json!({})).await;
    let enc: String = key
        .split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'.' {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/");
    let (s, e) = c.get(&format!("/cache/{enc}"), Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["cache_key"], key);
}

async fn health_names_the_backend(c: Ctx) {
    let (s, h) = c.get("/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["service"], "cache");
    assert_eq!(h["backend"], c.srv.cache.backend());
}

async fn metrics_are_exported(c: Ctx) {
    c.put_entry("m/1", 1, json!({})).await;
    c.get("/cache/m/1", Some(&c.user)).await;
    c.get("/cache/m/2", Some(&c.user)).await;
    c.post("/cache/invalidate", Some(&c.dev), json!({"pattern": "m/*"}))
        .await;
    c.srv.cache.sweep().await.unwrap();
    let m = c.metrics().await;
    for needle in [
        "simcache_http_requests_total{method=\"GET\",route=\"/cache/{*key}\",status=\"200\"} 1",
        "simcache_http_requests_total{method=\"GET\",route=\"/cache/{*key}\",status=\"404\"} 1",
        "simcache_http_request_duration_seconds_bucket{method=\"POST\",route=\"/cache\"",
        "simcache_cache_misses_total 1",
        "simcache_cache_writes_total 1",
        "simcache_cache_invalidations_total 1",
        "simcache_cache_entries 0",
        "simcache_cache_bytes 0",
        "simcache_cache_memory_entries",
        "simcache_cache_memory_bytes",
        "simcache_cache_coherence_connected 1",
        "# TYPE simcache_cache_evictions_total counter",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}

async fn hit_counts_are_batched_not_written_per_get(c: Ctx) {
    // Only an explicit flush may write within this test.
    let c = c
        .restart(|cfg| cfg.hit_flush_interval = Duration::from_secs(3600))
        .await;
    c.put_entry("batch/1", 1, json!({})).await;
    for _ in 0..5 {
        assert_eq!(
            c.get("/cache/batch/1", Some(&c.user)).await.0,
            StatusCode::OK
        );
    }
    let other = Stores::open(&c.backend, "observer").await.unwrap();
    let stored_hits = async || {
        let now = simcache_store::clock::now_ms();
        other
            .cache
            .get("batch/1", now)
            .await
            .unwrap()
            .unwrap()
            .hit_count
    };
    assert_eq!(stored_hits().await, 0, "no write per GET");
    c.srv.cache.flush().await.unwrap();
    assert_eq!(stored_hits().await, 5, "one batched write");
}

/// Memory-tier hits are answered before the router (`http/hot_get.rs`); this
/// checks that the shortcut never answers what the router would answer
/// differently.
async fn the_memory_tier_answers_as_the_router_would(c: Ctx) {
    // Keys named like the fixed /cache routes stay those routes.
    for key in ["stats", "entries", "invalidate"] {
        c.put_entry(key, 7, json!({})).await;
    }
    let (s, stats) = c.get("/cache/stats", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert!(stats.get("total_entries").is_some(), "{stats}");
    let (s, list) = c.get("/cache/entries", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(list.get("cache_key").is_none(), "{list}");
    let (s, b) = c.get("/cache/invalidate", Some(&c.user)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");

    // The shortcut's body is the router's, hit count aside.
    c.put_entry("fd/1", 7, json!({"metadata": {"note": "\"hit_count\":0"}}))
        .await;
    let (s, fast) = c.get("/cache/fd/1", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{fast}");
    let (s, routed) = c.get("/cache/fd%2F1", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{routed}");
    assert_eq!(fast["hit_count"], 1);
    assert_eq!(routed["hit_count"], 2);
    let without_count = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("hit_count");
        v
    };
    assert_eq!(without_count(fast), without_count(routed));

    // A path is percent-decoded before it names a key, even when the raw
    // path is itself a key in memory.
    c.put_entry("pct/x%41", 7, json!({})).await;
    c.put_entry("pct/xA", 7, json!({})).await;
    let (s, b) = c.get("/cache/pct/x%41", Some(&c.user)).await;
    assert_eq!(
        (s, b["cache_key"].clone()),
        (StatusCode::OK, json!("pct/xA"))
    );

    // A session without read_cache is refused every time, also once this
    // process knows it.
    let runner = c
        .srv
        .auth
        .create_anonymous(
            simcache_auth::PrivilegeSet::of(&[simcache_auth::Privilege::ExecuteSimulation]),
            Some(1.0),
        )
        .await
        .unwrap()
        .token;
    for _ in 0..2 {
        let (s, b) = c.get("/cache/fd/1", Some(&runner)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    }
    // Unknown sessions get the router's 401, not a hit.
    let (s, b) = c.get("/cache/fd/1", Some(&"0".repeat(64))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");

    // Hits answered early are counted like any other request.
    let m = c.metrics().await;
    assert!(
        m.contains(
            "simcache_http_requests_total{method=\"GET\",route=\"/cache/{*key}\",status=\"200\"} 3"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "simcache_http_request_duration_seconds_count{method=\"GET\",route=\"/cache/{*key}\"} 6"
        ),
        "{m}"
    );
}

/// PostgreSQL commits puts in flight together in one transaction; a put the
/// database refuses must fail alone, and every other put of its batch land.
async fn concurrent_puts_all_land_and_a_bad_one_fails_alone(c: Ctx) {
    let entry =
        |key: &str| {
            serde_json::from_value::<simcache_sidecar::cache::request::PutRequest>(
                common::entry_body(key, 3, json!({})),
            )
            .unwrap()
            .into_entry(simcache_store::clock::now_ms(), None)
            .unwrap()
        };
    // Past the HTTP checks: PostgreSQL cannot store a NUL in text.
    let mut bad = entry("batch/bad");
    bad.simulation_name = "nul\0name".into();
    let goods: Vec<_> = (0..60).map(|i| entry(&format!("batch/{i:02}"))).collect();
    let mut puts: Vec<_> = goods.into_iter().map(|e| c.srv.cache.put(e)).collect();
    puts.insert(30, c.srv.cache.put(bad));
    let mut results = futures_util::future::join_all(puts).await;
    let bad_result = results.remove(30);
    for (i, r) in results.into_iter().enumerate() {
        assert!(r.is_ok(), "put {i}: {r:?}");
    }
    let stored_bad = match c.backend {
        simcache_store::Backend::Postgres(_) => {
            assert!(bad_result.is_err(), "a NUL was accepted by PostgreSQL");
            0
        }
        _ => 1,
    };
    let (s, st) = c.get("/cache/stats", Some(&c.user)).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["total_entries"], 60 + stored_bad, "{st}");
}

/// A run pod's listeners: the API on loopback only (the simulation is in
/// the same pod), health and metrics alone on the probe address that the
/// kubelet and Prometheus reach from outside the pod.
#[tokio::test]
async fn the_probe_listener_serves_health_and_metrics_and_nothing_else() {
    let c = common::sqlite_with(|cfg| {
        cfg.probe_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    assert!(c.srv.addr.ip().is_loopback(), "{}", c.srv.addr);
    let probes = format!("http://{}", c.srv.probe_addr.expect("a probe listener"));
    let http = reqwest::Client::new();
    let health = http.get(format!("{probes}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = http.get(format!("{probes}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("simcache_build_info")
    );
    // The API is not there, with or without a session.
    for path in [
        "/cache/k",
        "/api/v1/session",
        "/run/status",
        "/sor/data/objects/a",
    ] {
        let r = http
            .get(format!("{probes}{path}"))
            .header("X-Session-ID", &c.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let put = http
        .put(format!("{probes}/cache/k"))
        .header("X-Session-ID", &c.admin)
        .json(&json!({"simulation_id": 1, "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NOT_FOUND);
}

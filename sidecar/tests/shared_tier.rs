//! The shared tier as run pods use it, with the real binaries: `shared` on
//! PostgreSQL, and two pod sidecars on their own SQLite files that hold no
//! database credential, only the run's session. Writes on one pod are read
//! on the other, changes reach the other's memory tier through the tier's
//! change stream, the tier checks every call's privilege and input, and
//! a stopped tier leaves hits served, refuses misses and writes with 503
//! and a retry hint, loses nothing acknowledged and is used again once back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_testkit::ServerProcess;

use common::{BIN, eventually, sidecar_cli};

async fn cli(args: &[&str]) -> String {
    sidecar_cli(args, &[]).await
}

struct Pod {
    proc: ServerProcess,
    _dir: tempfile::TempDir,
}

/// A pod's sidecar as the operator starts it: its own SQLite file, the
/// run's session, the shared tier's URL, and no database URL.
async fn pod(tier: &str, session: &str) -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pod.db");
    let proc = ServerProcess::spawn(
        Path::new(BIN),
        &["serve", "--db-path", db.to_str().unwrap(), "--port", "0"],
        &[
            ("SIMCACHE_POD_SESSION", session),
            ("SIMCACHE_SHARED_TIER_URL", tier),
        ],
    )
    .await;
    Pod { proc, _dir: dir }
}

fn entry(key: &str, exec: &str) -> Value {
    json!({"cache_key": key, "simulation_id": 1, "simulation_name": "thermal",
           "simulation_version": "1.0.0", "execution_id": exec, "squid_id": "s",
           "input_hash": "h"})
}

async fn get(http: &reqwest::Client, url: &str, tok: &str) -> reqwest::Response {
    http.get(url)
        .header("X-Session-ID", tok)
        .send()
        .await
        .unwrap()
}

async fn put(
    http: &reqwest::Client,
    base: &str,
    tok: &str,
    key: &str,
    exec: &str,
) -> reqwest::Response {
    http.post(format!("{base}/cache"))
        .header("X-Session-ID", tok)
        .json(&entry(key, exec))
        .send()
        .await
        .unwrap()
}

async fn execution_of(http: &reqwest::Client, base: &str, tok: &str, key: &str) -> Option<String> {
    let r = get(http, &format!("{base}/cache/{key}"), tok).await;
    if r.status() != StatusCode::OK {
        return None;
    }
    let v: Value = r.json().await.unwrap();
    v["execution_id"].as_str().map(str::to_string)
}

async fn memory(http: &reqwest::Client, base: &str, tok: &str) -> (bool, i64) {
    let st: Value = get(http, &format!("{base}/cache/stats"), tok)
        .await
        .json()
        .await
        .unwrap_or(Value::Null);
    (
        st["memory_tier"]["enabled"].as_bool().unwrap_or(false),
        st["memory_tier"]["entries"].as_i64().unwrap_or(-1),
    )
}

async fn stored_executions(db: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query(
            "SELECT execution_id FROM cache_entries ORDER BY cache_key",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_keep_their_cache_in_the_shared_tier_without_a_database_credential() {
    let db = simcache_testkit::fresh_database("shared_tier").await;
    let port = simcache_testkit::ports::free_port().unwrap().to_string();
    let tier_args = [
        "shared",
        "--backend",
        "postgresql",
        "--db-url",
        &db,
        "--port",
        &port,
    ];
    let tier = ServerProcess::spawn(Path::new(BIN), &tier_args, &[]).await;
    // The run's session, as the operator makes it: the cache, no management.
    let run = cli(&[
        "session",
        "create",
        "--privileges",
        "read_cache,write_cache",
        "--backend",
        "postgresql",
        "--db-url",
        &db,
    ])
    .await;
    let (a, b) = (pod(&tier.url, &run).await, pod(&tier.url, &run).await);
    let (a_url, b_url) = (a.proc.url.clone(), b.proc.url.clone());
    let http = reqwest::Client::new();
    eventually("both pods follow the tier's changes", async || {
        memory(&http, &a_url, &run).await.0 && memory(&http, &b_url, &run).await.0
    })
    .await;

    // Written on A with the run's session, stored by the tier, read on B.
    assert_eq!(
        put(&http, &a_url, &run, "k/1", "exec-1").await.status(),
        StatusCode::OK
    );
    assert_eq!(stored_executions(&db).await, ["exec-1"], "in PostgreSQL");
    assert_eq!(
        execution_of(&http, &b_url, &run, "k/1").await.as_deref(),
        Some("exec-1")
    );
    eventually("B holds k/1 in memory", async || {
        execution_of(&http, &b_url, &run, "k/1").await;
        memory(&http, &b_url, &run).await.1 == 1
    })
    .await;

    // Overwritten on A: B's memory tier hears it and stops serving the old one.
    assert_eq!(
        put(&http, &a_url, &run, "k/1", "exec-2").await.status(),
        StatusCode::OK
    );
    let t = eventually("B serves the overwrite", async || {
        execution_of(&http, &b_url, &run, "k/1").await.as_deref() == Some("exec-2")
    })
    .await;
    eprintln!("overwrite on A visible on B after {t:?}");

    // The tier checks every call: no session, a session that may not, bad input.
    let tier_entries = format!("{}/tier/v1/cache/entries", tier.url);
    let r = http.delete(&tier_entries).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .delete(&tier_entries)
        .header("X-Session-ID", &run)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
    let r = http
        .put(format!("{}/tier/v1/cache/entry", tier.url))
        .header("X-Session-ID", &run)
        .json(&json!({"cache_key": "k/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "an entry must be whole"
    );
    let mut bad = serde_json::to_value(simcache_store::cache::CacheEntry {
        cache_key: "../../etc".into(),
        simulation_id: 1,
        simulation_name: "t".into(),
        simulation_version: "1".into(),
        execution_id: "e".into(),
        squid_id: "s".into(),
        input_hash: "h".into(),
        run_db_path: None,
        metadata: None,
        user_id: Some(1),
        created_at_ms: 0,
        expires_at_ms: None,
        last_accessed_ms: 0,
        access_count: 0,
        hit_count: 0,
        size_bytes: 0,
        status: simcache_store::cache::EntryStatus::Valid,
    })
    .unwrap();
    let r = http
        .put(format!("{}/tier/v1/cache/entry", tier.url))
        .header("X-Session-ID", &run)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("key"), "{body}");
    bad["cache_key"] = json!("k/forged");
    bad["hit_count"] = json!(1_000_000);
    let r = http
        .put(format!("{}/tier/v1/cache/entry", tier.url))
        .header("X-Session-ID", &run)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = get(
        &http,
        &format!("{}/tier/v1/cache/entry?key=k/forged", tier.url),
        &run,
    )
    .await;
    let stored: Value = r.json().await.unwrap();
    assert_eq!(
        stored["hit_count"], 0,
        "counters start at zero whatever a pod says"
    );
    assert_eq!(
        stored["user_id"],
        Value::Null,
        "written by the run's session, not user 1"
    );
    let r = get(&http, &format!("{}/tier/v1/cache/entry", tier.url), &run).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the key is required");

    // The tier stops: hits held in memory are served, misses and writes get
    // 503 with a retry hint.
    assert_eq!(tier.terminate().await, Some(0));
    assert_eq!(
        execution_of(&http, &b_url, &run, "k/1").await.as_deref(),
        Some("exec-2")
    );
    let miss = get(&http, &format!("{b_url}/cache/k/unknown"), &run).await;
    assert_eq!(miss.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(miss.headers()["retry-after"], "1");
    let refused = put(&http, &a_url, &run, "k/2", "exec-lost").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));

    // Back on the same address: the pods use it again by themselves.
    let tier = ServerProcess::spawn(Path::new(BIN), &tier_args, &[]).await;
    eventually("A writes again", async || {
        put(&http, &a_url, &run, "k/2", "exec-3").await.status() == StatusCode::OK
    })
    .await;
    eventually("B reads A's new write", async || {
        execution_of(&http, &b_url, &run, "k/2").await.as_deref() == Some("exec-3")
    })
    .await;
    // Nothing acknowledged was lost; the refused write was never stored.
    assert_eq!(stored_executions(&db).await, ["exec-2", "exec-3", "e"]);
    assert_eq!(tier.terminate().await, Some(0));
}

/// Two replicas of the tier behind one address (as a Service puts them):
/// one killed while a pod reads and writes through the tier, and not one
/// request fails; every acknowledged write is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_tier_replicas_killed_under_load_fails_no_request() {
    let db = simcache_testkit::fresh_database("tier_replicas").await;
    let ports = simcache_testkit::ports::free_ports(2).unwrap();
    let replica = |port: u16| {
        let db = db.clone();
        async move {
            let port = port.to_string();
            ServerProcess::spawn(
                Path::new(BIN),
                &[
                    "shared",
                    "--backend",
                    "postgresql",
                    "--db-url",
                    &db,
                    "--port",
                    &port,
                ],
                &[],
            )
            .await
        }
    };
    let (one, two) = (replica(ports[0]).await, replica(ports[1]).await);
    let servers = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let service = simcache_testkit::balancer::Balancer::start(servers)
        .await
        .unwrap();
    let run = cli(&[
        "session",
        "create",
        "--privileges",
        "read_cache,write_cache",
        "--backend",
        "postgresql",
        "--db-url",
        &db,
    ])
    .await;
    let p = pod(&service.url, &run).await;
    let base = p.proc.url.clone();
    let http = reqwest::Client::new();
    eventually("the pod follows the tier", async || {
        memory(&http, &base, &run).await.0
    })
    .await;
    assert_eq!(
        put(&http, &base, &run, "r/seed", "seed").await.status(),
        StatusCode::OK
    );

    // Four clients read and write through the pod until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (http, base, run, stop) = (http.clone(), base.clone(), run.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let key = format!("r/{c}/{n}");
                let w = put(&http, &base, &run, &key, "load").await.status();
                if w == StatusCode::OK {
                    acked.push(key);
                } else {
                    failed.push(format!("write {key}: {w}"));
                }
                // A miss (no memory tier hit for a fresh key) crosses to the tier.
                let r = get(&http, &format!("{base}/cache/r/{c}/none-{n}"), &run)
                    .await
                    .status();
                if r != StatusCode::NOT_FOUND {
                    failed.push(format!("read: {r}"));
                }
            }
            (acked, failed)
        }));
    }
    // Let the load run, then kill one replica outright, then let it run on.
    eventually("load under way", async || {
        stored_executions(&db).await.len() > 20
    })
    .await;
    one.kill().await;
    let more = stored_executions(&db).await.len() + 40;
    eventually("load goes on after the kill", async || {
        stored_executions(&db).await.len() > more
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for c in clients {
        let (a, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "requests failed: {failed:?}");
        acked.extend(a);
    }
    // Every acknowledged write is in PostgreSQL.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let stored: std::collections::HashSet<String> = client
        .query("SELECT cache_key FROM cache_entries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    assert_eq!(two.terminate().await, Some(0));
}

/// A device named without its namespace is refused when a session is made,
/// saying the shape it expects.
#[tokio::test]
async fn a_session_scoped_to_a_device_needs_namespace_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    for bad in ["unit-a", "lab/", "Lab/unit-a", "lab/unit a"] {
        let out = tokio::process::Command::new(BIN)
            .args(["session", "create", "--sfm-device", bad, "--db-path"])
            .arg(&db)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("expected namespace/name"), "{bad}: {err}");
    }
    let ok = sidecar_cli(
        &[
            "session",
            "create",
            "--sfm-device",
            "lab/unit-a",
            "--db-path",
            db.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!ok.is_empty(), "a token is printed");
}

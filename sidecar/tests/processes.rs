//! The real binary as separate processes: two sidecars sharing one PostgreSQL
//! keep their memory tiers coherent; SIGTERM flushes pending hit counts; the
//! CLI creates users and sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_store::{Backend, Stores};
use simcache_testkit::ServerProcess;

use common::{BIN, eventually, sidecar_cli as cli};

async fn get(http: &reqwest::Client, url: &str, tok: &str) -> (StatusCode, Value) {
    let r = http
        .get(url)
        .header("X-Session-ID", tok)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn post(http: &reqwest::Client, url: &str, tok: &str, body: Value) -> StatusCode {
    http.post(url)
        .header("X-Session-ID", tok)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Writes an entry through the sidecar at `base` and checks it was accepted.
async fn put_on(http: &reqwest::Client, base: &str, tok: &str, key: &str, exec: &str) {
    let s = post(http, &format!("{base}/cache"), tok, entry(key, exec)).await;
    assert_eq!(s, StatusCode::OK, "writing {key} on {base}");
}

fn entry(key: &str, exec: &str) -> Value {
    common::entry_body(key, 1, json!({ "execution_id": exec }))
}

async fn memory_entries(http: &reqwest::Client, base: &str, tok: &str) -> (bool, i64) {
    let (_, st) = get(http, &format!("{base}/cache/stats"), tok).await;
    (
        st["memory_tier"]["enabled"].as_bool().unwrap_or(false),
        st["memory_tier"]["entries"].as_i64().unwrap_or(-1),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_on_one_postgres_stay_coherent() {
    let db = simcache_testkit::fresh_database("coherence").await;
    let args = [
        "serve",
        "--backend",
        "postgresql",
        "--db-url",
        &db,
        "--port",
        "0",
    ];
    let a = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let b = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let tok = cli(
        &[
            "session",
            "create",
            "--role",
            "developer",
            "--backend",
            "postgresql",
            "--db-url",
            &db,
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    eventually("both memory tiers enabled", async || {
        memory_entries(&http, &a.url, &tok).await.0 && memory_entries(&http, &b.url, &tok).await.0
    })
    .await;

    // Written on A, read twice on B: the second read is served from B's memory.
    put_on(&http, &a.url, &tok, "k/1", "exec-1").await;
    let key_on_b = format!("{}/cache/k/1", b.url);
    assert_eq!(
        get(&http, &key_on_b, &tok).await.1["execution_id"],
        "exec-1"
    );
    // A read that overlaps the arrival of A's own put event is (rightly) not
    // cached, so B may need another read before the entry sits in memory.
    eventually("B caches k/1", async || {
        get(&http, &key_on_b, &tok).await;
        memory_entries(&http, &b.url, &tok).await.1 == 1
    })
    .await;

    // Overwritten on A: B stops serving the old value.
    put_on(&http, &a.url, &tok, "k/1", "exec-2").await;
    let t = eventually("B sees the overwrite", async || {
        get(&http, &key_on_b, &tok).await.1["execution_id"] == "exec-2"
    })
    .await;
    eprintln!("overwrite visible on B after {t:?}");

    // Invalidated on A: B answers 404.
    let inv = json!({"pattern": "k/*", "reason": "test"});
    assert_eq!(
        post(&http, &format!("{}/cache/invalidate", a.url), &tok, inv).await,
        StatusCode::OK
    );
    let t = eventually("B drops the invalidated entry", async || {
        get(&http, &key_on_b, &tok).await.0 == StatusCode::NOT_FOUND
    })
    .await;
    eprintln!("invalidation visible on B after {t:?}");

    // Deleted on A: B answers 404.
    put_on(&http, &a.url, &tok, "k/2", "exec-3").await;
    let key2_on_b = format!("{}/cache/k/2", b.url);
    assert_eq!(get(&http, &key2_on_b, &tok).await.0, StatusCode::OK);
    let del = http
        .delete(format!("{}/cache/k/2", a.url))
        .header("X-Session-ID", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::OK);
    eventually("B drops the deleted entry", async || {
        get(&http, &key2_on_b, &tok).await.0 == StatusCode::NOT_FOUND
    })
    .await;

    // The event channel dies: B empties its memory tier and bypasses it, then
    // reconnects and starts again from empty.
    put_on(&http, &a.url, &tok, "k/3", "exec-4").await;
    let key3_on_b = format!("{}/cache/k/3", b.url);
    eventually("B caches k/3", async || {
        get(&http, &key3_on_b, &tok).await;
        memory_entries(&http, &b.url, &tok).await.1 >= 1
    })
    .await;
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let killed = client
        .query(
            // Only this test's database: other tests listen on theirs.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN%' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "one LISTEN connection per sidecar");
    eventually("B reconnects with an empty memory tier", async || {
        let (enabled, n) = memory_entries(&http, &b.url, &tok).await;
        enabled && n == 0
    })
    .await;
    let metrics = http
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("simcache_cache_coherence_connected 1"));

    assert_eq!(a.terminate().await, Some(0));
    assert_eq!(b.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_pending_hit_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = db.to_str().unwrap();
    let tok = cli(
        &["session", "create", "--role", "user", "--db-path", db],
        &[],
    )
    .await;
    // Flushes happen only at shutdown in this test.
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--db-path",
            db,
            "--port",
            "0",
            "--hit-flush-interval-ms",
            "3600000",
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    assert_eq!(
        post(&http, &format!("{}/cache", p.url), &tok, entry("t/1", "e")).await,
        StatusCode::OK
    );
    for _ in 0..3 {
        assert_eq!(
            get(&http, &format!("{}/cache/t/1", p.url), &tok).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(p.terminate().await, Some(0), "SIGTERM is a clean exit");
    let store = Stores::open(&Backend::Sqlite { path: db.into() }, "observer")
        .await
        .unwrap();
    let e = store
        .cache
        .get("t/1", simcache_store::clock::now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.hit_count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_users_log_in_and_sim2l_env_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = db.to_str().unwrap();
    cli(
        &[
            "user",
            "create",
            "--username",
            "dana",
            "--role",
            "developer",
            "--db-path",
            db,
        ],
        &[("SIMCACHE_USER_PASSWORD", "a long secret")],
    )
    .await;
    // Settings from sim2l's variable names; the admin from a Secret-style env var.
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &["serve", "--port", "0"],
        &[
            ("SIM2L_CACHE_DB_PATH", db),
            ("SIMCACHE_ADMIN_PASSWORD", "bootstrap-admin-pw"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let login = |u: &'static str, pw: &'static str| {
        let (http, url) = (http.clone(), p.url.clone());
        async move {
            let r = http
                .post(format!("{url}/session/login"))
                .json(&json!({"username": u, "password": pw}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = login("dana", "a long secret").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["role"], "developer");
    let (s, b) = login("admin", "bootstrap-admin-pw").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["role"], "admin");
    let (_, h) = get(&http, &format!("{}/health", p.url), "").await;
    assert_eq!(h["backend"], "sqlite");
    p.terminate().await;
}

#[tokio::test]
async fn a_settings_document_that_does_not_fit_stops_the_sidecar_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (doc, field) in [
        (
            r#"{"systemsOfRecord": [{"name": "data", "s3": {"bucket": "lab-data", "prefix": "x,db=file:///etc"}}]}"#,
            "systemsOfRecord[0].s3.prefix",
        ),
        (
            r#"{"systemsOfRecord": [{"name": "db", "directory": {"path": "/etc/simcache"}}]}"#,
            "systemsOfRecord[0].directory.path",
        ),
        (
            r#"{"sfmDevices": [{"namespace": "field", "name": "unit-a,other/unit-b"}]}"#,
            "sfmDevices[0].name",
        ),
        (
            r#"{"sfmDevices": [{"namespace": "field"}]}"#,
            "sfmDevices[0]",
        ),
        (r#"{"systemsOfRecord": "data=s3://b/p"}"#, "systemsOfRecord"),
        ("not json", "(document)"),
    ] {
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--no-auth", "--port", "0"])
            .env("SIMCACHE_CACHE_DB_PATH", dir.path().join("c.db"))
            .env("SIMCACHE_POD_SETTINGS", doc)
            .env("SIMCACHE_SFM_LISTEN", "127.0.0.1:0")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {doc}");
        assert!(
            err.contains(&format!("SIMCACHE_POD_SETTINGS: {field}: ")),
            "{field} not named for {doc}: {err}"
        );
    }
}

#[tokio::test]
async fn postgres_without_url_is_a_clear_error() {
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--backend", "postgresql"])
        .env_remove("SIMCACHE_CACHE_DB_URL")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--db-url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_postgres_over_verified_tls_and_names_a_wrong_host() {
    let (srv, tls) = tokio::task::spawn_blocking(simcache_testkit::pg::tls_server)
        .await
        .unwrap();
    let url = |host: &str| {
        format!(
            "postgresql://postgres@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}",
            srv.port,
            tls.ca.display()
        )
    };
    let good = url("localhost");
    let args = [
        "serve",
        "--backend",
        "postgresql",
        "--db-url",
        &good,
        "--port",
        "0",
    ];
    let p = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let tok = cli(
        &[
            "session",
            "create",
            "--role",
            "developer",
            "--backend",
            "postgresql",
            "--db-url",
            &good,
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    // The memory tier is on only once LISTEN is up: over TLS as well.
    eventually("memory tier enabled over TLS", async || {
        memory_entries(&http, &p.url, &tok).await.0
    })
    .await;
    put_on(&http, &p.url, &tok, "tls/1", "exec-tls").await;
    assert_eq!(
        get(&http, &format!("{}/cache/tls/1", p.url), &tok).await.1["execution_id"],
        "exec-tls"
    );
    let (admin, conn) = simcache_store::postgres::PgConfig::parse(&format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=require",
        srv.port
    ))
    .unwrap()
    .connect()
    .await
    .map(|(c, conn)| (c, tokio::spawn(conn)))
    .unwrap();
    let plain: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.backend_type = 'client backend' AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "every connection is encrypted");
    conn.abort();
    p.terminate().await;

    // A host the certificate does not name: the sidecar stops at start and says why.
    let bad = url("127.0.0.1");
    let out = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--backend",
            "postgresql",
            "--db-url",
            &bad,
            "--port",
            "0",
        ])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not name the host `127.0.0.1`"), "{err}");
    assert!(!err.contains("postgres@"), "the URL is not echoed: {err}");
}

/// A run pod's own cache: the simulation's `SIMCACHE_SESSION_ID` (the
/// sidecar's `SIMCACHE_POD_SESSION`) reads its system of record and uses
/// the cache, and manages nothing; any other token is refused.
#[tokio::test]
async fn the_pod_session_reads_systems_of_record_and_the_cache_and_manages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.json"), br#"{"v": 1}"#).unwrap();
    let db = dir.path().join("cache.db");
    let sor = format!("data=file://{}", data.display());
    // A token from the same generator the operator uses.
    let token = simcache_store::random::token().unwrap();
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--db-path",
            db.to_str().unwrap(),
            "--port",
            "0",
            "--sor",
            &sor,
        ],
        &[("SIMCACHE_POD_SESSION", token.as_str())],
    )
    .await;
    let http = reqwest::Client::new();
    let with = |t: &str, req: reqwest::RequestBuilder| req.header("X-Session-ID", t.to_string());
    let r = with(
        &token,
        http.get(format!("{}/sor/data/objects/a.json", p.url)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), r#"{"v": 1}"#);
    let put = with(&token, http.post(format!("{}/cache", p.url)))
        .json(&common::entry_body("run/k1", 1, json!({})))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let got = with(&token, http.get(format!("{}/cache/run/k1", p.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    // Managing: refused, naming the privilege.
    for (method, path) in [
        (reqwest::Method::POST, "/cache/invalidate"),
        (reqwest::Method::DELETE, "/sor/data/cache?prefix="),
        (reqwest::Method::POST, "/sor/data/invalidate"),
    ] {
        let r = with(
            &token,
            http.request(method.clone(), format!("{}{path}", p.url)),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let b: Value = r.json().await.unwrap();
        assert!(
            b["error"].as_str().unwrap().contains("privilege"),
            "{path}: {b}"
        );
    }
    // Another token, or none: refused.
    let other = simcache_store::random::token().unwrap();
    for t in [Some(other.as_str()), None] {
        let mut req = http.get(format!("{}/sor/data/objects/a.json", p.url));
        if let Some(t) = t {
            req = with(t, req);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    p.terminate().await;
}

//! The API's document, health, and its behaviour when the database is new,
//! shared by replicas starting together, unreachable, or dropping connections.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_store::postgres::PgOptions;
use simcache_store::{Backend, Stores};

/// docs/reference/http-api.md is rendered from the served document.
#[tokio::test]
async fn the_http_api_reference_matches_the_openapi_document() {
    let c = common::sqlite().await;
    let (_, doc) = c.get("/openapi.json", None).await;
    let want = simcache_api::reference::markdown(&doc);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/http-api.md");
    if std::env::var_os("SIMCACHE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/reference/http-api.md is out of date; run `SIMCACHE_UPDATE_DOCS=1 cargo test -p simcache-api --test system`"
    );
    for route in [
        "`GET /simulations/search`",
        "`PUT /ingest/{execution_id}`",
        "`POST /search`",
    ] {
        assert!(want.contains(route), "the reference lacks {route}");
    }
}

/// Every (path, method) in /openapi.json is served by a route (never the
/// "no such route" fallback or 405), and every route family the API serves
/// is in the document.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let c = common::sqlite().await;
    let (s, doc) = c.get("/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        serde_json::to_value(&c.api.openapi).unwrap(),
        doc,
        "served document = generated document"
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut probed = 0;
    for (path, ops) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "probe" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = c
                .http
                .request(m, format!("{}{concrete}", c.url))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} documented but not routed"
            );
            assert_ne!(
                body["error"],
                json!("no such route"),
                "{method} {path} documented but not routed"
            );
            probed += 1;
        }
        // Methods not documented on a documented path are not served.
        if !ops.as_object().unwrap().contains_key("put") {
            let resp = c
                .http
                .put(format!("{}{concrete}", c.url))
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "PUT {path} is served but not documented"
            );
        }
    }
    assert!(probed >= 30, "only {probed} operations documented");
    // Routes outside the document are not served.
    for p in ["/cache/x", "/simulations/a/b/c/d", "/admin", "/results/x/y"] {
        let (s, b) = c.get(p, Some(&c.admin)).await;
        assert_eq!(
            (s, b["error"].clone()),
            (StatusCode::NOT_FOUND, json!("no such route")),
            "{p}"
        );
    }
    // Every schema referenced is defined.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "missing schema {name}"
        );
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let c = common::sqlite().await;
    assert_eq!(
        c.get("/healthz", None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        c.get("/readyz", None).await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    assert_eq!(
        c.get("/health", None).await.1,
        json!({"status": "healthy", "service": "catalog", "backend": "sqlite"})
    );
    c.get("/simulations/search", Some(&c.user)).await;
    let text = c
        .http
        .get(format!("{}/metrics", c.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("simcache_http_requests_total{method=\"GET\",route=\"/simulations/search\",status=\"200\"}"), "{text}");
}

async fn ledger(url: &str) -> Vec<(i64, String)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_apply_once_even_when_replicas_start_together() {
    let url = simcache_testkit::fresh_database("migrate_together").await;
    let starts: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                Stores::open(&Backend::Postgres(PgOptions::new(url)), &format!("r{i}"))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for s in starts {
        s.await.unwrap().expect("every replica starts");
    }
    let l = ledger(&url).await;
    let every_migration: Vec<(i64, String)> = simcache_store::migrate::POSTGRES
        .iter()
        .map(|m| (m.version, m.name.to_string()))
        .collect();
    assert_eq!(
        every_migration.len(),
        5,
        "sessions, catalog, run ledger, catalog generation, SFM"
    );
    assert_eq!(l, every_migration, "each migration recorded once");
    // Re-running is a no-op and the data survives.
    let stores = Stores::open(&Backend::Postgres(PgOptions::new(url.clone())), "again")
        .await
        .unwrap();
    assert_eq!(ledger(&url).await, l);
    assert_eq!(
        stores.catalog.overview().await.unwrap().total_simulations,
        0
    );

    // SQLite: same from threads sharing one file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let p = path.clone();
            tokio::spawn(async move {
                Stores::open(&Backend::Sqlite { path: p }, "x")
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for o in opens {
        o.await.unwrap().expect("every opener succeeds");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_start_up_error() {
    // A port nothing listens on.
    let port = simcache_testkit::ports::free_port().unwrap();
    let mut o = PgOptions::new(format!("postgresql://nobody@127.0.0.1:{port}/simcache"));
    o.connect_deadline = Duration::from_millis(800);
    let runs = tempfile::tempdir().unwrap();
    let cfg = simcache_api::server::ApiConfig::new(Backend::Postgres(o), runs.path().to_path_buf());
    let started = std::time::Instant::now();
    let e = simcache_api::server::start(cfg, Vec::new(), std::future::pending())
        .await
        .err()
        .expect("start fails");
    let msg = format!("{e:#}");
    assert!(msg.contains("database unavailable"), "{msg}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "it retried with backoff before giving up"
    );
}

/// PostgreSQL drops every connection of the API (a restart, a failover):
/// requests fail with a JSON 503 at worst, never a 500 or a crash, and work
/// again without restarting the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_survived() {
    let c = common::postgres("dropped_connections").await;
    c.register("thermal", "1", json!({})).await;
    let db_url = match &c.api.stores.pg {
        Some(pg) => pg.config().config.get_dbname().unwrap().to_string(),
        None => unreachable!(),
    };
    let admin = simcache_testkit::pg::server().admin_url.clone();
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let killed = client
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&db_url])
        .await
        .unwrap()
        .len();
    assert!(killed > 0, "the API held connections");
    let mut ok = 0;
    for _ in 0..20 {
        let (s, b) = c.get("/simulations/search", Some(&c.user)).await;
        assert!(
            s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
            "{s}: {b}"
        );
        if s == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(b["error"], json!("store unavailable, retry later"));
        } else {
            ok += 1;
        }
    }
    assert!(ok >= 15, "the pool did not recover: {ok}/20 succeeded");
    assert_eq!(c.get("/readyz", None).await.0, StatusCode::OK);
}

/// Every route the document marks as needing a session refuses a caller
/// without one with 401 — before its body is read, so an empty or wrong
/// body does not turn the answer into a 422 that describes the route.
#[tokio::test]
async fn every_session_route_refuses_a_caller_without_a_session_before_parsing() {
    let c = common::sqlite().await;
    let (_, doc) = c.get("/openapi.json", None).await;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("session").is_some()));
            if !secured {
                continue;
            }
            // Path parameters get plausible values; the body is empty JSON.
            let concrete = path
                .replace("{id}", "1")
                .replace("{execution_id}", "x.1")
                .replace("{name}", "thermal")
                .replace("{version}", "1.0.0")
                .replace("{file_id}", "f")
                .replace("{folder_id}", "f");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = http
                .request(m, format!("{}{concrete}", c.api.url()))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a session: {body}"
            );
            assert_eq!(
                body["error"], "missing X-Session-ID header",
                "{method} {path}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "only {checked} secured routes in the document"
    );
}

/// The in-memory structures that grow with use report their sizes: the
/// session cache, the login limiter and the catalog's search index.
#[tokio::test]
async fn in_memory_structures_report_their_sizes() {
    let c = common::sqlite().await;
    c.register(
        "glacier-flow",
        "1",
        json!({"description": "Ice sheet model"}),
    )
    .await;
    let (s, _) = c
        .get("/simulations/search?query=glacier", Some(&c.user))
        .await;
    assert_eq!(s, StatusCode::OK);
    let text = reqwest::get(format!("{}/metrics", c.api.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    assert_eq!(value("simcache_catalog_index_versions"), 1);
    assert!(value("simcache_catalog_index_bytes") > 0);
    assert!(
        value("simcache_auth_session_cache_entries") >= 1,
        "the sessions used above"
    );
    assert!(value("simcache_auth_login_limiter_buckets") >= 0);
}

//! The run ledger (cache-key leases, expected ingests) and the ingest route
//! a pod's sidecar uploads its run database to, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_store::clock::now_ms;
use simcache_store::ledger::LeaseOutcome;

use common::Ctx;

simcache_testkit::on_both_backends!(
    leases_are_exclusive_renewable_and_taken_over_once_expired,
    ingest_accepts_only_the_expected_token_and_a_real_run_database_once,
);

async fn leases_are_exclusive_renewable_and_taken_over_once_expired(c: Ctx) {
    let l = &c.api.stores.ledger;
    let now = now_ms();
    let ttl = 60_000;
    assert_eq!(
        l.acquire("k", "ns/a", "uid-a", "exec-a", ttl, now)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    match l
        .acquire("k", "ns/b", "uid-b", "exec-b", ttl, now + 1)
        .await
        .unwrap()
    {
        LeaseOutcome::HeldBy(h) => {
            assert_eq!(
                (h.holder.as_str(), h.execution_id.as_str()),
                ("ns/a", "exec-a")
            )
        }
        other => panic!("{other:?}"),
    }
    // The holder renews; others still wait.
    assert_eq!(
        l.acquire("k", "ns/a", "uid-a", "exec-a", ttl, now + 2)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(l.heartbeat("k", "uid-a", ttl, now + 30_000).await.unwrap());
    assert!(!l.heartbeat("k", "uid-b", ttl, now + 30_000).await.unwrap());
    assert!(matches!(
        l.acquire("k", "ns/b", "uid-b", "exec-b", ttl, now + 60_000)
            .await
            .unwrap(),
        LeaseOutcome::HeldBy(_)
    ));
    // The holder stopped heartbeating: once expired, b takes over and a's
    // heartbeat fails.
    let later = now + 30_000 + ttl + 1;
    assert_eq!(
        l.acquire("k", "ns/b", "uid-b", "exec-b", ttl, later)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
    assert!(!l.heartbeat("k", "uid-a", ttl, later).await.unwrap());
    assert!(
        !l.release("k", "uid-a").await.unwrap(),
        "only the holder releases"
    );
    assert!(l.release("k", "uid-b").await.unwrap());
    assert!(l.holder("k").await.unwrap().is_none());
    assert_eq!(
        l.acquire("k", "ns/a", "uid-a", "exec-a2", ttl, later)
            .await
            .unwrap(),
        LeaseOutcome::Acquired
    );
}

async fn ingested_at(c: &Ctx, id: &str) -> Option<i64> {
    c.api
        .stores
        .ledger
        .ingest(id)
        .await
        .unwrap()
        .expect("an expected ingest")
        .ingested_at_ms
}

async fn put(c: &Ctx, id: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut rb = c.http.put(format!("{}/ingest/{id}", c.url)).body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    c.send(rb, None).await
}

/// A finished run database for `id`, outside the operator's directory.
fn run_db_bytes(id: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = common::write_run(
        dir.path(),
        id,
        "thermal",
        "1.0.0",
        json!({"temperature": 350.0}),
        json!({"max_stress": 1.5e8}),
    );
    std::fs::read(p).unwrap()
}

async fn ingest_accepts_only_the_expected_token_and_a_real_run_database_once(c: Ctx) {
    let id = "lab.thermal-350.0a1b2c3d.1";
    let db = run_db_bytes(id);
    // Nothing expected yet: refused.
    let (s, b) = put(&c, id, Some("tok"), db.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no ingest"),
        "{b}"
    );
    c.api
        .stores
        .ledger
        .expect_ingest(id, "uid-1", "tok", now_ms())
        .await
        .unwrap();
    for (token, why) in [(None, "no token"), (Some("wrong"), "wrong token")] {
        let (s, b) = put(&c, id, token, db.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{why}: {b}");
        assert!(b["error"].is_string(), "{b}");
    }
    let (s, b) = put(&c, "bad..id", Some("tok"), db.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Not a run database, or another run's: refused, nothing kept.
    let (s, b) = put(&c, id, Some("tok"), b"not a database at all".to_vec()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let other = run_db_bytes("lab.other.1");
    let (s, b) = put(&c, id, Some("tok"), other).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("belongs to execution"),
        "{b}"
    );
    let files: Vec<_> = std::fs::read_dir(c.runs.path()).unwrap().collect();
    assert!(files.is_empty(), "refused uploads leave nothing: {files:?}");
    assert!(c.api.stores.results.get(id).await.unwrap().is_none());
    assert!(ingested_at(&c, id).await.is_none());

    // The real thing: stored, introspected, recorded.
    let (s, b) = put(&c, id, Some("tok"), db.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "completed");
    let rec = c.api.stores.ledger.ingest(id).await.unwrap().unwrap();
    assert!(rec.ingested_at_ms.is_some());
    assert_eq!(rec.outputs["max_stress"], json!(1.5e8));
    assert_eq!(rec.run_status.as_deref(), Some("completed"));
    let stored = c.runs.path().join(format!("{id}.db"));
    assert_eq!(std::fs::read(&stored).unwrap().len(), db.len());
    let result = c
        .api
        .stores
        .results
        .get(id)
        .await
        .unwrap()
        .expect("result registered");
    assert_eq!(result.status, "completed");

    // Once: a repeat changes nothing.
    let (s, b) = put(&c, id, Some("tok"), run_db_bytes(id)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["already_ingested"], true);
    assert_eq!(ingested_at(&c, id).await, rec.ingested_at_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_ingest_limit_is_refused_with_413() {
    let dir = tempfile::tempdir().unwrap();
    let backend = simcache_store::Backend::Sqlite {
        path: dir.path().join("catalog.db"),
    };
    let c = common::start_with(backend, Some(dir), |cfg| cfg.max_ingest_bytes = 4096).await;
    let id = "lab.big.1";
    c.api
        .stores
        .ledger
        .expect_ingest(id, "uid", "tok", now_ms())
        .await
        .unwrap();
    let (s, b) = put(&c, id, Some("tok"), vec![0u8; 64 * 1024]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(b["error"].as_str().unwrap().contains("limit"), "{b}");
    let files: Vec<_> = std::fs::read_dir(c.runs.path()).unwrap().collect();
    assert!(files.is_empty(), "{files:?}");
}

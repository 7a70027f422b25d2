//! Faults with real processes: a sidecar killed with SIGKILL in the middle
//! of a burst of cache writes loses none that it acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use simcache_testkit::ServerProcess;

use common::BIN;

async fn session(args: &[&str]) -> String {
    let mut all = vec!["session", "create", "--role", "developer"];
    all.extend_from_slice(args);
    common::sidecar_cli(&all, &[]).await
}

/// 10,000 writes from 16 clients; SIGKILL once 3,000 are acknowledged;
/// after a restart on the same database every acknowledged key is there.
async fn acknowledged_writes_survive_a_kill(store: &[&str]) {
    let tok = session(store).await;
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(store);
    let p = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let url = p.url.clone();
    let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (url, tok, acked, count, next) = (
            url.clone(),
            tok.clone(),
            acked.clone(),
            count.clone(),
            next.clone(),
        );
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 10_000 {
                    return;
                }
                let key = format!("burst/{i}");
                let body = common::entry_body(&key, 1, json!({"execution_id": format!("e{i}")}));
                let sent = http
                    .post(format!("{url}/cache"))
                    .header("X-Session-ID", &tok)
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.lock().push(key);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // Refused or cut off by the kill: not acknowledged.
                    _ => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + 4 * simcache_testkit::wait::PATIENCE;
    while count.load(Ordering::Relaxed) < 3_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} writes acknowledged in {:?}; did every writer stop?",
            count.load(Ordering::Relaxed),
            4 * simcache_testkit::wait::PATIENCE
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.kill().await;
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().clone();
    assert!(
        acked.len() >= 3_000 && acked.len() < 10_000,
        "{} acknowledged",
        acked.len()
    );

    let p = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let http = reqwest::Client::new();
    let mut missing = Vec::new();
    for key in &acked {
        let r = http
            .get(format!("{}/cache/{key}", p.url))
            .header("X-Session-ID", &tok)
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::OK {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_a_write_burst_loses_no_acknowledged_write_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    acknowledged_writes_survive_a_kill(&["--db-path", db.to_str().unwrap()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_a_write_burst_loses_no_acknowledged_write_postgres() {
    let url = simcache_testkit::fresh_database("sigkill_burst").await;
    acknowledged_writes_survive_a_kill(&["--backend", "postgresql", "--db-url", &url]).await;
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "the disk-full test mounts a {size} tmpfs and needs root for it (CI runs as root; \
             run the tests as root or under sudo): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// SQLite on a filesystem that fills: writes get 507 saying so, reads go
/// on, the database opens clean afterwards, and writes work again once
/// space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_and_recovers_when_space_is_freed() {
    let fs = Tmpfs::mount("3m");
    let db = fs.dir.path().join("c.db");
    let db = db.to_str().unwrap().to_string();
    // Room to give back later.
    let ballast = fs.dir.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 1 << 20]).unwrap();
    let tok = session(&["--db-path", &db]).await;
    let args = ["serve", "--port", "0", "--db-path", &db];
    let p = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let http = reqwest::Client::new();
    let put = |i: usize| {
        let body = common::entry_body(
            &format!("fill/{i}"),
            1,
            json!({"metadata": {"blob": "x".repeat(100_000)}}),
        );
        http.post(format!("{}/cache", p.url))
            .header("X-Session-ID", &tok)
            .json(&body)
            .send()
    };
    let mut stored = 0;
    let refused = loop {
        let r = put(stored).await.unwrap();
        if r.status() != StatusCode::OK {
            break r;
        }
        stored += 1;
        assert!(stored < 100, "a 3 MiB filesystem never filled");
    };
    assert!(stored > 0, "some writes fit");
    assert_eq!(refused.status(), StatusCode::INSUFFICIENT_STORAGE);
    let b: serde_json::Value = refused.json().await.unwrap();
    assert!(b["error"].as_str().unwrap().contains("disk is full"), "{b}");
    // Reads go on.
    let r = http
        .get(format!("{}/cache/fill/0", p.url))
        .header("X-Session-ID", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Space freed: writes succeed again, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let r = put(1000).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    // And the database opens clean.
    p.terminate().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM cache_entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, stored + 1, "every acknowledged write is there");
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    ok: usize,
    unavailable_with_retry_after: usize,
    other_errors: Vec<String>,
    acked_keys: Vec<String>,
    acked_sims: Vec<String>,
}

/// PostgreSQL stopped under steady load on a sidecar and the operator's API:
/// while it is down requests get 503 with Retry-After and nothing else goes
/// wrong; once it is back both serve again within seconds, without a
/// restart; every write acknowledged before or after is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_under_load_is_a_503_and_service_resumes_without_a_restart() {
    let pg = tokio::task::spawn_blocking(|| simcache_testkit::PgServer::start(false))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("a private PostgreSQL: {e}"));
    let (admin, conn) = tokio_postgres::connect(&pg.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin.batch_execute("CREATE DATABASE faults").await.unwrap();
    let url = simcache_testkit::pg::with_database(&pg.admin_url, "faults");
    let store = ["--backend", "postgresql", "--db-url", url.as_str()];
    let tok = session(&store).await;
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(&store);
    let sidecar = ServerProcess::spawn(Path::new(BIN), &args, &[]).await;
    let runs = tempfile::tempdir().unwrap();
    let operator = ServerProcess::spawn(
        &simcache_testkit::k8s::workspace_bin("simcache-operator"),
        &[
            "serve",
            "--no-controllers",
            "--port",
            "0",
            "--backend",
            "postgresql",
            "--db-url",
            &url,
            "--run-db-base-path",
            runs.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;

    let seen = Arc::new(parking_lot::Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..6 {
        let (seen, stop, tok) = (seen.clone(), stop.clone(), tok.clone());
        let (side, op) = (sidecar.url.clone(), operator.url.clone());
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (req, key) = if w < 4 {
                    let key = format!("w{w}/{i}");
                    let body = common::entry_body(&key, 1, json!({}));
                    (http.post(format!("{side}/cache")).json(&body), key)
                } else {
                    let name = format!("sim-{w}-{i}");
                    let body = json!({"name": name, "version": "1",
                        "input_schema": {"t": {"type": "number"}}, "output_schema": {}});
                    (http.post(format!("{op}/simulations")).json(&body), name)
                };
                let r = req
                    .header("X-Session-ID", &tok)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                {
                    let mut s = seen.lock();
                    match r {
                        Ok(r) if r.status().is_success() => {
                            s.ok += 1;
                            if w < 4 {
                                s.acked_keys.push(key);
                            } else {
                                s.acked_sims.push(key);
                            }
                        }
                        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                            if r.headers().contains_key("retry-after") {
                                s.unavailable_with_retry_after += 1;
                            } else {
                                s.other_errors.push("503 without Retry-After".into());
                            }
                        }
                        Ok(r) => s.other_errors.push(format!("{} for {key}", r.status())),
                        Err(e) => s.other_errors.push(format!("{key}: {e}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = seen.lock().ok;
    assert!(before > 20, "load ran: {before} writes");
    pg.stop().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = seen.lock().unavailable_with_retry_after;
    assert!(during > 0, "503s while PostgreSQL is down");
    pg.start_again().unwrap();
    // Both resume within seconds, each without a restart.
    let back = std::time::Instant::now();
    let ok_at_restart = seen.lock().ok;
    loop {
        let (ok, sims) = {
            let s = seen.lock();
            (s.ok, s.acked_sims.len())
        };
        if ok > ok_at_restart + 20 && sims > 0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "service did not resume within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed_in = back.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let s = std::mem::take(&mut *seen.lock());
    eprintln!(
        "{} writes acknowledged, {} answered 503 with Retry-After; resumed {:?} after PostgreSQL was back",
        s.ok, s.unavailable_with_retry_after, resumed_in
    );
    assert!(
        s.other_errors.is_empty(),
        "only 503s: {:?}",
        &s.other_errors[..s.other_errors.len().min(5)]
    );
    assert!(std::path::Path::new(&format!("/proc/{}", sidecar.pid())).exists());
    assert!(std::path::Path::new(&format!("/proc/{}", operator.pid())).exists());
    // Every acknowledged write is there.
    let http = reqwest::Client::new();
    for key in &s.acked_keys {
        let r = http
            .get(format!("{}/cache/{key}", sidecar.url))
            .header("X-Session-ID", &tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{key}");
    }
    for name in &s.acked_sims {
        let r = http
            .get(format!("{}/simulations/{name}", operator.url))
            .header("X-Session-ID", &tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
    }
}

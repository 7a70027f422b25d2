//! The operator's API listener runs on the same server as the sidecar's:
//! half-sent requests are closed after the header read timeout while a
//! normal request is answered, and the open files return to their baseline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::Path;
use std::time::{Duration, Instant};

use simcache_testkit::ServerProcess;
use simcache_testkit::slow_clients::{closed_by_server, half_sent, open_files};

const BIN: &str = env!("CARGO_BIN_EXE_simcache-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_closes_half_sent_requests_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--no-controllers",
            "--db-path",
            db.to_str().unwrap(),
            "--run-db-base-path",
            dir.path().to_str().unwrap(),
            "--port",
            "0",
            "--header-read-timeout-secs",
            "3",
        ],
        &[],
    )
    .await;
    let health = format!("{}/health", p.url);
    let http = reqwest::Client::new();
    assert!(
        http.get(&health)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let baseline = open_files(p.pid());
    let addr = p.url.trim_start_matches("http://").to_string();
    let mut slow = half_sent(&addr, 500).await;
    let t = Instant::now();
    assert!(
        http.get(&health)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    // Promptly, even on a loaded machine.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        closed_by_server(&mut slow, Duration::from_secs(60)).await,
        500
    );
    drop(slow);
    let deadline = Instant::now() + simcache_testkit::wait::PATIENCE;
    while open_files(p.pid()) > baseline + 2 {
        assert!(Instant::now() < deadline, "open files stay up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

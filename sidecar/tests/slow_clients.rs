//! The sidecar's listener against 2,000 clients that send half a request:
//! each is closed after the header read timeout, a normal request is
//! answered promptly all the while, and the process's open files return to
//! where they were. Real sockets, the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::Path;
use std::time::{Duration, Instant};

use simcache_testkit::ServerProcess;
use simcache_testkit::slow_clients::{closed_by_server, half_sent, open_files};

const BIN: &str = env!("CARGO_BIN_EXE_simcache-sidecar");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--db-path",
            db.to_str().unwrap(),
            "--port",
            "0",
            "--header-read-timeout-secs",
            "20",
        ],
        &[],
    )
    .await;
    let http = reqwest::Client::new();
    let health = format!("{}/health", p.url);
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

    let started = Instant::now();
    let mut slow = half_sent(&addr, 2000).await;
    // The server accepts them all (the accept loop may lag the kernel,
    // and a loaded machine opens 2000 sockets slowly: hence the 20 s
    // header timeout and this deadline).
    let deadline = Instant::now() + simcache_testkit::wait::PATIENCE;
    while open_files(p.pid()) < baseline + 1900 {
        assert!(
            Instant::now() < deadline,
            "the server holds the slow connections: {} open, {baseline} before",
            open_files(p.pid())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A well-behaved client is served promptly while they hang.
    for _ in 0..5 {
        let t = Instant::now();
        let r = http.get(&health).send().await.unwrap();
        assert!(r.status().is_success());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = closed_by_server(&mut slow, Duration::from_secs(60)).await;
    assert_eq!(closed, 2000, "every half-sent request closed by the server");
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "not before the timeout"
    );
    drop(slow);
    let deadline = Instant::now() + simcache_testkit::wait::PATIENCE;
    while open_files(p.pid()) > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "open files {} did not return to {baseline}",
            open_files(p.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = http
        .get(format!("{}/metrics", p.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("simcache_http_connections "), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_get_503_at_once_and_idle_ones_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--db-path",
            db.to_str().unwrap(),
            "--port",
            "0",
            "--max-connections",
            "3",
            "--idle-timeout-secs",
            "2",
            "--header-read-timeout-secs",
            "30",
        ],
        &[],
    )
    .await;
    let addr = p.url.trim_start_matches("http://").to_string();
    let baseline = open_files(p.pid());
    let mut held = half_sent(&addr, 3).await;
    // The server has accepted all three before the fourth arrives.
    let deadline = Instant::now() + simcache_testkit::wait::PATIENCE;
    while open_files(p.pid()) < baseline + 3 {
        assert!(Instant::now() < deadline, "the three connections accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fourth gets an immediate 503 and is closed.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        extra.read_to_end(&mut answer).await
    })
    .await;
    assert!(read.is_ok(), "refused at once, not queued");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too many connections"),
        "{text}"
    );
    // Silent connections close after the idle timeout, although their
    // header timeout (30 s) is far off; then new clients get in.
    let closed = closed_by_server(&mut held, Duration::from_secs(6)).await;
    assert_eq!(closed, 3);
    let r = reqwest::get(format!("{}/health", p.url)).await.unwrap();
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_halfway_is_answered_after_the_body_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let p = ServerProcess::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--db-path",
            db.to_str().unwrap(),
            "--port",
            "0",
            "--no-auth",
            "--body-read-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "30",
        ],
        &[],
    )
    .await;
    let addr = p.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /cache HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"cache_key\":",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server gave up on the body, not the client"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

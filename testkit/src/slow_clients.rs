//! What a listener must survive: thousands of clients that send half a
//! request and then nothing. Used by both binaries' tests.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open file descriptors of a process.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens `n` connections to `addr` that each send half a request's headers.
pub async fn half_sent(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            .await
            .expect("half a request");
        socks.push(s);
    }
    socks
}

/// How many of `socks` the server closed (EOF or reset) within `within`.
pub async fn closed_by_server(socks: &mut [TcpStream], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut closed = 0;
    for s in socks.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 512];
        // A 408 or nothing, then EOF; either way the read ends.
        let ended = tokio::time::timeout(left.max(Duration::from_millis(1)), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if ended.is_ok() {
            closed += 1;
        }
    }
    closed
}

//! What several benchmarks share: a load generator that measures requests
//! and bytes per second, run side by side with the ceiling.

pub mod load {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// `workers` clients GET `url` for `secs`: (requests/s, bytes/s).
    pub async fn rate(url: &str, workers: usize, secs: u64) -> (f64, f64) {
        rate_with(url, &[], workers, secs).await
    }

    /// [`rate`] sending `headers` with each request (a session, say).
    pub async fn rate_with(
        url: &str,
        headers: &[(String, String)],
        workers: usize,
        secs: u64,
    ) -> (f64, f64) {
        let (done, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (url, done, bytes) = (url.to_string(), done.clone(), bytes.clone());
            let headers = headers.to_vec();
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                while Instant::now() < stop {
                    let mut req = http.get(&url);
                    for (k, v) in &headers {
                        req = req.header(k, v);
                    }
                    if let Ok(r) = req.send().await
                        && r.status().is_success()
                        && let Ok(b) = r.bytes().await
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        (
            done.load(Ordering::Relaxed) as f64 / secs as f64,
            bytes.load(Ordering::Relaxed) as f64 / secs as f64,
        )
    }

    /// Ours and the ceiling in alternating halves (ours, ceiling, ours,
    /// ceiling) after a warm-up, so that drift of this machine's speed during
    /// the run falls on both alike: (ours, ceiling), each (req/s, bytes/s).
    pub async fn side_by_side(
        ours: &str,
        ceiling: &str,
        workers: usize,
        secs: u64,
    ) -> ((f64, f64), (f64, f64)) {
        side_by_side_with(ours, &[], ceiling, workers, secs).await
    }

    /// [`side_by_side`] sending `headers` to ours.
    pub async fn side_by_side_with(
        ours: &str,
        headers: &[(String, String)],
        ceiling: &str,
        workers: usize,
        secs: u64,
    ) -> ((f64, f64), (f64, f64)) {
        rate_with(ours, headers, workers, 1).await;
        rate(ceiling, workers, 1).await;
        let half = (secs / 2).max(1);
        let (a1, c1, a2, c2) = (
            rate_with(ours, headers, workers, half).await,
            rate(ceiling, workers, half).await,
            rate_with(ours, headers, workers, half).await,
            rate(ceiling, workers, half).await,
        );
        let mean = |x: (f64, f64), y: (f64, f64)| ((x.0 + y.0) / 2.0, (x.1 + y.1) / 2.0);
        (mean(a1, a2), mean(c1, c2))
    }

    pub fn percentile(v: &mut [f64], p: usize) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[(v.len() * p / 100).min(v.len() - 1)]
    }

    pub async fn body_len(url: &str) -> anyhow::Result<usize> {
        let r = reqwest::get(url).await?;
        anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
        Ok(r.bytes().await?.len())
    }
}

//! The soak (issue: hardening): mixed load — GET hits and misses, POST,
//! invalidate — against two sidecar processes sharing one PostgreSQL, for
//! 30 minutes. Reports, at the start, the middle and the end: each sidecar's
//! resident memory and open files, the p99 latency and the throughput, the
//! 5xx count, and the throughput of the bare-hyper ceiling measured with the
//! same generator at the start and the end of the same run.
//!
//! cargo run --release -p simcache-benches --bin soak [-- SECONDS]   (default 1800)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::json;
use simcache_testkit::ServerProcess;
use simcache_testkit::k8s::workspace_bin;

const WORKERS_PER_SIDECAR: usize = 16;
const SEEDED: u64 = 10_000;

/// What one window of the run saw.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u32>,
    server_errors: u64,
}

fn rss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn p99_ms(w: &mut Window) -> f64 {
    if w.latencies_us.is_empty() {
        return 0.0;
    }
    w.latencies_us.sort_unstable();
    let i = (w.latencies_us.len() * 99 / 100).min(w.latencies_us.len() - 1);
    f64::from(w.latencies_us[i]) / 1000.0
}

/// A cheap random number (xorshift), one state per worker.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn entry(key: &str, exec: u64) -> serde_json::Value {
    json!({
        "cache_key": key, "simulation_id": 42, "simulation_name": "thermal_sim",
        "simulation_version": "1.0.0", "execution_id": format!("exec-{exec}"),
        "squid_id": "thermal_sim/1.0.0/xyz", "input_hash": "hash123",
        "run_db_path": "/path/to/run.db", "ttl_hours": 24,
        "metadata": {"outputs": {"max_stress": exec as f64 * 1.5}, "node": "n1"}
    })
}

/// GETs of `url` from `workers` clients for `secs`: requests per second.
async fn ceiling_rate(url: &str, workers: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (url, done) = (url.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while Instant::now() < stop {
                if http.get(&url).send().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("SECONDS must be a number")?
        .unwrap_or(1800);
    let db_url = simcache_testkit::fresh_database("soak").await;
    let sidecar = workspace_bin("simcache-sidecar");
    let store = ["--backend", "postgresql", "--db-url", db_url.as_str()];
    let out = tokio::process::Command::new(&sidecar)
        .args(["session", "create", "--role", "developer"])
        .args(store)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8(out.stdout)?.trim().to_string();
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(&store);
    let a = ServerProcess::spawn(&sidecar, &args, &[("RUST_LOG", "error")]).await;
    let b = ServerProcess::spawn(&sidecar, &args, &[("RUST_LOG", "error")]).await;
    let ceiling = ServerProcess::spawn(&workspace_bin("ceiling"), &[], &[]).await;
    let workers = 2 * WORKERS_PER_SIDECAR;

    // Seed the keys the GETs hit.
    let http = reqwest::Client::new();
    for i in 0..SEEDED {
        let r = http
            .post(format!("{}/cache", a.url))
            .header("X-Session-ID", &tok)
            .json(&entry(&format!("soak/{i}"), i))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "seeding: {}", r.status());
    }
    let ceiling_start = ceiling_rate(&ceiling.url, workers, 10).await;

    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Mutex::new(Window::default()));
    let total = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let base = if w % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let (tok, stop, window, total, errors) = (
            tok.clone(),
            stop.clone(),
            window.clone(),
            total.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let roll = next(&mut rng) % 100;
                let req = match roll {
                    // 70 % hits on the seeded keys.
                    0..70 => http.get(format!("{base}/cache/soak/{}", next(&mut rng) % SEEDED)),
                    // 10 % misses.
                    70..80 => http.get(format!("{base}/cache/absent/{w}/{n}")),
                    // 18 % writes: a key of this worker's own, rewritten over time.
                    80..98 => {
                        let key = format!("soak/w{w}/{}", n % 5000);
                        http.post(format!("{base}/cache")).json(&entry(&key, n))
                    }
                    // 2 % invalidations of a few of this worker's keys.
                    _ => http.post(format!("{base}/cache/invalidate")).json(&json!({
                        "pattern": format!("soak/w{w}/{}*", n % 50),
                        "reason": "soak"
                    })),
                };
                let t = Instant::now();
                let r = req.header("X-Session-ID", &tok).send().await;
                let us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                total.fetch_add(1, Ordering::Relaxed);
                let server_error = match r {
                    Ok(r) => r.status().is_server_error(),
                    Err(_) => true,
                };
                if server_error {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let mut win = window.lock();
                win.latencies_us.push(us);
                if server_error {
                    win.server_errors += 1;
                }
            }
        }));
    }

    // Sample a one-minute window at the start, the middle and the end.
    let started = Instant::now();
    let sample_len = Duration::from_secs((secs / 30).clamp(10, 60));
    let marks = [
        Duration::ZERO,
        Duration::from_secs(secs / 2).saturating_sub(sample_len / 2),
        Duration::from_secs(secs).saturating_sub(sample_len),
    ];
    println!(
        "soak: {secs} s of mixed load (70 % GET hits, 10 % misses, 18 % POST, 2 % invalidate) from {workers} clients on two sidecars sharing PostgreSQL"
    );
    for (name, mark) in ["start", "middle", "end"].iter().zip(marks) {
        if let Some(wait) = mark.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        std::mem::take(&mut *window.lock());
        let before = total.load(Ordering::Relaxed);
        tokio::time::sleep(sample_len).await;
        let done = total.load(Ordering::Relaxed) - before;
        let mut w = std::mem::take(&mut *window.lock());
        println!(
            "  {name:<6} {:>6.0} req/s, p99 {:>6.2} ms, 5xx {}; RSS {:.1} / {:.1} MiB, open files {} / {}",
            done as f64 / sample_len.as_secs_f64(),
            p99_ms(&mut w),
            w.server_errors,
            rss_mib(a.pid()),
            rss_mib(b.pid()),
            open_files(a.pid()),
            open_files(b.pid()),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let ceiling_end = ceiling_rate(&ceiling.url, workers, 10).await;
    println!(
        "  in all: {} requests, {} 5xx; ceiling (bare hyper, same generator) {:.0} req/s at the start, {:.0} at the end",
        total.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        ceiling_start,
        ceiling_end
    );
    a.terminate().await;
    b.terminate().await;
    Ok(())
}

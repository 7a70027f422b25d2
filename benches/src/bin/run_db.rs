//! The run database's figures (issue: per-run database):
//!   batched log/metric inserts through the library, single inserts,
//!   `POST /run/logs` in batches of 100 over loopback, snapshot of a 10 MB
//!   run DB, and the size of a typical run DB.
//!
//! cargo run --release -p simcache-benches --bin run-db
//! (BENCH_SECONDS sets the HTTP load duration; default 5.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use simcache_rundb::{
    ArtifactCategory, LogLevel, LogLine, Metric, ParamSpec, RunDb, RunInit, ValueType,
};

fn rate(n: u64, d: Duration) -> String {
    format!("{:>10.0}/s", n as f64 / d.as_secs_f64())
}

fn fresh(dir: &std::path::Path, id: &str) -> anyhow::Result<RunDb> {
    let mut db = RunDb::open_in(dir, id)?;
    db.initialize_run(&RunInit::new("bench", "1"))?;
    Ok(db)
}

fn library(dir: &std::path::Path) -> anyhow::Result<()> {
    // Batched: 1,000 rows per transaction, 200,000 rows of each kind.
    let mut db = fresh(dir, "batched")?;
    let lines: Vec<LogLine> = (0..1000)
        .map(|i| LogLine::new(LogLevel::Info, format!("iteration {i} converged to 1e-6")))
        .collect();
    let t = Instant::now();
    for _ in 0..200 {
        db.log_batch(&lines)?;
    }
    println!(
        "library  log lines, batches of 1000      {}",
        rate(200_000, t.elapsed())
    );
    let metrics: Vec<Metric> = (0..1000)
        .map(|i| {
            let mut m = Metric::new("residual", 1.0 / (i as f64 + 1.0));
            m.step = Some(i);
            m
        })
        .collect();
    let t = Instant::now();
    for _ in 0..200 {
        db.record_metrics(&metrics)?;
    }
    println!(
        "library  metric points, batches of 1000  {}",
        rate(200_000, t.elapsed())
    );
    let batch100: Vec<Metric> = metrics[..100].to_vec();
    let t = Instant::now();
    for _ in 0..2000 {
        db.record_metrics(&batch100)?;
    }
    println!(
        "library  metric points, batches of 100   {}",
        rate(200_000, t.elapsed())
    );

    // Single inserts: one transaction (one commit) each.
    let mut db = fresh(dir, "single")?;
    let line = LogLine::new(LogLevel::Info, "one line, one commit");
    let t = Instant::now();
    for _ in 0..40_000 {
        db.log(&line)?;
    }
    println!(
        "library  single log inserts              {}",
        rate(40_000, t.elapsed())
    );
    let m = Metric::new("loss", 0.5);
    let t = Instant::now();
    for _ in 0..40_000 {
        db.record_metric(&m)?;
    }
    println!(
        "library  single metric inserts           {}",
        rate(40_000, t.elapsed())
    );
    let spec = ParamSpec::of_type(ValueType::Number);
    let t = Instant::now();
    for i in 0..20_000 {
        db.save_output(&format!("out_{}", i % 50), &json!(i), &spec, None)?;
    }
    println!(
        "library  single output saves             {}",
        rate(20_000, t.elapsed())
    );
    Ok(())
}

fn typical_and_snapshot(dir: &std::path::Path) -> anyhow::Result<()> {
    // A typical run: 50 inputs/outputs, 10,000 log lines, 10,000 metric
    // points, 5 artifacts of 100 KB.
    let mut db = fresh(dir, "typical")?;
    let spec = ParamSpec::of_type(ValueType::Number);
    for i in 0..25 {
        db.save_input(&format!("input_{i}"), &json!(i as f64 * 1.5), &spec)?;
        db.save_output(&format!("output_{i}"), &json!(i as f64 * 2.5), &spec, None)?;
    }
    let lines: Vec<LogLine> = (0..10_000)
        .map(|i| {
            LogLine::new(
                LogLevel::Info,
                format!("time step {i}: residual below tolerance, dt = 0.001 s"),
            )
        })
        .collect();
    db.log_batch(&lines)?;
    let metrics: Vec<Metric> = (0..10_000)
        .map(|i| Metric::new("residual", 1.0 / (i as f64 + 1.0)))
        .collect();
    db.record_metrics(&metrics)?;
    let blob: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for i in 0..5 {
        db.add_artifact_bytes(
            &format!("field_{i}.bin"),
            &blob,
            Some("application/octet-stream"),
            ArtifactCategory::Data,
        )?;
    }
    db.checkpoint()?;
    println!(
        "typical  run DB size                      {:>8.2} MB",
        db.size_bytes() as f64 / 1e6
    );

    // Grow to ~10 MB and time snapshots of the live database.
    while db.size_bytes() < 10_000_000 {
        db.add_artifact_bytes(
            &format!("extra_{}", db.size_bytes()),
            &blob,
            None,
            ArtifactCategory::Data,
        )?;
        db.log_batch(&lines[..1000])?;
        db.checkpoint()?;
    }
    db.checkpoint()?;
    let mut times = Vec::new();
    for i in 0..10 {
        let dest = dir.join(format!("snap-{i}.db"));
        let t = Instant::now();
        db.snapshot_to(&dest)?;
        times.push(t.elapsed());
        std::fs::remove_file(&dest)?;
    }
    times.sort();
    println!(
        "snapshot of a {:.1} MB run DB            median {:>6.1} ms, max {:.1} ms",
        db.size_bytes() as f64 / 1e6,
        times[5].as_secs_f64() * 1e3,
        times[9].as_secs_f64() * 1e3
    );
    Ok(())
}

async fn http(dir: &std::path::Path, seconds: u64) -> anyhow::Result<()> {
    use simcache_sidecar::run::RunConfig;
    use simcache_sidecar::server::{self, ServerConfig};
    let mut cfg = ServerConfig::new(simcache_store::Backend::Sqlite {
        path: dir.join("cache.db"),
    });
    cfg.run = Some(RunConfig {
        execution_id: "http".into(),
        db_path: dir.join("http.db"),
        init: RunInit::new("bench", "1"),
        schema: Default::default(),
        inputs: None,
        inputs_file: None,
        outputs_file: None,
        token: Some("bench-token".into()),
        provenance: Default::default(),
        max_artifact_bytes: 1 << 20,
    });
    let srv = server::start(cfg, std::future::pending()).await?;
    let url = format!("{}/run/logs", srv.url());
    let lines: Vec<_> = (0..100)
        .map(|i| json!({"level": "INFO", "message": format!("iteration {i} converged to 1e-6")}))
        .collect();
    let body = serde_json::to_vec(&json!({ "lines": lines }))?;
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let client = reqwest::Client::new();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, body, sent) = (client.clone(), url.clone(), body.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = client
                    .post(&url)
                    .bearer_auth("bench-token")
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "status {}", r.status());
                sent.fetch_add(100, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.context("load task")??;
    }
    let n = sent.load(Ordering::Relaxed);
    println!(
        "http     POST /run/logs, batches of 100   {} lines ({} requests/s, 8 connections)",
        rate(n, t.elapsed()),
        n / 100 / seconds.max(1)
    );
    srv.shutdown().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "library" {
        library(dir.path())?;
    }
    if only.is_empty() || only == "snapshot" {
        typical_and_snapshot(dir.path())?;
    }
    if !(only.is_empty() || only == "http") {
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(http(dir.path(), seconds))
}

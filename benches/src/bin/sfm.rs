//! The SFM proxy's figures (issue: SFM devices), against the bare-hyper
//! ceiling serving the same body, measured by the same generator in the
//! same run:
//!
//! 1. warm info / status / event-list bodies from memory: req/s vs the ceiling;
//! 2. a 6 MiB waveform from memory, 8 connections: bytes/s vs the ceiling;
//! 3. the first read of a 6 MiB waveform on a sidecar that did not fetch it
//!    (from PostgreSQL): p50;
//! 4. the unit offline, a copy present: p99;
//! 5. waiters on other sidecars after a fetch commits: how much later they
//!    are answered than the first reader.
//!
//! Two `sfm-proxy` processes share a throwaway PostgreSQL; the SFM service
//! is the test kit's simulator.
//!
//! cargo run --release -p simcache-benches --bin sfm [-- SECONDS_PER_RATE]   (default 10)

use std::time::{Duration, Instant};

use anyhow::Context;
use simcache_benches::load::{body_len, percentile, side_by_side};
use simcache_testkit::ServerProcess;
use simcache_testkit::k8s::workspace_bin;
use simcache_testkit::sfm_sim::{Fault, SfmSimulator, Unit};

const UNIT: &str = "tcp:10.0.0.1:12345";
const Q: &str = "host=10.0.0.1";
/// Samples per channel of a 6 MiB waveform (4 channels of int16 as JSON text).
const BIG: usize = 290_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("SECONDS_PER_RATE must be a number")?
        .unwrap_or(10);
    // 30 small events for the list; events 30.. are 6 MiB waveforms.
    let sim = SfmSimulator::start(0.0001).await;
    let mut unit = Unit::new("BE11529", 30, 2000);
    for _ in 0..12 {
        unit.add_event(BIG);
    }
    sim.add_unit(UNIT, unit);
    let db = simcache_testkit::fresh_database("bench_sfm").await;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("unit.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: simcache.io/v1alpha1\nkind: SFMDevice\nmetadata:\n  name: unit\n  namespace: bench\nspec:\n  upstream:\n    url: {}\n    timeoutSeconds: 60\n  address:\n    tcp:\n      host: 10.0.0.1\n  cache:\n    monitorStatusTtlSeconds: 1\n    eventsFreshSeconds: 3600\n    unreachableBackoffSeconds: 3600\n",
            sim.url()
        ),
    )?;
    let bin = workspace_bin("simcache-sidecar");
    let args = |with_file: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "--backend",
            "postgresql",
            "--db-url",
            &db,
            "sfm-proxy",
            "--no-auth",
            "--port",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if with_file {
            a.extend(["--device-file".to_string(), file.display().to_string()]);
        }
        a
    };
    let a_args = args(true);
    let a = ServerProcess::spawn(
        &bin,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("RUST_LOG", "error")],
    )
    .await;
    let b_args = args(false);
    let b = ServerProcess::spawn(
        &bin,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("RUST_LOG", "error")],
    )
    .await;
    let workers = 16;
    println!(
        "sfm: two sfm-proxy processes sharing PostgreSQL, the SFM simulator upstream; {secs} s per rate"
    );

    // 1. Warm bodies from memory.
    for (name, path) in [
        ("info", "/device/info"),
        ("monitor status", "/device/monitor/status"),
        ("event list", "/device/events"),
    ] {
        let url = format!("{}{path}?{Q}", a.url);
        let size = body_len(&url).await?;
        let ceiling =
            ServerProcess::spawn(&workspace_bin("ceiling"), &[&size.to_string()], &[]).await;
        let ((ours, _), (top, _)) = side_by_side(&url, &ceiling.url, workers, secs).await;
        println!(
            "  1. warm {name:<14} {size:>6} B: {ours:>7.0} req/s vs ceiling {top:>7.0} req/s = {:.2}x",
            ours / top
        );
        ceiling.kill().await;
    }

    // 2. A 6 MiB waveform from memory, 8 connections.
    let wf = format!("{}/device/event/30/waveform?{Q}", a.url);
    let size = body_len(&wf).await?;
    let ceiling = ServerProcess::spawn(&workspace_bin("ceiling"), &[&size.to_string()], &[]).await;
    let ((_, ours), (_, top)) = side_by_side(&wf, &ceiling.url, 8, secs).await;
    println!(
        "  2. warm waveform {:.1} MiB, 8 connections: {:.0} MiB/s vs ceiling {:.0} MiB/s = {:.2}x",
        size as f64 / 1048576.0,
        ours / 1048576.0,
        top / 1048576.0,
        ours / top
    );
    ceiling.kill().await;

    // 3. First reads on B of waveforms A fetched: from PostgreSQL.
    for i in 31..42 {
        body_len(&format!("{}/device/event/{i}/waveform?{Q}", a.url)).await?;
    }
    let mut first = Vec::new();
    for i in 31..42 {
        let t = Instant::now();
        body_len(&format!("{}/device/event/{i}/waveform?{Q}", b.url)).await?;
        first.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "  3. first read of a 6 MiB waveform on the other sidecar (from PostgreSQL): p50 {:.0} ms, max {:.0} ms ({} reads)",
        percentile(&mut first.clone(), 50),
        percentile(&mut first, 100),
        11
    );

    // 5. Waiters on both sidecars for one cold waveform (a new event).
    let mut gaps = Vec::new();
    sim.with_unit(UNIT, |u| {
        u.add_event(BIG);
    });
    let idx = 42;
    let t0 = Instant::now();
    // Only the headers are awaited: this process reading 40 × 6 MiB would
    // delay the very headers it measures (scenarios 2 and 3 read bodies).
    let reads = (0..40).map(|n| {
        let base = if n % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        tokio::spawn(async move {
            let r = reqwest::get(format!("{base}/device/event/{idx}/waveform?{Q}")).await;
            // Answered = the response starts (its headers).
            let at = t0.elapsed().as_secs_f64() * 1000.0;
            let ok = match r {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            };
            (ok, at)
        })
    });
    let mut done = Vec::new();
    for r in futures_join(reads).await {
        let (ok, at) = r?;
        if let Err(e) = ok {
            anyhow::bail!("a waiter failed: {e}");
        }
        done.push(at);
    }
    let first_ms = done.iter().cloned().fold(f64::MAX, f64::min);
    for d in &done {
        gaps.push(d - first_ms);
    }
    let side = |parity: usize| -> Vec<f64> {
        gaps.iter()
            .enumerate()
            .filter(|(n, _)| n % 2 == parity)
            .map(|(_, g)| *g)
            .collect()
    };
    eprintln!(
        "     (first answer {first_ms:.0} ms after the reads began; sidecar A gaps {:?}; B gaps {:?})",
        side(0),
        side(1)
    );
    println!(
        "  5. 40 waiters on two sidecars for one fetch ({} upstream call): answered (headers) p50 {:.0} ms, max {:.0} ms after the first",
        sim.calls("waveform") - 12,
        // (12 waveforms were fetched above.)
        percentile(&mut gaps.clone(), 50),
        percentile(&mut gaps, 100)
    );
    // 4. The unit offline, a copy present.
    tokio::time::sleep(Duration::from_millis(1100)).await; // status TTL over
    sim.set_fault(UNIT, Fault::Offline);
    let st = format!("{}/device/monitor/status?{Q}", a.url);
    let r = reqwest::get(&st).await?;
    anyhow::ensure!(
        r.headers()
            .get("x-simcache-sfm-source")
            .and_then(|v| v.to_str().ok())
            == Some("stale"),
        "expected a stale copy"
    );
    let mut lat = Vec::new();
    let http = reqwest::Client::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let r = http.get(&st).send().await?;
        anyhow::ensure!(r.status().is_success());
        r.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "  4. unit offline, copy present: p50 {:.2} ms, p99 {:.2} ms (2,000 reads)",
        percentile(&mut lat.clone(), 50),
        percentile(&mut lat, 99)
    );

    a.kill().await;
    b.kill().await;
    Ok(())
}

async fn futures_join<T>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

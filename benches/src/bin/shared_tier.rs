//! The shared tier's figures, on this machine, in one run, each beside its
//! ceiling or peer:
//!
//! 1. a cache GET hit from a pod's memory tier, against the bare-hyper
//!    ceiling serving a body of the same size (alternating halves);
//! 2. a cache GET answered by the shared tier (the pod's memory tier off,
//!    so every read crosses to the tier and PostgreSQL): p50 and p99 of
//!    one client's sequential reads;
//! 3. cache POSTs through the pod to the tier with 32 connections;
//! 4. how long after a write is acknowledged on pod A the other pod B
//!    stops serving the old entry from its memory tier (p50, p99).
//!
//! Run: benches/shared_tier.sh   (builds release binaries, then runs this)
//! Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 32).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use simcache_benches::load::{body_len, percentile, side_by_side_with};
use simcache_testkit::ServerProcess;
use simcache_testkit::sfm_sim::{SfmSimulator, Unit};

const KEY: &str = "thermal_sim/1.0.0/2824bf41204e2855641c52bbe079cd4ffe59e14a";

fn entry(key: &str, exec: &str) -> Value {
    json!({"cache_key": key, "simulation_id": 42, "simulation_name": "thermal_sim",
        "simulation_version": "1.0.0", "execution_id": exec,
        "squid_id": "thermal_sim/1.0.0/2824bf41", "input_hash": "hash123",
        "run_db_path": "/runs/exec-001.db", "ttl_hours": 24, "metadata": {"node": "n1"}})
}

async fn post(http: &reqwest::Client, base: &str, tok: &str, body: &Value) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/cache"))
        .header("X-Session-ID", tok)
        .json(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("POST {base}/cache: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

async fn execution_of(http: &reqwest::Client, url: &str, tok: &str) -> Option<String> {
    let r = http
        .get(url)
        .header("X-Session-ID", tok)
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["execution_id"].as_str().map(str::to_string)
}

/// A pod's sidecar as the operator starts it: its own file, the run's
/// session, the tier's URL.
async fn pod(
    bin: &Path,
    dir: &Path,
    name: &str,
    tier: &str,
    tok: &str,
    memory: &str,
) -> ServerProcess {
    let db = dir.join(format!("{name}.db"));
    ServerProcess::spawn(
        bin,
        &[
            "serve",
            "--db-path",
            db.to_str().unwrap_or_default(),
            "--port",
            "0",
            "--memory-tier-bytes",
            memory,
        ],
        &[
            ("SIMCACHE_POD_SESSION", tok),
            ("SIMCACHE_SHARED_TIER_URL", tier),
            ("RUST_LOG", "warn"),
        ],
    )
    .await
}

/// Waits until the pod serves from memory (its change stream is connected).
async fn coherent(http: &reqwest::Client, base: &str, tok: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let st: Value = http
            .get(format!("{base}/cache/stats"))
            .header("X-Session-ID", tok)
            .send()
            .await?
            .json()
            .await?;
        if st["memory_tier"]["enabled"] == true {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{base} never connected to the tier's change stream")
}

/// `workers` clients POSTing a new key each for `secs`: requests/s.
async fn post_rate(base: &str, tok: &str, workers: usize, secs: u64) -> (f64, u64) {
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (base, tok, done, failed) = (
            base.to_string(),
            tok.to_string(),
            done.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let body = entry(&format!("bench/w{w}/{n}"), &format!("exec-{n}"));
                match post(&http, &base, &tok, &body).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / secs as f64,
        failed.load(Ordering::Relaxed),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let conns: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let exe_dir: PathBuf = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("exe dir")?;
    let (sidecar, ceiling_bin) = (exe_dir.join("simcache-sidecar"), exe_dir.join("ceiling"));
    for b in [&sidecar, &ceiling_bin] {
        if !b.exists() {
            bail!(
                "{} missing: cargo build --release -p simcache-sidecar -p simcache-benches",
                b.display()
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let pg = simcache_testkit::PgServer::start(true).map_err(anyhow::Error::msg)?;
    let db = simcache_testkit::pg::with_database(&pg.admin_url, "postgres");
    // An SFM unit, registered before the tier starts (as the operator does).
    let unit = SfmSimulator::start(0.0001).await;
    unit.add_unit("tcp:10.0.0.1:12345", Unit::new("BE11529", 3, 100));
    let device = tmp.path().join("unit.yaml");
    std::fs::write(
        &device,
        format!(
            "apiVersion: simcache.io/v1alpha1\nkind: SFMDevice\nmetadata:\n  name: unit-a\n  namespace: lab\nspec:\n  upstream:\n    url: {}\n  address:\n    tcp:\n      host: 10.0.0.1\n",
            unit.url()
        ),
    )?;
    let registrar = ServerProcess::spawn(
        &sidecar,
        &[
            "sfm-proxy",
            "--backend",
            "postgresql",
            "--db-url",
            &db,
            "--port",
            "0",
            "--device-file",
            device.to_str().unwrap_or_default(),
        ],
        &[("RUST_LOG", "warn")],
    )
    .await;
    registrar.terminate().await;
    let tier = ServerProcess::spawn(
        &sidecar,
        &[
            "shared",
            "--backend",
            "postgresql",
            "--db-url",
            &db,
            "--db-pool-size",
            "32",
            "--port",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    )
    .await;
    let out = tokio::process::Command::new(&sidecar)
        .args([
            "session",
            "create",
            "--privileges",
            "read_cache,write_cache",
            "--backend",
            "postgresql",
            "--db-url",
            &db,
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!("session create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tok = String::from_utf8(out.stdout)?.trim().to_string();
    // The run's session, limited to its device, as the operator makes it.
    let out = tokio::process::Command::new(&sidecar)
        .args([
            "session",
            "create",
            "--privileges",
            "read_cache,write_cache,read_sfm",
            "--sfm-device",
            "lab/unit-a",
            "--backend",
            "postgresql",
            "--db-url",
            &db,
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!("session create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sfm_tok = String::from_utf8(out.stdout)?.trim().to_string();
    let http = reqwest::Client::new();
    let a = pod(&sidecar, tmp.path(), "a", &tier.url, &tok, "67108864").await;
    let b = pod(&sidecar, tmp.path(), "b", &tier.url, &tok, "67108864").await;
    let cold = pod(&sidecar, tmp.path(), "cold", &tier.url, &tok, "0").await;
    coherent(&http, &a.url, &tok).await?;
    coherent(&http, &b.url, &tok).await?;
    post(&http, &a.url, &tok, &entry(KEY, "exec-001")).await?;
    let hit_url = format!("{}/cache/{KEY}", b.url);
    let hit_len = http
        .get(&hit_url)
        .header("X-Session-ID", &tok)
        .send()
        .await?
        .bytes()
        .await?
        .len();

    // 1. Memory-tier hits against the ceiling, alternating halves.
    let ceiling = ServerProcess::spawn(&ceiling_bin, &[&hit_len.to_string()], &[]).await;
    let headers = vec![("X-Session-ID".to_string(), tok.clone())];
    let ((hit_rps, _), (ceil_rps, _)) = side_by_side_with(
        &hit_url,
        &headers,
        &format!("{}/", ceiling.url),
        conns,
        secs,
    )
    .await;

    // 2. Reads answered by the tier (memory tier off in this pod).
    let cold_url = format!("{}/cache/{KEY}", cold.url);
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let t = Instant::now();
        let r = http
            .get(&cold_url)
            .header("X-Session-ID", &tok)
            .send()
            .await?;
        let ok = r.status().is_success();
        r.bytes().await?;
        if !ok {
            bail!("a read through the tier failed");
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let reads = lat.len();
    let (miss_p50, miss_p99) = (percentile(&mut lat, 50), percentile(&mut lat, 99));

    // 3. Writes through pod A to the tier, beside the peer: a sidecar
    // writing the same database itself (what a pod with a database
    // credential did before the tier).
    let (post_rps, post_failed) = post_rate(&a.url, &tok, conns, secs).await;
    let direct = ServerProcess::spawn(
        &sidecar,
        &[
            "serve",
            "--backend",
            "postgresql",
            "--db-url",
            &db,
            "--db-pool-size",
            "32",
            "--port",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    )
    .await;
    let (direct_rps, _) = post_rate(&direct.url, &tok, conns, secs).await;
    direct.terminate().await;

    // 4. A write acknowledged on A, until B no longer serves the old entry.
    let mut seen = Vec::new();
    for i in 0..200 {
        let before = format!("inv-{i}-a");
        post(&http, &a.url, &tok, &entry(KEY, &before)).await?;
        // B holds the current entry in memory before the change.
        let start = Instant::now();
        while execution_of(&http, &hit_url, &tok).await.as_deref() != Some(before.as_str()) {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("B never served {before}");
            }
        }
        execution_of(&http, &hit_url, &tok).await;
        let after = format!("inv-{i}-b");
        post(&http, &a.url, &tok, &entry(KEY, &after)).await?;
        let acked = Instant::now();
        while execution_of(&http, &hit_url, &tok).await.as_deref() != Some(after.as_str()) {
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("B still served the old entry 10 s after the write");
            }
        }
        seen.push(acked.elapsed().as_secs_f64() * 1000.0);
    }
    let (inv_p50, inv_p99) = (percentile(&mut seen, 50), percentile(&mut seen, 99));

    println!(
        "\nsimcache shared tier ({conns} connections, {secs} s each, {} cores, PostgreSQL fsync on)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("{:<62} {:>12} {:>12}", "figure", "value", "target");
    println!(
        "{:<62} {:>12.0} {:>12}",
        format!("ceiling: bare hyper, {hit_len}-byte body, req/s"),
        ceil_rps,
        ""
    );
    println!(
        "{:<62} {:>12.0} {:>12}",
        "pod GET hit from its memory tier, req/s", hit_rps, ""
    );
    println!(
        "{:<62} {:>12.2} {:>12}",
        "  ratio to the ceiling",
        hit_rps / ceil_rps,
        ">= 0.8"
    );
    println!(
        "{:<62} {:>12.3} {:>12}",
        format!("GET answered by the shared tier, p50 ms ({reads} reads)"),
        miss_p50,
        "<= 1.5"
    );
    println!(
        "{:<62} {:>12.3} {:>12}",
        "GET answered by the shared tier, p99 ms", miss_p99, "<= 5"
    );
    println!(
        "{:<62} {:>12.0} {:>12}",
        format!("POST through the tier, req/s ({post_failed} failed)"),
        post_rps,
        ">= 10000"
    );
    println!(
        "{:<62} {:>12.0} {:>12}",
        "  peer: a sidecar writing PostgreSQL itself, req/s", direct_rps, ""
    );
    println!(
        "{:<62} {:>12.1} {:>12}",
        "write on A until B's memory tier drops it, p50 ms", inv_p50, ""
    );
    println!(
        "{:<62} {:>12.1} {:>12}",
        "write on A until B's memory tier drops it, p99 ms", inv_p99, "<= 250"
    );
    // 5. A warm SFM read through a pod's forwarder and the tier, against
    // the ceiling serving the same body.
    let sfm_port = simcache_testkit::ports::free_port().map_err(anyhow::Error::msg)?;
    let sfm_pod = ServerProcess::spawn(
        &sidecar,
        &[
            "serve",
            "--db-path",
            tmp.path().join("sfm.db").to_str().unwrap_or_default(),
            "--port",
            "0",
        ],
        &[
            ("SIMCACHE_POD_SESSION", sfm_tok.as_str()),
            ("SIMCACHE_SHARED_TIER_URL", tier.url.as_str()),
            ("SIMCACHE_SFM_LISTEN", &format!("127.0.0.1:{sfm_port}")),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let info_url = format!("http://127.0.0.1:{sfm_port}/device/info?host=10.0.0.1");
    let info_len = body_len(&info_url).await?;
    let sfm_ceiling = ServerProcess::spawn(&ceiling_bin, &[&info_len.to_string()], &[]).await;
    let ((sfm_rps, _), (sfm_ceil, _)) = side_by_side_with(
        &info_url,
        &[],
        &format!("{}/", sfm_ceiling.url),
        conns,
        secs,
    )
    .await;
    println!(
        "{:<62} {:>12.0} {:>12}",
        format!("ceiling: bare hyper, {info_len}-byte body, req/s"),
        sfm_ceil,
        ""
    );
    println!(
        "{:<62} {:>12.0} {:>12}",
        "SFM warm info through a pod and the tier, req/s", sfm_rps, ""
    );
    println!(
        "{:<62} {:>12.2} {:>12}",
        "  ratio to the ceiling",
        sfm_rps / sfm_ceil,
        ">= 0.6"
    );
    sfm_pod.terminate().await;
    sfm_ceiling.kill().await;
    for p in [a, b, cold, tier] {
        p.terminate().await;
    }
    ceiling.kill().await;
    Ok(())
}

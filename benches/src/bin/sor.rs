//! The system-of-record cache's figures (issue: data next to compute),
//! each beside its peer in the same run, against a real S3 server
//! (SeaweedFS from the test kit):
//!
//! 1. cached small JSON through cache_api's route, auth on: req/s vs the
//!    ceiling serving the same body (and vs cache_api's 750 req/s);
//! 2. `GET /sor/.../objects/` small object from memory vs the ceiling;
//! 3. a 99 KB object from memory vs the same-size ceiling (cache_api: 111 req/s);
//! 4. a large object from the disk tier vs a bare server streaming the same file;
//! 5. `parquet.column_stats`, 100k rows, result uncached, object on disk: p50
//!    (cache_api: 562 ms);
//! 6. the same, result cached: req/s;
//! 7. `parquet.describe`, 100k rows x 4 columns, uncached: p50;
//! 8. 32 concurrent cold reads of a 100 MB object: SOR GETs, and time vs a
//!    direct object_store GET from the same server.
//!
//! cargo run --release -p simcache-benches --bin sor [-- SECONDS_PER_RATE [SCENARIO...]]
//! (default 10 s, every scenario)

use std::time::Instant;

use anyhow::Context;
use object_store::ObjectStore;
use simcache_benches::load::{percentile, side_by_side_with};
use simcache_testkit::ServerProcess;
use simcache_testkit::k8s::workspace_bin;

fn metric(text: &str, name: &str, must: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && must.iter().all(|m| l.contains(m)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("SECONDS_PER_RATE must be a number")?
        .unwrap_or(10);
    let only: Vec<u32> = std::env::args()
        .skip(2)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .context("SCENARIO must be a number from 1 to 8")?;
    let want = |n: u32| only.is_empty() || only.contains(&n);
    let s3 = tokio::task::spawn_blocking(simcache_testkit::s3::server).await?;
    let prefix = s3.prefix("bench");
    let small = br#"{"temperature": 300.5, "pressure": 101325, "runs": [1, 2, 3]}"#.to_vec();
    let medium: Vec<u8> = {
        let rows: Vec<String> = (0..2420)
            .map(|i| {
                format!(
                    "{{\"i\": {i}, \"t\": {:.6}, \"ok\": true}}",
                    300.0 + i as f64 / 7.0
                )
            })
            .collect();
        format!("[{}]", rows.join(", ")).into_bytes()
    };
    let large: Vec<u8> = (0..(64usize << 20)).map(|i| (i % 251) as u8).collect();
    let huge: Vec<u8> = (0..(100usize << 20)).map(|i| (i % 241) as u8).collect();
    let (table, _) = simcache_testkit::parquet_gen::numeric_table(100_000);
    s3.put(&format!("{prefix}small.json"), small.clone()).await;
    s3.put(&format!("{prefix}medium.json"), medium.clone())
        .await;
    s3.put(&format!("{prefix}large.bin"), large.clone()).await;
    s3.put(&format!("{prefix}huge.bin"), huge.clone()).await;
    const TABLES: usize = 25;
    for i in 0..TABLES {
        s3.put(&format!("{prefix}t{i}.parquet"), table.clone())
            .await;
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("cache.db");
    let bin = workspace_bin("simcache-sidecar");
    let url = s3.url(&prefix);
    let cache_dir = dir.path().join("sor");
    let args = [
        "--backend",
        "sqlite",
        "--db-path",
        db.to_str().unwrap_or_default(),
        "serve",
        "--port",
        "0",
        "--sor",
        &format!("data={url}"),
        "--sor-endpoint",
        &s3.endpoint,
        "--sor-allow-http",
        "--sor-cache-dir",
        cache_dir.to_str().unwrap_or_default(),
        "--sor-validation",
        "ttl",
        "--sor-ttl-secs",
        "3600",
        "--sor-function-concurrency",
        "2",
    ];
    let env = [
        ("AWS_ACCESS_KEY_ID", s3.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
        ("RUST_LOG", "error"),
    ];
    let sidecar = ServerProcess::spawn(&bin, &args, &env).await;
    let out = std::process::Command::new(&bin)
        .args([
            "--backend",
            "sqlite",
            "--db-path",
            db.to_str().unwrap_or_default(),
        ])
        .args(["session", "create", "--role", "developer"])
        .output()?;
    let session = String::from_utf8(out.stdout)?.trim().to_string();
    let auth = vec![("x-session-id".to_string(), session.clone())];
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let r = http
            .get(format!("{}{path}", sidecar.url))
            .header("x-session-id", &session);
        async move { r.send().await?.bytes().await }
    };
    println!(
        "sor: one sidecar (auth on), SeaweedFS S3 on loopback; {secs} s per rate, 16 connections"
    );

    if want(1) {
        // 1. cache_api's route, cached small JSON, auth on.
        let compat = format!(
            "{}/cache/api/v1.0/?command=read&path=small.json&time=false",
            sidecar.url
        );
        let size = get("/cache/api/v1.0/?command=read&path=small.json&time=false")
            .await?
            .len();
        let ceiling =
            ServerProcess::spawn(&workspace_bin("ceiling"), &[&size.to_string()], &[]).await;
        let ((ours, _), (top, _)) = side_by_side_with(&compat, &auth, &ceiling.url, 16, secs).await;
        println!(
            "  1. compat route, cached small JSON ({size} B), auth on: {ours:.0} req/s vs ceiling {top:.0} = {:.2}x; {:.0}x cache_api's 750 req/s",
            ours / top,
            ours / 750.0
        );
        ceiling.kill().await;
    }

    if want(2) || want(3) {
        // 2 and 3. Objects from memory.
        for (n, key, body) in [(2, "small.json", &small), (3, "medium.json", &medium)] {
            if !want(n) {
                continue;
            }
            let path = format!("/sor/data/objects/{key}");
            get(&path).await?;
            let ours_url = format!("{}{path}", sidecar.url);
            let ceiling =
                ServerProcess::spawn(&workspace_bin("ceiling"), &[&body.len().to_string()], &[])
                    .await;
            let ((ours, _), (top, _)) =
                side_by_side_with(&ours_url, &auth, &ceiling.url, 16, secs).await;
            println!(
                "  {n}. object from memory, {} B: {ours:.0} req/s vs ceiling {top:.0} = {:.2}x",
                body.len(),
                ours / top
            );
            ceiling.kill().await;
        }
    }

    if want(4) {
        // 4. A 64 MiB object from the disk tier vs a bare file server.
        get("/sor/data/objects/large.bin").await?;
        let file = dir.path().join("large.bin");
        std::fs::write(&file, &large)?;
        let ceiling = ServerProcess::spawn(
            &workspace_bin("ceiling"),
            &["--file", file.to_str().unwrap_or_default()],
            &[],
        )
        .await;
        let ours_url = format!("{}/sor/data/objects/large.bin", sidecar.url);
        let ((_, ours), (_, top)) =
            side_by_side_with(&ours_url, &auth, &ceiling.url, 4, secs).await;
        println!(
            "  4. 64 MiB from the disk tier, 4 connections: {:.0} MiB/s vs a bare file server {:.0} MiB/s = {:.2}x",
            ours / 1048576.0,
            top / 1048576.0,
            ours / top
        );
        ceiling.kill().await;
    }

    if want(5) || want(6) || want(7) {
        // 5-7. Functions on 100k-row Parquet files on disk.
        let paths: Vec<String> = (0..TABLES).map(|i| format!("t{i}.parquet")).collect();
        http.post(format!("{}/sor/data/prefetch", sidecar.url))
            .header("x-session-id", &session)
            .json(&serde_json::json!({ "paths": paths }))
            .send()
            .await?
            .error_for_status()?;
        let call = |f: &str, i: usize| {
            let r = http
                .post(format!("{}/sor/data/functions/{f}", sidecar.url))
                .header("x-session-id", &session)
                .json(&serde_json::json!({ "path": format!("t{i}.parquet") }));
            async move {
                let t = Instant::now();
                let r = r.send().await?.error_for_status()?;
                let v: serde_json::Value = r.json().await?;
                anyhow::ensure!(v["cached"] == false || v["cached"] == true, "{v}");
                Ok::<_, anyhow::Error>((t.elapsed().as_secs_f64() * 1000.0, v["cached"] == true))
            }
        };
        let mut times = Vec::new();
        for i in 0..TABLES {
            let (ms, cached) = call("parquet.column_stats", i).await?;
            anyhow::ensure!(!cached, "the first call must compute");
            times.push(ms);
        }
        println!(
            "  5. parquet.column_stats, 100k rows, uncached, object on disk: p50 {:.2} ms, p99 {:.2} ms (cache_api: 562 ms)",
            percentile(&mut times.clone(), 50),
            percentile(&mut times, 99)
        );
        let stats_url = format!(
            "{}/sor/data/functions/parquet.column_stats/t0.parquet",
            sidecar.url
        );
        http.get(&stats_url)
            .header("x-session-id", &session)
            .send()
            .await?
            .error_for_status()?;
        let (cached_rate, _) = simcache_benches::load::rate_with(&stats_url, &auth, 16, secs).await;
        println!("  6. parquet.column_stats, result cached: {cached_rate:.0} req/s");
        let mut times = Vec::new();
        for i in 0..TABLES {
            let (ms, cached) = call("parquet.describe", i).await?;
            anyhow::ensure!(!cached, "the first call must compute");
            times.push(ms);
        }
        println!(
            "  7. parquet.describe, 100k rows x 4 columns, uncached: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&mut times.clone(), 50),
            percentile(&mut times, 99)
        );
    }

    // 8. 32 concurrent cold reads of 100 MB: one SOR GET, vs a direct GET.
    let store = s3.store().map_err(anyhow::Error::msg)?;
    let direct = {
        let t = Instant::now();
        let r = store
            .get(&object_store::path::Path::from(format!("{prefix}huge.bin")))
            .await?;
        let b = r.bytes().await?;
        anyhow::ensure!(b.len() == huge.len());
        t.elapsed().as_secs_f64()
    };
    let fills = |text: &str| {
        metric(
            text,
            "simcache_sor_fetch_total",
            &["kind=\"get\"", "status=\"ok\""],
        )
    };
    // The MD5 the fill must check, alone on one core: the floor under
    // any verified fill on this machine.
    let md5_alone = {
        let t = Instant::now();
        let d = <md5::Md5 as md5::Digest>::digest(&huge);
        std::hint::black_box(d);
        t.elapsed().as_secs_f64()
    };
    let before = fills(&String::from_utf8_lossy(&get("/metrics").await?));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (c, u, s) = (
            http.clone(),
            format!("{}/sor/data/objects/huge.bin", sidecar.url),
            session.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = c.get(&u).header("x-session-id", s).send().await?;
            let answered = Instant::now();
            let len = r.bytes().await?.len();
            Ok::<_, reqwest::Error>((answered, Instant::now(), len))
        }));
    }
    // The reader that started the fill streams it; the others are answered
    // once the blob is verified: the last answer marks the fill's end.
    let (mut verified, mut first) = (0f64, f64::MAX);
    for task in tasks {
        let (answered, done, len) = task.await??;
        anyhow::ensure!(len == huge.len(), "a reader got {len} bytes");
        verified = verified.max(answered.duration_since(t).as_secs_f64());
        first = first.min(done.duration_since(t).as_secs_f64());
    }
    let all = t.elapsed().as_secs_f64();
    let after = fills(&String::from_utf8_lossy(&get("/metrics").await?));
    println!(
        "  8. 32 concurrent cold reads of 100 MiB: {} SOR GET; fill verified on disk at {verified:.2} s = {:.2}x a direct object_store GET ({direct:.2} s); the reader streaming the fill done at {first:.2} s = {:.2}x; all 32 done at {all:.2} s; MD5 of 100 MiB alone: {md5_alone:.2} s",
        after - before,
        direct / verified,
        direct / first
    );

    Ok(())
}

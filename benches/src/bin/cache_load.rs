//! Load test of the sidecar's cache API with wrk, on this machine, in one run:
//! the bare-hyper ceiling, then GET hits from the memory tier, GET hits from
//! the store with the memory tier off, and POST writes — on SQLite and on a
//! private PostgreSQL (fsync on). Prints one table.
//!
//! Memory-tier GETs are judged against the ceiling, and this shared VM's
//! speed drifts by tens of percent within minutes. So they are measured in
//! pairs, the ceiling right before the sidecar, three times, and the ratio is
//! the median of the three pairs' ratios. They are measured twice: with two
//! wrk threads (as every other row), and with one. On two cores, two wrk
//! threads and the server's two workers take turns on the CPUs and the p99
//! mostly measures the kernel's time slice (the ceiling's own p99 is about
//! 4 ms); with one wrk thread the generator keeps to one core and the p99 is
//! the server's.
//!
//! Run: benches/cache_load.sh   (builds release binaries, then runs this)
//! Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 32).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;
use simcache_testkit::ServerProcess;

struct Figure {
    name: String,
    rps: f64,
    p99_ms: f64,
    errors: u64,
    /// Against the ceiling measured right before it (median of pairs);
    /// `None`: against the ceiling's median.
    paired_ratio: Option<f64>,
}

/// How many (ceiling, sidecar) pairs a memory-tier figure is the median of.
const PAIRS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The bare-hyper server, kept running so it can be measured next to each
/// memory-tier run; every measurement of it is kept for its own row.
struct Ceiling {
    url: String,
    script: PathBuf,
    /// (wrk threads, result)
    runs: Vec<(u32, Wrk)>,
}

type Wrk = (f64, f64, u64);

impl Ceiling {
    fn measure(&mut self, secs: u64, conns: u32, threads: u32) -> anyhow::Result<f64> {
        let r = wrk(
            &format!("{}/", self.url),
            &self.script,
            secs,
            conns,
            threads,
        )?;
        self.runs.push((threads, r));
        Ok(r.0)
    }

    fn runs_with(&self, threads: u32) -> Vec<Wrk> {
        self.runs
            .iter()
            .filter(|(t, _)| *t == threads)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// requests/s, p99 in ms, and errors of one wrk run.
fn wrk(url: &str, script: &Path, secs: u64, conns: u32, threads: u32) -> anyhow::Result<Wrk> {
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_duration_ms(v.trim()))
        .unwrap_or(f64::NAN);
    // "Non-2xx or 3xx responses: N" and socket errors both count as errors.
    let non2xx: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let sock: u64 = text
        .lines()
        .find(|l| l.contains("Socket errors"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok((rps, p99, non2xx + sock))
}

fn parse_duration_ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

fn script(dir: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, body)?;
    Ok(p)
}

fn get_script(token: &str) -> String {
    format!("wrk.method = \"GET\"\nwrk.headers[\"X-Session-ID\"] = \"{token}\"\n")
}

fn post_script(token: &str) -> String {
    // Every request writes a new key: thread id + counter.
    format!(
        r#"local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  tid = tid or 0
end
function request()
  counter = counter + 1
  local key = "bench/t" .. tid .. "/" .. counter
  local body = '{{"cache_key":"' .. key .. '","simulation_id":1,"simulation_name":"bench","simulation_version":"1.0.0","execution_id":"exec-' .. counter .. '","squid_id":"bench/1.0.0/x","input_hash":"h","run_db_path":"/runs/x.db","ttl_hours":24,"metadata":{{"n":1}}}}'
  return wrk.format("POST", "/cache", {{["X-Session-ID"]="{token}", ["Content-Type"]="application/json"}}, body)
end
"#
    )
}

async fn session(sidecar: &Path, store_args: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["session", "create", "--role", "developer"];
    args.extend_from_slice(store_args);
    let out = tokio::process::Command::new(sidecar)
        .args(&args)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "session create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

async fn seed_entry(url: &str, token: &str) -> anyhow::Result<usize> {
    let body = json!({"cache_key": "thermal_sim/1.0.0/2824bf41204e2855641c52bbe079cd4ffe59e14a",
        "simulation_id": 42, "simulation_name": "thermal_sim", "simulation_version": "1.0.0",
        "execution_id": "exec-001", "squid_id": "thermal_sim/1.0.0/2824bf41", "input_hash": "hash123",
        "run_db_path": "/runs/exec-001.db", "ttl_hours": 24, "metadata": {"node": "n1"}});
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/cache"))
        .header("X-Session-ID", token)
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("seeding failed: {}", r.text().await?);
    }
    let hit = http
        .get(format!(
            "{url}/cache/thermal_sim/1.0.0/2824bf41204e2855641c52bbe079cd4ffe59e14a"
        ))
        .header("X-Session-ID", token)
        .send()
        .await?
        .bytes()
        .await?;
    Ok(hit.len())
}

const KEY_PATH: &str = "/cache/thermal_sim/1.0.0/2824bf41204e2855641c52bbe079cd4ffe59e14a";

#[allow(clippy::too_many_arguments)]
async fn run_backend(
    label: &str,
    sidecar: &Path,
    store_args: &[&str],
    tmp: &Path,
    secs: u64,
    conns: u32,
    ceiling: &mut Ceiling,
    out: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let token = session(sidecar, store_args).await?;
    let gs = script(tmp, &format!("get-{label}.lua"), &get_script(&token))?;
    let ps = script(tmp, &format!("post-{label}.lua"), &post_script(&token))?;
    for (tier, mem) in [("memory tier", "67108864"), ("store, memory tier off", "0")] {
        let mut args = vec!["serve", "--port", "0", "--memory-tier-bytes", mem];
        args.extend_from_slice(store_args);
        let p = ServerProcess::spawn(sidecar, &args, &[("RUST_LOG", "warn")]).await;
        seed_entry(&p.url, &token).await?;
        let url = format!("{}{KEY_PATH}", p.url);
        if mem == "0" {
            let (rps, p99, errors) = wrk(&url, &gs, secs, conns, 2)?;
            out.push(Figure {
                name: format!("{label} GET hit ({tier})"),
                rps,
                p99_ms: p99,
                errors,
                paired_ratio: None,
            });
        } else {
            for threads in [2, 1] {
                let (mut rps, mut p99, mut ratio, mut errors) = (vec![], vec![], vec![], 0);
                for _ in 0..PAIRS {
                    let c = ceiling.measure(secs, conns, threads)?;
                    let (r, p, e) = wrk(&url, &gs, secs, conns, threads)?;
                    rps.push(r);
                    p99.push(p);
                    ratio.push(r / c);
                    errors += e;
                }
                out.push(Figure {
                    name: format!("{label} GET hit ({tier}, {PAIRS} pairs, wrk -t{threads})"),
                    rps: median(rps),
                    p99_ms: median(p99),
                    errors,
                    paired_ratio: Some(median(ratio)),
                });
            }
        }
        if mem == "0" {
            let (rps, p99, errors) = wrk(&p.url, &ps, secs, conns, 2)?;
            out.push(Figure {
                name: format!("{label} POST (new key each)"),
                rps,
                p99_ms: p99,
                errors,
                paired_ratio: None,
            });
        }
        p.terminate().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let conns: u32 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("exe dir")?;
    let sidecar = exe_dir.join("simcache-sidecar");
    let ceiling = exe_dir.join("ceiling");
    for b in [&sidecar, &ceiling] {
        if !b.exists() {
            bail!(
                "{} missing: build with cargo build --release -p simcache-sidecar -p simcache-benches",
                b.display()
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let mut figures = Vec::new();

    // The ceiling answers with a body as large as a real hit.
    let probe_dir = tempfile::tempdir()?;
    let probe_db = probe_dir.path().join("probe.db");
    let probe_args = ["--db-path", probe_db.to_str().unwrap_or_default()];
    let tok = session(&sidecar, &probe_args).await?;
    let mut args = vec!["serve", "--port", "0"];
    args.extend_from_slice(&probe_args);
    let p = ServerProcess::spawn(&sidecar, &args, &[("RUST_LOG", "warn")]).await;
    let hit_len = seed_entry(&p.url, &tok).await?;
    p.terminate().await;
    let c = ServerProcess::spawn(&ceiling, &[&hit_len.to_string()], &[]).await;
    let mut ceiling = Ceiling {
        url: c.url.clone(),
        script: script(tmp.path(), "ceiling.lua", "wrk.method = \"GET\"\n")?,
        runs: Vec::new(),
    };
    ceiling.measure(secs, conns, 2)?;

    let sqlite_db = tmp.path().join("bench.db");
    let sqlite_args = ["--db-path", sqlite_db.to_str().unwrap_or_default()];
    run_backend(
        "SQLite",
        &sidecar,
        &sqlite_args,
        tmp.path(),
        secs,
        conns,
        &mut ceiling,
        &mut figures,
    )
    .await?;

    let pg = simcache_testkit::PgServer::start(true).map_err(anyhow::Error::msg)?;
    let url = simcache_testkit::pg::with_database(&pg.admin_url, "postgres");
    let pg_args = [
        "--backend",
        "postgresql",
        "--db-url",
        url.as_str(),
        "--db-pool-size",
        "32",
    ];
    run_backend(
        "PostgreSQL",
        &sidecar,
        &pg_args,
        tmp.path(),
        secs,
        conns,
        &mut ceiling,
        &mut figures,
    )
    .await?;

    c.kill().await;
    let ceiling_rps = median(ceiling.runs_with(2).iter().map(|r| r.0).collect());
    for threads in [1, 2] {
        let runs = ceiling.runs_with(threads);
        figures.insert(
            0,
            Figure {
                name: format!(
                    "ceiling: bare hyper, {hit_len}-byte body (median of {}, wrk -t{threads})",
                    runs.len()
                ),
                rps: median(runs.iter().map(|r| r.0).collect()),
                p99_ms: median(runs.iter().map(|r| r.1).collect()),
                errors: runs.iter().map(|r| r.2).sum(),
                paired_ratio: Some(1.0),
            },
        );
    }
    println!(
        "\nsimcache cache API load ({conns} connections, {secs} s each, wrk -t2 unless named, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<66} {:>9} {:>8} {:>9} {:>7}",
        "scenario", "req/s", "p99 ms", "x ceiling", "errors"
    );
    for f in &figures {
        println!(
            "{:<66} {:>9.0} {:>8.2} {:>9.2} {:>7}",
            f.name,
            f.rps,
            f.p99_ms,
            f.paired_ratio.unwrap_or(f.rps / ceiling_rps),
            f.errors
        );
    }
    Ok(())
}

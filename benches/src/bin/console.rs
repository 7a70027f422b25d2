//! The web console's figures for a sweep of N points (default 10,000), on a
//! throwaway PostgreSQL (or DATABASE_URL) and the operator's own server, each
//! beside the bare-hyper ceiling serving a body of the same size in the
//! same run (this machine's speed drifts):
//!
//! 1. the sweep page's server time: its three requests (status, first page
//!    of points, the SVG plot of every point);
//! 2. the plot-data endpoint (`format=json`) returning all N points, from the
//!    sweep's record and from PostgreSQL's results;
//! 3. the runs table's filtered page (two range filters, 50 rows) on
//!    PostgreSQL: p50 and p99.
//!
//! Requests go one at a time from one client over loopback; times are wall
//! time at the client (request sent to last byte read).
//!
//! With `--cluster`, also 4. the same sweep page for a SimulationSweep of N
//! SimulationRuns (with their statuses) on the private kube-apiserver, read
//! by the operator's cluster source (its own watch of sweep runs).
//!
//! cargo run --release -p simcache-benches --bin console [-- N] [--cluster]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};
use simcache::local::records::LocalRecords;
use simcache_api::server::{self, ApiConfig};
use simcache_benches::load::percentile;
use simcache_console::SourceSlot;
use simcache_console::source::{SweepPoint, SweepView};
use simcache_store::Backend;
use simcache_store::postgres::PgOptions;
use simcache_store::results::filter::ParamClass;
use simcache_store::results::{ParamDef, ResultRecord, Upsert};
use simcache_testkit::ServerProcess;
use simcache_testkit::k8s::workspace_bin;

const SIM: &str = "grid";
const VERSION: &str = "1.0.0";

/// Point i of a 100 × (N/100) grid: inputs temperature and pressure,
/// outputs stress and strain.
fn point(i: usize) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let t = 300.0 + (i % 100) as f64 * 10.0;
    let p = 1.0 + (i / 100) as f64;
    (
        BTreeMap::from([
            ("temperature".into(), json!(t)),
            ("pressure".into(), json!(p)),
        ]),
        BTreeMap::from([
            ("stress".into(), json!(t * p * 1.0e5 + 0.000_000_04)),
            ("strain".into(), json!(t / p * 1.0e-6)),
        ]),
    )
}

/// Times `n` GETs of `url` (after 5 warm-ups): (p50, p99) in ms and the body size.
async fn time(http: &reqwest::Client, url: &str, cookie: &str, n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut size = 0;
    for i in 0..n + 5 {
        let t = Instant::now();
        let r = http
            .get(url)
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        size = r.bytes().await.expect("body").len();
        if i >= 5 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    (percentile(&mut ms, 50), percentile(&mut ms, 99), size)
}

/// Ours, then the ceiling serving the same number of bytes.
async fn beside_ceiling(
    http: &reqwest::Client,
    what: &str,
    url: &str,
    cookie: &str,
    n: usize,
) -> (f64, f64) {
    let (p50, p99, size) = time(http, url, cookie, n).await;
    let ceiling = ServerProcess::spawn(&workspace_bin("ceiling"), &[&size.to_string()], &[]).await;
    let (c50, c99, _) = time(http, &ceiling.url, "", n).await;
    ceiling.kill().await;
    println!(
        "  {what}: p50 {p50:.2} ms, p99 {p99:.2} ms ({size} B); ceiling same size p50 {c50:.2} ms, p99 {c99:.2} ms"
    );
    (p50, p99)
}

/// The three requests a sweep page makes (status, first page, SVG of every
/// point), each beside the ceiling, and their sum.
async fn sweep_page(http: &reqwest::Client, sweep: &str, axes: &str, cookie: &str, reps: usize) {
    let (a, _) = beside_ceiling(http, "status", sweep, cookie, reps).await;
    let first = format!("{sweep}/points?limit=50");
    let (b, _) = beside_ceiling(http, "first page of points", &first, cookie, reps).await;
    let svg = format!("{sweep}/plot?{axes}");
    let (c, _) = beside_ceiling(http, "SVG plot of every point", &svg, cookie, 30).await;
    println!(
        "  the page's server time: {:.1} ms (sum of p50s; target < 200 ms)",
        a + b + c
    );
}

/// Logs in as the benchmark's admin; the session cookie.
async fn login(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/ui/api/login"))
        .json(&json!({"username": "admin", "password": "bench-password"}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "login: {}", r.status());
    Ok(r.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cluster = args.iter().any(|a| a == "--cluster");
    let n: usize = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(n, cluster))
}

/// A SimulationSweep of `n` finished runs in a fresh namespace of the
/// private API server; returns the namespace.
async fn cluster_sweep(
    n: usize,
) -> anyhow::Result<(kube::Client, simcache_testkit::k8s::Namespace<'static>)> {
    use kube::Api;
    use kube::api::{Patch, PatchParams, PostParams};
    use simcache_crds::{SimulationRun, SimulationSweep};
    let c = simcache_testkit::k8s::cluster();
    c.install_crds();
    // The guard deletes the namespace when dropped: the caller keeps it.
    let guard = c.namespace("console-bench");
    let ns = guard.name.clone();
    let client = c.client().await;
    let sweeps: Api<SimulationSweep> = Api::namespaced(client.clone(), &ns);
    let sweep: SimulationSweep = serde_json::from_value(json!({
        "apiVersion": "simcache.io/v1alpha1", "kind": "SimulationSweep",
        "metadata": {"name": "big"},
        "spec": {"simulation": {"name": SIM, "version": VERSION},
                 "parameters": {"temperature": {"linspace": {"from": 300, "to": 1290, "count": 100}},
                                "pressure": {"linspace": {"from": 1, "to": (n / 100) as f64, "count": n / 100}}}},
    }))?;
    sweeps.create(&PostParams::default(), &sweep).await?;
    sweeps
        .patch_status(
            "big",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded", "total": n, "succeeded": n, "progress": format!("{n}/{n}")}})),
        )
        .await?;
    let runs: Api<SimulationRun> = Api::namespaced(client.clone(), &ns);
    let made = futures_util::stream::iter(0..n)
        .map(|i| {
            let runs = runs.clone();
            async move {
                let (inputs, outputs) = point(i);
                let name = format!("big-{i:05}");
                let run: SimulationRun = serde_json::from_value(json!({
                    "apiVersion": "simcache.io/v1alpha1", "kind": "SimulationRun",
                    "metadata": {"name": name, "labels": {"simcache.io/sweep": "big"}},
                    "spec": {"simulation": {"name": SIM, "version": VERSION}, "inputs": inputs},
                }))?;
                runs.create(&PostParams::default(), &run).await?;
                runs.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Succeeded", "outputs": outputs, "executionId": format!("bench.{i}")}})),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    anyhow::ensure!(made == n, "made {made} of {n} runs");
    Ok((client, guard))
}

async fn run(n: usize, cluster: bool) -> anyhow::Result<()> {
    let url = simcache_testkit::fresh_database("console_bench").await;
    let db_url = url.clone();
    let runs = tempfile::tempdir()?;
    let home = tempfile::tempdir()?;
    let mut cfg = ApiConfig::new(Backend::Postgres(PgOptions::new(url)), runs.path().into());
    cfg.admin_password = Some("bench-password".into());
    let local_sweeps = SourceSlot::default();
    let console = simcache_console::mount(local_sweeps.clone(), false);
    let api = server::start(cfg, vec![console], std::future::pending()).await?;

    // N results in PostgreSQL, registered as introspection does.
    let t = Instant::now();
    let defs = vec![
        ParamDef::number(ParamClass::Input, "temperature", "K"),
        ParamDef::number(ParamClass::Input, "pressure", "bar"),
        ParamDef::number(ParamClass::Output, "stress", "Pa"),
        ParamDef::number(ParamClass::Output, "strain", "1"),
    ];
    let results = api.stores.results.clone();
    let registered = futures_util::stream::iter(0..n)
        .map(|i| {
            let (results, defs) = (results.clone(), defs.clone());
            async move {
                let (inputs, outputs) = point(i);
                results
                    .register(
                        &ResultRecord {
                            execution_id: format!("bench.{i}"),
                            simulation_name: SIM.into(),
                            simulation_version: VERSION.into(),
                            inputs,
                            outputs,
                            definitions: defs,
                            status: "completed".into(),
                            duration_seconds: Some(1.0),
                            ..Default::default()
                        },
                        Upsert::Replace,
                    )
                    .await
            }
        })
        .buffer_unordered(8)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    anyhow::ensure!(registered == n, "registered {registered} of {n}");
    // The sweep's record, as `simcache run` writes it.
    std::fs::create_dir_all(home.path().join("sweeps"))?;
    let view = SweepView {
        namespace: "local".into(),
        name: "big".into(),
        simulation: SIM.into(),
        version: Some(VERSION.into()),
        status: json!({"phase": "Succeeded", "total": n, "succeeded": n, "progress": format!("{n}/{n}")}),
        points: (0..n)
            .map(|i| {
                let (inputs, outputs) = point(i);
                SweepPoint {
                    run: format!("big-{i:05}"),
                    phase: "Succeeded".into(),
                    inputs,
                    outputs,
                    execution_id: Some(format!("bench.{i}")),
                }
            })
            .collect(),
    };
    std::fs::write(
        home.path().join("sweeps/big.json"),
        serde_json::to_vec(&json!({ "view": view }))?,
    )?;
    let _ = local_sweeps.set(Arc::new(LocalRecords::new(home.path().join("sweeps"))));
    println!(
        "{n} results and a {n}-point sweep seeded in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let cookie = login(&http, &api.url()).await?;
    let base = api.url();
    let sweep = format!("{base}/ui/api/sweeps/local/big");
    let axes = "x=input.temperature&y=output.stress&color=input.pressure";
    let filters = "min.input.temperature=500&max.input.pressure=50";
    let reps = 100;

    println!("1. the sweep page ({n} points), its three requests:");
    sweep_page(&http, &sweep, axes, &cookie, reps).await;

    println!("2. plot data, all {n} points (target < 50 ms):");
    beside_ceiling(
        &http,
        "from the sweep's record",
        &format!("{sweep}/plot?{axes}&format=json"),
        &cookie,
        reps,
    )
    .await;
    beside_ceiling(
        &http,
        "from PostgreSQL's results",
        &format!("{base}/ui/api/simulations/{SIM}/{VERSION}/plot?{axes}&format=json"),
        &cookie,
        reps,
    )
    .await;

    println!("3. the runs table, two range filters, 50 rows, PostgreSQL (target p99 < 20 ms):");
    beside_ceiling(
        &http,
        "filtered page",
        &format!("{base}/ui/api/simulations/{SIM}/{VERSION}/runs?{filters}&limit=50"),
        &cookie,
        300,
    )
    .await;
    beside_ceiling(
        &http,
        "filtered page sorted by an output",
        &format!("{base}/ui/api/simulations/{SIM}/{VERSION}/runs?{filters}&sort=output.stress&desc=true&limit=50&offset=1000"),
        &cookie,
        300,
    )
    .await;
    if cluster {
        let t = Instant::now();
        let (client, guard) = cluster_sweep(n).await?;
        let ns = guard.name.clone();
        println!(
            "4. the sweep page for a SimulationSweep of {n} runs on the private API server (made in {:.0} s):",
            t.elapsed().as_secs_f64()
        );
        let runs2 = tempfile::tempdir()?;
        let mut cfg = ApiConfig::new(
            Backend::Postgres(PgOptions::new(db_url)),
            runs2.path().into(),
        );
        cfg.admin_password = Some("bench-password".into());
        let cluster_sweeps = SourceSlot::default();
        let console = simcache_console::mount(cluster_sweeps.clone(), false);
        let on_cluster = server::start(cfg, vec![console], std::future::pending()).await?;
        let scope = simcache_controller::Scope::Namespaces(vec![ns.clone()]);
        let _ = cluster_sweeps.set(Arc::new(
            simcache_operator::cluster_source::ClusterObjects::new(client, scope),
        ));
        let cookie = login(&http, &on_cluster.url()).await?;
        let sweep = format!("{}/ui/api/sweeps/{ns}/big", on_cluster.url());
        sweep_page(&http, &sweep, axes, &cookie, reps).await;
        beside_ceiling(
            &http,
            "plot data, all points",
            &format!("{sweep}/plot?{axes}&format=json"),
            &cookie,
            reps,
        )
        .await;
        on_cluster.shutdown().await?;
    }
    api.shutdown().await
}

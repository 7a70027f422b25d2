//! The operator's scale figures, against the private kube-apiserver (or
//! SIMCACHE_TEST_KUBECONFIG), the real operator binary and PostgreSQL:
//!
//! - RUNS (default 10,000) SimulationRuns whose results are cached, created
//!   at once with `kubectl apply`, until all are `Cached`: how long after
//!   the last creation, the operator's peak resident memory, and the API
//!   writes the operator made per run (from its own client metrics, and from
//!   the API server's audit log when the private one is used).
//! - With `--pods N`: N runs that each start a pod, which the harness's test
//!   node runs (at most 16 at once, like a small node): throughput and the
//!   operator's CPU time per run.
//!
//! The cache is seeded through the store with `core`'s own `identify`
//! (the same hash and key a finished run would have written), all entries
//! pointing at one real run database.
//!
//! cargo run --release -p simcache-benches --bin cached-runs [-- RUNS] [--pods N]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use simcache_core::cache_key::{catalog_spec, identify};
use simcache_core::record;
use simcache_crds::{Phase, Simulation, SimulationRun};
use simcache_rundb::{RunDb, RunInit, RunStatus};
use simcache_store::catalog::Registration;
use simcache_store::postgres::PgOptions;
use simcache_store::{Backend, Stores};
use simcache_testkit::ServerProcess;
use simcache_testkit::k8s::{KubeCluster, OperatorLaunch, cluster, workspace_bin};
use simcache_testkit::kubelet::{NODE_LABEL, TestNode};

fn simulation_yaml() -> String {
    r#"apiVersion: simcache.io/v1alpha1
kind: Simulation
metadata: {name: thermal}
spec:
  version: "1.0.0"
  image: ghcr.io/simcache/example-thermal:0.1.0
  command: ["python3", "/app/thermal.py"]
  inputs:
    temperature: {type: number, units: K, min: 0, max: 2000}
    material: {type: string, default: steel}
  outputs:
    max_stress: {type: number, units: Pa}
"#
    .to_string()
}

/// Peak resident set (VmHWM) and current (VmRSS) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time (user + system) of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A counter (summed over label sets matching `filter`) from the operator's
/// /metrics.
async fn metric(op: &ServerProcess, name: &str, filter: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", op.url))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum())
}

/// The operator's writes to the API (create, update, patch, delete).
async fn writes(op: &ServerProcess) -> anyhow::Result<f64> {
    let mut n = 0.0;
    for verb in ["create", "update", "patch", "delete"] {
        n += metric(
            op,
            "simcache_operator_kube_requests_total",
            &format!("verb=\"{verb}\""),
        )
        .await?;
    }
    Ok(n)
}

/// Writes by anything but kubectl in `namespace`, from the audit log, by
/// resource.
fn audited_writes(c: &KubeCluster, namespace: &str) -> Option<BTreeMap<String, u64>> {
    let log = std::fs::read_to_string(c.audit_log.as_ref()?).ok()?;
    let mut by = BTreeMap::new();
    for line in log.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let verb = e["verb"].as_str().unwrap_or("");
        let agent = e["userAgent"].as_str().unwrap_or("");
        if e["objectRef"]["namespace"] != json!(namespace)
            || !matches!(verb, "create" | "update" | "patch" | "delete")
            || agent.starts_with("kubectl")
        {
            continue;
        }
        let what = format!(
            "{} {}{}",
            verb,
            e["objectRef"]["resource"].as_str().unwrap_or(""),
            e["objectRef"]["subresource"]
                .as_str()
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        );
        *by.entry(what).or_insert(0) += 1;
    }
    Some(by)
}

/// `kubectl apply` of `yaml` in the background.
fn apply_in_background(
    c: &KubeCluster,
    ns: &str,
    yaml: String,
) -> tokio::task::JoinHandle<std::io::Result<std::process::Output>> {
    let kc = c.kubeconfig.display().to_string();
    let ns = ns.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("kubectl")
            .args(["apply", "-n", &ns, "-f", "-"])
            .env("KUBECONFIG", kc)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut s) = child.stdin.take() {
            s.write_all(yaml.as_bytes())?;
        }
        child.wait_with_output()
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut runs = 10_000;
    let mut pods = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let number = |v: Option<String>, what: &str| -> anyhow::Result<usize> {
            v.with_context(|| format!("{what} needs a number"))?
                .parse()
                .with_context(|| format!("{what} must be a number"))
        };
        match a.as_str() {
            "--pods" => pods = Some(number(args.next(), "--pods")?),
            _ => runs = number(Some(a), "RUNS")?,
        }
    }
    if let Some(n) = pods {
        return pods_bench(n).await;
    }
    cached_bench(runs).await
}

async fn cached_bench(runs: usize) -> anyhow::Result<()> {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("bench");
    let client = c.client().await;
    let db_url = simcache_testkit::fresh_database("cached_runs").await;
    let dir = tempfile::tempdir()?;

    // The Simulation, registered as the controller would.
    let sim: Simulation = serde_yaml::from_str(&simulation_yaml())?;
    let stores = Stores::open(&Backend::Postgres(PgOptions::new(db_url.clone())), "bench").await?;
    let sim_id = match stores.catalog.register(&catalog_spec(&sim), None).await? {
        Registration::Created(i) | Registration::Unchanged(i) => i,
    };
    // One real run database all entries point at.
    let mut db = RunDb::open_in(dir.path(), "seed.1")?;
    db.initialize_run(&RunInit::new("thermal", "1.0.0"))?;
    db.complete_run(RunStatus::Completed, Some(1.0), None, None)?;
    let db_path = db.path().display().to_string();
    drop(db);
    let now = simcache_store::clock::now_ms();
    let mut docs = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = 300.0 + i as f64 * 0.05;
        let doc = format!(
            "apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {{name: run-{i}}}\n\
             spec: {{simulation: {{name: thermal}}, inputs: {{temperature: {t}, material: copper}}}}\n"
        );
        let run: SimulationRun = serde_yaml::from_str(&doc)?;
        let id = identify(&sim, &run.spec)?;
        stores
            .cache
            .put(record::cache_entry(
                &id.run_key(sim_id),
                &format!("seed.{i}"),
                Some(db_path.clone()),
                4096,
                &json!({"max_stress": t * 1e6}),
                Some(i as i64),
                "bench",
                Some(1.0),
                None,
                now,
            ))
            .await?;
        docs.push(doc);
    }

    let operator = workspace_bin("simcache-operator");
    let op = OperatorLaunch {
        bin: &operator,
        kubeconfig: &c.kubeconfig,
        namespace: &ns.name,
        db_url: &db_url,
        runs_dir: dir.path(),
        port: 0,
        extra: &[],
        log: "error",
    }
    .spawn()
    .await;
    let out = c.kubectl_stdin(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&simulation_yaml()),
    );
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Let the operator settle (leader, watches, the Simulation registered)
    // before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, rss_before) = memory_kib(op.pid());
    let writes_before = writes(&op).await?;
    let audited_before = audited_writes(c, &ns.name);

    let start = Instant::now();
    let mut apply = Some(apply_in_background(c, &ns.name, docs.join("---\n")));
    let mut peak_kib = 0;
    let mut applied_at = None;
    loop {
        if let Some(h) = apply.as_ref()
            && h.is_finished()
        {
            let out = apply.take().context("apply task")?.await??;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            applied_at = Some(start.elapsed());
        }
        peak_kib = peak_kib.max(memory_kib(op.pid()).1);
        // The operator's own counter: cheap to poll, unlike listing 10,000 runs.
        let cached = metric(
            &op,
            "simcache_operator_run_phase_transitions_total",
            "phase=\"Cached\"",
        )
        .await? as usize;
        if cached >= runs && applied_at.is_some() {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(900),
            "only {cached} of {runs} Cached after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = start.elapsed();
    let (hwm, rss_after) = memory_kib(op.pid());
    // Let the last status patches and events land before counting writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let op_writes = writes(&op).await? - writes_before;
    let api: Api<SimulationRun> = Api::namespaced(client, &ns.name);
    let list = api.list(&ListParams::default()).await?;
    let cached = list
        .items
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(|s| s.phase == Phase::Cached))
        .count();
    anyhow::ensure!(cached == runs, "{cached} of {runs} Cached in the API");
    let applied = applied_at.unwrap_or(took);
    println!("{runs} cached SimulationRuns created at once (kubectl apply)");
    println!(
        "  kubectl apply finished after {:.1} s",
        applied.as_secs_f64()
    );
    println!(
        "  all Cached after {:.1} s: {:.1} s after the last creation (target < 30 s)",
        took.as_secs_f64(),
        (took - applied).as_secs_f64()
    );
    println!(
        "  operator RSS: {:.1} MiB before, {:.1} MiB peak sampled, {:.1} MiB high-water mark (target < 150 MiB), {:.1} MiB after",
        rss_before as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "  operator API writes: {op_writes} = {:.2} per run (client metrics; target <= 2)",
        op_writes / runs as f64
    );
    if let (Some(before), Some(after)) = (audited_before, audited_writes(c, &ns.name)) {
        let mut total = 0;
        for (what, n) in &after {
            let d = n - before.get(what).copied().unwrap_or(0);
            total += d;
            println!("    audit log: {what}: {d}");
        }
        println!(
            "  audit log: {total} writes by the operator = {:.2} per run",
            total as f64 / runs as f64
        );
    }
    op.terminate().await;
    Ok(())
}

/// N runs with distinct inputs, each computed in a pod the test node runs.
async fn pods_bench(n: usize) -> anyhow::Result<()> {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("podbench");
    let client = c.client().await;
    let db_url = simcache_testkit::fresh_database("pod_runs").await;
    let dir = tempfile::tempdir()?;
    let node = TestNode::with_capacity(
        client.clone(),
        &ns.name,
        workspace_bin("simcache-sidecar"),
        16,
    );
    let operator = workspace_bin("simcache-operator");
    let op = OperatorLaunch {
        bin: &operator,
        kubeconfig: &c.kubeconfig,
        namespace: &ns.name,
        db_url: &db_url,
        runs_dir: dir.path(),
        port: 0,
        extra: &["--pod-node-selector", NODE_LABEL],
        log: "error",
    }
    .spawn()
    .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/run-api/thermal.py")
        .canonicalize()?;
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        script.with_file_name("schema.json"),
    )?)?;
    let mut inputs = schema["inputs"].clone();
    for v in inputs.as_object_mut().context("inputs")?.values_mut() {
        if let Some(o) = v.as_object_mut() {
            o.remove("choices");
        }
    }
    let sim = json!({
        "apiVersion": "simcache.io/v1alpha1", "kind": "Simulation",
        "metadata": {"name": "thermal"},
        "spec": {"version": "1.0.0", "image": "ghcr.io/simcache/example-thermal:0.1.0",
                 "command": ["python3", script.display().to_string()],
                 "inputs": inputs, "outputs": schema["outputs"]}
    });
    let out = c.kubectl_stdin(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&serde_yaml::to_string(&sim)?),
    );
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {{name: pod-{i}}}\n\
                 spec: {{simulation: {{name: thermal}}, inputs: {{temperature: {}}}, ttlSecondsAfterFinished: 0}}\n",
                300.0 + i as f64 * 0.1
            )
        })
        .collect();
    let cpu_before = cpu_time(op.pid());
    let start = Instant::now();
    let mut apply = Some(apply_in_background(c, &ns.name, docs.join("---\n")));
    let mut peak_kib = 0;
    loop {
        if let Some(h) = apply.as_ref()
            && h.is_finished()
        {
            let out = apply.take().context("apply task")?.await??;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        peak_kib = peak_kib.max(memory_kib(op.pid()).1);
        let done = metric(
            &op,
            "simcache_operator_run_phase_transitions_total",
            "phase=\"Succeeded\"",
        )
        .await?
            + metric(
                &op,
                "simcache_operator_run_phase_transitions_total",
                "phase=\"Failed\"",
            )
            .await?;
        if done as usize >= n && apply.is_none() {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(3600),
            "only {done} of {n} finished after an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = start.elapsed();
    let cpu = cpu_time(op.pid()) - cpu_before;
    let api: Api<SimulationRun> = Api::namespaced(client, &ns.name);
    let list = api.list(&ListParams::default()).await?;
    let succeeded = list
        .items
        .iter()
        .filter(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Succeeded)
        })
        .count();
    println!("{n} SimulationRuns, each computed in its own pod (test node: 16 pods at once)");
    println!(
        "  {succeeded} Succeeded in {:.1} s: {:.1} runs/s ({} pods started)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        node.pods_started().len()
    );
    println!(
        "  operator CPU: {:.2} s in all, {:.1} ms per run; RSS peak sampled {:.1} MiB",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / n as f64,
        peak_kib as f64 / 1024.0
    );
    op.terminate().await;
    Ok(())
}

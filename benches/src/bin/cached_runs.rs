//! The operator figure (issue: CRDs and the operator): 1,000 SimulationRuns
//! whose results are cached, applied at once, until all are `Cached` —
//! against the private kube-apiserver (or SIMCACHE_TEST_KUBECONFIG), the real
//! operator binary and PostgreSQL — and the operator's peak resident memory
//! while doing it.
//!
//! The cache is seeded through the store with the operator's own identity
//! functions (the same hash and key a finished run would have written), all
//! entries pointing at one real run database.
//!
//! cargo run --release -p simcache-benches --bin cached-runs [-- RUNS]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use simcache_crds::{Phase, Simulation, SimulationRun};
use simcache_operator::runs::identity::{
    cache_key, catalog_name, catalog_spec, input_hash, resolve_inputs,
};
use simcache_operator::runs::record::{self, RunKey};
use simcache_rundb::{RunDb, RunInit, RunStatus};
use simcache_store::catalog::Registration;
use simcache_store::postgres::PgOptions;
use simcache_store::{Backend, Stores};
use simcache_testkit::k8s::{OperatorLaunch, cluster, workspace_bin};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("RUNS must be a number")?
        .unwrap_or(1000);
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
    let name = catalog_name(&sim);
    let mut docs = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = 300.0 + i as f64 * 0.5;
        let given: BTreeMap<String, Value> =
            serde_json::from_value(json!({"temperature": t, "material": "copper"}))?;
        let inputs = resolve_inputs(&sim.spec, &given).map_err(anyhow::Error::msg)?;
        let hash = input_hash(&name, "1.0.0", &sim.spec.image, &inputs);
        let key = cache_key(&name, "1.0.0", &hash);
        let run_key = RunKey {
            simulation_id: sim_id,
            name: &name,
            version: "1.0.0",
            hash: &hash,
            cache_key: &key,
        };
        stores
            .cache
            .put(record::cache_entry(
                &run_key,
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
        docs.push(format!(
            "apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {{name: run-{i}}}\n\
             spec: {{simulation: {{name: thermal}}, inputs: {{temperature: {t}, material: copper}}}}\n"
        ));
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
    // Let the operator settle (leader, watches) before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, rss_before) = memory_kib(op.pid());

    let api: Api<SimulationRun> = Api::namespaced(client, &ns.name);
    let start = Instant::now();
    let yaml = docs.join("---\n");
    let apply = {
        let kc = c.kubeconfig.display().to_string();
        let ns = ns.name.clone();
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
    };
    let mut peak_kib = 0;
    let mut applied_at = None;
    let mut apply = Some(apply);
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
        let list = api.list(&ListParams::default()).await?;
        let cached = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase == Phase::Cached))
            .count();
        let failed: Vec<_> = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase == Phase::Failed))
            .collect();
        anyhow::ensure!(failed.is_empty(), "runs failed: {:?}", failed[0].status);
        if cached == runs {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "only {cached} of {runs} Cached after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = start.elapsed();
    let (hwm, rss_after) = memory_kib(op.pid());
    println!("{runs} cached SimulationRuns applied at once");
    println!(
        "  kubectl apply finished after {:.1} s",
        applied_at.unwrap_or(took).as_secs_f64()
    );
    println!(
        "  all Cached after {:.1} s (target < 30 s)",
        took.as_secs_f64()
    );
    println!(
        "  operator RSS: {:.1} MiB before, {:.1} MiB peak sampled, {:.1} MiB high-water mark (target < 100 MiB), {:.1} MiB after",
        rss_before as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    op.terminate().await;
    Ok(())
}

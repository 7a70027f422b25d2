//! The `simcache` binary as users run it: real processes, the example
//! files, a real local store, and a real operator API over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use simcache_testkit::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_simcache");
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-simcache");

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// Runs `simcache` with `args` against the local store in `home`.
fn simcache(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SIMCACHE_API")
        .env_remove("SIMCACHE_SESSION")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_examples_run_in_parallel_as_a_table_then_come_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let dir = repo("examples/thermal").display().to_string();
    let (code, out, err) = simcache(home.path(), &["run", "-f", &dir, "-j", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for h in [
        "RUN",
        "STATUS",
        "TEMPERATURE [K]",
        "LENGTH [m]",
        "MAX_STRESS [Pa]",
        "TIME [s]",
    ] {
        assert!(header.contains(h), "{h} in {header}");
    }
    // 6 runs written out and a 40-point sweep.
    assert_eq!(lines.clone().count(), 46, "{out}");
    // Numbers to a sensible precision, not 106309500.00000004.
    assert!(!out.contains("00000004"), "{out}");
    assert!(out.contains("1.0631e8"), "{out}");
    assert!(
        err.contains("46 runs: 46 computed, 0 from the cache, 0 failed"),
        "{err}"
    );
    // Not a terminal: plain progress lines.
    assert!(err.contains("[46/46] "), "{err}");

    // Again: everything from the cache but the run that asks to refresh.
    let (code, out, err) = simcache(home.path(), &["run", "-f", &dir, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(runs.len(), 46);
    let cached = runs.iter().filter(|r| r["status"] == "cached").count();
    assert_eq!(cached, 45);
    assert!(
        err.contains("46 runs: 1 computed, 45 from the cache, 0 failed; the cache saved"),
        "{err}"
    );
    let saved: f64 = err
        .split("the cache saved ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(saved > 0.0, "{err}");

    // The sweep's points, as CSV for scripts, at full precision.
    let (code, out, err) = simcache(home.path(), &["sweep", "show", "thermal-grid", "-o", "csv"]);
    assert_eq!(code, 0, "{err}");
    let mut rows = out.lines();
    let header = rows.next().unwrap();
    assert!(
        header.starts_with("run,status,input.length,input.material"),
        "{header}"
    );
    assert_eq!(rows.count(), 40);
    let (code, out, _) = simcache(
        home.path(),
        &["sweep", "show", "thermal-grid", "-o", "yaml"],
    );
    assert_eq!(code, 0);
    let points: Vec<Value> = serde_yaml::from_str(&out).unwrap();
    assert!(points.iter().all(|p| p["status"] == "cached"));

    // The catalog and results, as tables with units.
    let (code, out, _) = simcache(home.path(), &["catalog"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("thermal") && out.contains("92"), "{out}");
    let (code, out, _) = simcache(
        home.path(),
        &["results", "--simulation", "thermal", "--limit", "5"],
    );
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(
        out.lines().next().unwrap().contains("MAX_STRESS [Pa]"),
        "{out}"
    );
}

#[test]
fn bad_input_exits_2_naming_the_file_and_a_failed_run_exits_1() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `ui` serves this machine's store; with --api it says where the
    // cluster's console is instead.
    let (code, _, err) = simcache(home.path(), &["--api", "http://127.0.0.1:9", "ui"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("serves the console itself at /ui/"), "{err}");
    let (code, _, err) = simcache(home.path(), &["run", "-f", "/no/such/file.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/no/such/file.yaml: no such file or folder"),
        "{err}"
    );

    let odd = dir.path().join("odd.yaml");
    std::fs::write(
        &odd,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .unwrap();
    let (code, _, err) = simcache(home.path(), &["run", "-f", odd.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("odd.yaml: kind ConfigMap is not one of ours"),
        "{err}"
    );

    let sim = std::fs::read_to_string(repo("examples/thermal/simulation.yaml")).unwrap();
    let sim = sim.replace(
        "../run-api/thermal.py",
        &repo("examples/run-api/thermal.py").display().to_string(),
    );
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(
        &sweep,
        format!(
            "{sim}\n---\napiVersion: simcache.io/v1alpha1\nkind: SimulationSweep\nmetadata: {{name: hot}}\nspec:\n  simulation: {{name: thermal}}\n  parameters:\n    temperature: {{values: [300, 2500]}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = simcache(home.path(), &["run", "-f", sweep.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("SimulationSweep hot: point"), "{err}");
    assert!(err.contains("temperature"), "{err}");
    assert!(out.is_empty(), "no run was made: {out}");

    let fails = dir.path().join("fails.yaml");
    std::fs::write(
        &fails,
        "apiVersion: simcache.io/v1alpha1\nkind: Simulation\nmetadata:\n  name: broken\n  annotations:\n    simcache.io/local-command: '[\"sh\", \"-c\", \"exit 3\"]'\nspec:\n  version: '1'\n  image: x\n---\napiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: b1}\nspec: {simulation: {name: broken}}\n",
    )
    .unwrap();
    let (code, out, err) = simcache(home.path(), &["run", "-f", fails.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("failed"), "{out}");
    assert!(
        err.contains("1 runs: 0 computed, 0 from the cache, 1 failed"),
        "{err}"
    );

    let (code, _, err) = simcache(home.path(), &["sweep", "show", "never-ran"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no sweep \"never-ran\" run on this machine"),
        "{err}"
    );
    let (code, _, err) = simcache(
        home.path(),
        &["run", "-f", odd.to_str().unwrap(), "-j", "0"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = simcache(home.path(), &["results", "-o", "xml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("xml"), "{err}");
}

#[test]
fn completions_and_the_kubectl_plugin() {
    let home = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_simcache()"),
        ("zsh", "#compdef simcache"),
        ("fish", "complete -c simcache"),
    ] {
        let (code, out, err) = simcache(home.path(), &["completion", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(marker),
            "{shell}: {}",
            &out[..out.len().min(200)]
        );
        assert!(out.contains("sweep"), "{shell} completes subcommands");
    }
    let out = Command::new(PLUGIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("kubectl simcache"), "{help}");
    assert!(
        help.contains("Exit codes: 0 ok, 1 a run failed, 2 bad input"),
        "{help}"
    );
    let out = Command::new(PLUGIN)
        .args([
            "--home",
            home.path().to_str().unwrap(),
            "catalog",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

/// The read commands against a real operator API (as after `kubectl
/// port-forward`), with a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_catalog_come_from_an_operator_api_with_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.db");
    let db_s = db.display().to_string();
    let operator = simcache_testkit::k8s::workspace_bin("simcache-operator");
    let p = ServerProcess::spawn(
        &operator,
        &[
            "serve",
            "--no-controllers",
            "--db-path",
            &db_s,
            "--run-db-base-path",
            dir.path().to_str().unwrap(),
            "--port",
            "0",
        ],
        &[],
    )
    .await;
    let sidecar = simcache_testkit::k8s::workspace_bin("simcache-sidecar");
    let made = Command::new(&sidecar)
        .args([
            "session",
            "create",
            "--role",
            "developer",
            "--db-path",
            &db_s,
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/simulations", p.url))
        .header("X-Session-ID", &token)
        .json(
            &json!({"name": "thermal", "version": "1.0.0", "description": "bar",
                      "input_schema": {"temperature": {"type": "number", "units": "K"}},
                      "output_schema": {"max_stress": {"type": "number", "units": "Pa"}}}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for (i, t) in [300.0, 400.0].iter().enumerate() {
        let r = http
            .post(format!("{}/register_direct", p.url))
            .header("X-Session-ID", &token)
            .json(
                &json!({"execution_id": format!("remote-{i}"), "simulation_name": "thermal",
                          "simulation_version": "1.0.0", "input_params": {"temperature": t},
                          "output_params": {"max_stress": t * 1e6}, "status": "completed",
                          "duration_seconds": 1.5}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let home = tempfile::tempdir().unwrap();
    let remote = |args: &[&str], session: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("--home").arg(home.path()).env("SIMCACHE_API", &p.url);
        match session {
            Some(s) => c.env("SIMCACHE_SESSION", s),
            None => c.env_remove("SIMCACHE_SESSION"),
        };
        let out = c.args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = remote(&["results", "-o", "json"], Some(&token));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["remote-0", "remote-1"]);
    assert_eq!(
        rows[0]["input.temperature"].as_f64().map(|t| t >= 300.0),
        Some(true)
    );
    let (code, out, err) = remote(&["catalog"], Some(&token));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("thermal") && out.contains("1.0.0") && out.contains("bar"),
        "{out}"
    );
    // `--session` on the command line works as the variable does.
    let (code, out, _) = remote(
        &["--session", &token, "results", "--simulation", "thermal"],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    // Without a session: refused, saying what to give.
    let (code, _, err) = remote(&["results"], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("401") && err.contains("--session"), "{err}");
    // run and sweep show are for this machine.
    let (code, _, err) = remote(&["sweep", "show", "x"], Some(&token));
    assert_eq!(code, 2);
    assert!(err.contains("kubectl get simsweep x"), "{err}");
    let (code, _, err) = remote(&["catalog", "--api", "ftp://x"], Some(&token));
    assert_eq!(code, 2);
    assert!(err.contains("give a URL"), "{err}");
    p.terminate().await;
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), the runs
/// show as a progress bar, not as a line each.
#[test]
fn a_terminal_gets_a_progress_bar_instead_of_lines() {
    let home = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{BIN} --home {} run -f {} -j 2",
        home.path().display(),
        repo("examples/thermal").display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap_or_else(|e| {
            panic!("script (util-linux) is needed for a terminal: {e}; apt-get install bsdutils")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/46 runs"), "a bar counting runs: {text}");
    assert!(
        !text.contains("[1/46]"),
        "no plain progress lines on a terminal: {text}"
    );
    assert!(
        text.contains("46 runs: 46 computed, 0 from the cache"),
        "{text}"
    );
}

// Local mode end to end through its one front door, `simcache run`.

fn json_rows(out: &str) -> Vec<Value> {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_run_is_computed_once_and_then_served_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let sim = repo("examples/thermal/simulation.yaml")
        .display()
        .to_string();
    let run = repo("examples/thermal/run.yaml").display().to_string();
    let args = ["run", "-f", &sim, "-f", &run, "-o", "json"];
    let (code, out, err) = simcache(home.path(), &args);
    assert_eq!(code, 0, "{out}{err}");
    let first = json_rows(&out);
    assert_eq!(first.len(), 1, "{out}");
    assert_eq!(first[0]["run"], "thermal-350k");
    assert_eq!(first[0]["status"], "computed");
    let expected = 110e9 * 17e-6 * (350.0 - 293.15);
    let stress = first[0]["output.max_stress"].as_f64().unwrap();
    assert!((stress - expected).abs() < 1e-3 * expected, "{stress}");
    let dbs: Vec<_> = std::fs::read_dir(home.path().join("runs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .collect();
    assert_eq!(dbs.len(), 1, "one run database");

    let (code, out, err) = simcache(home.path(), &args);
    assert_eq!(code, 0, "{err}");
    let again = json_rows(&out);
    assert_eq!(again[0]["status"], "cached");
    assert_eq!(again[0]["output.max_stress"], first[0]["output.max_stress"]);
    assert!(err.contains("the cache saved"), "{err}");

    let (code, out, _) = simcache(home.path(), &["catalog", "-o", "json"]);
    assert_eq!(code, 0);
    let catalog = json_rows(&out);
    let thermal = catalog
        .iter()
        .find(|c| c["name"] == "thermal")
        .expect("thermal listed");
    assert_eq!(thermal["version"], "1.0.0");
    assert_eq!(thermal["runs"], 2, "{out}");
    assert_eq!(thermal["success_rate"], 100.0, "{out}");
    assert_eq!(thermal["cache_hit_rate"], 50.0, "{out}");

    let (code, out, _) = simcache(
        home.path(),
        &["results", "--simulation", "thermal", "-o", "json"],
    );
    assert_eq!(code, 0);
    let results = json_rows(&out);
    assert_eq!(results.len(), 1, "{out}");
    assert_eq!(results[0]["input.temperature"], 350);
    assert_eq!(results[0]["input.material"], "copper");
}

#[test]
fn bad_runs_fail_naming_the_problem_and_the_rest_still_run() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = std::fs::read_to_string(repo("examples/thermal/simulation.yaml"))
        .unwrap()
        .replace(
            "../run-api/thermal.py",
            &repo("examples/run-api/thermal.py").display().to_string(),
        );
    std::fs::write(dir.path().join("1-sim.yaml"), sim).unwrap();
    std::fs::write(
        dir.path().join("2-runs.yaml"),
        "apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: ok}\n\
         spec: {simulation: {name: thermal}, inputs: {temperature: 400}}\n---\n\
         apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: too-hot}\n\
         spec: {simulation: {name: thermal}, inputs: {temperature: 5000}}\n---\n\
         apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: orphan}\n\
         spec: {simulation: {name: nowhere}}\n---\n\
         apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: same-as-ok}\n\
         spec: {simulation: {name: thermal}, inputs: {temperature: 400.0, material: steel}}\n---\n\
         apiVersion: simcache.io/v1alpha1\nkind: SimulationRun\nmetadata: {name: old-version}\n\
         spec: {simulation: {name: thermal, version: \"0.9\"}, inputs: {temperature: 300}}\n",
    )
    .unwrap();
    let folder = dir.path().display().to_string();
    // One at a time, so that the repeat of `ok` finds its result cached.
    let (code, out, err) = simcache(
        home.path(),
        &["run", "-f", &folder, "-j", "1", "-o", "json"],
    );
    assert_eq!(code, 1, "a failed run fails the command: {out}{err}");
    let rows = json_rows(&out);
    let by_run = |name: &str| {
        rows.iter()
            .find(|r| r["run"] == name)
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    assert_eq!(by_run("ok")["status"], "computed");
    assert_eq!(by_run("same-as-ok")["status"], "cached");
    let error = |name: &str| {
        by_run(name)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        error("too-hot").contains("invalid inputs: temperature: 5000 is above the maximum 2000"),
        "{out}"
    );
    assert!(
        error("orphan").contains("Simulation \"nowhere\" is not in the files given"),
        "{out}"
    );
    assert!(
        error("old-version")
            .contains("Simulation \"thermal\" is at version \"1.0.0\"; this run asks for \"0.9\""),
        "{out}"
    );
    assert!(
        err.contains("5 runs: 1 computed, 1 from the cache, 3 failed"),
        "{err}"
    );
}

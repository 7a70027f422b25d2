//! Local mode end to end through its one front door, `simcache run`: the
//! real binary on the real example manifests, a real SQLite store and run
//! databases, the real Python example program.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_simcache");

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// Runs `simcache --home HOME …` on this machine's store; (exit code,
/// stdout, stderr).
fn simcache(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SIMCACHE_API")
        .env_remove("SIMCACHE_SESSION")
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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

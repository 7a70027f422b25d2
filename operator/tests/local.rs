//! Local mode end to end: the real binary on the real example manifests, a
//! real SQLite store and run databases, the real Python example program.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const OPERATOR: &str = env!("CARGO_BIN_EXE_simcache-operator");

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// Runs `simcache-operator local …` with `home`; (exit code, stdout, stderr).
fn local(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(OPERATOR)
        .arg("local")
        .args(args)
        .arg("--home")
        .arg(home)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn outputs_of(line: &str) -> Value {
    let json = &line[line.find('{').expect("outputs on the line")..];
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_run_is_computed_once_and_then_served_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let sim = repo("examples/thermal/simulation.yaml")
        .display()
        .to_string();
    let run = repo("examples/thermal/run.yaml").display().to_string();
    let (code, out, err) = local(home.path(), &["run", "-f", &sim, "-f", &run]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[1/1] thermal-350k: Succeeded"), "{out}");
    let first = outputs_of(out.trim());
    let expected = 110e9 * 17e-6 * (350.0 - 293.15);
    assert!((first["max_stress"].as_f64().unwrap() - expected).abs() < 1e-3 * expected);
    assert!(
        err.contains("running python3 ../run-api/thermal.py"),
        "{err}"
    );
    let dbs: Vec<_> = std::fs::read_dir(home.path().join("runs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .collect();
    assert_eq!(dbs.len(), 1, "one run database");

    let (code, out, _) = local(home.path(), &["run", "-f", &sim, "-f", &run]);
    assert_eq!(code, 0);
    assert!(
        out.contains("thermal-350k: Cached (computed by local.thermal-350k."),
        "{out}"
    );
    assert!(out.contains("saved"), "{out}");
    assert_eq!(outputs_of(out.trim()), first);

    let (code, out, _) = local(home.path(), &["catalog", "list"]);
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.starts_with("thermal"))
        .expect("thermal listed");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["thermal", "1.0.0", "2", "100%", "50%"], "{out}");

    let (code, out, _) = local(
        home.path(),
        &["results", "search", "--simulation", "thermal"],
    );
    assert_eq!(code, 0);
    let results: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1, "{out}");
    assert_eq!(results[0]["input_params"]["temperature"], 350);
    assert_eq!(results[0]["input_params"]["material"], "copper");
}

#[test]
fn a_sweep_shows_progress_and_bad_runs_fail_naming_the_problem() {
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
    let (code, out, _) = local(
        home.path(),
        &["run", "-f", &dir.path().display().to_string()],
    );
    assert_eq!(code, 1, "a failed run fails the command: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("[1/5] ok: Succeeded"), "{out}");
    assert!(
        lines[1].starts_with(
            "[2/5] too-hot: FAILED: invalid inputs: temperature: 5000 is above the maximum 2000"
        ),
        "{out}"
    );
    assert!(
        lines[2].contains("orphan: FAILED: Simulation \"nowhere\" is not in the files given"),
        "{out}"
    );
    assert!(lines[3].starts_with("[4/5] same-as-ok: Cached"), "{out}");
    assert!(
        lines[4].starts_with("[5/5] old-version: FAILED: Simulation \"thermal\" is at version \"1.0.0\"; this run asks for \"0.9\""),
        "{out}"
    );

    // Not our kind, or not YAML: a clear error, nothing run.
    std::fs::write(
        dir.path().join("3-other.yaml"),
        "apiVersion: v1\nkind: ConfigMap\n",
    )
    .unwrap();
    let (code, _, err) = local(
        home.path(),
        &["run", "-f", &dir.path().display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("kind ConfigMap is not one of ours"), "{err}");
}

//! The run contract with real programs and real processes: `exec` running the
//! documented examples, and a sidecar killed with SIGKILL mid-write.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use simcache_rundb::RunDb;
use simcache_testkit::process::ServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_simcache-sidecar");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/run-api")
}

async fn exec(dir: &Path, id: &str, inputs: Value, extra: &[&str], command: &[&str]) -> Output {
    let schema = examples().join("schema.json");
    let mut args: Vec<String> = vec![
        "--db-path".into(),
        dir.join("cache.db").display().to_string(),
        "exec".into(),
        "--execution-id".into(),
        id.into(),
        "--run-db-base-path".into(),
        dir.join("runs").display().to_string(),
        "--simulation-name".into(),
        "thermal".into(),
        "--simulation-version".into(),
        "1.0.0".into(),
        "--schema".into(),
        schema.display().to_string(),
        "--inputs".into(),
        inputs.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(command.iter().map(|s| s.to_string()));
    tokio::process::Command::new(BIN)
        .args(&args)
        .env("SIMCACHE_CACHE_DB_URL", "postgresql://secret@nowhere/db")
        .output()
        .await
        .expect("exec runs")
}

fn open(dir: &Path, id: &str) -> RunDb {
    RunDb::open_read_only(&dir.join("runs").join(format!("{id}.db"))).unwrap()
}

#[tokio::test]
async fn the_python_example_reports_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec(
        dir.path(),
        "py-1",
        json!({"temperature": 393.15, "material": "copper"}),
        &[],
        &["python3", examples().join("thermal.py").to_str().unwrap()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], json!("completed"));
    assert_eq!(summary["executor_type"], json!("local"));
    let db = open(dir.path(), "py-1");
    let o = db.get_outputs().unwrap();
    // 110 GPa * 17e-6 /K * 100 K
    assert!(
        (o["max_stress"].value.as_f64().unwrap() - 1.87e8).abs() < 1.0,
        "{:?}",
        o["max_stress"]
    );
    assert_eq!(o["max_stress"].units.as_deref(), Some("Pa"));
    assert_eq!(db.get_metrics(None, Some("residual")).unwrap().len(), 10);
    let logs = db.get_logs(None, None).unwrap();
    assert!(
        logs.iter().any(|l| l.message.contains("material copper")),
        "HTTP log line"
    );
    assert!(
        logs.iter()
            .any(|l| l.logger.as_deref() == Some("stdout") && l.message.contains("max_stress")),
        "captured stdout"
    );
    let inputs = db.get_inputs().unwrap();
    assert_eq!(inputs["length"].value, json!(1.0), "defaults applied");
    assert_eq!(inputs.len(), 4);
    let p = db.get_provenance().unwrap().unwrap();
    assert_eq!(p.command[0], "python3");
}

#[tokio::test]
async fn the_shell_example_uses_the_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec(
        dir.path(),
        "sh-1",
        json!({"temperature": 313.15, "length": 2}),
        &[],
        &["sh", examples().join("thermal.sh").to_str().unwrap()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = open(dir.path(), "sh-1");
    let o = db.get_outputs().unwrap();
    // 200 GPa * 12e-6 /K * 20 K; 12e-6 * 20 * 2 m
    assert!((o["max_stress"].value.as_f64().unwrap() - 4.8e7).abs() < 1e3);
    assert!((o["elongation"].value.as_f64().unwrap() - 4.8e-4).abs() < 1e-9);
    let logs: Vec<String> = db
        .get_logs(None, None)
        .unwrap()
        .into_iter()
        .rev()
        .map(|l| l.message)
        .collect();
    assert_eq!(logs, ["heating a steel bar of 2 m to 313.15 K", "done"]);
}

#[tokio::test]
async fn failures_are_recorded_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A program that fails: exit status passed through, stderr kept as logs,
    // and it never sees the sidecar's database URL.
    let script = "echo \"db=${SIMCACHE_CACHE_DB_URL:-unset}\"; echo 'solver diverged' >&2; exit 3";
    let out = exec(
        dir.path(),
        "f-1",
        json!({"temperature": 300}),
        &[],
        &["sh", "-c", script],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let db = open(dir.path(), "f-1");
    let s = db.get_summary().unwrap().unwrap();
    assert_eq!(s.status, "failed");
    assert_eq!(
        s.error_message.as_deref(),
        Some("the program exited with status 3")
    );
    let logs = db.get_logs(None, None).unwrap();
    assert!(
        logs.iter()
            .any(|l| l.level == "WARNING" && l.message == "solver diverged")
    );
    assert!(
        logs.iter().any(|l| l.message == "db=unset"),
        "secret leaked to the program: {logs:?}"
    );

    // Exit 0 without the declared outputs is not a success.
    let out = exec(
        dir.path(),
        "f-2",
        json!({"temperature": 300}),
        &[],
        &[
            "sh",
            "-c",
            "echo '{\"max_stress\": 1}' > \"$SIMCACHE_OUTPUTS\"",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let s = open(dir.path(), "f-2").get_summary().unwrap().unwrap();
    assert_eq!(
        s.error_message.as_deref(),
        Some("declared outputs were not produced: elongation")
    );

    // Outputs that break the schema fail the run and name the value.
    let out = exec(
        dir.path(),
        "f-3",
        json!({"temperature": 300}),
        &[],
        &[
            "sh",
            "-c",
            "echo '{\"max_stress\": -1, \"elongation\": 0}' > \"$SIMCACHE_OUTPUTS\"",
        ],
    )
    .await;
    assert!(!out.status.success());
    let s = open(dir.path(), "f-3").get_summary().unwrap().unwrap();
    assert!(
        s.error_message
            .unwrap()
            .contains("max_stress: -1 is below the minimum 0")
    );

    // A program past its timeout is killed.
    let out = exec(
        dir.path(),
        "f-4",
        json!({"temperature": 300}),
        &["--timeout-secs", "1"],
        &["sleep", "30"],
    )
    .await;
    assert!(!out.status.success());
    let s = open(dir.path(), "f-4").get_summary().unwrap().unwrap();
    assert!(s.error_message.unwrap().contains("timed out after 1s"));

    // Bad inputs never start the program and create no run.
    let out = exec(
        dir.path(),
        "f-5",
        json!({"temperature": "hot"}),
        &[],
        &["sh", "-c", "touch ran"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("temperature: expected number, got string")
    );
    assert!(!dir.path().join("ran").exists());
}

/// Log batches are acknowledged by the sidecar while it is killed with
/// SIGKILL; reopening the file must find a sound database holding every
/// acknowledged batch, and only whole batches.
#[tokio::test]
async fn a_killed_sidecar_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let args = [
        "--db-path",
        &format!("{d}/cache.db"),
        "serve",
        "--port",
        "0",
        "--execution-id",
        "killed",
        "--run-db-base-path",
        &format!("{d}/runs"),
        "--simulation-name",
        "thermal",
        "--simulation-version",
        "1",
    ];
    let srv = ServerProcess::spawn(Path::new(BIN), &args, &[("SIMCACHE_RUN_TOKEN", "t0k")]).await;
    let acked = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let lines: Vec<Value> = (0..100)
        .map(|i| json!({"message": format!("line {i}")}))
        .collect();
    let body = json!({"lines": lines});
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, body, acked) =
                (http.clone(), srv.url.clone(), body.clone(), acked.clone());
            tokio::spawn(async move {
                loop {
                    let r = http
                        .post(format!("{url}/run/logs"))
                        .bearer_auth("t0k")
                        .json(&body)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => acked.fetch_add(100, Ordering::SeqCst),
                        _ => return,
                    };
                }
            })
        })
        .collect();
    // Killed once at least 1000 lines are acknowledged, however long a
    // loaded machine takes to get there.
    let deadline = std::time::Instant::now() + simcache_testkit::wait::PATIENCE;
    while acked.load(Ordering::SeqCst) < 1000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_kill = acked.load(Ordering::SeqCst);
    srv.kill().await;
    for w in writers {
        let _ = w.await;
    }
    let acknowledged = acked.load(Ordering::SeqCst);
    assert!(
        before_kill >= 1000,
        "the sidecar acknowledged only {before_kill} lines before the kill"
    );

    let path = dir.path().join("runs/killed.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let db = RunDb::open(&path, "killed").unwrap();
    let n = db.get_summary().unwrap().unwrap().log_count as u64;
    assert!(
        n >= acknowledged,
        "{n} lines stored, {acknowledged} acknowledged"
    );
    assert_eq!(n % 100, 0, "a batch was torn: {n}");
    eprintln!("kill test: {acknowledged} lines acknowledged, {n} stored");
}

//! The run database library against real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure
#![allow(unsafe_code)] // one test sets the environment variable it reads

use std::path::Path;

use serde_json::{Value, json};
use simcache_rundb::*;

fn spec(j: Value) -> ParamSpec {
    serde_json::from_value(j).unwrap()
}

fn running(dir: &Path, id: &str) -> RunDb {
    let mut db = RunDb::open_in(dir, id).unwrap();
    db.initialize_run(&RunInit::new("thermal", "1.0.0"))
        .unwrap();
    db
}

#[test]
fn a_run_is_recorded_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = RunDb::open_in(dir.path(), "run-1").unwrap();
    assert_eq!(db.path(), dir.path().join("run-1.db"));
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(db.get_summary().unwrap().is_none());
    let mut init = RunInit::new("thermal", "1.0.0");
    init.cache_key = Some("thermal/1.0.0/abc".into());
    init.executor_type = Some("kubernetes".into());
    db.initialize_run(&init).unwrap();
    assert!(matches!(
        db.initialize_run(&init),
        Err(RunDbError::AlreadyInitialized)
    ));

    let t = spec(
        json!({"type": "number", "units": "K", "min": 0, "max": 2000, "description": "bar temperature", "default": 293.15}),
    );
    let m = spec(json!({"type": "string", "choices": ["steel", "copper"]}));
    db.save_inputs(&[
        ("temperature", &json!(350), &t),
        ("material", &json!("steel"), &m),
    ])
    .unwrap();
    let out = spec(json!({"type": "number", "units": "Pa"}));
    db.save_output("max_stress", &json!(1.5e8), &out, None)
        .unwrap();
    db.save_output("max_stress", &json!(1.6e8), &out, None)
        .unwrap(); // last write wins
    db.save_output(
        "report",
        &json!("/out/report.txt"),
        &ParamSpec::of_type(ValueType::File),
        Some("/out/report.txt"),
    )
    .unwrap();
    db.save_output(
        "points",
        &json!([1, 2, 3]),
        &ParamSpec::of_type(ValueType::Array),
        None,
    )
    .unwrap();

    let mut lines: Vec<LogLine> = (0..10)
        .map(|i| LogLine::new(LogLevel::Info, format!("step {i}")))
        .collect();
    lines.push(LogLine::new(LogLevel::Warning, "mesh coarse"));
    lines.push(LogLine::new(LogLevel::Error, "diverged once"));
    db.log_batch(&lines).unwrap();
    let mut mt = Metric::new("residual", 0.5);
    mt.step = Some(1);
    mt.category = MetricCategory::Performance;
    db.record_metrics(&[mt.clone(), Metric::new("memory_mb", 120.0)])
        .unwrap();
    db.add_artifact_bytes(
        "plot.png",
        b"\x89PNG...",
        Some("image/png"),
        ArtifactCategory::Plot,
    )
    .unwrap();
    db.add_tag("sweep-a").unwrap();
    db.add_tag("sweep-a").unwrap();
    db.record_provenance(&Provenance {
        host: Some("node-1".into()),
        image: Some("ghcr.io/x/thermal:1".into()),
        image_digest: Some("sha256:abcd".into()),
        command: vec!["python3".into(), "thermal.py".into()],
        environment: [("OMP_NUM_THREADS".to_string(), "4".to_string())].into(),
        parent_execution_ids: vec!["run-0".into()],
        input_hash: Some("deadbeef".into()),
    })
    .unwrap();
    db.complete_run(RunStatus::Completed, None, None, None)
        .unwrap();

    // Read back through a fresh read-only handle, as introspection does.
    drop(db);
    let db = RunDb::open_read_only(&dir.path().join("run-1.db")).unwrap();
    assert_eq!(db.execution_id(), "run-1");
    let s = db.get_summary().unwrap().unwrap();
    assert_eq!(s.status, "completed");
    assert_eq!(s.executor_type, "kubernetes");
    assert_eq!(s.cache_key.as_deref(), Some("thermal/1.0.0/abc"));
    assert!(s.duration_seconds.unwrap() >= 0.0 && s.completed_at.is_some());
    // Exact counts: sim2l's view multiplied these by the other tables' rows.
    assert_eq!((s.input_count, s.output_count, s.artifact_count), (2, 3, 1));
    assert_eq!(
        (s.log_count, s.error_count, s.warning_count, s.metric_count),
        (12, 1, 1, 2)
    );
    assert_eq!(s.artifact_bytes, 7);

    let inputs = db.get_inputs().unwrap();
    let temp = &inputs["temperature"];
    assert_eq!(temp.value, json!(350));
    assert_eq!(temp.value_type, "number");
    assert_eq!(temp.units.as_deref(), Some("K"));
    assert_eq!((temp.min, temp.max), (Some(0.0), Some(2000.0)));
    assert_eq!(temp.default, Some(json!(293.15)));
    assert_eq!(temp.description.as_deref(), Some("bar temperature"));
    let outputs = db.get_outputs().unwrap();
    assert_eq!(outputs["max_stress"].value, json!(1.6e8));
    assert_eq!(
        outputs["report"].file_reference.as_deref(),
        Some("/out/report.txt")
    );
    assert_eq!(outputs["points"].value, json!([1, 2, 3]));

    let logs = db.get_logs(None, Some(3)).unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[0].message, "diverged once", "newest first");
    assert_eq!(db.get_logs(Some(LogLevel::Warning), None).unwrap().len(), 1);
    assert_eq!(db.get_errors().unwrap()[0].level, "ERROR");
    let perf = db
        .get_metrics(Some(MetricCategory::Performance), None)
        .unwrap();
    assert_eq!(perf.len(), 1);
    assert_eq!(
        (perf[0].name.as_str(), perf[0].value, perf[0].step),
        ("residual", 0.5, Some(1))
    );
    assert_eq!(db.get_metrics(None, Some("memory_mb")).unwrap().len(), 1);
    let arts = db.get_artifacts().unwrap();
    assert_eq!(arts[0].sha256.as_deref().map(str::len), Some(64));
    assert_eq!(arts[0].content_type.as_deref(), Some("image/png"));
    let p = db.get_provenance().unwrap().unwrap();
    assert_eq!(p.parent_execution_ids, ["run-0"]);
    assert_eq!(p.command, ["python3", "thermal.py"]);
    assert_eq!(p.environment["OMP_NUM_THREADS"], "4");
    assert_eq!(db.get_tags().unwrap(), ["sweep-a"]);
}

#[test]
fn bad_values_store_nothing_and_completed_runs_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = running(dir.path(), "r");
    let t = spec(json!({"type": "number", "min": 0}));
    db.save_input("a", &json!(1), &t).unwrap();
    // One bad value in a batch: none of the batch is stored.
    let e = db
        .save_inputs(&[("a", &json!(5), &t), ("b", &json!(-1), &t)])
        .unwrap_err();
    assert!(
        e.to_string().contains("b: -1 is below the minimum 0"),
        "{e}"
    );
    assert!(e.is_client_error());
    let e = db.save_input("c", &json!("hot"), &t).unwrap_err();
    assert!(
        e.to_string().contains("c: expected number, got string"),
        "{e}"
    );
    assert_eq!(db.get_inputs().unwrap().len(), 1);
    assert_eq!(db.get_inputs().unwrap()["a"].value, json!(1));

    let bad_metric = Metric::new("x", f64::NAN);
    assert!(
        db.record_metrics(&[Metric::new("ok", 1.0), bad_metric])
            .is_err()
    );
    assert!(db.get_metrics(None, None).unwrap().is_empty());
    let mut late = LogLine::new(LogLevel::Info, "x");
    late.timestamp = Some(-5.0);
    assert!(
        db.log_batch(&[LogLine::new(LogLevel::Info, "fine"), late])
            .is_err()
    );
    assert!(db.get_logs(None, None).unwrap().is_empty());

    assert!(
        db.complete_run(RunStatus::Running, None, None, None)
            .is_err()
    );
    assert!(
        db.complete_run(RunStatus::Failed, Some(-1.0), None, None)
            .is_err()
    );
    db.complete_run(
        RunStatus::Failed,
        Some(2.5),
        Some("solver diverged"),
        Some("trace"),
    )
    .unwrap();
    let before = db.get_summary().unwrap().unwrap();
    assert_eq!(before.error_message.as_deref(), Some("solver diverged"));
    assert_eq!(before.duration_seconds, Some(2.5));
    for r in [
        db.save_input("a", &json!(9), &t).map(|_| ()),
        db.log(&LogLine::new(LogLevel::Info, "late")),
        db.record_metric(&Metric::new("late", 1.0)),
        db.add_artifact_bytes("late", b"x", None, ArtifactCategory::Data)
            .map(|_| ()),
        db.complete_run(RunStatus::Completed, None, None, None),
    ] {
        assert!(
            matches!(r, Err(RunDbError::Completed(ref s)) if s == "failed"),
            "{r:?}"
        );
    }
    assert_eq!(db.get_summary().unwrap().unwrap(), before);
    assert_eq!(db.get_inputs().unwrap()["a"].value, json!(1));
    // The state survives reopening: still no writes.
    drop(db);
    let mut db = RunDb::open_in(dir.path(), "r").unwrap();
    assert!(db.log(&LogLine::new(LogLevel::Info, "late")).is_err());
}

#[test]
fn unsafe_execution_ids_never_touch_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../escape", "a/b", "", "..", ".x"] {
        assert!(matches!(
            RunDb::open_in(dir.path(), bad),
            Err(RunDbError::InvalidExecutionId(_))
        ));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(!dir.path().parent().unwrap().join("escape.db").exists());
}

#[test]
fn the_base_path_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // Only this test in this binary sets the variable.
    unsafe { std::env::set_var(location::BASE_PATH_ENV, dir.path().join("runs")) };
    let db = RunDb::open_default("from-env").unwrap();
    unsafe { std::env::remove_var(location::BASE_PATH_ENV) };
    assert_eq!(db.path(), dir.path().join("runs").join("from-env.db"));
    assert!(db.path().exists());
}

#[test]
fn artifacts_stream_in_and_out_with_size_and_hash() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let mut db = running(dir.path(), "art");
    // 5 MB file, not a multiple of the chunk size.
    let src = dir.path().join("field.bin");
    let data: Vec<u8> = (0..5_000_003u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let info = db
        .add_artifact_file(
            "field.bin",
            &src,
            Some("application/octet-stream"),
            ArtifactCategory::Data,
        )
        .unwrap();
    assert_eq!(info.size_bytes, data.len() as i64);
    assert_eq!(
        info.sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&data)).as_str())
    );
    assert_eq!(
        info.path.as_deref(),
        Some(src.display().to_string().as_str())
    );
    let dest = dir.path().join("exported.bin");
    assert_eq!(
        db.export_artifact("field.bin", &dest).unwrap(),
        data.len() as u64
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // A reader that ends early or runs long stores nothing.
    let short =
        db.add_artifact_reader("short", &b"abc"[..], 10, None, ArtifactCategory::Data, None);
    assert!(
        short
            .unwrap_err()
            .to_string()
            .contains("got 3 bytes, announced 10")
    );
    let long = db.add_artifact_reader(
        "long",
        &b"abcdef"[..],
        2,
        None,
        ArtifactCategory::Data,
        None,
    );
    assert!(long.is_err());
    assert_eq!(db.get_artifacts().unwrap().len(), 1);
    // Same name replaces; external files are referenced, not copied.
    db.add_artifact_bytes("field.bin", b"small", None, ArtifactCategory::Data)
        .unwrap();
    let ext = db
        .add_external_artifact(
            "big-external",
            src.to_str().unwrap(),
            None,
            ArtifactCategory::Output,
        )
        .unwrap();
    assert_eq!(ext.size_bytes, data.len() as i64);
    let arts = db.get_artifacts().unwrap();
    assert_eq!(arts.len(), 2);
    let mut buf = Vec::new();
    db.read_artifact("field.bin", &mut buf).unwrap();
    assert_eq!(buf, b"small");
    assert!(matches!(
        db.export_artifact("nope", &dest),
        Err(RunDbError::NotFound(_))
    ));
    assert!(
        db.add_artifact_bytes("", b"x", None, ArtifactCategory::Data)
            .is_err()
    );
}

#[test]
fn a_dropped_guard_marks_the_run_failed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut g = RunGuard::new(running(dir.path(), "g1"));
        g.log(&LogLine::new(LogLevel::Info, "working")).unwrap();
        // dropped here without completing
    }
    let db = RunDb::open_in(dir.path(), "g1").unwrap();
    let s = db.get_summary().unwrap().unwrap();
    assert_eq!(s.status, "failed");
    assert!(s.error_message.unwrap().contains("abandoned"));

    let g = RunGuard::new(running(dir.path(), "g2"));
    let db = g.complete(RunStatus::Completed, Some(1.0), None).unwrap();
    assert_eq!(db.status(), Some(RunStatus::Completed));

    let r = std::panic::catch_unwind(|| {
        let _g = RunGuard::new(running(dir.path(), "g3"));
        panic!("simulated crash");
    });
    assert!(r.is_err());
    let s = RunDb::open_in(dir.path(), "g3")
        .unwrap()
        .get_summary()
        .unwrap()
        .unwrap();
    assert_eq!(s.status, "failed");
    assert!(s.error_message.unwrap().contains("panic"));
}

#[test]
fn a_snapshot_is_consistent_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = running(dir.path(), "snap");
    db.log_batch(&vec![LogLine::new(LogLevel::Info, "before"); 1000])
        .unwrap();
    // A second connection keeps writing while the snapshot is taken.
    let path = db.path().to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut w = RunDb::open(&path, "snap").unwrap();
        for _ in 0..50 {
            w.log_batch(&vec![LogLine::new(LogLevel::Info, "during"); 100])
                .unwrap();
        }
    });
    let snap = dir.path().join("copy.db");
    db.snapshot_to(&snap).unwrap();
    writer.join().unwrap();
    assert!(
        !dir.path().join("copy.db-wal").exists()
            || std::fs::metadata(dir.path().join("copy.db-wal"))
                .unwrap()
                .len()
                == 0
    );
    let copy = RunDb::open_read_only(&snap).unwrap();
    let n = copy.get_summary().unwrap().unwrap().log_count;
    // Whole batches only: a consistent state has 1000 + 100k lines.
    assert!(n >= 1000 && (n - 1000) % 100 == 0, "{n}");
    assert_eq!(copy.execution_id(), "snap");
}

/// sim2l's original `run_summary`: cross joins, so counts multiply.
const SIM2L_SUMMARY_VIEW: &str = "CREATE VIEW IF NOT EXISTS run_summary AS
SELECT r.execution_id, r.squid_id, r.simulation_name, r.simulation_version, r.simulation_id,
 r.started_at, r.completed_at, r.duration_seconds, r.status, r.executor_type, r.cache_key,
 r.cache_hit, r.user_id, r.session_id, r.error_message, r.error_traceback,
 COUNT(DISTINCT i.name) AS input_count, COUNT(DISTINCT o.name) AS output_count,
 COUNT(DISTINCT a.id) AS artifact_count, COUNT(DISTINCT l.id) AS log_count,
 SUM(CASE WHEN l.level IN ('ERROR','CRITICAL') THEN 1 ELSE 0 END) AS error_count,
 SUM(CASE WHEN l.level = 'WARNING' THEN 1 ELSE 0 END) AS warning_count
FROM run_metadata r LEFT JOIN inputs i ON 1=1 LEFT JOIN outputs o ON 1=1
LEFT JOIN artifacts a ON 1=1 LEFT JOIN logs l ON 1=1 GROUP BY r.execution_id";

#[test]
fn a_database_written_by_sim2l_migrates_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("../migrations/0001_sim2l_schema.sql"))
            .unwrap();
        c.execute_batch(SIM2L_SUMMARY_VIEW).unwrap();
        c.execute_batch(
            "INSERT INTO run_metadata (execution_id, simulation_name, simulation_version, started_at, status, executor_type)
               VALUES ('old', 'thermal', '0.9', '2026-11-21 13:14:16.686905', 'completed', 'local');
             INSERT INTO inputs (name, type, value) VALUES ('a', 'float', '1.5'), ('b', 'int', '2');
             INSERT INTO outputs (name, type, value) VALUES ('x', 'float', '3'), ('y', 'float', '4'), ('z', 'float', '5');
             INSERT INTO logs (level, message) VALUES ('ERROR', 'boom');",
        )
        .unwrap();
        let buggy: i64 = c
            .query_row("SELECT error_count FROM run_summary", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            buggy, 6,
            "sim2l's view multiplies: 2 inputs x 3 outputs x 1 error"
        );
        assert_eq!(
            c.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                .unwrap(),
            0
        );
    }
    let db = RunDb::open(&path, "old").unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    let s = db.get_summary().unwrap().unwrap();
    assert_eq!((s.input_count, s.output_count, s.error_count), (2, 3, 1));
    assert_eq!(db.get_inputs().unwrap()["a"].value, json!(1.5));
    assert_eq!(
        db.get_inputs().unwrap()["b"].known_type(),
        Some(ValueType::Integer)
    );
    assert_eq!(db.status(), Some(RunStatus::Completed));
    // Opening again is a no-op.
    drop(db);
    RunDb::open(&path, "old").unwrap();
}

#[test]
fn a_database_from_a_newer_build_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let e = RunDb::open(&path, "new").err().unwrap();
    assert!(matches!(e, RunDbError::SchemaTooNew { .. }), "{e}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = c
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0);
    assert!(RunDb::open_read_only(&dir.path().join("missing.db")).is_err());
}

#[test]
fn batches_of_any_size_are_stored_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = running(dir.path(), "sizes");
    let mut expected = 0;
    // Around the 64-rows-per-statement boundary, and one spanning several statements.
    for n in [1usize, 63, 64, 65, 128, 200] {
        let lines: Vec<LogLine> = (0..n)
            .map(|i| LogLine::new(LogLevel::Info, format!("{n}:{i}")))
            .collect();
        db.log_batch(&lines).unwrap();
        let metrics: Vec<Metric> = (0..n)
            .map(|i| Metric::new(format!("m{n}"), i as f64))
            .collect();
        db.record_metrics(&metrics).unwrap();
        expected += n;
    }
    let logs = db.get_logs(None, None).unwrap();
    assert_eq!(logs.len(), expected);
    let ours: Vec<String> = logs
        .iter()
        .rev()
        .filter(|l| l.message.starts_with("200:"))
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(
        ours,
        (0..200).map(|i| format!("200:{i}")).collect::<Vec<_>>()
    );
    let m = db.get_metrics(None, Some("m65")).unwrap();
    assert_eq!(
        m.iter().map(|p| p.value).collect::<Vec<_>>(),
        (0..65).map(f64::from).collect::<Vec<_>>()
    );
    assert_eq!(
        db.get_summary().unwrap().unwrap().metric_count as usize,
        expected
    );
}

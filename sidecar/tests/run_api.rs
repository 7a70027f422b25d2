//! The run API over real HTTP into a real run database file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

mod common;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_rundb::{Provenance, RunDb, RunInit, RunSchema};
use simcache_sidecar::run::RunConfig;

const TOKEN: &str = "run-token-for-tests";

fn thermal_schema() -> RunSchema {
    serde_json::from_value(json!({
        "inputs": {
            "temperature": {"type": "number", "units": "K", "min": 0, "max": 2000},
            "material": {"type": "string", "default": "steel", "choices": ["steel", "copper"]}
        },
        "outputs": {
            "max_stress": {"type": "number", "units": "Pa", "min": 0},
            "elongation": {"type": "number", "units": "m"}
        }
    }))
    .unwrap()
}

pub fn run_config(dir: &Path, id: &str, token: Option<&str>) -> RunConfig {
    RunConfig {
        execution_id: id.to_string(),
        db_path: dir.join("runs").join(format!("{id}.db")),
        init: RunInit::new("thermal", "1.0.0"),
        schema: thermal_schema(),
        inputs: Some(json!({"temperature": 350}).as_object().unwrap().clone()),
        inputs_file: Some(dir.join("work").join("inputs.json")),
        outputs_file: Some(dir.join("work").join("outputs.json")),
        token: token.map(String::from),
        provenance: Provenance {
            image: Some("ghcr.io/example/thermal:1".into()),
            command: vec!["python3".into(), "thermal.py".into()],
            ..Default::default()
        },
        max_artifact_bytes: 1 << 20,
    }
}

struct RunCtx {
    ctx: common::Ctx,
    dir: tempfile::TempDir,
}

impl RunCtx {
    async fn start() -> RunCtx {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut RunConfig)) -> RunCtx {
        let dir = tempfile::tempdir().unwrap();
        let mut rc = run_config(dir.path(), "exec-1", Some(TOKEN));
        tweak(&mut rc);
        let ctx = common::sqlite_with(|cfg| cfg.run = Some(rc)).await;
        RunCtx { ctx, dir }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("runs").join("exec-1.db")
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.ctx
                .http
                .post(format!("{}{path}", self.ctx.url))
                .bearer_auth(TOKEN)
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(
            self.ctx
                .http
                .get(format!("{}{path}", self.ctx.url))
                .bearer_auth(TOKEN),
        )
        .await
    }

    async fn get_bytes(&self, path: &str) -> (StatusCode, Vec<u8>, String) {
        let r = self
            .ctx
            .http
            .get(format!("{}{path}", self.ctx.url))
            .header("X-Run-Token", TOKEN)
            .send()
            .await
            .unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status(), r.bytes().await.unwrap().to_vec(), ct)
    }

    /// Everything the run has stored, to compare before and after a refused request.
    async fn everything(&self) -> Value {
        let mut all = serde_json::Map::new();
        for p in [
            "/run/summary",
            "/run/inputs",
            "/run/outputs",
            "/run/logs",
            "/run/metrics",
            "/run/artifacts",
        ] {
            let (s, b) = self.get(p).await;
            assert_eq!(s, StatusCode::OK, "{p}: {b}");
            all.insert(p.into(), b);
        }
        Value::Object(all)
    }
}

#[tokio::test]
async fn a_simulation_fills_its_run_database_over_http() {
    let rc = RunCtx::start().await;
    // Inputs recorded at start with defaults applied, and handed over as a file.
    let (s, inputs) = rc.get("/run/inputs").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(inputs["temperature"]["value"], json!(350));
    assert_eq!(inputs["temperature"]["units"], json!("K"));
    assert_eq!(inputs["material"]["value"], json!("steel"));
    let file: Value =
        serde_json::from_slice(&std::fs::read(rc.dir.path().join("work/inputs.json")).unwrap())
            .unwrap();
    assert_eq!(file, json!({"temperature": 350, "material": "steel"}));

    let (s, b) = rc
        .post("/run/logs", json!({"level": "INFO", "message": "meshing"}))
        .await;
    assert_eq!((s, &b), (StatusCode::CREATED, &json!({"stored": 1})));
    let lines: Vec<Value> = (0..100)
        .map(|i| json!({"message": format!("step {i}"), "level": "debug"}))
        .collect();
    let (s, b) = rc.post("/run/logs", json!({"lines": lines})).await;
    assert_eq!((s, b["stored"].clone()), (StatusCode::CREATED, json!(100)));
    let (s, _) = rc
        .post(
            "/run/logs",
            json!([{"message": "careful", "level": "warn", "context": {"cell": 3}}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let points: Vec<Value> = (0..50).map(|i| json!({"name": "residual", "value": 1.0 / (i as f64 + 1.0), "step": i, "category": "performance"})).collect();
    let (s, b) = rc.post("/run/metrics", json!(points)).await;
    assert_eq!((s, b["stored"].clone()), (StatusCode::CREATED, json!(50)));

    // Outputs: bare values (types from the schema) and typed entries.
    let (s, _) = rc.post("/run/outputs", json!({"max_stress": 1.2e8})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = rc
        .post(
            "/run/outputs",
            json!([{"name": "elongation", "value": 0.0012, "type": "number"}]),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // A streamed artifact (chunked body, no Content-Length) comes back byte for byte.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(7000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (s, info) = rc
        .send(
            rc.ctx
                .http
                .post(format!(
                    "{}/run/artifacts?name=field.csv&category=data",
                    rc.ctx.url
                ))
                .bearer_auth(TOKEN)
                .header("content-type", "text/csv")
                .body(body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{info}");
    assert_eq!(info["size_bytes"], json!(300_000));
    assert_eq!(info["category"], json!("data"));
    let (s, bytes, ct) = rc.get_bytes("/run/artifacts/field.csv").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "text/csv"));
    assert_eq!(bytes, data);
    let (s, list) = rc.get("/run/artifacts").await;
    assert_eq!((s, list["count"].clone()), (StatusCode::OK, json!(1)));

    let (s, logs) = rc.get("/run/logs?level=WARNING").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(logs["count"], json!(1));
    assert_eq!(logs["logs"][0]["context"], json!({"cell": 3}));
    let (_, m) = rc
        .get("/run/metrics?category=performance&name=residual")
        .await;
    assert_eq!(m["count"], json!(50));
    let (_, p) = rc.get("/run/provenance").await;
    assert_eq!(p["image"], json!("ghcr.io/example/thermal:1"));

    // A snapshot of the live database is a complete, openable SQLite file.
    let (s, snap, ct) = rc.get_bytes("/run/db").await;
    assert_eq!(
        (s, ct.as_str()),
        (StatusCode::OK, "application/vnd.sqlite3")
    );
    let snap_path = rc.dir.path().join("snap.db");
    std::fs::write(&snap_path, &snap).unwrap();
    let copy = RunDb::open_read_only(&snap_path).unwrap();
    let cs = copy.get_summary().unwrap().unwrap();
    assert_eq!(
        (
            cs.log_count,
            cs.metric_count,
            cs.output_count,
            cs.status.as_str()
        ),
        (102, 50, 2, "running")
    );
    let mut buf = Vec::new();
    copy.read_artifact("field.csv", &mut buf).unwrap();
    assert_eq!(buf, data);

    let (s, summary) = rc
        .post("/run/complete", json!({"status": "completed"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    assert_eq!(summary["status"], json!("completed"));
    assert_eq!(summary["input_count"], json!(2));
    assert_eq!(summary["warning_count"], json!(1));
    // The file on disk says the same.
    let db = RunDb::open_read_only(&rc.db_path()).unwrap();
    assert_eq!(
        db.get_outputs().unwrap()["max_stress"].units.as_deref(),
        Some("Pa")
    );
    assert_eq!(db.get_summary().unwrap().unwrap().status, "completed");
}

#[tokio::test]
async fn every_bad_request_is_refused_with_a_json_error_and_changes_nothing() {
    let rc = RunCtx::start_with(|c| c.max_artifact_bytes = 1000).await;
    rc.post("/run/outputs", json!({"elongation": 0.5})).await;
    rc.post("/run/logs", json!({"message": "kept"})).await;
    let before = rc.everything().await;

    let url = |p: &str| format!("{}{p}", rc.ctx.url);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .json(&json!({"max_stress": 1})),
            StatusCode::UNAUTHORIZED,
            "missing run token",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .bearer_auth("wrong")
                .json(&json!({"max_stress": 1})),
            StatusCode::UNAUTHORIZED,
            "invalid run token",
        ),
        (
            rc.ctx.http.get(url("/run/db")).bearer_auth("wrong"),
            StatusCode::UNAUTHORIZED,
            "invalid run token",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .bearer_auth(TOKEN)
                .json(&json!({"max_stress": "huge"})),
            StatusCode::BAD_REQUEST,
            "max_stress: expected number, got string",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .bearer_auth(TOKEN)
                .json(&json!({"max_stress": -5})),
            StatusCode::BAD_REQUEST,
            "max_stress: -5 is below the minimum 0",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .bearer_auth(TOKEN)
                .json(&json!({"max_stress": 1, "colour": "red"})),
            StatusCode::BAD_REQUEST,
            "unknown output \"colour\"",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .bearer_auth(TOKEN)
                .json(&json!([{"name": "max_stress", "value": 1, "type": "tensor"}])),
            StatusCode::BAD_REQUEST,
            "unknown value type \"tensor\"",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/outputs"))
                .bearer_auth(TOKEN)
                .json(&json!([{"name": "elongation", "value": 1, "type": "string"}])),
            StatusCode::BAD_REQUEST,
            "contradicts the declared type number",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/inputs"))
                .bearer_auth(TOKEN)
                .json(&json!({"temperature": 5000})),
            StatusCode::BAD_REQUEST,
            "above the maximum 2000",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/inputs"))
                .bearer_auth(TOKEN)
                .json(&json!({"material": "wood"})),
            StatusCode::BAD_REQUEST,
            "not one of the allowed values",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/logs"))
                .bearer_auth(TOKEN)
                .json(&json!({"level": "LOUD", "message": "x"})),
            StatusCode::BAD_REQUEST,
            "unknown LogLevel \"LOUD\"",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/logs"))
                .bearer_auth(TOKEN)
                .json(&json!([{"message": "ok"}, {"msg": "typo"}])),
            StatusCode::BAD_REQUEST,
            "log line 1: unknown field `msg`",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/logs"))
                .bearer_auth(TOKEN)
                .json(&json!([])),
            StatusCode::BAD_REQUEST,
            "no log lines given",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/metrics"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": "x", "value": "high"})),
            StatusCode::BAD_REQUEST,
            "metric 0",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/metrics"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": "x", "value": 1, "category": "vibes"})),
            StatusCode::BAD_REQUEST,
            "unknown MetricCategory",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/logs"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/logs"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"message\": \"{}\"}}",
                    "x".repeat((1 << 20) + 1024)
                )),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the configured limit",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/artifacts?name=big"))
                .bearer_auth(TOKEN)
                .body(vec![0u8; 5000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit of 1000 bytes",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/artifacts"))
                .bearer_auth(TOKEN)
                .body(vec![0u8; 10]),
            StatusCode::BAD_REQUEST,
            "\"name\" is required",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/artifacts?name=x&category=junk"))
                .bearer_auth(TOKEN)
                .body(vec![0u8; 10]),
            StatusCode::BAD_REQUEST,
            "unknown ArtifactCategory",
        ),
        (
            rc.ctx
                .http
                .get(url("/run/artifacts/nope"))
                .bearer_auth(TOKEN),
            StatusCode::NOT_FOUND,
            "artifact \"nope\" not found",
        ),
        (
            rc.ctx
                .http
                .get(url("/run/logs?level=LOUD"))
                .bearer_auth(TOKEN),
            StatusCode::BAD_REQUEST,
            "unknown LogLevel",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/complete"))
                .bearer_auth(TOKEN)
                .json(&json!({"status": "running"})),
            StatusCode::BAD_REQUEST,
            "status must be",
        ),
        (
            rc.ctx
                .http
                .post(url("/run/complete"))
                .bearer_auth(TOKEN)
                .json(&json!({"status": "exploded"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown RunStatus",
        ),
        // A run missing a declared output cannot be completed as completed.
        (
            rc.ctx
                .http
                .post(url("/run/complete"))
                .bearer_auth(TOKEN)
                .json(&json!({})),
            StatusCode::BAD_REQUEST,
            "declared outputs not yet stored: max_stress",
        ),
    ];
    for (req, status, msg) in cases {
        let (s, b) = rc.send(req).await;
        assert_eq!(s, status, "{msg}: {b}");
        let err = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON error for {msg}: {b}"));
        assert!(err.contains(msg), "expected {msg:?} in {err:?}");
    }
    assert_eq!(
        rc.everything().await,
        before,
        "a refused request changed the run"
    );
    // No spool files are left behind by the refused uploads.
    let leftovers: Vec<_> = std::fs::read_dir(rc.dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // After completion every write is a 409 and the record stays as it was.
    let (s, _) = rc
        .post(
            "/run/complete",
            json!({"status": "failed", "error": "solver diverged"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let done = rc.everything().await;
    assert_eq!(
        done["/run/summary"]["error_message"],
        json!("solver diverged")
    );
    for (path, body) in [
        ("/run/outputs", json!({"max_stress": 1})),
        ("/run/logs", json!({"message": "late"})),
        ("/run/metrics", json!({"name": "late", "value": 1})),
        ("/run/complete", json!({"status": "completed"})),
    ] {
        let (s, b) = rc.post(path, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{path}: {b}");
        assert!(
            b["error"].as_str().unwrap().contains("already failed"),
            "{b}"
        );
    }
    let (s, _) = rc
        .send(
            rc.ctx
                .http
                .post(url("/run/artifacts?name=late"))
                .bearer_auth(TOKEN)
                .body("x"),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(rc.everything().await, done);
}

#[tokio::test]
async fn the_run_api_needs_a_token_unless_auth_is_off() {
    // Auth on and no token: the sidecar refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let (backend, _d) = common::sqlite_backend().await;
    let mut cfg = simcache_sidecar::server::ServerConfig::new(backend);
    cfg.run = Some(run_config(dir.path(), "r", None));
    let e = simcache_sidecar::server::start(cfg, std::future::pending())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("needs a run token"), "{e}");
    // With --no-auth the routes are open.
    let ctx = common::sqlite_with(|cfg| {
        cfg.auth.no_auth = true;
        cfg.run = Some(run_config(dir.path(), "r", None));
    })
    .await;
    let r = ctx
        .http
        .get(format!("{}/run/summary", ctx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Bad run settings are start-up errors that name the problem.
    let (backend, _d) = common::sqlite_backend().await;
    let mut cfg = simcache_sidecar::server::ServerConfig::new(backend);
    let mut bad = run_config(dir.path(), "r2", Some(TOKEN));
    bad.inputs = Some(json!({"temperature": -1}).as_object().unwrap().clone());
    cfg.run = Some(bad);
    let e = simcache_sidecar::server::start(cfg, std::future::pending())
        .await
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("temperature: -1 is below the minimum 0"),
        "{e:#}"
    );
}

#[tokio::test]
async fn a_restarted_sidecar_resumes_its_run() {
    let rc = RunCtx::start().await;
    rc.post("/run/logs", json!({"message": "before restart"}))
        .await;
    let RunCtx { ctx, dir } = rc;
    let rc2 = {
        let cfg_dir = dir.path().to_path_buf();
        let ctx = ctx
            .restart(move |cfg| cfg.run = Some(run_config(&cfg_dir, "exec-1", Some(TOKEN))))
            .await;
        RunCtx { ctx, dir }
    };
    let (s, logs) = rc2.get("/run/logs").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(logs["logs"][0]["message"], json!("before restart"));
    let (_, summary) = rc2.get("/run/summary").await;
    assert_eq!(summary["status"], json!("running"));
    assert_eq!(summary["input_count"], json!(2));
}

#[tokio::test]
async fn the_outputs_file_is_read_at_completion() {
    let rc = RunCtx::start().await;
    std::fs::write(
        rc.dir.path().join("work/outputs.json"),
        r#"{"max_stress": 2.5e8, "elongation": 0.001}"#,
    )
    .unwrap();
    let (s, b) = rc.post("/run/complete", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["output_count"], json!(2));
    let rc = RunCtx::start().await;
    std::fs::write(
        rc.dir.path().join("work/outputs.json"),
        r#"{"max_stress": "lots"}"#,
    )
    .unwrap();
    let (s, b) = rc.post("/run/complete", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("outputs.json: max_stress: expected number"),
        "{b}"
    );
    let (_, summary) = rc.get("/run/summary").await;
    assert_eq!(summary["status"], json!("running"));
}

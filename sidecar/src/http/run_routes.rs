//! The run API the simulation container calls on localhost: inputs, outputs,
//! logs, metrics, artifacts, completion, and reading the record back. Every
//! route needs the per-run token (`Authorization: Bearer <token>` or
//! `X-Run-Token`) unless the sidecar runs with `--no-auth`.

use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use simcache_rundb::{
    ArtifactCategory, Direction, LogLevel, LogLine, Metric, MetricCategory, RunStatus,
};
use simcache_web::{ApiError, JsonBody};

use crate::run::{RunError, RunService};

pub fn routes(run: Arc<RunService>) -> Router {
    Router::new()
        .route("/run/inputs", get(get_inputs).post(post_inputs))
        .route("/run/outputs", get(get_outputs).post(post_outputs))
        .route("/run/logs", get(get_logs).post(post_logs))
        .route("/run/metrics", get(get_metrics).post(post_metrics))
        .route("/run/artifacts", get(list_artifacts).post(post_artifact))
        .route("/run/artifacts/{name}", get(get_artifact))
        .route("/run/complete", post(complete))
        .route("/run/summary", get(summary))
        .route("/run/provenance", get(provenance))
        .route("/run/db", get(snapshot))
        .with_state(run)
}

type Run = State<Arc<RunService>>;

fn check_token(run: &RunService, headers: &HeaderMap) -> Result<(), ApiError> {
    if !run.requires_token() {
        return Ok(());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let presented = bearer.or_else(|| headers.get("x-run-token").and_then(|v| v.to_str().ok()));
    match presented {
        None => Err(ApiError::unauthorized(
            "missing run token: send Authorization: Bearer <SIMCACHE_RUN_TOKEN>",
        )),
        Some(t) if run.token_matches(Some(t)) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid run token")),
    }
}

fn stored(n: usize) -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({ "stored": n })))
}

async fn post_inputs(
    State(run): Run,
    h: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    check_token(&run, &h)?;
    Ok(stored(run.save_values(Direction::Input, body).await?))
}

async fn post_outputs(
    State(run): Run,
    h: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    check_token(&run, &h)?;
    Ok(stored(run.save_values(Direction::Output, body).await?))
}

async fn get_inputs(State(run): Run, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    let v = run.with_db(|db| Ok(db.get_inputs()?)).await?;
    Ok(Json(json!(v)))
}

async fn get_outputs(State(run): Run, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    let v = run.with_db(|db| Ok(db.get_outputs()?)).await?;
    Ok(Json(json!(v)))
}

/// A single record, an array, or `{"<key>": [...]}`; each element parsed on
/// its own so the error says which one is wrong.
fn records<T: serde::de::DeserializeOwned>(
    body: Value,
    key: &str,
    what: &str,
) -> Result<Vec<T>, ApiError> {
    let items = match body {
        Value::Array(a) => a,
        Value::Object(mut m) if m.contains_key(key) => match m.remove(key) {
            Some(Value::Array(a)) if m.is_empty() => a,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{key:?} must be the only field and an array"
                )));
            }
        },
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(ApiError::bad_request(format!(
                "expected a {what} object or an array of them"
            )));
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(format!("no {what}s given")));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("{what} {i}: {e}")))
        })
        .collect()
}

async fn post_logs(
    State(run): Run,
    h: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    check_token(&run, &h)?;
    let lines: Vec<LogLine> = records(body, "lines", "log line")?;
    let n = lines.len();
    run.with_db(move |db| Ok(db.log_batch(&lines)?)).await?;
    Ok(stored(n))
}

async fn post_metrics(
    State(run): Run,
    h: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    check_token(&run, &h)?;
    let metrics: Vec<Metric> = records(body, "metrics", "metric")?;
    let n = metrics.len();
    run.with_db(move |db| Ok(db.record_metrics(&metrics)?))
        .await?;
    Ok(stored(n))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    level: Option<String>,
    limit: Option<u32>,
}

async fn get_logs(
    State(run): Run,
    h: HeaderMap,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let level = q
        .level
        .map(|l| l.parse::<LogLevel>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let logs = run
        .with_db(move |db| Ok(db.get_logs(level, q.limit)?))
        .await?;
    Ok(Json(json!({ "count": logs.len(), "logs": logs })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricQuery {
    category: Option<String>,
    name: Option<String>,
}

async fn get_metrics(
    State(run): Run,
    h: HeaderMap,
    q: Result<Query<MetricQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let category = q
        .category
        .map(|c| c.parse::<MetricCategory>())
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let metrics = run
        .with_db(move |db| Ok(db.get_metrics(category, q.name.as_deref())?))
        .await?;
    Ok(Json(json!({ "count": metrics.len(), "metrics": metrics })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactQuery {
    name: Option<String>,
    category: Option<String>,
}

/// Streams the body to a spool file beside the run DB (bounded), then into
/// the run DB in chunks: the artifact is never held in memory whole.
async fn post_artifact(
    State(run): Run,
    h: HeaderMap,
    q: Result<Query<ArtifactQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    check_token(&run, &h)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("query parameter \"name\" is required"))?;
    let category = match q.category {
        Some(c) => c
            .parse::<ArtifactCategory>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => ArtifactCategory::Output,
    };
    let content_type = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let limit = run.max_artifact_bytes;
    if let Some(len) = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    let spool = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(&run.work_dir)
        .map_err(|e| internal("cannot create an upload spool file", e))?;
    let (file, spool_path) = spool.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read upload: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|e| internal("cannot spool upload", e))?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|e| internal("cannot spool upload", e))?;
    drop(file);
    let info = run
        .with_db(move |db| {
            let f =
                std::fs::File::open(&spool_path).map_err(|e| RunError::Invalid(e.to_string()))?;
            let info =
                db.add_artifact_reader(&name, f, size, Some(&content_type), category, None)?;
            drop(spool_path); // removes the spool file
            Ok(info)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(info))))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("artifact is larger than the configured limit of {limit} bytes"),
    )
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, what.to_string())
}

async fn list_artifacts(State(run): Run, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    let a = run.with_db(|db| Ok(db.get_artifacts()?)).await?;
    Ok(Json(json!({ "count": a.len(), "artifacts": a })))
}

async fn get_artifact(
    State(run): Run,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_token(&run, &h)?;
    let spool = tempfile::Builder::new()
        .prefix(".export-")
        .tempfile_in(&run.work_dir)
        .map_err(|e| internal("cannot create an export spool file", e))?;
    let (content_type, file) = run
        .with_db(move |db| {
            let info = db.artifact(&name)?.ok_or_else(|| {
                RunError::Db(simcache_rundb::RunDbError::NotFound(format!(
                    "artifact {name:?}"
                )))
            })?;
            let mut f = spool.reopen().map_err(|e| RunError::Task(e.to_string()))?;
            db.read_artifact(&name, &mut f)?;
            f.flush().map_err(|e| RunError::Task(e.to_string()))?;
            // The reopened handle keeps the data readable after the spool is unlinked.
            let reader = spool.reopen().map_err(|e| RunError::Task(e.to_string()))?;
            Ok((
                info.content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                reader,
            ))
        })
        .await?;
    Ok(simcache_web::stream::file_response(
        file,
        &content_type,
        None,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    #[serde(default = "completed")]
    status: RunStatus,
    #[serde(default, alias = "error_message")]
    error: Option<String>,
    #[serde(default)]
    duration_seconds: Option<f64>,
}

fn completed() -> RunStatus {
    RunStatus::Completed
}

async fn complete(
    State(run): Run,
    h: HeaderMap,
    JsonBody(req): JsonBody<CompleteRequest>,
) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    if req.status == RunStatus::Running {
        return Err(ApiError::bad_request(
            "status must be completed, failed or cached",
        ));
    }
    let summary = run
        .complete(req.status, req.duration_seconds, req.error)
        .await?;
    Ok(Json(json!(summary)))
}

async fn summary(State(run): Run, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    Ok(Json(json!(run.summary().await?)))
}

async fn provenance(State(run): Run, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_token(&run, &h)?;
    let p = run.with_db(|db| Ok(db.get_provenance()?)).await?;
    Ok(Json(json!(p)))
}

/// A consistent snapshot of the live run database (SQLite online backup).
async fn snapshot(State(run): Run, h: HeaderMap) -> Result<Response, ApiError> {
    check_token(&run, &h)?;
    let spool = tempfile::Builder::new()
        .prefix(".snapshot-")
        .suffix(".db")
        .tempfile_in(&run.work_dir)
        .map_err(|e| internal("cannot create a snapshot file", e))?;
    let file = run
        .with_db(move |db| {
            db.snapshot_to(spool.path())?;
            spool.reopen().map_err(|e| RunError::Task(e.to_string()))
        })
        .await?;
    let name = format!("{}.db", run.execution_id);
    Ok(simcache_web::stream::file_response(
        file,
        "application/vnd.sqlite3",
        Some(&name),
    ))
}

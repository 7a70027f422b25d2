//! The ingest route: a run's sidecar uploads the finished run database here
//! with the per-run token the operator gave its pod. The operator keeps the
//! file under its run directory, introspects it into the results store and
//! records what it found in the ledger, where the SimulationRun controller
//! picks it up. An execution is ingested once; a repeat upload is a no-op.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde_json::{Value, json};
use simcache_rundb::RunDb;
use simcache_store::clock::now_ms;
use simcache_store::ledger::IngestFindings;
use simcache_store::results::{ResultRecord, Upsert};
use simcache_web::ApiError;
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use simcache_core::introspect::{IntrospectError, introspect};

/// How many of the run's last log lines the ledger keeps (shown on failure).
const LAST_LOG_LINES: u32 = 10;

/// The body is streamed to disk, counted against `max_ingest_bytes` as it
/// arrives (the router-wide JSON body limit does not apply here).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .layer(DefaultBodyLimit::disable())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the run database is larger than the ingest limit of {limit} bytes"),
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Upload a finished run database (SQLite file as the body). Authorised by
/// the per-run token (`Authorization: Bearer`), not by a session.
#[utoipa::path(put, path = "/ingest/{execution_id}", tag = "runs",
    params(("execution_id" = String, Path, description = "The execution the pod recorded")),
    request_body(content = Vec<u8>, content_type = "application/vnd.sqlite3"),
    responses((status = 201, body = Value, description = "stored and introspected"),
        (status = 200, body = Value, description = "already ingested; nothing changed"),
        (status = 400, body = Value), (status = 401, body = Value),
        (status = 413, body = Value), (status = 422, body = Value)))]
async fn ingest(
    State(s): State<AppState>,
    Path(execution_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let final_path = match admit(&s, &execution_id, &headers).await {
        Ok(Admission::Upload(p)) => p,
        Ok(Admission::Already(answer)) => {
            drain(body).await;
            return Ok((StatusCode::OK, Json(answer)));
        }
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    // Stream the body into a private directory beside the final place (SQLite
    // may leave journal files next to what it opens; the directory takes
    // them all away when the upload is refused).
    let work = tempfile::Builder::new()
        .prefix(".ingest-")
        .tempdir_in(&s.runs_base)
        .map_err(|e| {
            internal(format!(
                "cannot create a directory in the run directory: {e}"
            ))
        })?;
    let upload = work.path().join("run.db");
    let mut file = tokio::fs::File::create(&upload)
        .await
        .map_err(|e| internal(format!("cannot create the upload file: {e}")))?;
    let mut stream = body.into_data_stream();
    let mut received: usize = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        received += chunk.len();
        if received > s.max_ingest_bytes {
            return Err(too_large(s.max_ingest_bytes));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal(format!("writing the upload: {e}")))?;
    }
    file.sync_all()
        .await
        .map_err(|e| internal(format!("writing the upload: {e}")))?;
    drop(file);

    let id = execution_id.clone();
    let tmp_path = upload.clone();
    let read = tokio::task::spawn_blocking(move || read_upload(&tmp_path, &id))
        .await
        .map_err(|e| internal(format!("introspection task failed: {e}")))?;
    let (mut rec, last_logs) = read.map_err(|e| match e {
        IntrospectError::WrongRun { .. } => ApiError::bad_request(e.to_string()),
        _ => ApiError::unprocessable(format!("the upload is not a usable run database: {e}")),
    })?;
    std::fs::rename(&upload, &final_path)
        .map_err(|e| internal(format!("keeping the run database: {e}")))?;
    drop(work);
    rec.run_db_path = Some(final_path.display().to_string());
    let size = std::fs::metadata(&final_path)
        .map(|m| m.len() as i64)
        .unwrap_or(0);
    let (result_id, _) = s.stores.results.register(&rec, Upsert::Replace).await?;
    let findings = IngestFindings {
        run_db_path: final_path.display().to_string(),
        size_bytes: size,
        run_status: rec.status.clone(),
        result_id: Some(result_id),
        outputs: serde_json::to_value(&rec.outputs).unwrap_or(Value::Null),
        duration_seconds: rec.duration_seconds,
        error_message: rec.error_message.clone(),
        last_logs,
    };
    let first = s
        .stores
        .ledger
        .record_ingest(&execution_id, &findings, now_ms())
        .await?;
    tracing::info!(execution_id, status = %rec.status, size, first, "ingested run database");
    Ok((
        if first {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(json!({
            "execution_id": execution_id,
            "already_ingested": !first,
            "result_id": result_id,
            "status": rec.status,
            "size_bytes": size,
        })),
    ))
}

enum Admission {
    /// Store the upload here.
    Upload(std::path::PathBuf),
    /// Ingested before: this is the answer.
    Already(Value),
}

/// Checks the id, the token, the announced size, and whether the execution
/// was ingested already — before a byte of the body is stored.
async fn admit(
    s: &AppState,
    execution_id: &str,
    headers: &HeaderMap,
) -> Result<Admission, ApiError> {
    let final_path = simcache_rundb::run_db_path(&s.runs_base, execution_id)
        .map_err(|e| ApiError::bad_request(format!("invalid execution id: {e}")))?;
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "ingest needs the run's token as Authorization: Bearer",
        ));
    };
    if !s.stores.ledger.token_matches(execution_id, token).await? {
        return Err(ApiError::unauthorized(format!(
            "no ingest with this token is expected for execution {execution_id:?}"
        )));
    }
    if let Some(r) = s.stores.ledger.ingest(execution_id).await?
        && r.ingested_at_ms.is_some()
    {
        return Ok(Admission::Already(
            json!({"execution_id": execution_id, "already_ingested": true, "result_id": r.result_id}),
        ));
    }
    if let Some(len) = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > s.max_ingest_bytes as u64
    {
        return Err(too_large(s.max_ingest_bytes));
    }
    Ok(Admission::Upload(final_path))
}

/// Reads and drops (a bounded part of) a refused upload, so the client gets
/// to read the answer instead of a reset connection.
async fn drain(body: Body) {
    const DRAIN_LIMIT: usize = 8 << 20;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
}

fn internal(m: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
}

/// Introspects the uploaded file and reads its last log lines (oldest first).
fn read_upload(
    path: &std::path::Path,
    execution_id: &str,
) -> Result<(ResultRecord, Vec<String>), IntrospectError> {
    let rec = introspect(path, Some(execution_id))?;
    let logs = RunDb::open_read_only(path)
        .and_then(|db| db.get_logs(None, Some(LAST_LOG_LINES)))
        .map(|l| {
            l.into_iter()
                .rev()
                .map(|x| format!("{} {}", x.level, x.message))
                .collect()
        })
        .unwrap_or_default();
    Ok((rec, logs))
}

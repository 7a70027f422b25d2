//! Files: the artifacts of runs (read from their run databases) and the
//! folder hierarchy of sim2l's file manager.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use simcache_auth::Privilege;
use simcache_store::files::{NewEntry, ROOT};
use simcache_web::{ApiError, JsonBody};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::results::run_db_location;
use crate::{AppState, query};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_files))
        .routes(routes!(export_file))
        .routes(routes!(simulation_files))
        .routes(routes!(create_folder))
        .routes(routes!(create_file))
        .routes(routes!(list_folder))
        .routes(routes!(delete_entry))
}

/// The artifacts of a registered run: name, size, category, content type, SHA-256.
#[utoipa::path(get, path = "/runs/{execution_id}/files", tag = "files",
    params(("execution_id" = String, Path)), responses((status = 200, body = Value), (status = 404, body = Value)), security(("session" = [])))]
async fn run_files(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    if s.stores.results.get(&id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no registered result for execution {id:?}"
        )));
    }
    let files = s.stores.results.files(&id).await?;
    Ok(Json(
        json!({"execution_id": id, "count": files.len(), "files": files}),
    ))
}

/// One artifact's bytes, streamed from the run database.
#[utoipa::path(get, path = "/runs/{execution_id}/files/{name}", tag = "files",
    params(("execution_id" = String, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = Value)), security(("session" = [])))]
async fn export_file(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let result =
        s.stores.results.get(&id).await?.ok_or_else(|| {
            ApiError::not_found(format!("no registered result for execution {id:?}"))
        })?;
    let path = run_db_location(&s.runs_base, &id, result.run_db_path.as_deref())?;
    let spool = tempfile::tempfile().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot spool the export: {e}"),
        )
    })?;
    let wanted = name.clone();
    let exported =
        tokio::task::spawn_blocking(move || -> Result<(String, std::fs::File), ApiError> {
            use std::io::{Seek, SeekFrom};
            let db = simcache_rundb::RunDb::open_read_only(&path).map_err(|e| {
                ApiError::unprocessable(format!("cannot read the run database: {e}"))
            })?;
            let info = db
                .artifact(&wanted)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?
                .ok_or_else(|| ApiError::not_found(format!("artifact {wanted:?} not found")))?;
            let mut f = spool;
            db.read_artifact(&wanted, &mut f)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
            f.seek(SeekFrom::Start(0))
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok((
                info.content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                f,
            ))
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(simcache_web::stream::file_response(
        exported.1,
        &exported.0,
        Some(&name),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Every file of every registered run of a simulation version.
#[utoipa::path(get, path = "/simulations/{name}/{version}/files", tag = "files",
    params(("name" = String, Path), ("version" = String, Path), Page), responses((status = 200, body = Value)), security(("session" = [])))]
async fn simulation_files(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = query(q)?;
    let files = s
        .stores
        .results
        .simulation_files(
            &name,
            &version,
            q.limit.unwrap_or(1000),
            q.offset.unwrap_or(0),
        )
        .await?;
    let files: Vec<Value> = files
        .into_iter()
        .map(|(exec, f)| json!({"execution_id": exec, "name": f.name, "size_bytes": f.size_bytes, "category": f.category, "content_type": f.content_type, "sha256": f.sha256}))
        .collect();
    Ok(Json(
        json!({"simulation_name": name, "simulation_version": version, "count": files.len(), "files": files}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FolderBody {
    name: String,
    /// `"0"` (default) is the root.
    parent_id: Option<String>,
    metadata: Option<Value>,
}

/// Create a folder.
#[utoipa::path(post, path = "/folders", tag = "files", request_body = FolderBody,
    responses((status = 201, body = Value), (status = 400, body = Value), (status = 404, body = Value)), security(("session" = [])))]
async fn create_folder(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<FolderBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let session = s.auth.authorize(&headers, Privilege::UpdateCatalog).await?;
    let parent = b.parent_id.unwrap_or_else(|| ROOT.into());
    let obj = s
        .stores
        .files
        .create(&NewEntry {
            name: &b.name,
            parent_id: &parent,
            is_folder: true,
            uri: None,
            size: None,
            creator: Some(&session.username),
            metadata: b.metadata.as_ref(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(obj))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    name: String,
    /// Where the file lives (s3://…, https://…, a path).
    uri: String,
    size: Option<i64>,
    parent_id: Option<String>,
    metadata: Option<Value>,
}

/// Create a file entry pointing at a URI.
#[utoipa::path(post, path = "/files", tag = "files", request_body = FileBody,
    responses((status = 201, body = Value), (status = 400, body = Value), (status = 404, body = Value)), security(("session" = [])))]
async fn create_file(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<FileBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let session = s.auth.authorize(&headers, Privilege::UpdateCatalog).await?;
    if b.size.is_some_and(|x| x < 0) {
        return Err(ApiError::bad_request("size must not be negative"));
    }
    let parent = b.parent_id.unwrap_or_else(|| ROOT.into());
    let obj = s
        .stores
        .files
        .create(&NewEntry {
            name: &b.name,
            parent_id: &parent,
            is_folder: false,
            uri: Some(&b.uri),
            size: b.size,
            creator: Some(&session.username),
            metadata: b.metadata.as_ref(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!(obj))))
}

/// A folder and its entries (`0` is the root).
#[utoipa::path(get, path = "/folders/{id}", tag = "files",
    params(("id" = String, Path)), responses((status = 200, body = Value), (status = 404, body = Value)), security(("session" = [])))]
async fn list_folder(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let folder = if id == ROOT {
        None
    } else {
        s.stores.files.get(&id).await?
    };
    let objects = s.stores.files.list(&id).await?;
    Ok(Json(
        json!({"folder": folder, "count": objects.len(), "objects": objects}),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Delete a folder with everything under it.
    recursive: Option<bool>,
}

/// Delete a file entry or folder.
#[utoipa::path(delete, path = "/files/{id}", tag = "files",
    params(("id" = String, Path), DeleteParams), responses((status = 200, body = Value), (status = 404, body = Value), (status = 409, body = Value)), security(("session" = [])))]
async fn delete_entry(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::UpdateCatalog).await?;
    let q = query(q)?;
    let n = s
        .stores
        .files
        .delete(&id, q.recursive.unwrap_or(false))
        .await?;
    Ok(Json(json!({"status": "deleted", "id": id, "deleted": n})))
}

//! Results routes, wire-compatible with sim2l's results service: register by
//! introspecting a run database, register directly, search with typed
//! filters, parameter statistics.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use simcache_auth::Privilege;
use simcache_store::results::filter::{ParamClass, parse_filters};
use simcache_store::results::{ResultQuery, ResultRecord, StoredResult, Upsert};
use simcache_web::{ApiError, JsonBody};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppState, query, ts};
use simcache_core::introspect::{IntrospectError, introspect};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(register_direct))
        .routes(routes!(search))
        .routes(routes!(get_result, delete_result))
        .routes(routes!(delete_all))
        .routes(routes!(param_stats))
        .routes(routes!(definitions))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultView {
    id: i64,
    execution_id: String,
    simulation_name: String,
    simulation_version: String,
    squid_id: Option<String>,
    input_params: Value,
    output_params: Value,
    status: String,
    duration_seconds: Option<f64>,
    error_message: Option<String>,
    created_at: String,
    completed_at: Option<String>,
    run_db_path: Option<String>,
    metadata: Option<Value>,
    provenance: Option<Value>,
}

impl From<StoredResult> for ResultView {
    fn from(r: StoredResult) -> Self {
        ResultView {
            id: r.id,
            execution_id: r.execution_id,
            simulation_name: r.simulation_name,
            simulation_version: r.simulation_version,
            squid_id: r.squid_id,
            input_params: r.input_params,
            output_params: r.output_params,
            status: r.status,
            duration_seconds: r.duration_seconds,
            error_message: r.error_message,
            created_at: ts(r.created_at_ms),
            completed_at: r.completed_at_ms.map(ts),
            run_db_path: r.run_db_path,
            metadata: r.metadata,
            provenance: r.provenance,
        }
    }
}

/// Resolves where a run database may be read: under the configured base
/// only (a client cannot make the operator open arbitrary files).
pub fn run_db_location(
    base: &FsPath,
    execution_id: &str,
    given: Option<&str>,
) -> Result<PathBuf, ApiError> {
    let path = match given.filter(|p| !p.is_empty()) {
        None => simcache_rundb::run_db_path(base, execution_id)
            .map_err(|_| ApiError::bad_request("Invalid execution_id"))?,
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { base.join(p) }
        }
    };
    let base_c = base.canonicalize().map_err(|_| {
        ApiError::not_found(format!(
            "run database directory {} does not exist",
            base.display()
        ))
    })?;
    let path_c = path.canonicalize().map_err(|_| {
        ApiError::not_found(format!(
            "run database for execution {execution_id:?} not found"
        ))
    })?;
    if !path_c.starts_with(&base_c) {
        return Err(ApiError::bad_request(format!(
            "run_db_path must be under the run database directory {}",
            base.display()
        )));
    }
    Ok(path_c)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    execution_id: Option<String>,
    /// The run database; default `{runs base}/{execution_id}.db`. Must be under the runs base.
    run_db_path: Option<String>,
    squid_id: Option<String>,
    metadata: Option<Value>,
}

/// Register a run's result by introspecting its run database (idempotent).
#[utoipa::path(post, path = "/register", tag = "results", request_body = RegisterBody,
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 404, body = Value), (status = 422, body = Value), (status = 403, body = Value)), security(("session" = [])))]
async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<Json<Value>, ApiError> {
    s.auth
        .authorize(&headers, Privilege::ExecuteSimulation)
        .await?;
    let id = b
        .execution_id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::bad_request("execution_id required"))?;
    simcache_rundb::validate_execution_id(&id)
        .map_err(|_| ApiError::bad_request("Invalid execution_id"))?;
    let path = run_db_location(&s.runs_base, &id, b.run_db_path.as_deref())?;
    let expected = id.clone();
    let read = tokio::task::spawn_blocking(move || introspect(&path, Some(&expected)))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("introspection task failed: {e}"),
            )
        })?;
    let mut rec = match read {
        Ok(r) => r,
        Err(e) => {
            let _ = s
                .stores
                .results
                .record_error(&id, "introspection", &e.to_string())
                .await;
            return Err(match e {
                IntrospectError::Missing(_) => ApiError::not_found(e.to_string()),
                IntrospectError::WrongRun { .. } => ApiError::bad_request(e.to_string()),
                _ => ApiError::unprocessable(e.to_string()),
            });
        }
    };
    if let Some(sq) = b.squid_id {
        rec.squid_id = Some(sq);
    }
    if let (Some(m), Some(Value::Object(o))) = (b.metadata, rec.metadata.as_mut()) {
        o.insert("client".into(), m);
    }
    let (result_id, schema_id) = s.stores.results.register(&rec, Upsert::Replace).await?;
    Ok(Json(
        json!({"success": true, "result_id": result_id, "schema_id": schema_id}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectBody {
    execution_id: Option<String>,
    simulation_name: Option<String>,
    simulation_version: Option<String>,
    #[schema(value_type = Object)]
    input_params: Option<Value>,
    #[schema(value_type = Object)]
    output_params: Option<Value>,
    status: Option<String>,
    squid_id: Option<String>,
    duration_seconds: Option<f64>,
    run_db_path: Option<String>,
    metadata: Option<Value>,
}

fn params_object(v: Option<Value>, field: &str) -> Result<BTreeMap<String, Value>, ApiError> {
    match v {
        Some(Value::Object(m)) => Ok(m.into_iter().collect()),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be an object"))),
        None => Err(ApiError::bad_request(format!("{field} required"))),
    }
}

/// Register a result from values given directly (sim2l's `register_direct`):
/// on a repeat the first inputs stay and outputs/status/duration update.
#[utoipa::path(post, path = "/register_direct", tag = "results", request_body = DirectBody,
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 409, body = Value)), security(("session" = [])))]
async fn register_direct(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<DirectBody>,
) -> Result<Json<Value>, ApiError> {
    s.auth
        .authorize(&headers, Privilege::ExecuteSimulation)
        .await?;
    let req = |v: Option<String>, f: &str| {
        v.filter(|x| !x.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{f} required")))
    };
    let execution_id = req(b.execution_id, "execution_id")?;
    simcache_rundb::validate_execution_id(&execution_id)
        .map_err(|_| ApiError::bad_request("Invalid execution_id"))?;
    let rec = ResultRecord {
        simulation_name: req(b.simulation_name, "simulation_name")?,
        simulation_version: req(b.simulation_version, "simulation_version")?,
        inputs: params_object(b.input_params, "input_params")?,
        outputs: params_object(b.output_params, "output_params")?,
        status: req(b.status, "status")?,
        execution_id,
        squid_id: b.squid_id,
        duration_seconds: b.duration_seconds,
        run_db_path: b.run_db_path,
        metadata: b.metadata,
        completed_at_ms: Some(simcache_store::clock::now_ms()),
        ..Default::default()
    };
    let (result_id, schema_id) = s.stores.results.register(&rec, Upsert::KeepInputs).await?;
    Ok(Json(
        json!({"success": true, "result_id": result_id, "schema_id": schema_id}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    simulation_name: Option<String>,
    simulation_version: Option<String>,
    status: Option<String>,
    /// `{param: value}` for equality or `{param: {"$gte": 300, "$lt": 400}}`; operators `$gt`, `$gte`, `$lt`, `$lte`, `$eq`, `$ne`, `$in`.
    #[schema(value_type = Object)]
    input_filters: Option<Value>,
    #[schema(value_type = Object)]
    output_filters: Option<Value>,
    /// `input.<name>`, `output.<name>` or `created_at` (default).
    sort_by: Option<String>,
    /// `asc` or `desc` (default `desc` for created_at, `asc` for parameters).
    order: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Search results by typed input/output filters, sorted and paginated.
#[utoipa::path(post, path = "/search", tag = "results", request_body = SearchBody,
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 401, body = Value)), security(("session" = [])))]
async fn search(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let limit = b.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let offset = b.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    let mut filters = Vec::new();
    for (class, f) in [
        (ParamClass::Input, &b.input_filters),
        (ParamClass::Output, &b.output_filters),
    ] {
        let Some(f) = f else { continue };
        let declared = match &b.simulation_name {
            Some(sim) => s.stores.results.declared_types(sim, class).await?,
            None => None,
        };
        filters.extend(
            parse_filters(class, f, declared.as_ref())
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
    }
    let sort = match b.sort_by.as_deref() {
        None | Some("created_at") => None,
        Some(other) => {
            let (class, name) = other
                .split_once('.')
                .and_then(|(c, n)| Some((ParamClass::parse(c)?, n)))
                .filter(|(_, n)| !n.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "sort_by {other:?} must be created_at, input.<name> or output.<name>"
                    ))
                })?;
            Some((class, name.to_string()))
        }
    };
    let descending = match b.order.as_deref() {
        None => sort.is_none(),
        Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "order {o:?} must be asc or desc"
            )));
        }
    };
    let found = s
        .stores
        .results
        .search(&ResultQuery {
            simulation_name: b.simulation_name,
            simulation_version: b.simulation_version,
            status: b.status,
            filters,
            sort,
            descending,
            limit,
            offset,
        })
        .await?;
    let results: Vec<ResultView> = found.into_iter().map(ResultView::from).collect();
    Ok(Json(
        json!({"results": results, "count": results.len(), "limit": limit, "offset": offset}),
    ))
}

/// One result by execution id.
#[utoipa::path(get, path = "/results/{execution_id}", tag = "results",
    params(("execution_id" = String, Path)), responses((status = 200, body = ResultView), (status = 404, body = Value)), security(("session" = [])))]
async fn get_result(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ResultView>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let r = s
        .stores
        .results
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("Result not found"))?;
    Ok(Json(r.into()))
}

/// Delete one result (needs `update_catalog`).
#[utoipa::path(delete, path = "/results/{execution_id}", tag = "results",
    params(("execution_id" = String, Path)), responses((status = 200, body = Value), (status = 404, body = Value), (status = 403, body = Value)), security(("session" = [])))]
async fn delete_result(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::UpdateCatalog).await?;
    if !s.stores.results.delete(&id).await? {
        return Err(ApiError::not_found("Result not found"));
    }
    Ok(Json(json!({"status": "deleted", "execution_id": id})))
}

/// Delete every result (needs `admin`).
#[utoipa::path(delete, path = "/results", tag = "results", responses((status = 200, body = Value), (status = 403, body = Value)), security(("session" = [])))]
async fn delete_all(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::Admin).await?;
    Ok(Json(
        json!({"deleted": s.stores.results.delete_all().await?}),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClassParam {
    /// `output` (default) or `input`.
    class: Option<String>,
}

/// count, min, max, mean and standard deviation of a numeric parameter.
#[utoipa::path(get, path = "/stats/{simulation}/{param}", tag = "results",
    params(("simulation" = String, Path), ("param" = String, Path), ClassParam),
    responses((status = 200, body = Value), (status = 400, body = Value)), security(("session" = [])))]
async fn param_stats(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((sim, param)): Path<(String, String)>,
    q: Result<Query<ClassParam>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = query(q)?;
    let class = match q.class.as_deref() {
        None => ParamClass::Output,
        Some(c) => ParamClass::parse(c)
            .ok_or_else(|| ApiError::bad_request(format!("class {c:?} must be input or output")))?,
    };
    let st = s
        .stores
        .results
        .parameter_stats(&sim, &param, class)
        .await?;
    if st.count == 0 {
        return Ok(Json(json!({"param_name": st.param_name, "count": 0})));
    }
    Ok(Json(json!(st)))
}

/// The declared parameter schema of a simulation version, as introspected.
#[utoipa::path(get, path = "/schemas/{simulation}/{version}", tag = "results",
    params(("simulation" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = Value), (status = 404, body = Value)), security(("session" = [])))]
async fn definitions(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((sim, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let defs = s.stores.results.definitions(&sim, &version).await?;
    if defs.is_empty() {
        return Err(ApiError::not_found(format!(
            "no schema recorded for {sim} {version}"
        )));
    }
    Ok(Json(
        json!({"simulation_name": sim, "simulation_version": version, "parameters": defs}),
    ))
}

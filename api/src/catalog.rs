//! Catalog routes, wire-compatible with sim2l's catalog service.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use simcache_auth::Privilege;
use simcache_rundb::ValueType;
use simcache_store::catalog::{
    CacheOutcome, ExecutionRecord, ExecutionStatus, Registration, SearchQuery, Simulation,
    SimulationSpec,
};
use simcache_store::clock::parse_timestamp_ms;
use simcache_web::{ApiError, JsonBody};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppState, query, ts};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(search))
        .routes(routes!(
            get_simulation,
            update_simulation,
            delete_simulation
        ))
        .routes(routes!(versions))
        .routes(routes!(stats))
        .routes(routes!(record_execution))
        .routes(routes!(overview))
}

/// A simulation as the catalog returns it (sim2l's fields plus `image`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SimulationView {
    id: i64,
    name: String,
    version: String,
    description: Option<String>,
    author: Option<String>,
    tags: Vec<String>,
    status: String,
    visibility: String,
    image: Option<String>,
    workflow_type: String,
    workflow_hash: Option<String>,
    input_schema: Value,
    output_schema: Value,
    metadata: Option<Value>,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<Simulation> for SimulationView {
    fn from(s: Simulation) -> Self {
        SimulationView {
            id: s.id,
            name: s.spec.name,
            version: s.spec.version,
            description: s.spec.description,
            author: s.spec.author,
            tags: s.spec.tags,
            status: s.status,
            visibility: s.spec.visibility,
            image: s.spec.image,
            workflow_type: s.spec.workflow_type,
            workflow_hash: s.spec.workflow_hash,
            input_schema: s.spec.input_schema,
            output_schema: s.spec.output_schema,
            metadata: s.spec.metadata,
            created_by: s.created_by,
            created_at: ts(s.created_at_ms),
            updated_at: ts(s.updated_at_ms),
        }
    }
}

/// What `POST /simulations` accepts. sim2l's other fields (license,
/// repository_url, workflow bundles, …) are kept in `metadata.extra`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
    author: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// `{param: {"type", "units"?, "min"?, "max"?, "default"?, "description"?}}`, or the same as a JSON string.
    input_schema: Option<Value>,
    output_schema: Option<Value>,
    image: Option<String>,
    workflow_type: Option<String>,
    workflow_hash: Option<String>,
    visibility: Option<String>,
    metadata: Option<Value>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    extra: Map<String, Value>,
}

fn valid_name(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} {s:?} must be 1 to 128 characters of letters, digits, '.', '_', '-', '+'"
        )))
    }
}

/// A schema is an object of parameter specs; each names a known type and,
/// for numbers, a sensible range.
fn schema(field: &str, v: Option<Value>) -> Result<Value, ApiError> {
    let v = match v {
        Some(Value::String(s)) => serde_json::from_str(&s)
            .map_err(|e| ApiError::bad_request(format!("{field} is not valid JSON: {e}")))?,
        Some(v) => v,
        None => {
            return Err(ApiError::bad_request(
                "input_schema and output_schema are required",
            ));
        }
    };
    let Value::Object(params) = &v else {
        return Err(ApiError::bad_request(format!(
            "{field} must be an object of parameters"
        )));
    };
    for (name, spec) in params {
        let Value::Object(spec) = spec else {
            return Err(ApiError::bad_request(format!(
                "{field}.{name} must be an object with a \"type\""
            )));
        };
        let t = spec
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request(format!("{field}.{name}.type is required")))?;
        let t = ValueType::parse(t)
            .map_err(|e| ApiError::bad_request(format!("{field}.{name}: {e}")))?;
        let num = |k: &str| -> Result<Option<f64>, ApiError> {
            match spec.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!("{field}.{name}.{k} must be a number"))
                }),
            }
        };
        let (min, max) = (num("min")?, num("max")?);
        if let (Some(a), Some(b)) = (min, max)
            && a > b
        {
            return Err(ApiError::bad_request(format!(
                "{field}.{name}: min {a} is greater than max {b}"
            )));
        }
        if (min.is_some() || max.is_some()) && !matches!(t, ValueType::Number | ValueType::Integer)
        {
            return Err(ApiError::bad_request(format!(
                "{field}.{name}: min/max only apply to numbers"
            )));
        }
    }
    Ok(v)
}

/// Register a simulation version. Registering the same content again is
/// harmless (200); different content under an existing name and version is 409.
#[utoipa::path(post, path = "/simulations", tag = "catalog", request_body = RegisterBody,
    responses((status = 201, description = "registered", body = Value), (status = 200, description = "already registered, same content", body = Value),
        (status = 400, body = Value), (status = 401, body = Value), (status = 403, body = Value), (status = 409, body = Value)),
    security(("session" = [])))]
async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let session = s
        .auth
        .authorize(&headers, Privilege::RegisterSimulation)
        .await?;
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    let version = b
        .version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("version is required"))?;
    valid_name("name", &name)?;
    valid_name("version", &version)?;
    for t in &b.tags {
        if t.is_empty() || t.len() > 64 {
            return Err(ApiError::bad_request(format!(
                "tag {t:?} must be 1 to 64 characters"
            )));
        }
    }
    let mut metadata = b.metadata;
    if !b.extra.is_empty() {
        let m = metadata.get_or_insert_with(|| json!({}));
        match m {
            Value::Object(o) => {
                o.insert("extra".into(), Value::Object(b.extra));
            }
            _ => return Err(ApiError::bad_request("metadata must be an object")),
        }
    }
    let spec = SimulationSpec {
        name,
        version,
        description: b.description,
        author: b.author,
        tags: b.tags,
        input_schema: schema("input_schema", b.input_schema)?,
        output_schema: schema("output_schema", b.output_schema)?,
        image: b.image,
        workflow_type: b.workflow_type.unwrap_or_else(|| "container".into()),
        workflow_hash: b.workflow_hash,
        visibility: b.visibility.unwrap_or_else(|| "public".into()),
        metadata,
    };
    if !matches!(spec.visibility.as_str(), "public" | "private" | "internal") {
        return Err(ApiError::bad_request(
            "visibility must be public, private or internal",
        ));
    }
    Ok(
        match s
            .stores
            .catalog
            .register(&spec, Some(&session.username))
            .await?
        {
            Registration::Created(id) => (
                StatusCode::CREATED,
                Json(json!({"id": id, "status": "registered"})),
            ),
            Registration::Unchanged(id) => (
                StatusCode::OK,
                Json(json!({"id": id, "status": "already_registered"})),
            ),
        },
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Free text over name, description and tags (any token; best matches first).
    query: Option<String>,
    /// Comma-separated tags; a simulation must carry all of them.
    tags: Option<String>,
    /// `active` (default), `deprecated`, `archived`, or `all`.
    status: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Search the catalog.
#[utoipa::path(get, path = "/simulations/search", tag = "catalog", params(SearchParams),
    responses((status = 200, body = [SimulationView]), (status = 400, body = Value), (status = 401, body = Value)), security(("session" = [])))]
async fn search(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<Vec<SimulationView>>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    if q.offset.is_some_and(|o| o < 0) {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    let status = match q.status.as_deref() {
        None => Some("active".to_string()),
        Some("all") => None,
        Some(st @ ("active" | "deprecated" | "archived")) => Some(st.to_string()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status {other:?} must be active, deprecated, archived or all"
            )));
        }
    };
    let tags = q
        .tags
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let found = s
        .stores
        .catalog
        .search(&SearchQuery {
            text: q.query,
            tags,
            status,
            limit,
            offset: q.offset.unwrap_or(0),
        })
        .await?;
    Ok(Json(found.into_iter().map(SimulationView::from).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionParam {
    /// An exact version; the newest registered when absent.
    version: Option<String>,
}

/// One simulation: an exact version, or the newest.
#[utoipa::path(get, path = "/simulations/{name}", tag = "catalog",
    params(("name" = String, Path, description = "simulation name"), VersionParam),
    responses((status = 200, body = SimulationView), (status = 404, body = Value), (status = 401, body = Value)), security(("session" = [])))]
async fn get_simulation(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<VersionParam>, QueryRejection>,
) -> Result<Json<SimulationView>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = query(q)?;
    let sim = s
        .stores
        .catalog
        .get(&name, q.version.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("Not found"))?;
    Ok(Json(sim.into()))
}

/// The version a path's `{id}` names: 400 when it is not a number, 404
/// when no version has it.
async fn by_id(s: &AppState, name: &str) -> Result<(i64, Simulation), ApiError> {
    let id: i64 = name
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name:?} is not a simulation id")))?;
    let sim = s
        .stores
        .catalog
        .get_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Simulation not found"))?;
    Ok((id, sim))
}

/// The simulation statuses sim2l knows.
const STATUSES: [&str; 3] = ["active", "deprecated", "archived"];

/// Change a version's editable fields by id (needs `update_catalog`), as
/// sim2l's `PATCH`: `tags`, `dependencies`, `metadata`, `input_schema`,
/// `output_schema` (JSON), `description`, `status` (`active`, `deprecated`,
/// `archived`), `visibility`, `license`, `workflow_type`, `workflow_hash`
/// (strings). `dependencies` and `license` are kept in `metadata`. Other
/// keys are listed in `ignored_keys`. Unlike sim2l, an unknown id is a 404.
#[utoipa::path(patch, path = "/simulations/{name}", tag = "catalog", request_body = Value,
    params(("name" = i64, Path, description = "simulation id (sim2l's route)")),
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 404, body = Value), (status = 422, body = Value), (status = 403, body = Value)), security(("session" = [])))]
async fn update_simulation(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::UpdateCatalog).await?;
    let (id, sim) = by_id(&s, &name).await?;
    let (spec, status, ignored) = patched(sim.spec, &sim.status, body)?;
    if !s.stores.catalog.update(id, &spec, &status).await? {
        return Err(ApiError::not_found("Simulation not found"));
    }
    let mut answer = json!({"status": "updated"});
    if !ignored.is_empty() {
        answer["ignored_keys"] = json!(ignored);
    }
    Ok(Json(answer))
}

/// `spec` and `status` with a PATCH body applied; the keys it ignored.
fn patched(
    mut spec: SimulationSpec,
    status: &str,
    body: serde_json::Map<String, Value>,
) -> Result<(SimulationSpec, String, Vec<String>), ApiError> {
    let mut status = status.to_string();
    let mut ignored = Vec::new();
    let mut changed = false;
    let text = |k: &str, v: &Value| -> Result<String, ApiError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::unprocessable(format!("{k} must be a string")))
    };
    let object = |k: &str, v: Value| -> Result<Value, ApiError> {
        if v.is_object() {
            Ok(v)
        } else {
            Err(ApiError::unprocessable(format!(
                "{k} must be a JSON object"
            )))
        }
    };
    // `dependencies` and `license` go into metadata after a new `metadata`.
    let (into_metadata, rest): (Vec<_>, Vec<_>) = body
        .into_iter()
        .partition(|(k, _)| k == "dependencies" || k == "license");
    for (k, v) in rest.into_iter().chain(into_metadata) {
        match k.as_str() {
            "tags" => {
                spec.tags = serde_json::from_value(v)
                    .map_err(|_| ApiError::unprocessable("tags must be an array of strings"))?;
            }
            "metadata" => spec.metadata = Some(object(&k, v)?),
            "input_schema" => spec.input_schema = schema(&k, Some(v))?,
            "output_schema" => spec.output_schema = schema(&k, Some(v))?,
            "dependencies" | "license" => {
                let meta = spec.metadata.get_or_insert_with(|| json!({}));
                if !meta.is_object() {
                    *meta = json!({});
                }
                meta[k.as_str()] = v;
            }
            "description" => spec.description = Some(text(&k, &v)?),
            "visibility" => spec.visibility = text(&k, &v)?,
            "workflow_type" => spec.workflow_type = text(&k, &v)?,
            "workflow_hash" => spec.workflow_hash = Some(text(&k, &v)?),
            "status" => {
                let st = text(&k, &v)?;
                if !STATUSES.contains(&st.as_str()) {
                    return Err(ApiError::unprocessable(format!(
                        "status {st:?} must be one of {}",
                        STATUSES.join(", ")
                    )));
                }
                status = st;
            }
            _ => {
                ignored.push(k);
                continue;
            }
        }
        changed = true;
    }
    if !changed {
        return Err(ApiError::bad_request("No valid fields to update"));
    }
    ignored.sort();
    Ok((spec, status, ignored))
}

/// Delete a simulation by id, with its recorded executions (needs `update_catalog`).
#[utoipa::path(delete, path = "/simulations/{name}", tag = "catalog",
    params(("name" = i64, Path, description = "simulation id (sim2l's route)")),
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 404, body = Value), (status = 403, body = Value)), security(("session" = [])))]
async fn delete_simulation(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::UpdateCatalog).await?;
    let (id, sim) = by_id(&s, &name).await?;
    if !s.stores.catalog.delete(id).await? {
        return Err(ApiError::not_found("Simulation not found"));
    }
    Ok(Json(
        json!({"status": "deleted", "simulation_id": id, "name": sim.spec.name, "version": sim.spec.version}),
    ))
}

/// Every registered version of a simulation, newest first.
#[utoipa::path(get, path = "/simulations/{name}/versions", tag = "catalog",
    params(("name" = String, Path, description = "simulation name")),
    responses((status = 200, body = [SimulationView]), (status = 404, body = Value)), security(("session" = [])))]
async fn versions(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Vec<SimulationView>>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let v = s.stores.catalog.versions(&name).await?;
    if v.is_empty() {
        return Err(ApiError::not_found(format!("no simulation named {name:?}")));
    }
    Ok(Json(v.into_iter().map(SimulationView::from).collect()))
}

/// Execution statistics of a simulation (by id as in sim2l, or by name: newest version).
#[utoipa::path(get, path = "/simulations/{name}/stats", tag = "catalog",
    params(("name" = String, Path, description = "simulation id, or a name for its newest version")),
    responses((status = 200, body = Value), (status = 404, body = Value)), security(("session" = [])))]
async fn stats(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let id = match name.parse::<i64>() {
        Ok(id) => id,
        Err(_) => {
            s.stores
                .catalog
                .get(&name, None)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no simulation named {name:?}")))?
                .id
        }
    };
    let st = s.stores.catalog.stats(id).await?;
    Ok(Json(json!({
        "simulation_id": id,
        "total_executions": st.total_executions,
        "successful": st.successful,
        "failed": st.failed,
        "cached": st.cached,
        "success_rate": st.success_rate,
        "cache_hit_rate": st.cache_hit_rate,
        "avg_duration": st.avg_duration,
        "min_duration": st.min_duration,
        "max_duration": st.max_duration,
        "p95_duration": st.p95_duration,
        "last_run": st.last_run_ms.map(ts),
    })))
}

/// What `POST /executions` accepts (sim2l's fields plus `cache_status` and `node`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionBody {
    execution_id: Option<String>,
    squid_id: Option<String>,
    simulation_id: Option<i64>,
    /// Instead of `simulation_id`: name and version.
    simulation_name: Option<String>,
    simulation_version: Option<String>,
    started_at: Option<String>,
    completed_at: Option<String>,
    duration_seconds: Option<f64>,
    status: Option<String>,
    executor_type: Option<String>,
    #[serde(default)]
    cache_hit: bool,
    cache_status: Option<String>,
    node: Option<String>,
    run_db_path: Option<String>,
    run_db_size_bytes: Option<i64>,
    input_hash: Option<String>,
    #[serde(default)]
    output_count: i64,
    #[serde(default)]
    artifact_count: i64,
    #[serde(default)]
    error_count: i64,
    #[serde(default)]
    warning_count: i64,
    environment: Option<Value>,
    user_id: Option<Value>,
}

/// Record an execution (idempotent per `execution_id`; a repeat updates it).
#[utoipa::path(post, path = "/executions", tag = "catalog", request_body = ExecutionBody,
    responses((status = 201, body = Value), (status = 400, body = Value), (status = 404, body = Value), (status = 403, body = Value)), security(("session" = [])))]
async fn record_execution(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<ExecutionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let session = s
        .auth
        .authorize(&headers, Privilege::ExecuteSimulation)
        .await?;
    let req = |v: Option<String>, f: &str| {
        v.filter(|x| !x.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{f} is required")))
    };
    let execution_id = req(b.execution_id, "execution_id")?;
    simcache_rundb::validate_execution_id(&execution_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let status = req(b.status, "status")?;
    let status = ExecutionStatus::parse(&status).ok_or_else(|| {
        ApiError::bad_request(format!(
            "status {status:?} must be one of pending, running, completed, failed, cached"
        ))
    })?;
    let cache_status = b
        .cache_status
        .map(|c| {
            CacheOutcome::parse(&c).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "cache_status {c:?} must be one of Hit, Miss, Populated, Skipped, LookupFailure, PutFailure"
                ))
            })
        })
        .transpose()?;
    let time = |v: Option<String>, f: &str| -> Result<Option<i64>, ApiError> {
        v.map(|t| {
            parse_timestamp_ms(&t).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{f} {t:?} is not a timestamp (ISO 8601 or Unix seconds)"
                ))
            })
        })
        .transpose()
    };
    let started = time(b.started_at, "started_at")?
        .ok_or_else(|| ApiError::bad_request("started_at is required"))?;
    let completed = time(b.completed_at, "completed_at")?;
    if b.duration_seconds
        .is_some_and(|d| !(d.is_finite() && d >= 0.0))
    {
        return Err(ApiError::bad_request(
            "duration_seconds must be a non-negative number",
        ));
    }
    let simulation_id = match (b.simulation_id, b.simulation_name, b.simulation_version) {
        (Some(id), _, _) => {
            s.stores
                .catalog
                .get_by_id(id)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("simulation id {id} is not registered"))
                })?
                .id
        }
        (None, Some(n), v) => {
            s.stores
                .catalog
                .get(&n, v.as_deref())
                .await?
                .ok_or_else(|| ApiError::not_found(format!("simulation {n:?} is not registered")))?
                .id
        }
        (None, None, _) => {
            return Err(ApiError::bad_request(
                "simulation_id (or simulation_name and simulation_version) is required",
            ));
        }
    };
    let squid = b.squid_id.unwrap_or_else(|| execution_id.clone());
    let user = match b.user_id {
        Some(Value::String(u)) => Some(u),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => Some(session.username.clone()),
    };
    s.stores
        .catalog
        .record_execution(&ExecutionRecord {
            execution_id,
            squid_id: squid,
            simulation_id,
            user_id: user,
            started_at_ms: started,
            completed_at_ms: completed,
            duration_seconds: b.duration_seconds,
            status,
            executor_type: b.executor_type.unwrap_or_else(|| "kubernetes".into()),
            cache_hit: b.cache_hit,
            cache_status,
            node: b.node,
            run_db_path: b.run_db_path,
            run_db_size_bytes: b.run_db_size_bytes,
            input_hash: b.input_hash,
            output_count: b.output_count,
            artifact_count: b.artifact_count,
            error_count: b.error_count,
            warning_count: b.warning_count,
            environment: b.environment,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"status": "recorded"}))))
}

/// Totals over the whole catalog.
#[utoipa::path(get, path = "/statistics/overview", tag = "catalog",
    responses((status = 200, body = Value)), security(("session" = [])))]
async fn overview(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    Ok(Json(json!(s.stores.catalog.overview().await?)))
}

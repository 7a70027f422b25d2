//! The console's JSON (and SVG/CSV) API. Each handler checks the session
//! and its privilege first, gathers what the page shows from the stores or
//! the sweep source, and leaves the meaning of the query to [`super::query`]
//! and the drawing to [`super::plot`].

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use simcache_auth::cookie::{
    clear_session_cookie, csrf_token, session_from_cookies, set_session_cookie,
};
use simcache_auth::{Privilege, Session};
use simcache_store::cache::{InvalidationFilter, InvalidationRecord, KeyPattern, ListQuery};
use simcache_store::clock::now_ms;
use simcache_store::results::{ParamDef, ResultQuery};
use simcache_web::{ApiError, JsonBody};

use super::plot::{self, Kind, Plot, Point};
use super::query::{self, ParamRef, Range};
use super::source::{SweepPoint, SweepView};
use simcache_api::ts;

use crate::ConsoleState;

type ApiResult<T> = Result<T, ApiError>;

/// Pairs of a raw query string, percent-decoded.
fn pairs(raw: Option<String>) -> ApiResult<Vec<(String, String)>> {
    match raw {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str(&q)
            .map_err(|e| ApiError::bad_request(format!("the query string does not parse: {e}"))),
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Whether the browser reached us over TLS (directly or through a trusted
/// proxy that says so), so the cookie gets `Secure`.
fn over_tls(s: &ConsoleState, headers: &HeaderMap) -> bool {
    s.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn whoami(session: &Session, token: Option<&str>) -> Value {
    json!({
        "username": session.username,
        "role": session.role,
        "privileges": session.privileges.names(),
        "csrf": token.map(csrf_token).unwrap_or_default(),
        "expires_at": ts(session.expires_at_ms),
    })
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: Option<String>,
    password: Option<String>,
}

/// Logs in and hands the session to the browser as a cookie it cannot read
/// from script; the body has the CSRF token the pages send back.
pub async fn login(
    State(s): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Response> {
    let (Some(username), Some(password)) = (body.username, body.password) else {
        return Err(ApiError::bad_request("username and password are required"));
    };
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = simcache_auth::limiter::client_ip(peer.ip(), xff, &s.auth.config().trusted_proxies);
    let issued = s.auth.login(ip, &username, &password, None).await?;
    let max_age = (issued.session.expires_at_ms - now_ms()) / 1000;
    let cookie = set_session_cookie(&issued.token, max_age, over_tls(&s, &headers));
    let mut res = Json(whoami(&issued.session, Some(&issued.token))).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad cookie"))?,
    );
    Ok(res)
}

pub async fn logout(State(s): State<ConsoleState>, headers: HeaderMap) -> ApiResult<Response> {
    let session = s.auth.authenticate(&headers).await?;
    s.auth.logout(&session).await?;
    let mut res = Json(json!({"success": true})).into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_session_cookie(over_tls(&s, &headers))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

pub async fn me(State(s): State<ConsoleState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let session = s.auth.authenticate(&headers).await?;
    Ok(Json(whoami(&session, session_from_cookies(&headers))))
}

pub async fn overview(State(s): State<ConsoleState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let entries = s.stores.catalog.versions_with_stats().await?;
    let activity = s.stores.catalog.activity(90).await?;
    let cache = s.stores.cache.stats(None, now_ms()).await?;
    let hit_rate = (cache.total_hits + cache.total_misses > 0)
        .then(|| cache.total_hits as f64 / (cache.total_hits + cache.total_misses) as f64);
    Ok(Json(json!({
        "simulations": entries.iter().map(|(sim, st)| json!({
            "name": sim.spec.name,
            "version": sim.spec.version,
            "description": sim.spec.description,
            "status": sim.status,
            "runs": st.total_executions,
            "cached": st.cached,
            "failed": st.failed,
            "cache_hit_rate": st.cache_hit_rate,
        })).collect::<Vec<_>>(),
        "runs_by_status": activity.by_status.iter().map(|(k, n)| json!({"status": k, "count": n})).collect::<Vec<_>>(),
        "saved_by_day": activity.saved_by_day.iter().map(|(d, sec)| json!({"day": ts(*d), "seconds": sec})).collect::<Vec<_>>(),
        "cache": {
            "entries": cache.total_entries,
            "hits": cache.total_hits,
            "misses": cache.total_misses,
            "hit_rate": hit_rate,
            "size_bytes": cache.total_size_bytes,
        },
    })))
}

async fn definitions(s: &ConsoleState, name: &str, version: &str) -> ApiResult<Vec<ParamDef>> {
    Ok(s.stores.results.definitions(name, version).await?)
}

fn defs_json(defs: &[ParamDef]) -> Value {
    json!(
        defs.iter()
            .map(|d| json!({
                "key": format!("{}.{}", d.class.as_str(), d.name),
                "class": d.class.as_str(),
                "name": d.name,
                "type": d.param_type,
                "units": d.units,
                "description": d.description,
                "min": d.min,
                "max": d.max,
            }))
            .collect::<Vec<_>>()
    )
}

pub async fn simulation(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let sim = s
        .stores
        .catalog
        .get(&name, Some(&version))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no simulation {name} version {version}")))?;
    let versions = s.stores.catalog.versions(&name).await?;
    let stats = s.stores.catalog.stats(sim.id).await?;
    let defs = definitions(&s, &name, &version).await?;
    let mut params = Vec::new();
    for d in defs
        .iter()
        .filter(|d| matches!(d.param_type.as_str(), "number" | "integer"))
    {
        let st = s
            .stores
            .results
            .parameter_stats(&name, &d.name, d.class)
            .await?;
        params.push(json!({
            "key": format!("{}.{}", d.class.as_str(), d.name),
            "count": st.count, "min": st.min_value, "max": st.max_value,
            "mean": st.avg_value, "stddev": st.stddev,
        }));
    }
    Ok(Json(json!({
        "name": sim.spec.name,
        "version": sim.spec.version,
        "description": sim.spec.description,
        "versions": versions.iter().map(|v| v.spec.version.clone()).collect::<Vec<_>>(),
        "parameters": defs_json(&defs),
        "stats": stats,
        "parameter_stats": params,
    })))
}

/// The query for a simulation's runs from the console's query string.
fn result_query(
    name: &str,
    version: &str,
    q: &[(String, String)],
    defs: &[ParamDef],
) -> ApiResult<(ResultQuery, Vec<Range>)> {
    let ranges = query::ranges(q, defs).map_err(bad)?;
    let (limit, offset) = query::page(q).map_err(bad)?;
    let sort = query::value(q, "sort")
        .map(|p| query::param_ref("sort", p, defs).map_err(bad))
        .transpose()?;
    Ok((
        ResultQuery {
            simulation_name: Some(name.to_string()),
            simulation_version: Some(version.to_string()),
            status: None,
            filters: query::store_filters(&ranges),
            sort: sort.map(|p| (p.class, p.name)),
            descending: query::value(q, "desc").is_some_and(|v| v == "true"),
            limit,
            offset,
        },
        ranges,
    ))
}

/// One page of a simulation's runs, filtered by typed ranges and sorted on
/// the server.
pub async fn simulation_runs(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = pairs(raw)?;
    let defs = definitions(&s, &name, &version).await?;
    let (rq, _) = result_query(&name, &version, &q, &defs)?;
    let (rows, total) =
        tokio::try_join!(s.stores.results.search(&rq), s.stores.results.count(&rq))?;
    Ok(Json(json!({
        "total": total,
        "offset": rq.offset,
        "limit": rq.limit,
        "rows": rows.iter().map(|r| json!({
            "execution_id": r.execution_id,
            "status": r.status,
            "inputs": r.input_params,
            "outputs": r.output_params,
            "duration_seconds": r.duration_seconds,
            "created_at": ts(r.created_at_ms),
        })).collect::<Vec<_>>(),
    })))
}

/// Most points one plot draws.
pub const MAX_PLOT_POINTS: i64 = 100_000;

struct Axes {
    x: ParamRef,
    y: ParamRef,
    colour: Option<ParamRef>,
    kind: Kind,
    format: Format,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Svg,
    Json,
    Csv,
}

fn axes(q: &[(String, String)], defs: &[ParamDef]) -> ApiResult<Axes> {
    let need = |k: &str| {
        query::value(q, k)
            .ok_or_else(|| {
                bad(format!(
                    "{k} is required: a parameter such as input.temperature"
                ))
            })
            .and_then(|v| query::param_ref(k, v, defs).map_err(bad))
    };
    let kind = match query::value(q, "kind") {
        None => Kind::Scatter,
        Some(k) => Kind::parse(k)
            .ok_or_else(|| bad(format!("kind: {k:?} is not one of scatter, line, heatmap")))?,
    };
    let format = match query::value(q, "format").unwrap_or("svg") {
        "svg" => Format::Svg,
        "json" => Format::Json,
        "csv" => Format::Csv,
        f => return Err(bad(format!("format: {f:?} is not one of svg, json, csv"))),
    };
    let colour = query::value(q, "color")
        .map(|c| query::param_ref("color", c, defs).map_err(bad))
        .transpose()?;
    if kind == Kind::Heatmap && colour.is_none() {
        return Err(bad(
            "color is required for a heatmap: the value each cell shows",
        ));
    }
    Ok(Axes {
        x: need("x")?,
        y: need("y")?,
        colour,
        kind,
        format,
    })
}

fn plot_response(a: &Axes, defs: &[ParamDef], points: Vec<Point>) -> ApiResult<Response> {
    let p = Plot {
        kind: a.kind,
        x_label: query::label(&a.x, defs),
        y_label: query::label(&a.y, defs),
        color_label: a.colour.as_ref().map(|c| query::label(c, defs)),
        points,
    };
    Ok(match a.format {
        Format::Json => Json(json!({
            "x": p.x_label, "y": p.y_label, "color": p.color_label,
            "count": p.points.len(),
            "points": p.points.iter().map(|q| json!([q.x, q.y, q.c])).collect::<Vec<_>>(),
        }))
        .into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"plot.csv\"",
                ),
            ],
            plot::csv(&p).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("writing the CSV: {e}"),
                )
            })?,
        )
            .into_response(),
        Format::Svg => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            plot::svg(&p)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        )
            .into_response(),
    })
}

/// A simulation's runs as a plot (SVG), its points (JSON) or a CSV.
pub async fn simulation_plot(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = pairs(raw)?;
    let defs = definitions(&s, &name, &version).await?;
    let a = axes(&q, &defs)?;
    let (rq, _) = result_query(&name, &version, &q, &defs)?;
    let rows = s
        .stores
        .results
        .plot_points(
            &rq,
            (a.x.class, a.x.name.as_str()),
            (a.y.class, a.y.name.as_str()),
            a.colour.as_ref().map(|c| (c.class, c.name.as_str())),
            MAX_PLOT_POINTS,
        )
        .await?;
    let points = rows
        .into_iter()
        .map(|(x, y, c)| Point { x, y, c })
        .collect();
    plot_response(&a, &defs, points)
}

fn sweep_source(s: &ConsoleState) -> ApiResult<&dyn super::source::Source> {
    s.sources.get().map(|b| b.as_ref()).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sweeps are not available here: this server has no Kubernetes client (--no-controllers) and no local sweep records",
        )
    })
}

fn unavailable(e: super::source::SourceError) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
}

pub async fn sweep_list(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let list = match s.sources.get() {
        Some(src) => src.list().await.map_err(unavailable)?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "sweeps": list })))
}

async fn load_sweep(
    s: &ConsoleState,
    namespace: &str,
    name: &str,
) -> ApiResult<(std::sync::Arc<SweepView>, Vec<ParamDef>)> {
    let view = sweep_source(s)?
        .get(namespace, name)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("no SimulationSweep {namespace}/{name}")))?;
    let version = match &view.version {
        Some(v) => v.clone(),
        None => s
            .stores
            .catalog
            .get(&view.simulation, None)
            .await?
            .map(|sim| sim.spec.version)
            .unwrap_or_default(),
    };
    let defs = definitions(s, &view.simulation, &version).await?;
    Ok((view, defs))
}

/// A sweep's status and the columns its table and plots offer.
pub async fn sweep(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let (view, defs) = load_sweep(&s, &namespace, &name).await?;
    // The parameters the sweep varies, so the page can offer them first.
    let varied: Vec<String> = view
        .points
        .first()
        .map(|first| {
            first
                .inputs
                .iter()
                .filter(|(k, v)| view.points.iter().any(|p| p.inputs.get(*k) != Some(*v)))
                .map(|(k, _)| format!("input.{k}"))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "sweep": view.clone_without_points(),
        "points": view.points.len(),
        "varied": varied,
        "parameters": defs_json(&defs),
    })))
}

fn filtered<'a>(view: &'a SweepView, ranges: &[Range]) -> Vec<&'a SweepPoint> {
    view.points
        .iter()
        .filter(|p| query::within(ranges, &p.inputs, &p.outputs))
        .collect()
}

/// A page of a sweep's points, filtered and sorted here.
pub async fn sweep_points(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = pairs(raw)?;
    let (view, defs) = load_sweep(&s, &namespace, &name).await?;
    let ranges = query::ranges(&q, &defs).map_err(bad)?;
    let (limit, offset) = query::page(&q).map_err(bad)?;
    let mut rows = filtered(&view, &ranges);
    if let Some(sort) = query::value(&q, "sort") {
        let key = query::param_ref("sort", sort, &defs).map_err(bad)?;
        let of = |p: &SweepPoint| query::number_of(&key, &p.inputs, &p.outputs);
        rows.sort_by(|a, b| match (of(a), of(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (a, b) => b.is_none().cmp(&a.is_none()).reverse(),
        });
        if query::value(&q, "desc") == Some("true") {
            rows.reverse();
        }
    }
    let total = rows.len();
    let page: Vec<&SweepPoint> = rows
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    Ok(Json(
        json!({ "total": total, "offset": offset, "limit": limit, "rows": page }),
    ))
}

pub async fn sweep_plot(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let q = pairs(raw)?;
    let (view, defs) = load_sweep(&s, &namespace, &name).await?;
    let a = axes(&q, &defs)?;
    let ranges = query::ranges(&q, &defs).map_err(bad)?;
    let points = filtered(&view, &ranges)
        .into_iter()
        .filter_map(|p| {
            Some(Point {
                x: query::number_of(&a.x, &p.inputs, &p.outputs)?,
                y: query::number_of(&a.y, &p.inputs, &p.outputs)?,
                c: a.colour
                    .as_ref()
                    .and_then(|c| query::number_of(c, &p.inputs, &p.outputs)),
            })
        })
        .collect();
    plot_response(&a, &defs, points)
}

/// CachePolicies, SFM devices or systems of record in the cluster.
pub async fn resources(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path(kind): Path<String>,
) -> ApiResult<Json<Value>> {
    use super::source::ResourceKind;
    let k = ResourceKind::parse(&kind).ok_or_else(|| {
        ApiError::not_found(format!(
            "no resource list {kind:?}: cachepolicies, sfmdevices or systemsofrecord"
        ))
    })?;
    let needed = match k {
        ResourceKind::CachePolicies => Privilege::ReadCache,
        ResourceKind::Devices => Privilege::ReadSfm,
        ResourceKind::SystemsOfRecord => Privilege::ReadSor,
    };
    s.auth.authorize(&headers, needed).await?;
    let (items, cluster) = match s.sources.get() {
        Some(src) => (src.resources(k).await.map_err(unavailable)?, true),
        None => (Vec::new(), false),
    };
    Ok(Json(json!({ "items": items, "cluster": cluster })))
}

/// Log lines a run page shows at most.
const RUN_LOG_LINES: u32 = 500;

/// Everything about one run: inputs and outputs with units, provenance,
/// files, the run database's log and what the cache holds for it.
pub async fn run(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Path(execution_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = s.auth.authorize(&headers, Privilege::ReadCatalog).await?;
    let r =
        s.stores.results.get(&execution_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("no result for execution {execution_id:?}"))
        })?;
    let defs = definitions(&s, &r.simulation_name, &r.simulation_version).await?;
    let files = s.stores.results.files(&execution_id).await?;
    let logs = match simcache_api::results::run_db_location(
        &s.runs_base,
        &execution_id,
        r.run_db_path.as_deref(),
    ) {
        Ok(path) => tokio::task::spawn_blocking(move || {
            simcache_rundb::RunDb::open_read_only(&path)
                .and_then(|db| db.get_logs(None, Some(RUN_LOG_LINES)))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        Err(e) => Err(e.message),
    };
    let key = r
        .metadata
        .as_ref()
        .and_then(|m| m.get("cache_key"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let cache = match (&key, session.allows(Privilege::ReadCache)) {
        (Some(k), true) => s.stores.cache.get(k, now_ms()).await?.map(|e| {
            json!({
                "key": e.cache_key,
                "produced_by": e.execution_id,
                "hits": e.hit_count,
                "expires_at": e.expires_at_ms.map(ts),
            })
        }),
        _ => None,
    };
    let timeline: Vec<Value> = [
        Some(("registered", r.created_at_ms)),
        r.metadata
            .as_ref()
            .and_then(|m| m.get("started_at"))
            .and_then(Value::as_str)
            .and_then(simcache_store::clock::parse_timestamp_ms)
            .map(|t| ("started", t)),
        r.completed_at_ms.map(|t| ("completed", t)),
    ]
    .into_iter()
    .flatten()
    .map(|(what, t)| json!({"event": what, "at": ts(t)}))
    .collect();
    // On a cluster, the run's own conditions are the timeline.
    let conditions = match s.sources.get() {
        Some(src) => src.run_conditions(&execution_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading a run's conditions for the console");
            None
        }),
        None => None,
    };
    let (mut logs_json, mut logs_error) = (Value::Array(vec![]), Value::Null);
    match logs {
        Ok(l) => logs_json = json!(l),
        Err(e) => logs_error = json!(e),
    }
    Ok(Json(json!({
        "execution_id": r.execution_id,
        "simulation": r.simulation_name,
        "version": r.simulation_version,
        "status": r.status,
        "error_message": r.error_message,
        "duration_seconds": r.duration_seconds,
        "inputs": r.input_params,
        "outputs": r.output_params,
        "parameters": defs_json(&defs),
        "provenance": r.provenance,
        "metadata": r.metadata,
        "timeline": timeline,
        "conditions": conditions,
        "files": files,
        "logs": logs_json,
        "logs_error": logs_error,
        "cache": cache,
        "cache_key": key,
    })))
}

/// Cache entries, newest first, with the store's figures.
pub async fn cache(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let session = s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let q = pairs(raw)?;
    let (limit, offset) = query::page(&q).map_err(bad)?;
    let (entries, total) = s
        .stores
        .cache
        .list(&ListQuery {
            limit,
            offset,
            simulation_id: None,
            simulation_name: query::value(&q, "simulation").map(str::to_string),
            status: Some(simcache_store::cache::EntryStatus::Valid),
        })
        .await?;
    let stats = s.stores.cache.stats(None, now_ms()).await?;
    Ok(Json(json!({
        "total": total,
        "can_invalidate": session.allows(Privilege::InvalidateCache),
        "stats": {
            "entries": stats.total_entries,
            "hits": stats.total_hits,
            "misses": stats.total_misses,
            "size_bytes": stats.total_size_bytes,
            "invalidations": stats.invalidation_count,
        },
        "entries": entries.iter().map(|e| json!({
            "key": e.cache_key,
            "simulation": e.simulation_name,
            "version": e.simulation_version,
            "execution_id": e.execution_id,
            "hits": e.hit_count,
            "size_bytes": e.size_bytes,
            "created_at": ts(e.created_at_ms),
            "expires_at": e.expires_at_ms.map(ts),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateBody {
    key: Option<String>,
    pattern: Option<String>,
    simulation: Option<String>,
    reason: Option<String>,
}

/// Invalidates by exact key, key pattern or simulation (exactly one).
pub async fn invalidate(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InvalidateBody>,
) -> ApiResult<Json<Value>> {
    let session = s
        .auth
        .authorize(&headers, Privilege::InvalidateCache)
        .await?;
    let given = [&body.key, &body.pattern, &body.simulation]
        .iter()
        .filter(|v| v.as_deref().is_some_and(|t| !t.trim().is_empty()))
        .count();
    if given != 1 {
        return Err(bad(
            "give exactly one of key, pattern or simulation (nothing else invalidates everything)",
        ));
    }
    let mut filter = InvalidationFilter::default();
    let pattern_text = body.key.clone().or(body.pattern.clone());
    if let Some(sim) = &body.simulation {
        filter.simulation_name = Some(sim.trim().to_string());
    }
    let pattern = match &pattern_text {
        Some(p) => {
            let p = p.trim();
            if body.key.is_some() && p.contains(['*', '?', '[']) {
                return Err(bad(format!("key: {p:?} is a pattern; send it as pattern")));
            }
            filter.pattern = Some(p.to_string());
            Some(KeyPattern::parse(p).map_err(|e| bad(format!("pattern: {e}")))?)
        }
        None => None,
    };
    let n = s
        .stores
        .cache
        .invalidate(
            &filter,
            pattern.as_ref(),
            &InvalidationRecord {
                requested_by: Some(session.username.clone()),
                reason: body.reason.or(Some("web console".into())),
            },
        )
        .await?;
    Ok(Json(json!({ "invalidated": n })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_need_named_axes_and_known_formats() {
        let q = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let e = axes(&q(&[("y", "output.stress")]), &[]).err().unwrap();
        assert!(e.message.contains("x is required"), "{}", e.message);
        let e = axes(
            &q(&[("x", "input.t"), ("y", "output.s"), ("format", "png")]),
            &[],
        )
        .err()
        .unwrap();
        assert!(e.message.contains("svg, json, csv"));
        let e = axes(
            &q(&[("x", "input.t"), ("y", "input.p"), ("kind", "heatmap")]),
            &[],
        )
        .err()
        .unwrap();
        assert!(e.message.contains("color is required"));
        let a = axes(
            &q(&[("x", "input.t"), ("y", "output.s"), ("kind", "line")]),
            &[],
        )
        .unwrap();
        assert!(a.kind == Kind::Line && a.format == Format::Svg && a.colour.is_none());
    }
}

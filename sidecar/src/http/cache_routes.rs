//! The cache routes, wire-compatible with sim2l's cache service. Each handler
//! first checks its privilege.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use simcache_auth::Privilege;
use simcache_store::cache::{
    CacheEntry, EntryStatus, InvalidationFilter, InvalidationRecord, KeyPattern, ListQuery,
};
use simcache_store::clock::{format_ms, now_ms};
use simcache_web::{ApiError, JsonBody};

use super::AppState;
use crate::cache::key;
use crate::cache::request::PutRequest;

pub const DEFAULT_PAGE: i64 = 25;
pub const MAX_PAGE: i64 = 1000;

/// The route of one entry, as the request metrics name it.
pub const ENTRY_ROUTE: &str = "/cache/{*key}";

/// The `/cache/...` paths that are routes of their own, never entry keys.
pub const FIXED_CACHE_PATHS: [&str; 3] = ["stats", "entries", "invalidate"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/cache", post(put).delete(delete_all))
        .route("/cache/stats", get(stats))
        .route("/cache/entries", get(entries))
        .route("/cache/invalidate", post(invalidate))
        .route(ENTRY_ROUTE, get(get_entry).delete(delete_entry))
}

fn hit_response(h: &crate::cache::hot::HotEntry, hit_count: i64) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &h.body {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.with_hit_count(hit_count),
        )
            .into_response(),
        Err(err) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            err.to_string(),
        )
        .into_response(),
    }
}

/// The seed's full entry, as a JSON value (listings).
fn entry_json(e: &CacheEntry, hit_count: i64) -> Value {
    json!({
        "cache_key": e.cache_key,
        "simulation_id": e.simulation_id,
        "simulation_name": e.simulation_name,
        "simulation_version": e.simulation_version,
        "execution_id": e.execution_id,
        "squid_id": e.squid_id,
        "input_hash": e.input_hash,
        "run_db_path": e.run_db_path,
        "created_at": format_ms(e.created_at_ms),
        "expires_at": e.expires_at_ms.map(format_ms),
        "ttl_hours": e.expires_at_ms.map(|x| (x - e.created_at_ms) as f64 / 3_600_000.0),
        "hit_count": hit_count,
        "metadata": e.metadata,
    })
}

fn key_from_path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(k) = p.map_err(|e| {
        ApiError::bad_request(format!("invalid cache key in path: {}", e.body_text()))
    })?;
    key::validate(&k).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(k)
}

async fn get_entry(
    State(s): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::response::Response, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let key = key_from_path(path)?;
    match s.cache.get(&key).await? {
        Some(hit) => Ok(hit_response(&hit.entry, hit.hit_count)),
        None => Err(ApiError::not_found("Not found")),
    }
}

async fn put(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PutRequest>,
) -> Result<Json<Value>, ApiError> {
    let session = s.auth.authorize(&headers, Privilege::WriteCache).await?;
    let entry = req
        .into_entry(now_ms(), session.user_id)
        .map_err(|e| ApiError::unprocessable(e.0))?;
    let key = entry.cache_key.clone();
    s.cache.put(entry).await?;
    Ok(Json(json!({ "success": true, "cache_key": key })))
}

async fn delete_entry(
    State(s): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    s.auth
        .authorize(&headers, Privilege::InvalidateCache)
        .await?;
    let key = key_from_path(path)?;
    if s.cache.delete(&key).await? {
        Ok(Json(json!({ "deleted_count": 1, "cache_key": key })))
    } else {
        Err(ApiError::not_found("Not found"))
    }
}

async fn delete_all(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::Admin).await?;
    let n = s.cache.delete_all().await?;
    Ok(Json(json!({ "deleted": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    simulation_id: Option<i64>,
    simulation_name: Option<String>,
    simulation_version: Option<String>,
    pattern: Option<String>,
    reason: Option<String>,
}

async fn invalidate(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<InvalidateBody>,
) -> Result<Json<Value>, ApiError> {
    let session = s
        .auth
        .authorize(&headers, Privilege::InvalidateCache)
        .await?;
    let pattern = b
        .pattern
        .as_deref()
        .map(KeyPattern::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("pattern: {e}")))?;
    if b.reason.as_ref().is_some_and(|r| r.len() > 4096) {
        return Err(ApiError::bad_request("reason is longer than 4096 bytes"));
    }
    let filter = InvalidationFilter {
        simulation_id: b.simulation_id,
        simulation_name: b.simulation_name,
        simulation_version: b.simulation_version,
        pattern: b.pattern,
    };
    let record = InvalidationRecord {
        requested_by: Some(session.username.clone()),
        reason: b.reason,
    };
    let n = s
        .cache
        .invalidate(&filter, pattern.as_ref(), &record)
        .await?;
    Ok(Json(json!({ "success": true, "invalidated_count": n })))
}

/// Parses an optional integer query parameter, naming it when it is not one.
fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter {name} must be an integer, got {v:?}"
            ))
        }),
    }
}

async fn stats(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let sim = int_param(&q, "simulation_id")?;
    let st = s.cache.stats(sim).await?;
    let lookups = st.total_hits + st.total_misses;
    let rate = if lookups > 0 {
        st.total_hits as f64 / lookups as f64
    } else {
        0.0
    };
    Ok(Json(json!({
        "total_entries": st.total_entries,
        "total_hits": st.total_hits,
        "total_misses": st.total_misses,
        "total_accesses": lookups,
        "hit_rate": (rate * 10_000.0).round() / 10_000.0,
        "hit_rate_percent": (rate * 10_000.0).round() / 100.0,
        "total_size_bytes": st.total_size_bytes,
        "total_size_mb": ((st.total_size_bytes as f64 / 1_048_576.0) * 100.0).round() / 100.0,
        "invalidation_count": st.invalidation_count,
        "evictions": st.evictions,
        "memory_tier": {
            "enabled": s.cache.hot().enabled(),
            "entries": s.cache.hot().entry_count(),
            "bytes": s.cache.hot().weighted_bytes(),
        },
    })))
}

async fn entries(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let limit = int_param(&q, "limit")?.unwrap_or(DEFAULT_PAGE);
    let offset = int_param(&q, "offset")?.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    if offset < 0 {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    let status = match q.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(EntryStatus::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status must be 'valid' or 'invalidated', got {v:?}"
            ))
        })?),
    };
    let query = ListQuery {
        limit,
        offset,
        simulation_id: int_param(&q, "simulation_id")?,
        simulation_name: q.get("simulation_name").filter(|v| !v.is_empty()).cloned(),
        status,
    };
    let (rows, total) = s.cache.list(&query).await?;
    let now = now_ms();
    let entries: Vec<Value> = rows
        .iter()
        .map(|e| {
            let mut v = entry_json(e, e.hit_count);
            v["last_accessed_at"] = json!(format_ms(e.last_accessed_ms));
            v["access_count"] = json!(e.access_count);
            v["size_bytes"] = json!(e.size_bytes);
            v["status"] = json!(if e.status == EntryStatus::Valid && !e.is_live(now) {
                "expired"
            } else {
                e.status.as_str()
            });
            v
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "total": total, "limit": limit, "offset": offset }),
    ))
}

//! Health, readiness, metrics, and the documentation of the session routes
//! (served by `simcache-auth`, documented here so the OpenAPI document lists them).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(health))
}

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "alive", body = Value)))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, body = Value), (status = 503, body = Value)))]
async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    match s.stores.sql.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "error": "database unavailable"})),
            )
        }
    }
}

/// sim2l's health route: `{"status", "service", "backend"}`.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, body = Value), (status = 503, body = Value)))]
async fn health(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let backend = match s.stores.sql.dialect() {
        simcache_store::sql::Dialect::Sqlite => "sqlite",
        simcache_store::sql::Dialect::Postgres => "postgresql",
    };
    match s.stores.sql.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "healthy", "service": "catalog", "backend": backend})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "unhealthy", "service": "catalog", "backend": backend, "error": "database unavailable"}),
            ),
        ),
    }
}

/// Prometheus metrics in the text format.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        simcache_web::metrics::render(&s.registry),
    )
}

/// This document (OpenAPI 3.1), generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, body = Value)))]
#[allow(dead_code)]
pub(super) fn openapi_doc() {}

/// Log in: `{"username", "password", "ttl_hours"?}` → a session token. Five
/// attempts per client and username per minute (429 beyond).
#[utoipa::path(post, path = "/session/login", tag = "sessions", request_body = Value,
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 401, body = Value), (status = 429, body = Value)))]
#[allow(dead_code)]
pub(super) fn login_doc() {}

/// Extend the calling session: `{"ttl_hours"?}`.
#[utoipa::path(post, path = "/session/refresh", tag = "sessions", request_body = Value,
    responses((status = 200, body = Value), (status = 401, body = Value)), security(("session" = [])))]
#[allow(dead_code)]
pub(super) fn refresh_doc() {}

/// End the calling session everywhere.
#[utoipa::path(post, path = "/session/logout", tag = "sessions",
    responses((status = 200, body = Value), (status = 401, body = Value)), security(("session" = [])))]
#[allow(dead_code)]
pub(super) fn logout_doc() {}

/// Who the calling session belongs to and what it may do.
#[utoipa::path(get, path = "/session", tag = "sessions",
    responses((status = 200, body = Value), (status = 401, body = Value)), security(("session" = [])))]
#[allow(dead_code)]
pub(super) fn whoami_doc() {}

/// Create a session owned by no user (needs `manage_users`).
#[utoipa::path(post, path = "/session/anonymous", tag = "sessions", request_body = Value,
    responses((status = 200, body = Value), (status = 401, body = Value), (status = 403, body = Value)), security(("session" = [])))]
#[allow(dead_code)]
pub(super) fn anonymous_doc() {}

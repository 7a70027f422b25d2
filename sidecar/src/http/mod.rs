//! The sidecar's HTTP surface: cache routes, session routes, the run API,
//! health, metrics. Each connection is served by a [`FrontDoor`]: memory-tier
//! hits are answered there ([`HotGet`]), everything else by the router.

mod cache_routes;
mod front_door;
mod hot_get;
mod run_routes;

pub use front_door::FrontDoor;
pub use hot_get::HotGet;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::Registry;
use serde_json::json;
use simcache_auth::Authenticator;
use simcache_web::error::{method_not_allowed_fallback, not_found_fallback};
use simcache_web::metrics::HttpMetrics;

use crate::cache::CacheService;
use crate::run::RunService;

/// What the handlers share. One `Arc`: axum clones the state for every
/// request, and one reference count is cheaper than three.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

pub struct Services {
    pub cache: Arc<CacheService>,
    pub auth: Arc<Authenticator>,
    pub registry: Registry,
}

impl AppState {
    pub fn new(cache: Arc<CacheService>, auth: Arc<Authenticator>, registry: Registry) -> Self {
        AppState(Arc::new(Services {
            cache,
            auth,
            registry,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

pub fn router(
    state: AppState,
    run: Option<Arc<RunService>>,
    sor: Option<simcache_sor::http::SorState>,
    http_metrics: HttpMetrics,
    max_body_bytes: usize,
) -> Router {
    let run_routes = match run {
        Some(run) => run_routes::routes(run),
        None => Router::new(),
    };
    let sor_routes = match sor {
        Some(s) => simcache_sor::http::router(s),
        None => Router::new(),
    };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(cache_routes::routes())
        .with_state(state.clone())
        .merge(simcache_auth::routes::router(state.auth.clone()))
        .merge(run_routes)
        .merge(sor_routes)
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            simcache_web::metrics::track,
        ))
}

/// The pod's outside door: health and metrics only, for the kubelet's
/// probes and Prometheus, which reach the pod by its IP. Everything else —
/// the cache, sessions, the run API, systems of record — is on the
/// loopback listener, for the simulation in the same pod.
pub fn probe_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
}

async fn health(State(s): State<AppState>) -> impl IntoResponse {
    let backend = s.cache.backend();
    match s.cache.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "healthy", "service": "cache", "backend": backend})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "unhealthy", "service": "cache", "backend": backend,
                            "error": "store unavailable"}),
                ),
            )
        }
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    s.cache.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        simcache_web::metrics::render(&s.registry),
    )
}

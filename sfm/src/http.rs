//! The proxy's HTTP face: the SFM service's routes and query parameters
//! unchanged, plus `GET /cache/stats`, `DELETE /cache/device` and
//! `GET /health`. Errors of our own use FastAPI's `{"detail": ...}` shape so
//! SFM clients understand them; upstream's errors pass through verbatim.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::json;
use simcache_auth::{Authenticator, Privilege, Session};

use crate::route::{self, Op};
use crate::service::{Answer, SfmService, Source};

#[derive(Clone)]
pub struct SfmState {
    pub service: Arc<SfmService>,
    /// `None` on the pod-local loopback listener: no auth there.
    pub auth: Option<Arc<Authenticator>>,
    pub max_body_bytes: usize,
}

pub fn router(state: SfmState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/cache/stats", get(stats))
        .route("/cache/device", delete(clear_device))
        .fallback(device_route)
        .with_state(state)
}

pub const SOURCE_HEADER: &str = "x-simcache-sfm-source";
pub const ERROR_HEADER: &str = "x-simcache-sfm-error";

fn detail(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = json!({ "detail": msg.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn param_error(e: &route::ParamError) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [(header::CONTENT_TYPE, "application/json")],
        e.body().to_string(),
    )
        .into_response()
}

/// The caller's session when this listener has auth (`None`: the
/// pod-local listener, where the pod is the boundary).
async fn check(
    state: &SfmState,
    headers: &http::HeaderMap,
    p: Privilege,
) -> Result<Option<Arc<Session>>, Response> {
    let Some(auth) = &state.auth else {
        return Ok(None);
    };
    auth.authorize(headers, p)
        .await
        .map(Some)
        .map_err(|e| detail(e.status, e.message))
}

/// The 403 for a run's session outside its Simulation's devices (or a
/// control it does not declare); `None` when it may.
fn refusal(
    session: Option<&Session>,
    dev: &crate::registry::Device,
    control: bool,
) -> Option<Response> {
    match session {
        Some(s) if !s.may_use_device(&dev.namespace, &dev.name, control) => Some(detail(
            StatusCode::FORBIDDEN,
            if control {
                format!(
                    "this session may not control device {}: its Simulation does not declare control of it",
                    dev.label
                )
            } else {
                format!(
                    "this session may not use device {}: its Simulation does not list it",
                    dev.label
                )
            },
        )),
        _ => None,
    }
}

async fn health() -> Response {
    let now = simcache_store::clock::now_ms() as f64 / 1000.0;
    axum::Json(json!({ "status": "ok", "heartbeat": now, "service": "simcache-sfm-proxy" }))
        .into_response()
}

async fn stats(State(state): State<SfmState>, req: Request) -> Response {
    let session = match check(&state, req.headers(), Privilege::ReadSfm).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let store = state.service.store();
    let (amounts, devices) = match (store.amounts(None).await, store.devices().await) {
        (Ok(a), Ok(d)) => (a, d),
        (Err(e), _) | (_, Err(e)) => {
            return detail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cache store unavailable: {e}"),
            );
        }
    };
    let served: Vec<_> = devices
        .iter()
        .filter(|d| {
            state
                .service
                .registry()
                .get(&d.conn_key)
                .is_some_and(|dev| refusal(session.as_deref(), &dev, false).is_none())
        })
        .collect();
    let sum = |f: fn(&simcache_store::sfm::Counters) -> i64| -> i64 {
        served.iter().map(|d| f(&d.counters)).sum()
    };
    let (hits, misses) = (sum(|c| c.hits), sum(|c| c.misses));
    axum::Json(json!({
        // The SFM service's own keys.
        "devices": served.len(),
        "events": amounts.events,
        "waveforms": amounts.waveforms,
        "monitor_status": amounts.monitor_status,
        // Ours.
        "device_info": amounts.info,
        "event_lists": amounts.event_lists,
        "bytes": amounts.bytes,
        "hits": hits,
        "misses": misses,
        "upstream_calls": sum(|c| c.upstream_calls),
        "coalesced": sum(|c| c.coalesced),
        "stale_served": sum(|c| c.stale_served),
        "hit_rate": if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 },
    }))
    .into_response()
}

async fn clear_device(State(state): State<SfmState>, req: Request) -> Response {
    let session = match check(&state, req.headers(), Privilege::InvalidateCache).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (transport, _) = match route::parse_query(req.uri().query().unwrap_or("")) {
        Ok(t) => t,
        Err(e) => return param_error(&e),
    };
    let Some(dev) = state.service.registry().get(&transport.conn_key()) else {
        return detail(StatusCode::FORBIDDEN, "device not registered");
    };
    if let Some(r) = refusal(session.as_deref(), &dev, true) {
        return r;
    }
    match state.service.flush_device(&dev).await {
        Ok(a) => axum::Json(json!({
            "device_info": a.info,
            "events": a.events + a.event_lists,
            "waveforms": a.waveforms,
            "monitor_status": a.monitor_status,
        }))
        .into_response(),
        Err(e) => detail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cache store unavailable: {e}"),
        ),
    }
}

async fn device_route(State(state): State<SfmState>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if !path.starts_with("/device/") {
        return detail(StatusCode::NOT_FOUND, "Not Found");
    }
    let control = !(method == Method::GET || method == Method::HEAD);
    let privilege = if control {
        Privilege::ControlSfm
    } else {
        Privilege::ReadSfm
    };
    let session = match check(&state, req.headers(), privilege).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let op = match route::classify(&method, &path) {
        Ok(op) => op,
        Err(e) => return param_error(&e),
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let (transport, flags) = match route::parse_query(&query) {
        Ok(t) => t,
        Err(e) => return param_error(&e),
    };
    let Some(dev) = state.service.registry().get(&transport.conn_key()) else {
        return detail(StatusCode::FORBIDDEN, "device not registered");
    };
    if let Some(r) = refusal(session.as_deref(), &dev, control) {
        return r;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let answer = if op.is_cached_read() && method != Method::POST {
        state.service.read(&dev, op, flags, &query).await
    } else if op == Op::Info {
        // POST /device/connect: the same data as /device/info.
        state.service.read(&dev, op, flags, &query).await
    } else {
        let (parts, body) = req.into_parts();
        let body = match to_bytes(body, state.max_body_bytes).await {
            Ok(b) => b,
            Err(_) => {
                return detail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {} bytes", state.max_body_bytes),
                );
            }
        };
        state
            .service
            .pass_through(&dev, op, method, &path, &query, &parts.headers, body)
            .await
    };
    let m = &state.service.metrics().requests;
    m.with_label_values(&[
        dev.label.as_str(),
        op.route(),
        answer.source.as_str(),
        answer.status.as_str(),
    ])
    .inc();
    respond(answer, if_none_match.as_ref())
}

fn respond(a: Answer, if_none_match: Option<&HeaderValue>) -> Response {
    let not_modified = a.status == StatusCode::OK
        && match (&a.etag, if_none_match.and_then(|v| v.to_str().ok())) {
            (Some(tag), Some(inm)) => inm.split(',').any(|t| t.trim() == tag || t.trim() == "*"),
            _ => false,
        };
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        a.status
    };
    let mut builder = Response::builder().status(status);
    let ct = a
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static("application/json"));
    builder = builder.header(header::CONTENT_TYPE, ct);
    if a.source != Source::Proxy {
        builder = builder.header(SOURCE_HEADER, a.source.as_str());
    }
    if let Some(tag) = &a.etag {
        builder = builder.header(header::ETAG, tag.as_str());
    }
    if let Some(age) = a.age_secs {
        builder = builder.header(header::AGE, age);
    }
    if let Some(err) = &a.upstream_error
        && let Ok(v) = HeaderValue::from_str(&err.replace(['\r', '\n'], " "))
    {
        builder = builder.header(ERROR_HEADER, v);
    }
    if let Some(s) = a.retry_after_secs {
        builder = builder.header(header::RETRY_AFTER, s);
    }
    let body = if not_modified {
        Body::empty()
    } else {
        Body::from(a.body)
    };
    builder.body(body).unwrap_or_else(|_| {
        detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not build the response",
        )
    })
}

/// The stand-alone proxy also serves `GET /metrics` (the pod-local listener
/// leaves that to the sidecar's main port).
pub fn with_metrics(router: Router, registry: prometheus::Registry) -> Router {
    router.route(
        "/metrics",
        get(move || {
            let text = simcache_web::metrics::render(&registry);
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}

/// Serves the proxy on `listener` with the project's one server builder
/// (timeouts, connection cap) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: simcache_web::server::Limits,
    connections: Option<simcache_web::server::ConnectionMetrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let make = move |peer| simcache_web::server::with_peer(router.clone(), peer);
    simcache_web::server::serve(listener, limits, connections, make, shutdown).await
}

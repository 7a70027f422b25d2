//! A run pod's SFM listener when the shared tier serves SFM: every request
//! goes to the tier with the pod's session, so the devices' upstream
//! credentials and the one cache of every pod stay there. The tier limits
//! the session to its Simulation's devices; this listener adds nothing but
//! the session (it is loopback-only: the pod is its boundary).

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SFM_PREFIX;
use super::client::TierClient;

#[derive(Clone)]
struct Forward {
    tier: TierClient,
    max_body_bytes: usize,
}

/// Headers a client's request carries to the tier.
const REQUEST_HEADERS: [HeaderName; 3] =
    [header::CONTENT_TYPE, header::ACCEPT, header::IF_NONE_MATCH];

/// Headers of the tier's answer passed back (the SFM proxy's own included).
const ANSWER_HEADERS: [&str; 7] = [
    "content-type",
    "etag",
    "age",
    "retry-after",
    simcache_sfm::http::SOURCE_HEADER,
    simcache_sfm::http::ERROR_HEADER,
    "cache-control",
];

pub fn router(tier: TierClient, max_body_bytes: usize) -> Router {
    Router::new().fallback(forward).with_state(Forward {
        tier,
        max_body_bytes,
    })
}

fn detail(status: StatusCode, msg: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "detail": msg }).to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The SFM proxy's own routes, the only ones forwarded: nothing else of
/// the tier is reached through this listener.
fn forwardable(path: &str) -> bool {
    let routes = path.starts_with("/device/")
        || matches!(path, "/health" | "/cache/stats" | "/cache/device");
    // No dot segments, encoded or not, and no empty ones.
    let lower = path.to_ascii_lowercase();
    routes && !lower.contains("/.") && !lower.contains("%2e") && !lower.contains("//")
}

async fn forward(State(f): State<Forward>, req: Request) -> Response {
    if !forwardable(req.uri().path()) {
        return detail(StatusCode::NOT_FOUND, "Not Found".into());
    }
    let target = format!(
        "{SFM_PREFIX}{}",
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, f.max_body_bytes).await else {
        return detail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {} bytes", f.max_body_bytes),
        );
    };
    let mut out = f.tier.at(parts.method, &target).body(body);
    for name in REQUEST_HEADERS {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            return detail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the shared tier is unreachable: {e}"),
            );
        }
    };
    let mut r = Response::builder().status(answer.status());
    for name in ANSWER_HEADERS {
        if let Some(v) = answer.headers().get(name) {
            r = r.header(name, v);
        }
    }
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return detail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the shared tier's answer broke off: {e}"),
            );
        }
    };
    r.body(Body::from(bytes)).unwrap_or_else(|_| {
        detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not build the response".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sfm_routes_are_forwarded() {
        for ok in [
            "/device/info",
            "/device/event/1/waveform",
            "/cache/stats",
            "/health",
        ] {
            assert!(forwardable(ok), "{ok}");
        }
        for bad in [
            "/../cache/list",
            "/device/../../cache/entry",
            "/device/%2e%2e/x",
            "/device/%2E%2E/x",
            "//tier/v1/cache/list",
            "/tier/v1/cache/entry",
            "/cache/entries",
        ] {
            assert!(!forwardable(bad), "{bad}");
        }
    }
}

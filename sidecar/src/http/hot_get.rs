//! The memory-tier answer to `GET /cache/{key}`, given before the router.
//!
//! A memory-tier hit is the sidecar's hottest request and its cheapest work: a
//! map lookup and a body prepared when the entry entered the tier. Measured on
//! the 2-core bench machine, the router's per-request machinery (request
//! extensions, extractors, boxed middleware futures) cost more than that work.
//! So this path answers only when the answer is certainly a 200 from the
//! memory tier for a session this process has already checked. Everything else
//! (a miss, an unknown, expired or unprivileged session, a percent-escaped
//! key, a name the router gives another route) goes to the router, which owns
//! every error and every other route.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use simcache_auth::Privilege;
use simcache_auth::authenticator::SESSION_HEADER;
use simcache_web::metrics::{HttpMetrics, RouteSeries};

use super::AppState;
use super::cache_routes::{ENTRY_ROUTE, FIXED_CACHE_PATHS};
use crate::cache::key;

pub struct HotGet {
    state: AppState,
    /// The series the router's metrics layer would give a 200 of this route.
    served: RouteSeries,
}

impl HotGet {
    pub fn new(state: AppState, metrics: &HttpMetrics) -> Self {
        HotGet {
            state,
            served: metrics.series(ENTRY_ROUTE, "GET", "200"),
        }
    }

    /// The response to `req` from the memory tier, or `None` to route it.
    pub fn try_serve(&self, req: &Request) -> Option<Response> {
        let started = Instant::now();
        if req.method() != Method::GET {
            return None;
        }
        let key = hot_key(req.uri().path())?;
        let session = self
            .state
            .auth
            .recent_session(req.headers().get(SESSION_HEADER))?;
        if !session.allows(Privilege::ReadCache) {
            return None;
        }
        let hit = self.state.cache.get_hot(key)?;
        // An entry whose JSON could not be prepared is the router's 500.
        let body = hit.entry.body.as_ref().ok()?.with_hit_count(hit.hit_count);
        let mut resp = Response::new(Body::from(body));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.served.record(started);
        Some(resp)
    }
}

/// The cache key in `path` when the router would give it to the entry route
/// unchanged: no percent-escapes to decode, not a fixed `/cache/...` route.
fn hot_key(path: &str) -> Option<&str> {
    let key = path.strip_prefix("/cache/")?;
    if key.contains('%') || FIXED_CACHE_PATHS.contains(&key) {
        return None;
    }
    key::validate(key).ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_plain_keys_only() {
        assert_eq!(
            hot_key("/cache/thermal_sim/350K/result"),
            Some("thermal_sim/350K/result")
        );
        for p in [
            "/cache/stats",
            "/cache/entries",
            "/cache/invalidate",
            "/cache/",
            "/cache",
            "/cache/a%2Fb",
            "/cache/a//b",
            "/cache/../x",
            "/health",
        ] {
            assert_eq!(hot_key(p), None, "{p}");
        }
    }
}

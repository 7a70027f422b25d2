//! The web console at `/ui/`: a few static files built into the binary (no
//! CDN: clusters are often offline) and a JSON API under `/ui/api/` that the
//! pages call with the session cookie. Plots are SVG drawn here
//! (`plot`); sweeps come from a [`source::Source`] the serving binary
//! hands in (the operator's view of the cluster, or local mode's records).
//! Mounted on the API's router by the operator and by `simcache ui`
//! ([`mount`]).

mod api;
mod plot;
mod query;
pub mod source;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use simcache_auth::Authenticator;
use simcache_store::Stores;

/// Where the console finds sweeps; set once the process knows (the
/// operator after it has a Kubernetes client, `simcache ui` at start).
pub type SourceSlot = Arc<OnceLock<Arc<dyn source::Source>>>;

/// What the console's handlers read: the API's stores and authenticator,
/// where sweeps come from, and how cookies are set.
#[derive(Clone)]
pub struct ConsoleState {
    pub stores: Stores,
    pub auth: Arc<Authenticator>,
    /// Run databases are only read from under this directory.
    pub runs_base: PathBuf,
    pub sources: SourceSlot,
    /// Console cookies get `Secure` (TLS ends in front of us).
    pub secure_cookies: bool,
}

/// The console as an extension of the API's router: it shares the API's
/// stores and sessions, and shows the sweeps `sources` is given.
pub fn mount(sources: SourceSlot, secure_cookies: bool) -> simcache_api::Extension {
    Box::new(move |api: &simcache_api::AppState| {
        router(ConsoleState {
            stores: api.stores.clone(),
            auth: api.auth.clone(),
            runs_base: api.runs_base.clone(),
            sources,
            secure_cookies,
        })
    })
}

/// No script, style, image or connection from anywhere but here; no
/// framing; no plugins; forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// Headers every console response carries.
pub fn harden(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
}

async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    harden(res.headers_mut());
    res
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == name) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => {
            simcache_web::ApiError::not_found(format!("no console asset {name:?}")).into_response()
        }
    }
}

/// The console's routes (pages, assets, its API).
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/api/login", post(api::login))
        .route("/ui/api/logout", post(api::logout))
        .route("/ui/api/me", get(api::me))
        .route("/ui/api/overview", get(api::overview))
        .route("/ui/api/simulations/{name}/{version}", get(api::simulation))
        .route(
            "/ui/api/simulations/{name}/{version}/runs",
            get(api::simulation_runs),
        )
        .route(
            "/ui/api/simulations/{name}/{version}/plot",
            get(api::simulation_plot),
        )
        .route("/ui/api/sweeps", get(api::sweep_list))
        .route("/ui/api/sweeps/{namespace}/{name}", get(api::sweep))
        .route(
            "/ui/api/sweeps/{namespace}/{name}/points",
            get(api::sweep_points),
        )
        .route(
            "/ui/api/sweeps/{namespace}/{name}/plot",
            get(api::sweep_plot),
        )
        .route("/ui/api/runs/{execution_id}", get(api::run))
        .route("/ui/api/cache", get(api::cache))
        .route("/ui/api/cache/invalidate", post(api::invalidate))
        .route("/ui/api/cluster/{kind}", get(api::resources))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": "no such console page or API route"})),
            )
        })
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_nothing_from_elsewhere_and_no_inline_code() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        let mut h = HeaderMap::new();
        harden(&mut h);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn the_pages_load_no_inline_script_or_style() {
        let html = std::str::from_utf8(INDEX).unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "{html}"
        );
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(html.contains("/ui/assets/app.js"));
        let js = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!js.contains("eval(") && !js.contains("new Function"));
    }
}

//! simcache's HTTP API over the shared store: catalog, results, files,
//! run-database ingest and sessions, with
//! health, readiness, metrics and the OpenAPI document generated from the
//! handlers' annotations (utoipa): the router and the document are built from
//! the same list, so they cannot drift.

mod catalog;
mod files;
mod ingest;
pub mod reference;
pub mod results;
pub mod server;
mod system;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use prometheus::Registry;
use simcache_auth::Authenticator;
use simcache_store::Stores;
use simcache_web::error::{method_not_allowed_fallback, not_found_fallback};
use simcache_web::metrics::HttpMetrics;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub auth: Arc<Authenticator>,
    pub registry: Registry,
    /// Run databases are only read from under this directory.
    pub runs_base: PathBuf,
    /// Largest run database a sidecar may upload.
    pub max_ingest_bytes: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "simcache operator API",
        description = "Catalog, results and files of simcache, wire-compatible with sim2l's catalog and results services. Authenticate with the X-Session-ID header (POST /session/login).",
    ),
    paths(
        system::openapi_doc,
        system::login_doc,
        system::refresh_doc,
        system::logout_doc,
        system::whoami_doc,
        system::anonymous_doc,
    ),
    modifiers(&SessionHeader),
    tags(
        (name = "catalog", description = "Registered simulations and their executions"),
        (name = "results", description = "Introspected run results, typed and searchable"),
        (name = "files", description = "Run artifacts and the folder hierarchy"),
        (name = "runs", description = "Run databases uploaded by the sidecars of simulation pods"),
        (name = "sessions", description = "Login and sessions (shared with the sidecars)"),
        (name = "system", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

struct SessionHeader;

impl utoipa::Modify for SessionHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Session-ID"))),
        );
    }
}

/// Routes another crate adds to the API's router (the web console), built
/// from the API's state once the stores and the authenticator exist. They
/// sit behind the same CSRF guard, body limit and request metrics.
pub type Extension = Box<dyn FnOnce(&AppState) -> Router + Send>;

/// The whole API (with the extensions' routes) and its OpenAPI document.
pub fn router(
    state: AppState,
    extensions: Vec<Extension>,
    http_metrics: HttpMetrics,
    max_body_bytes: usize,
) -> (Router, utoipa::openapi::OpenApi) {
    // Authentication before anything reads a body: a caller without a valid
    // session learns only that (401), not what the route expects.
    let session = || axum::middleware::from_fn_with_state(state.auth.clone(), require_session);
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(catalog::routes().route_layer(session()))
        .merge(results::routes().route_layer(session()))
        .merge(files::routes().route_layer(session()))
        .merge(system::routes())
        .merge(ingest::routes())
        .with_state(state.clone())
        .split_for_parts();
    let doc_json = Arc::new(doc.clone());
    let mut app = api.merge(simcache_auth::routes::router(state.auth.clone()));
    for extend in extensions {
        app = app.merge(extend(&state));
    }
    let app = app
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let d = doc_json.clone();
                async move { axum::Json((*d).clone()) }
            }),
        )
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Before anything else reads the request: a cookie-borne session
        // does nothing state-changing without the console's CSRF token.
        .layer(axum::middleware::from_fn(simcache_auth::cookie::csrf_guard))
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            simcache_web::metrics::track,
        ));
    (app, doc)
}

/// Refuses a request without a valid session before its handler (and its
/// body extractor) runs; the handler still checks its privilege.
async fn require_session(
    axum::extract::State(auth): axum::extract::State<Arc<Authenticator>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match auth.authenticate(req.headers()).await {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// sim2l's naive UTC timestamps (`2024-01-01T12:00:00`).
pub fn ts(ms: i64) -> String {
    simcache_store::clock::format_ms(ms)
}

/// A query string that does not parse is a 400 naming the problem.
pub(crate) fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, simcache_web::ApiError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| simcache_web::ApiError::bad_request(e.body_text()))
}

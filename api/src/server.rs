//! Wiring the API server: store, authenticator, router, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use prometheus::Registry;
use simcache_auth::{AuthConfig, Authenticator};
use simcache_store::{Backend, Stores};
use simcache_web::metrics::HttpMetrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{AppState, Extension, router};

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub runs_base: PathBuf,
    pub max_body_bytes: usize,
    /// Largest run database a sidecar may upload.
    pub max_ingest_bytes: usize,
    pub auth: AuthConfig,
    /// Creates user `admin` with this password when no admin exists.
    pub admin_password: Option<String>,
    /// Timeouts and the connection cap of the listener.
    pub limits: simcache_web::server::Limits,
}

impl ApiConfig {
    pub fn new(backend: Backend, runs_base: PathBuf) -> Self {
        ApiConfig {
            backend,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            runs_base,
            max_body_bytes: 1024 * 1024,
            max_ingest_bytes: 1 << 30,
            // The operator's router guards every route against CSRF, so
            // the console's cookie may stand in for X-Session-ID.
            auth: AuthConfig {
                cookie_sessions: true,
                ..AuthConfig::default()
            },
            admin_password: None,
            limits: Default::default(),
        }
    }
}

pub struct RunningApi {
    pub addr: SocketAddr,
    pub stores: Stores,
    pub auth: Arc<Authenticator>,
    pub openapi: utoipa::openapi::OpenApi,
    /// Where /metrics reads from (the controllers register here too).
    pub registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _pinger: AbortOnDrop,
}

/// Stops the database pinger with the server.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the database is pinged for `simcache_store_up`.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Pings the database every [`PING_EVERY`] and publishes the answer, so that
/// an alert can say "Postgres unreachable" rather than only "not ready".
fn spawn_store_pinger(stores: Stores, registry: &Registry) -> anyhow::Result<AbortOnDrop> {
    let up = prometheus::IntGauge::new(
        "simcache_store_up",
        "1 when the last ping of the catalog/results database succeeded",
    )?;
    let failures = prometheus::IntCounter::new(
        "simcache_store_ping_failures_total",
        "Pings of the catalog/results database that failed",
    )?;
    registry.register(Box::new(up.clone()))?;
    registry.register(Box::new(failures.clone()))?;
    Ok(AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            tick.tick().await;
            match stores.sql.ping().await {
                Ok(()) => up.set(1),
                Err(e) => {
                    if up.get() != 0 {
                        tracing::warn!(error = %e, "the database stopped answering");
                    }
                    up.set(0);
                    failures.inc();
                }
            }
        }
    })))
}

impl RunningApi {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("API task panicked")?
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        let _keep = self.stop;
        self.task.await.context("API task panicked")?
    }
}

/// Opens the store, binds the listener and serves the API with the
/// extensions' routes until `shutdown` completes.
pub async fn start(
    cfg: ApiConfig,
    extensions: Vec<Extension>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningApi> {
    let stores = Stores::open(&cfg.backend, "operator")
        .await
        .context("opening the store")?;
    std::fs::create_dir_all(&cfg.runs_base).with_context(|| {
        format!(
            "creating the run database directory {}",
            cfg.runs_base.display()
        )
    })?;
    let auth = Arc::new(Authenticator::new(
        stores.sessions.clone(),
        cfg.auth.clone(),
    ));
    if let Some(pw) = &cfg.admin_password
        && auth.bootstrap_admin(pw).await?
    {
        tracing::info!("created user 'admin' from SIMCACHE_ADMIN_PASSWORD");
    }
    if cfg.auth.no_auth {
        tracing::warn!("authentication is DISABLED (--no-auth): every caller is an admin");
    }
    let registry = Registry::new();
    let http_metrics = HttpMetrics::register(&registry)?;
    simcache_web::metrics::register_build_info(
        &registry,
        "simcache-operator",
        env!("CARGO_PKG_VERSION"),
    )?;
    auth.register_size_metrics(&registry)?;
    let (c1, c2) = (stores.catalog.clone(), stores.catalog.clone());
    simcache_web::metrics::register_sampled_gauge(
        &registry,
        "simcache_catalog_index_versions",
        "Simulation versions in this process's catalog search index",
        move || c1.index_size().0 as i64,
    )?;
    simcache_web::metrics::register_sampled_gauge(
        &registry,
        "simcache_catalog_index_bytes",
        "Estimated heap bytes of this process's catalog search index (it holds every version's search text)",
        move || c2.index_size().1 as i64,
    )?;
    let connections = simcache_web::server::ConnectionMetrics::register(&registry)?;
    let pinger = spawn_store_pinger(stores.clone(), &registry)?;
    let state = AppState {
        stores: stores.clone(),
        auth: auth.clone(),
        registry: registry.clone(),
        runs_base: cfg.runs_base.clone(),
        max_ingest_bytes: cfg.max_ingest_bytes,
    };
    let (app, openapi) = router(state, extensions, http_metrics, cfg.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let limits = cfg.limits;
    let task = tokio::spawn(async move {
        let stopped = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_rx => {}
            }
        };
        let with_peer = move |peer| simcache_web::server::with_peer(app.clone(), peer);
        simcache_web::server::serve(listener, limits, Some(connections), with_peer, stopped)
            .await
            .context("HTTP server failed")
    });
    Ok(RunningApi {
        addr,
        stores,
        auth,
        openapi,
        registry,
        stop: Some(stop_tx),
        task,
        _pinger: pinger,
    })
}

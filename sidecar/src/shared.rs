//! `simcache-sidecar shared`: the shared tier (the chart's `shared`
//! Deployment). It alone holds the database credential among the things a
//! run pod talks to: pods' sidecars read and write the cache through it with
//! their run's session and follow its change stream. Stateless: replicas
//! behind one Service agree through PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use prometheus::Registry;
use simcache_auth::{AuthConfig, Authenticator};
use simcache_store::{Backend, Stores};
use simcache_web::metrics::HttpMetrics;

use crate::cache::CacheService;
use crate::cache::metrics::CacheMetrics;
use crate::config::SharedArgs;
use crate::http::{AppState, probe_router};
use crate::server::spawn_sweeper;
use crate::tier::SFM_PREFIX;
use crate::tier::server::{ChangeFeed, TierState, routes};

pub async fn run(backend: Backend, a: SharedArgs) -> anyhow::Result<()> {
    let origin = simcache_store::random::hex_id::<8>()?;
    let stores = Stores::open(&backend, &origin)
        .await
        .context("opening the store")?;
    let registry = Registry::new();
    simcache_web::metrics::register_build_info(
        &registry,
        "simcache-sidecar",
        env!("CARGO_PKG_VERSION"),
    )?;
    if a.no_auth {
        tracing::warn!("authentication is DISABLED (--no-auth) on the shared tier");
    }
    let auth = Arc::new(Authenticator::new(
        stores.sessions.clone(),
        AuthConfig {
            no_auth: a.no_auth,
            session_cache_ttl: Duration::from_secs(a.session_cache_ttl_secs),
            ..AuthConfig::default()
        },
    ));
    auth.register_size_metrics(&registry)?;
    // Health, metrics and the expiry sweep go through the cache service;
    // it keeps no memory tier here (PostgreSQL is the truth).
    let cache = Arc::new(CacheService::new(
        stores.cache.clone(),
        0,
        true,
        CacheMetrics::register(&registry)?,
        origin.clone(),
    ));
    let (feed, mut background) = match &stores.pg {
        Some(pg) => ChangeFeed::from_postgres(pg.config().clone()),
        None => (ChangeFeed::local(origin), Vec::new()),
    };
    // SFM for the pods: one fetch per piece of data across every pod, a
    // run's session limited to its Simulation's devices.
    let sfm = simcache_sfm::SfmService::new(
        stores.sfm.clone(),
        a.sfm.config(None)?,
        simcache_sfm::metrics::SfmMetrics::register(&registry)?,
    )?;
    sfm.registry()
        .reload()
        .await
        .context("loading SFM devices")?;
    background.extend(sfm.spawn_background(stores.pg.as_ref().map(|p| p.config().clone())));
    let sfm_routes = simcache_sfm::http::router(simcache_sfm::http::SfmState {
        service: sfm,
        auth: Some(auth.clone()),
        max_body_bytes: a.max_body_bytes,
    });
    background.push(spawn_sweeper(
        cache.clone(),
        auth.clone(),
        Duration::from_secs(a.sweep_interval_secs.max(1)),
    ));
    let http_metrics = HttpMetrics::register(&registry)?;
    let connections = simcache_web::server::ConnectionMetrics::register(&registry)?;
    let stopping = feed.clone();
    let app = routes(TierState {
        store: stores.cache.clone(),
        auth: auth.clone(),
        feed,
    })
    .nest(SFM_PREFIX, sfm_routes)
    .merge(probe_router(AppState::new(cache, auth, registry)))
    .layer(DefaultBodyLimit::max(a.max_body_bytes))
    .layer(axum::middleware::from_fn_with_state(
        http_metrics,
        simcache_web::metrics::track,
    ));
    let addr = std::net::SocketAddr::new(a.host, a.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // The first stdout line is the URL: scripts and tests read it.
    println!(
        "simcache-sidecar serving the shared tier on http://{}",
        listener.local_addr()?
    );
    let served = simcache_web::server::serve(
        listener,
        a.limits.limits(),
        Some(connections),
        move |_| app.clone(),
        async move {
            simcache_web::shutdown::signal().await;
            // Change streams never end by themselves.
            stopping.stop();
        },
    )
    .await;
    for b in background {
        b.abort();
    }
    served.context("shared tier failed")
}

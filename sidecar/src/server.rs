//! Wiring: open the store, build the services, serve HTTP, run the background
//! loops (hit flushing, expiry sweeping, cross-process coherence), and shut
//! down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use simcache_auth::{AuthConfig, Authenticator};
use simcache_store::{Backend, Stores};
use simcache_web::metrics::HttpMetrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cache::{CacheService, coherence, metrics::CacheMetrics};
use crate::http::{AppState, FrontDoor, HotGet, router};
use crate::run::{RunConfig, RunService};
use crate::tier::client::TierClient;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub memory_tier_bytes: u64,
    pub hit_flush_interval: Duration,
    pub sweep_interval: Duration,
    pub auth: AuthConfig,
    /// Creates user `admin` with this password when no admin exists.
    pub admin_password: Option<String>,
    /// The run this sidecar records; serves `/run/*` when set.
    pub run: Option<RunConfig>,
    /// Timeouts and the connection cap of the listener.
    pub limits: simcache_web::server::Limits,
    /// Health and metrics alone, on their own address (a run pod: the
    /// pod's IP, while `addr` is loopback).
    pub probe_addr: Option<SocketAddr>,
    /// The run pod's own credential, which the simulation beside this
    /// sidecar sends as `X-Session-ID` (`SIMCACHE_SESSION_ID`).
    pub pod_session: Option<PodSession>,
    /// The pod-local SFM proxy: its loopback address and settings.
    pub sfm: Option<(SocketAddr, simcache_sfm::SfmConfig)>,
    /// The read-through cache of systems of record, when any is configured.
    pub sor: Option<simcache_sor::SorConfig>,
    /// The shared tier that keeps the cache, reached with the pod session
    /// (instead of a store of this process's own).
    pub shared_tier: Option<String>,
}

/// A run pod's own credential and whose it is; never printed.
#[derive(Clone)]
pub struct PodSession {
    pub token: String,
    /// Names the session in logs (`run:<execution id>`).
    pub who: String,
}

impl std::fmt::Debug for PodSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSession")
            .field("token", &"<redacted>")
            .field("who", &self.who)
            .finish()
    }
}

impl ServerConfig {
    pub fn new(backend: Backend) -> Self {
        ServerConfig {
            backend,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_body_bytes: 1024 * 1024,
            memory_tier_bytes: 64 * 1024 * 1024,
            hit_flush_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(60),
            auth: AuthConfig::default(),
            admin_password: None,
            run: None,
            limits: Default::default(),
            probe_addr: None,
            pod_session: None,
            sfm: None,
            sor: None,
            shared_tier: None,
        }
    }
}

pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where health and metrics are served on their own, when they are.
    pub probe_addr: Option<SocketAddr>,
    /// Where the pod-local SFM proxy listens, when it does.
    pub sfm_addr: Option<SocketAddr>,
    pub cache: Arc<CacheService>,
    pub auth: Arc<Authenticator>,
    pub run: Option<Arc<RunService>>,
    pub sor: Option<Arc<simcache_sor::SorService>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, flushes counts.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("server task panicked")?
    }

    /// Runs until the server stops by itself (its shutdown future resolved).
    pub async fn wait(self) -> anyhow::Result<()> {
        let _keep = self.stop;
        self.task.await.context("server task panicked")?
    }
}

fn process_id() -> anyhow::Result<String> {
    Ok(simcache_store::random::hex_id::<8>()?)
}

/// Opens the store and the services over it (no HTTP).
pub async fn open_services(
    cfg: &ServerConfig,
    registry: &Registry,
) -> anyhow::Result<(Stores, Arc<CacheService>, Arc<Authenticator>)> {
    open_services_with(cfg, registry, tier_client(cfg)?).await
}

/// [`open_services`] with the shared tier's client already made (one
/// client, one connection pool, for the cache, its coherence and SFM).
async fn open_services_with(
    cfg: &ServerConfig,
    registry: &Registry,
    tier: Option<TierClient>,
) -> anyhow::Result<(Stores, Arc<CacheService>, Arc<Authenticator>)> {
    let origin = process_id()?;
    let stores = Stores::open(&cfg.backend, &origin)
        .await
        .context("opening the store")?;
    let metrics = CacheMetrics::register(registry)?;
    let (store, shared) = match tier {
        Some(tier) => (
            Arc::new(tier) as Arc<dyn simcache_store::cache::CacheStore>,
            true,
        ),
        None => (stores.cache.clone(), stores.pg.is_some()),
    };
    let cache = Arc::new(CacheService::new(
        store,
        cfg.memory_tier_bytes,
        shared,
        metrics,
        origin,
    ));
    let mut auth = Authenticator::new(stores.sessions.clone(), cfg.auth.clone());
    if let Some(p) = &cfg.pod_session {
        auth = auth.with_pod_session(&p.token, &p.who);
    }
    Ok((stores, cache, Arc::new(auth)))
}

/// The shared tier's client, when the cache is kept there: it needs the
/// pod's session to present.
fn tier_client(cfg: &ServerConfig) -> anyhow::Result<Option<TierClient>> {
    let Some(url) = &cfg.shared_tier else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--shared-tier-url {url:?}: expected an http:// or https:// URL");
    }
    let Some(session) = &cfg.pod_session else {
        anyhow::bail!(
            "--shared-tier-url needs the pod's session to present to it (SIMCACHE_POD_SESSION)"
        );
    };
    Ok(Some(
        TierClient::new(url, session.token.clone()).context("building the shared tier client")?,
    ))
}

/// Starts serving; the server stops when `shutdown` resolves or on `RunningServer::shutdown`.
pub async fn start(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningServer> {
    let registry = Registry::new();
    let tier = tier_client(&cfg)?;
    let (stores, cache, auth) = open_services_with(&cfg, &registry, tier.clone()).await?;
    let created_admin = match &cfg.admin_password {
        Some(pw) => auth.bootstrap_admin(pw).await?,
        None => false,
    };
    if created_admin {
        tracing::info!("created user 'admin' from SIMCACHE_ADMIN_PASSWORD");
    }
    if cfg.auth.no_auth {
        tracing::warn!("authentication is DISABLED (--no-auth): every caller is an admin");
    }
    let run = match cfg.run.clone() {
        Some(rc) => Some(open_run(rc, cfg.auth.no_auth).await?),
        None => None,
    };
    let http_metrics = HttpMetrics::register(&registry)?;
    simcache_web::metrics::register_build_info(
        &registry,
        "simcache-sidecar",
        env!("CARGO_PKG_VERSION"),
    )?;
    auth.register_size_metrics(&registry)?;
    let connections = simcache_web::server::ConnectionMetrics::register(&registry)?;
    let state = AppState::new(cache.clone(), auth.clone(), registry.clone());
    let probe_state = state.clone();
    let hot =
        (cfg.memory_tier_bytes > 0).then(|| Arc::new(HotGet::new(state.clone(), &http_metrics)));
    let sor = match cfg.sor.clone() {
        Some(sor_cfg) => Some(start_sor(&stores, &registry, sor_cfg).await?),
        None => None,
    };
    let sor_state = sor.as_ref().map(|s| simcache_sor::http::SorState {
        service: s.clone(),
        auth: auth.clone(),
    });
    let app = router(
        state,
        run.clone(),
        sor_state,
        http_metrics,
        cfg.max_body_bytes,
    );
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("binding {}", cfg.addr))?;
    let addr = listener.local_addr()?;

    let mut background = vec![
        spawn_flusher(cache.clone(), cfg.hit_flush_interval),
        spawn_sweeper(cache.clone(), auth.clone(), cfg.sweep_interval),
    ];
    if let Some(tier) = &tier {
        background.push(crate::tier::client::spawn_coherence(
            cache.clone(),
            tier.clone(),
        ));
    } else if let Some(pg) = &stores.pg {
        background.push(coherence::spawn(cache.clone(), pg.config().clone()));
        if let Some(sor) = &sor {
            background.extend(sor.spawn_listener(pg.config().clone()));
        }
    }

    let mut probe_addr = None;
    if let Some(addr) = cfg.probe_addr {
        let (bound, task) = start_probes(addr, probe_state, cfg.limits).await?;
        probe_addr = Some(bound);
        background.push(task);
    }

    let mut sfm_addr = None;
    if let Some((addr, sfm_cfg)) = cfg.sfm.clone() {
        let (bound, tasks) = match tier.clone() {
            Some(tier) => start_pod_sfm_forward(addr, tier, cfg.max_body_bytes, cfg.limits).await?,
            None => start_pod_sfm(&stores, &registry, addr, sfm_cfg, cfg.limits).await?,
        };
        sfm_addr = Some(bound);
        background.extend(tasks);
    }

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let flush_cache = cache.clone();
    let limits = cfg.limits;
    let task = tokio::spawn(async move {
        let stopped = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_rx => {}
            }
        };
        let doors = move |peer| FrontDoor::new(app.clone(), hot.clone(), peer);
        let served =
            simcache_web::server::serve(listener, limits, Some(connections), doors, stopped).await;
        for b in &background {
            b.abort();
        }
        // In-flight requests are done: write what they counted.
        if let Err(e) = flush_cache.flush().await {
            tracing::error!(error = %e, "could not flush hit counts at shutdown");
        }
        served.context("HTTP server failed")
    });
    Ok(RunningServer {
        addr,
        probe_addr,
        sfm_addr,
        cache,
        auth,
        run,
        sor,
        stop: Some(stop_tx),
        task,
    })
}

/// The run this sidecar records; its API needs a token unless auth is off.
async fn open_run(rc: RunConfig, no_auth: bool) -> anyhow::Result<Arc<RunService>> {
    if rc.token.is_none() && !no_auth {
        anyhow::bail!(
            "the run API needs a run token (SIMCACHE_RUN_TOKEN) unless --no-auth is given"
        );
    }
    let service = tokio::task::spawn_blocking(move || RunService::open(&rc))
        .await
        .context("opening the run database")?
        .context("opening the run database")?;
    Ok(Arc::new(service))
}

/// Serves health and metrics alone at `addr` until aborted.
async fn start_probes(
    addr: SocketAddr,
    state: AppState,
    limits: simcache_web::server::Limits,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the probe listener {addr}"))?;
    let bound = listener.local_addr()?;
    let probes = crate::http::probe_router(state);
    let task = tokio::spawn(async move {
        let served = simcache_web::server::serve(
            listener,
            limits,
            None,
            move |_| probes.clone(),
            std::future::pending(),
        )
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the probe listener failed");
        }
    });
    Ok((bound, task))
}

/// Opens the systems of record and the disk tier; invalidations travel on
/// the store's PostgreSQL when there is one.
async fn start_sor(
    stores: &Stores,
    registry: &Registry,
    sor_cfg: simcache_sor::SorConfig,
) -> anyhow::Result<Arc<simcache_sor::SorService>> {
    let metrics = simcache_sor::metrics::SorMetrics::register(registry)?;
    let notify = stores.pg.as_ref().map(|_| stores.sql.clone());
    let origin = process_id()?;
    let service = tokio::task::spawn_blocking(move || {
        simcache_sor::SorService::start(sor_cfg, metrics, notify, &origin)
    })
    .await
    .context("starting the SOR cache")??;
    service.register_gauges(registry)?;
    let names: Vec<&str> = service.sor_names().collect();
    tracing::info!(sors = ?names, default = service.default_sor(), "SOR cache serving /sor and /cache/api/v1.0/");
    Ok(service)
}

/// The pod-local SFM proxy: loopback only, because it has no auth (the pod
/// is the boundary); it serves only the Simulation's devices.
async fn start_pod_sfm(
    stores: &Stores,
    registry: &Registry,
    addr: SocketAddr,
    sfm_cfg: simcache_sfm::SfmConfig,
    limits: simcache_web::server::Limits,
) -> anyhow::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "the pod-local SFM listener has no authentication, so it binds loopback only (got {addr}); use `simcache-sidecar sfm-proxy` to serve others"
        );
    }
    let metrics = simcache_sfm::metrics::SfmMetrics::register(registry)?;
    let service = simcache_sfm::SfmService::new(stores.sfm.clone(), sfm_cfg, metrics)?;
    service
        .registry()
        .reload()
        .await
        .context("loading SFM devices")?;
    let mut tasks = service.spawn_background(stores.pg.as_ref().map(|p| p.config().clone()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the SFM proxy on {addr}"))?;
    let bound = listener.local_addr()?;
    let router = simcache_sfm::http::router(simcache_sfm::http::SfmState {
        service,
        auth: None,
        max_body_bytes: 1 << 20,
    });
    tasks.push(tokio::spawn(async move {
        let forever = std::future::pending::<()>();
        if let Err(e) = simcache_sfm::http::serve(listener, router, limits, None, forever).await {
            tracing::error!(error = %e, "SFM proxy stopped");
        }
    }));
    Ok((bound, tasks))
}

/// The pod-local SFM listener when the shared tier serves SFM: it forwards
/// to the tier with the pod's session (loopback only, as the other).
async fn start_pod_sfm_forward(
    addr: SocketAddr,
    tier: TierClient,
    max_body_bytes: usize,
    limits: simcache_web::server::Limits,
) -> anyhow::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("the pod-local SFM listener binds loopback only (got {addr})");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the SFM proxy on {addr}"))?;
    let bound = listener.local_addr()?;
    let router = crate::tier::sfm_forward::router(tier, max_body_bytes);
    let task = tokio::spawn(async move {
        let forever = std::future::pending::<()>();
        if let Err(e) = simcache_sfm::http::serve(listener, router, limits, None, forever).await {
            tracing::error!(error = %e, "SFM forwarder stopped");
        }
    });
    Ok((bound, vec![task]))
}

pub(crate) fn spawn_flusher(cache: Arc<CacheService>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = cache.flush().await {
                tracing::warn!(error = %e, "hit count flush failed; will retry");
            }
        }
    })
}

pub(crate) fn spawn_sweeper(
    cache: Arc<CacheService>,
    auth: Arc<Authenticator>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match cache.sweep().await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "swept expired cache entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
            }
            if let Err(e) = auth.purge_expired().await {
                tracing::warn!(error = %e.message, "session purge failed");
            }
        }
    })
}

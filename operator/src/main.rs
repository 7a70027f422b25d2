use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use simcache_api::server::{self, ApiConfig};
use simcache_auth::AuthConfig;
use simcache_controller::leader::LeaderElector;
use simcache_controller::{ControllerConfig, ControllerMetrics, Scope};
use simcache_core::pod::SidecarSettings;
use simcache_operator::cluster_source::ClusterObjects;
use simcache_operator::config::{Cli, Command, ServeArgs};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    simcache_web::logging::init(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(*a).await,
        Command::TrialDbSecret(t) => {
            let config = kube::Config::infer().await.context(
                "no Kubernetes configuration (in-cluster service account or KUBECONFIG)",
            )?;
            let client = kube::Client::try_from(config)?;
            let r = simcache_operator::trial_db::ensure(client, &t)
                .await
                .with_context(|| format!("making Secret {}/{}", t.namespace, t.secret))?;
            tracing::info!(secret = t.secret, namespace = t.namespace, outcome = ?r, "trial database Secret");
            Ok(())
        }
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let runs = a
        .run_db_base_path
        .clone()
        .unwrap_or_else(simcache_rundb::default_base_path);
    let mut cfg = ApiConfig::new(a.store.backend()?, runs.clone());
    cfg.addr = SocketAddr::new(a.host, a.port);
    cfg.max_body_bytes = a.max_body_bytes;
    cfg.limits = a.limits.limits();
    cfg.max_ingest_bytes = a.max_ingest_bytes;
    cfg.auth = AuthConfig {
        no_auth: a.no_auth,
        cookie_sessions: true,
        session_cache_ttl: Duration::from_secs(5),
        trusted_proxies: a.trusted_proxies.clone(),
        ..AuthConfig::default()
    };
    cfg.admin_password = std::env::var("SIMCACHE_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            simcache_web::shutdown::signal().await;
            stop.cancel();
        });
    }
    let sources = simcache_console::SourceSlot::default();
    let console = simcache_console::mount(sources.clone(), a.console_secure_cookies);
    let api = server::start(cfg, vec![console], stop.clone().cancelled_owned()).await?;
    println!("simcache-operator serving the API on {}", api.url());
    if a.controllers.no_controllers {
        return api.wait().await;
    }
    let c = &a.controllers;
    let metrics = ControllerMetrics::register(&api.registry)?;
    let client = simcache_controller::counted_client(&metrics).await?;
    let scope = Scope::from_flags(&c.watch_namespace).map_err(anyhow::Error::msg)?;
    let _ = sources.set(std::sync::Arc::new(ClusterObjects::new(
        client.clone(),
        scope.clone(),
    )));
    let native_sidecars = simcache_controller::version::check(&client, &metrics)
        .await
        .context("asking the Kubernetes API server for its version")?;
    let identity = match c.identity.clone() {
        Some(i) => i,
        None => default_identity()?,
    };
    let ccfg = ControllerConfig {
        sidecar: SidecarSettings {
            image: c.sidecar_image.clone(),
            image_pull_policy: c.sidecar_image_pull_policy.clone(),
            operator_url: c.operator_url.clone().unwrap_or_else(|| api.url()),
            startup_probe: native_sidecars,
            node_selector: c.pod_node_selector.iter().cloned().collect(),
            shared_tier_url: c.shared_tier_url.clone(),
            resources: c.sidecar_resources.clone(),
            pod_security: simcache_core::pod::PodSecurity {
                level: c.pod_security_level,
                service_accounts: c.allowed_service_account.clone(),
            },
        },
        runs_base: runs,
        lease_ttl: Duration::from_secs(c.cache_lease_seconds.max(5)),
        sweep_interval: Duration::from_secs(c.sweep_seconds.max(1)),
        identity: identity.clone(),
        scope,
        concurrency: c.concurrency.max(1),
        run_ttl_after_finished: Duration::from_secs(c.run_ttl_seconds_after_finished),
    };
    let elector = (!c.no_leader_election).then(|| {
        LeaderElector::new(
            client.clone(),
            &c.leader_namespace,
            &c.leader_lease_name,
            &identity,
            Duration::from_secs(c.leader_lease_seconds.max(2)),
        )
    });
    let stores = api.stores.clone();
    let controllers = tokio::spawn(simcache_controller::run_when_leader(
        elector,
        client,
        stores,
        ccfg,
        metrics,
        stop.clone(),
    ));
    let served = api.wait().await;
    let ran = controllers.await.context("controller task panicked")?;
    served.and(ran)
}

/// The pod name when in a pod, else host name plus a random suffix.
fn default_identity() -> anyhow::Result<String> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "simcache-operator".into());
    // At start-up: no randomness, no start.
    let suffix =
        simcache_store::random::hex_id::<4>().context("random source for the replica id")?;
    Ok(format!("{host}-{suffix}"))
}

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use simcache_auth::AuthConfig;
use simcache_operator::config::{
    Cli, Command, LocalCatalog, LocalCommand, LocalResults, ServeArgs,
};
use simcache_operator::controller::leader::LeaderElector;
use simcache_operator::controller::{self, ControllerConfig, ControllerMetrics, Scope};
use simcache_operator::local;
use simcache_operator::runs::pod::SidecarSettings;
use simcache_operator::server::{self, ApiConfig};
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
        Command::Local(LocalCommand::Run { files, home }) => {
            let failed = local::run(&files, &home.path()).await?;
            if failed > 0 {
                eprintln!("{failed} run(s) failed");
                std::process::exit(1);
            }
            Ok(())
        }
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
        Command::Local(LocalCommand::Catalog(LocalCatalog::List { home })) => {
            local::catalog_list(&home.path()).await
        }
        Command::Local(LocalCommand::Results(LocalResults::Search {
            simulation,
            limit,
            home,
        })) => local::results_search(&home.path(), simulation, limit).await,
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
    cfg.secure_cookies = a.console_secure_cookies;
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
    let api = server::start(cfg, stop.clone().cancelled_owned()).await?;
    println!("simcache-operator serving the API on {}", api.url());
    if a.controllers.no_controllers {
        return api.wait().await;
    }
    let c = &a.controllers;
    let metrics = ControllerMetrics::register(&api.registry)?;
    let client = kube_client(&metrics).await?;
    let scope = Scope::from_flags(&c.watch_namespace).map_err(anyhow::Error::msg)?;
    let _ = api.sources.set(std::sync::Arc::new(
        simcache_operator::console::source::ClusterObjects::new(client.clone(), scope.clone()),
    ));
    let native_sidecars = controller::version::check(&client, &metrics)
        .await
        .context("asking the Kubernetes API server for its version")?;
    let identity = c.identity.clone().unwrap_or_else(default_identity);
    let ccfg = ControllerConfig {
        sidecar: SidecarSettings {
            image: c.sidecar_image.clone(),
            image_pull_policy: c.sidecar_image_pull_policy.clone(),
            operator_url: c.operator_url.clone().unwrap_or_else(|| api.url()),
            startup_probe: native_sidecars,
            node_selector: c.pod_node_selector.iter().cloned().collect(),
            cache_db_secret: c.sidecar_cache_db_secret.clone(),
            resources: c.sidecar_resources.clone(),
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
    let ctl_stop = stop.clone();
    let controllers = tokio::spawn(async move {
        let Some(elector) = elector else {
            metrics.leader.set(1);
            return controller::run(client, stores, ccfg, metrics, ctl_stop).await;
        };
        tokio::select! {
            _ = elector.acquire() => {}
            _ = ctl_stop.cancelled() => return Ok(()),
        }
        metrics.leader.set(1);
        let lost = tokio::select! {
            r = controller::run(client, stores, ccfg, metrics.clone(), ctl_stop.clone()) => { r?; false }
            _ = elector.hold() => true,
        };
        metrics.leader.set(0);
        if lost {
            ctl_stop.cancel();
            anyhow::bail!("lost the leader lease; exiting so that a restart rejoins the election");
        }
        elector.release().await;
        Ok(())
    });
    let served = api.wait().await;
    let ran = controllers.await.context("controller task panicked")?;
    served.and(ran)
}

/// The Kubernetes client, counting its requests by verb
/// (`simcache_operator_kube_requests_total`).
async fn kube_client(metrics: &ControllerMetrics) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer().await.context(
        "no Kubernetes configuration (in-cluster service account or KUBECONFIG); \
         give --no-controllers to serve the API only",
    )?;
    let counter = metrics.kube_requests.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let verb =
            controller::metrics::kube_verb(req.method(), req.uri().query(), req.uri().path());
        counter.with_label_values(&[verb]).inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// The pod name when in a pod, else host name plus a random suffix.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "simcache-operator".into());
    // At start-up: no randomness, no start.
    let suffix = simcache_store::random::hex_id::<4>().expect("random source for the replica id");
    format!("{host}-{suffix}")
}

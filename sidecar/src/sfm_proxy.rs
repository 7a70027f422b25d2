//! `simcache-sidecar sfm-proxy`: the shared SFM proxy for clients outside
//! simulation pods (the chart's optional `sfmProxy` Deployment). Same code
//! path as the pod-local listener, plus sessions and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use serde::Deserialize;
use simcache_auth::{AuthConfig, Authenticator};
use simcache_crds::SFMDevice;
use simcache_sfm::device::RegisterError;
use simcache_sfm::http::{SfmState, router, serve, with_metrics};
use simcache_sfm::metrics::SfmMetrics;
use simcache_store::sfm::Registration;
use simcache_store::{Backend, Stores};

use crate::config::SfmProxyArgs;

pub async fn run(backend: Backend, a: SfmProxyArgs) -> anyhow::Result<()> {
    let origin = simcache_store::random::hex_id::<8>()?;
    let stores = Stores::open(&backend, &origin)
        .await
        .context("opening the store")?;
    for path in &a.device_files {
        register_file(&stores, path).await?;
    }
    let registry = Registry::new();
    let metrics = SfmMetrics::register(&registry)?;
    simcache_web::metrics::register_build_info(
        &registry,
        "simcache-sidecar",
        env!("CARGO_PKG_VERSION"),
    )?;
    let service = simcache_sfm::SfmService::new(stores.sfm.clone(), a.sfm.config(None)?, metrics)?;
    service
        .registry()
        .reload()
        .await
        .context("loading SFM devices")?;
    let background = service.spawn_background(stores.pg.as_ref().map(|p| p.config().clone()));
    let auth = if a.no_auth {
        tracing::warn!("authentication is DISABLED (--no-auth) on the SFM proxy");
        None
    } else {
        let auth = Arc::new(Authenticator::new(
            stores.sessions.clone(),
            AuthConfig {
                session_cache_ttl: Duration::from_secs(a.session_cache_ttl_secs),
                ..AuthConfig::default()
            },
        ));
        auth.register_size_metrics(&registry)?;
        Some(auth)
    };
    let connections = simcache_web::server::ConnectionMetrics::register(&registry)?;
    let app = with_metrics(
        router(SfmState {
            service,
            auth,
            max_body_bytes: a.max_body_bytes,
        }),
        registry,
    );
    let addr = std::net::SocketAddr::new(a.host, a.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // The first stdout line is the URL: scripts and tests read it.
    println!(
        "simcache-sidecar serving SFM proxy on http://{}",
        listener.local_addr()?
    );
    let served = serve(
        listener,
        app,
        a.limits.limits(),
        Some(connections),
        simcache_web::shutdown::signal(),
    )
    .await;
    for b in background {
        b.abort();
    }
    served.context("SFM proxy failed")
}

/// Registers the SFMDevices of a YAML file (one or more documents).
async fn register_file(stores: &Stores, path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)
            .with_context(|| format!("{}: not YAML", path.display()))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("SFMDevice") {
            continue;
        }
        let dev: SFMDevice = serde_yaml::from_value(value)
            .with_context(|| format!("{}: not a valid SFMDevice", path.display()))?;
        let name = dev.metadata.name.clone().unwrap_or_default();
        match simcache_sfm::device::register(&stores.sfm, &dev, simcache_store::clock::now_ms())
            .await
        {
            Ok((key, Registration::Registered)) => {
                eprintln!("registered SFMDevice {name} at {key}")
            }
            Ok((
                key,
                Registration::Conflict {
                    namespace,
                    name: other,
                },
            )) => anyhow::bail!(
                "{}: SFMDevice {name}: {key} is already registered by {namespace}/{other}",
                path.display()
            ),
            Err(RegisterError::Invalid(why)) => {
                anyhow::bail!("{}: SFMDevice {name}: {why}", path.display())
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}

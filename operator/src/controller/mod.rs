//! The Kubernetes controllers: Simulation (catalog registration),
//! SimulationRun (cache, lease, pod, ingest → status) and CachePolicy (TTL
//! and size limits). Each reconciler is a function of one object and a small
//! shared [`Context`]; errors become requeues with backoff.

pub mod cachepolicy;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod simulation;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource};
use simcache_crds::{CachePolicy, Simulation, SimulationRun};
use simcache_store::Stores;
use tokio_util::sync::CancellationToken;

pub use metrics::ControllerMetrics;

use crate::runs::pod::SidecarSettings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("store: {0}")]
    Store(#[from] simcache_store::StoreError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub sidecar: SidecarSettings,
    /// Where ingested run databases are kept (the ingest route writes here).
    pub runs_base: PathBuf,
    /// How long a cache-key lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// How often a CachePolicy is swept.
    pub sweep_interval: Duration,
    /// Names this replica in leases and events.
    pub identity: String,
    /// Watch only this namespace (all when None).
    pub namespace: Option<String>,
    /// Parallel reconciliations per controller.
    pub concurrency: u16,
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub cfg: ControllerConfig,
    pub metrics: ControllerMetrics,
    pub recorder: Recorder,
    /// Simulations and policies as the watches last saw them.
    pub simulations: Store<Simulation>,
    pub policies: Store<CachePolicy>,
}

impl Context {
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The CachePolicies of a namespace, as the watch last saw them.
    pub fn policies_in(&self, namespace: &str) -> Vec<CachePolicy> {
        self.policies
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .map(|p| (*p).clone())
            .collect()
    }

    /// The policy governing a Simulation (its `cachePolicyRef`, else the
    /// first whose selector picks it).
    pub fn policy_of(&self, sim: &Simulation) -> Option<CachePolicy> {
        let ns = sim.metadata.namespace.clone().unwrap_or_default();
        let policies = self.policies_in(&ns);
        crate::runs::policy::policy_for(
            &policies,
            sim.spec.cache_policy_ref.as_deref(),
            &crate::runs::identity::catalog_name(sim),
            sim.metadata.labels.as_ref().unwrap_or(&Default::default()),
        )
        .cloned()
    }

    /// Publishes an Event about `obj` (a failure to publish is only logged:
    /// events are for people, not for correctness).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish an event");
        }
    }
}

fn api_for<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(n) => Api::namespaced(client.clone(), n),
        None => Api::all(client.clone()),
    }
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// A condition with the transition time kept when its status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Wraps a reconciler with the controller-runtime metrics.
async fn measured<F: Future<Output = Result<Action>>>(
    metrics: &ControllerMetrics,
    controller: &str,
    f: F,
) -> Result<Action> {
    let start = Instant::now();
    let r = f.await;
    let label = match &r {
        Ok(a) if *a == Action::await_change() => "success",
        Ok(_) => "requeue_after",
        Err(_) => "error",
    };
    metrics.reconciled(controller, label, start.elapsed());
    r
}

fn error_policy<K>(obj: Arc<K>, e: &Error, _: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    tracing::warn!(
        name = obj.meta().name.as_deref().unwrap_or(""),
        namespace = obj.meta().namespace.as_deref().unwrap_or(""),
        error = %e,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

async fn log_outcome<T, E: std::fmt::Display>(
    controller: &'static str,
    r: std::result::Result<T, E>,
) {
    if let Err(e) = r {
        tracing::debug!(controller, error = %e, "controller event");
    }
}

/// Runs the three controllers until `shutdown` resolves; in-flight
/// reconciliations finish first.
pub async fn run(
    client: Client,
    stores: Stores,
    cfg: ControllerConfig,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = || {
        let t = shutdown.clone();
        async move { t.cancelled_owned().await }
    };
    let ns = cfg.namespace.clone();
    let ns = ns.as_deref();
    let concurrency = cfg.concurrency;
    let sims_api: Api<Simulation> = api_for(&client, ns);
    let runs_api: Api<SimulationRun> = api_for(&client, ns);
    let pods_api: Api<Pod> = api_for(&client, ns);
    let policies_api: Api<CachePolicy> = api_for(&client, ns);

    let ctl_cfg = kube::runtime::controller::Config::default().concurrency(concurrency);
    let sim_ctl = Controller::new(sims_api, watcher::Config::default())
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    let policy_ctl = Controller::new(policies_api, watcher::Config::default())
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    let run_ctl = Controller::new(runs_api, watcher::Config::default())
        .owns(
            pods_api,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=simcache-operator"),
        )
        .with_config(ctl_cfg)
        .graceful_shutdown_on(stop());
    let reporter = Reporter {
        controller: "simcache-operator".into(),
        instance: Some(cfg.identity.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        stores,
        cfg,
        metrics,
        simulations: sim_ctl.store(),
        policies: policy_ctl.store(),
    });
    let sims = sim_ctl
        .run(
            |o, c| async move {
                let m = c.metrics.clone();
                measured(&m, "simulation", simulation::reconcile(o, c)).await
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| log_outcome("simulation", r));
    let policies = policy_ctl
        .run(
            |o, c| async move {
                let m = c.metrics.clone();
                measured(&m, "cachepolicy", cachepolicy::reconcile(o, c)).await
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| log_outcome("cachepolicy", r));
    let gauges = forget_deleted_policies(ctx.clone(), stop());
    // Runs are judged against Simulations and policies: start them only
    // once those watches have listed everything.
    let (sims_ready, policies_ready) = (ctx.simulations.clone(), ctx.policies.clone());
    let runs = async move {
        let _ = sims_ready.wait_until_ready().await;
        let _ = policies_ready.wait_until_ready().await;
    };
    let runs = runs.then(move |_| {
        run_ctl
            .run(
                |o, c| async move {
                    let m = c.metrics.clone();
                    measured(&m, "simulationrun", run::reconcile(o, c)).await
                },
                error_policy,
                ctx.clone(),
            )
            .for_each(|r| log_outcome("simulationrun", r))
    });
    tracing::info!("controllers started");
    tokio::join!(sims, policies, runs, gauges);
    tracing::info!("controllers stopped");
    Ok(())
}

/// Every few seconds until `stop`, drops the gauges of deleted policies.
async fn forget_deleted_policies(ctx: Arc<Context>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        // Before the first list the store is empty, not the cluster.
        if ctx.policies.wait_until_ready().await.is_err() {
            return;
        }
        let live = ctx
            .policies
            .state()
            .iter()
            .map(|p| {
                use kube::ResourceExt;
                (p.namespace().unwrap_or_default(), p.name_any())
            })
            .collect();
        ctx.metrics.forget_policies_except(&live);
    }
}

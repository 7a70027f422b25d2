//! The Kubernetes controllers: Simulation (catalog registration),
//! SimulationRun (cache, lease, pod, ingest → status) and CachePolicy (TTL
//! and size limits). Each reconciler is a function of one object and a small
//! shared [`Context`]; errors become requeues with backoff.

pub mod backoff;
pub mod cachepolicy;
pub mod context;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod scope;
pub mod sfmdevice;
pub mod simulation;
pub mod sor;
pub mod status;
pub mod sweep;
pub mod tokens;
pub mod version;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use simcache_crds::{CachePolicy, SFMDevice, Simulation, SimulationRun, SimulationSweep};
use simcache_store::Stores;
use tokio_util::sync::CancellationToken;

pub use context::Context;
pub use error::{Error, Result};
pub use metrics::ControllerMetrics;

use crate::runs::pod::SidecarSettings;
pub use scope::Scope;

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
    /// The namespaces watched.
    pub scope: Scope,
    /// Parallel reconciliations per controller.
    pub concurrency: u16,
    /// How long a finished run keeps its pod and token Secret, unless the
    /// run or its Simulation says otherwise.
    pub run_ttl_after_finished: Duration,
}

/// A controller of `K` over the watched namespaces.
fn controller_for<K>(client: &Client, scope: &Scope) -> Controller<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let objects = scope::watch::<K>(client, scope, watcher::Config::default())
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(objects, store)
}

/// kubectl's copy of the last applied spec, kept on every applied object.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `namespace/name`: the object's key in the backoff table.
fn object_key<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

/// Runs a reconciler with controller-runtime's metrics (the timer records
/// when dropped, so a reconciliation cut short still counts) and forgets
/// the object's backoff when it succeeds.
async fn measured<K, F>(ctx: &Context, controller: &'static str, obj: &K, f: F) -> Result<Action>
where
    K: Resource,
    F: std::future::Future<Output = Result<Action>>,
{
    let _timer = ctx.metrics.reconcile_timer(controller);
    let r = f.await;
    match &r {
        Ok(a) => {
            ctx.backoff.succeeded(&object_key(obj));
            let label = if *a == Action::await_change() {
                "success"
            } else {
                "requeue_after"
            };
            ctx.metrics.reconcile_result(controller, label);
        }
        Err(_) => ctx.metrics.reconcile_result(controller, "error"),
    }
    r
}

/// A failed reconciliation: counted by kind, retried after the object's
/// own exponential backoff.
fn error_policy<K: Resource>(
    controller: &'static str,
    obj: &K,
    e: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile_failed(controller, e.metric_label());
    let wait = ctx.backoff.failed(&object_key(obj));
    tracing::warn!(
        controller,
        name = obj.meta().name.as_deref().unwrap_or(""),
        namespace = obj.meta().namespace.as_deref().unwrap_or(""),
        error = %e,
        kind = e.metric_label(),
        retry_in_ms = wait.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Action::requeue(wait)
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
    let scope = cfg.scope.clone();
    let concurrency = cfg.concurrency;
    let ctl_cfg = kube::runtime::controller::Config::default().concurrency(concurrency);
    let sim_ctl = controller_for::<Simulation>(&client, &scope)
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    let policy_ctl = controller_for::<CachePolicy>(&client, &scope)
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    let sfm_ctl = controller_for::<SFMDevice>(&client, &scope)
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    let sor_ctl = controller_for::<simcache_crds::SystemOfRecord>(&client, &scope)
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    // Sweeps are woken by their runs' changes and read them from a store
    // of their own (only runs a sweep made carry its label).
    let (sweep_runs, sweep_runs_writer) = reflector::store();
    let sweep_run_events = scope::watch::<SimulationRun>(
        &client,
        &scope,
        watcher::Config::default().labels(sweep::LABEL_SWEEP),
    )
    .modify(|r: &mut SimulationRun| {
        r.managed_fields_mut().clear();
        r.annotations_mut().remove(LAST_APPLIED);
    })
    .reflect(sweep_runs_writer)
    .touched_objects();
    let sweep_ctl = controller_for::<SimulationSweep>(&client, &scope)
        .owns_stream(sweep_run_events)
        .with_config(ctl_cfg.clone())
        .graceful_shutdown_on(stop());
    let sfm_service = simcache_sfm::SfmService::new(
        stores.sfm.clone(),
        simcache_sfm::SfmConfig::default(),
        metrics.sfm.clone(),
    )?;
    let sfm_tasks = sfm_service.spawn_background(stores.pg.as_ref().map(|p| p.config().clone()));
    // Runs are the objects there are tens of thousands of: the cache keeps
    // them without what the controller never reads (managed fields, kubectl's
    // last-applied copy of the spec), which is most of a small run's bytes.
    let (runs_cache, runs_writer) = reflector::store();
    let runs = scope::watch::<SimulationRun>(&client, &scope, watcher::Config::default())
        .modify(|r: &mut SimulationRun| {
            r.managed_fields_mut().clear();
            r.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(runs_writer)
        .touched_objects();
    let run_ctl = Controller::for_stream(runs, runs_cache)
        .owns_stream(
            scope::watch::<Pod>(
                &client,
                &scope,
                watcher::Config::default().labels("app.kubernetes.io/managed-by=simcache-operator"),
            )
            .touched_objects(),
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
        backoff: Default::default(),
        sfm: sfm_service,
        sfm_devices: sfm_ctl.store(),
        sors: sor_ctl.store(),
        sweep_runs,
    });
    let sfm_store = ctx.sfm_devices.clone();
    let sims = sim_ctl
        .run(
            |o, c| async move {
                let (ctx, obj) = (c.clone(), o.clone());
                measured(&ctx, "simulation", &*obj, simulation::reconcile(o, c)).await
            },
            |o, e, c| error_policy("simulation", &*o, e, &c),
            ctx.clone(),
        )
        .for_each(|r| log_outcome("simulation", r));
    let policies = policy_ctl
        .run(
            |o, c| async move {
                let (ctx, obj) = (c.clone(), o.clone());
                measured(&ctx, "cachepolicy", &*obj, cachepolicy::reconcile(o, c)).await
            },
            |o, e, c| error_policy("cachepolicy", &*o, e, &c),
            ctx.clone(),
        )
        .for_each(|r| log_outcome("cachepolicy", r));
    let devices = sfm_ctl
        .run(
            |o, c| async move {
                let (ctx, obj) = (c.clone(), o.clone());
                measured(&ctx, "sfmdevice", &*obj, sfmdevice::reconcile(o, c)).await
            },
            |o, e, c| error_policy("sfmdevice", &*o, e, &c),
            ctx.clone(),
        )
        .for_each(|r| log_outcome("sfmdevice", r));
    let sors = sor_ctl
        .run(
            |o, c| async move {
                let (ctx, obj) = (c.clone(), o.clone());
                measured(&ctx, "systemofrecord", &*obj, sor::reconcile(o, c)).await
            },
            |o, e, c| error_policy("systemofrecord", &*o, e, &c),
            ctx.clone(),
        )
        .for_each(|r| log_outcome("systemofrecord", r));
    // A sweep counts its runs from a store its own controller feeds, so it
    // cannot wait for that store before it runs (the reconcile waits
    // instead); it waits for the Simulations' store.
    let sweep_sims_ready = ctx.simulations.clone();
    let sweep_ctx = ctx.clone();
    let sweeps = async move {
        let _ = sweep_sims_ready.wait_until_ready().await;
    }
    .then(move |_| {
        sweep_ctl
            .run(
                |o, c| async move {
                    let (ctx, obj) = (c.clone(), o.clone());
                    measured(&ctx, "simulationsweep", &*obj, sweep::reconcile(o, c)).await
                },
                |o, e, c| error_policy("simulationsweep", &*o, e, &c),
                sweep_ctx,
            )
            .for_each(|r| log_outcome("simulationsweep", r))
    });
    let gauges = forget_deleted_policies(ctx.clone(), stop());
    let sfm_gauges = count_sfm_devices(ctx.clone(), sfm_store, stop());
    let run_gauges = count_runs(ctx.clone(), run_ctl.store(), stop());
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
                    let (ctx, obj) = (c.clone(), o.clone());
                    measured(&ctx, "simulationrun", &*obj, run::reconcile(o, c)).await
                },
                |o, e, c| error_policy("simulationrun", &*o, e, &c),
                ctx.clone(),
            )
            .for_each(|r| log_outcome("simulationrun", r))
    });
    tracing::info!("controllers started");
    tokio::join!(
        sims, policies, runs, sweeps, devices, sors, gauges, sfm_gauges, run_gauges
    );
    for t in sfm_tasks {
        t.abort();
    }
    tracing::info!("controllers stopped");
    Ok(())
}

/// Every few seconds until `stop`, once `store` has listed everything
/// (before that it is empty, not the cluster), hands its objects to `look`.
async fn every_few_seconds<K>(
    store: reflector::Store<K>,
    stop: impl std::future::Future<Output = ()>,
    look: impl Fn(&[Arc<K>]),
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if store.wait_until_ready().await.is_err() {
            return;
        }
        look(&store.state());
    }
}

/// Counts SFMDevices by condition.
async fn count_sfm_devices(
    ctx: Arc<Context>,
    devices: reflector::Store<SFMDevice>,
    stop: impl std::future::Future<Output = ()>,
) {
    every_few_seconds(devices, stop, |all| {
        for c in metrics::SFM_CONDITIONS {
            for st in ["True", "False", "Unknown"] {
                let n = all
                    .iter()
                    .filter(|d| {
                        let found = d
                            .status
                            .as_ref()
                            .and_then(|s| crate::conditions::find(&s.conditions, c))
                            .map(|x| x.status.as_str())
                            .unwrap_or("Unknown");
                        found == st
                    })
                    .count();
                ctx.metrics
                    .sfm_devices
                    .with_label_values(&[c, st])
                    .set(n as i64);
            }
        }
    })
    .await
}

/// Counts the watched runs by phase.
async fn count_runs(
    ctx: Arc<Context>,
    runs: reflector::Store<SimulationRun>,
    stop: impl std::future::Future<Output = ()>,
) {
    use crate::runs::lifecycle::{PHASES, phase_name};
    every_few_seconds(runs, stop, |all| {
        let mut counts = [0i64; PHASES.len()];
        for r in all {
            let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
            if let Some(i) = PHASES.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (p, n) in PHASES.iter().zip(counts) {
            ctx.metrics.runs.with_label_values(&[phase_name(*p)]).set(n);
        }
    })
    .await
}

/// Drops the gauges of deleted policies.
async fn forget_deleted_policies(ctx: Arc<Context>, stop: impl std::future::Future<Output = ()>) {
    every_few_seconds(ctx.policies.clone(), stop, |all| {
        let live = all
            .iter()
            .map(|p| {
                use kube::ResourceExt;
                (p.namespace().unwrap_or_default(), p.name_any())
            })
            .collect();
        ctx.metrics.forget_policies_except(&live);
    })
    .await
}

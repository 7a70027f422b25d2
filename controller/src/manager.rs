//! Registers every controller once and runs them together: the watches
//! (trimmed of what no reconciler reads), the stores the reconcilers share,
//! each controller's reconcile measured and retried with backoff, and the
//! gauges sampled from the stores.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use simcache_core::sweep::LABEL_SWEEP;
use simcache_crds::{
    CachePolicy, SFMDevice, Simulation, SimulationRun, SimulationSweep, SystemOfRecord,
};
use simcache_store::Stores;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElector;
use crate::{
    Context, ControllerConfig, ControllerMetrics, Error, LAST_APPLIED, Result, Scope, cachepolicy,
    metrics, scope, sfmdevice, simulation, simulation_run, simulation_sweep, system_of_record,
};

/// A controller of `K` over the watched namespaces, with the shared
/// settings, stopping gracefully when `stop` resolves.
fn controller_for<K>(
    client: &Client,
    scope: &Scope,
    settings: &kube::runtime::controller::Config,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> Controller<K>
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
        .with_config(settings.clone())
        .graceful_shutdown_on(stop)
}

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

/// Runs every controller until `shutdown` resolves; in-flight
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
    let ctl_cfg = kube::runtime::controller::Config::default().concurrency(cfg.concurrency);
    let sim_ctl = controller_for::<Simulation>(&client, &scope, &ctl_cfg, stop());
    let policy_ctl = controller_for::<CachePolicy>(&client, &scope, &ctl_cfg, stop());
    let sfm_ctl = controller_for::<SFMDevice>(&client, &scope, &ctl_cfg, stop());
    let sor_ctl = controller_for::<SystemOfRecord>(&client, &scope, &ctl_cfg, stop());
    let (sweep_ctl, sweep_runs) = sweep_controller(&client, &scope, &ctl_cfg, stop());
    let sfm_service = simcache_sfm::SfmService::new(
        stores.sfm.clone(),
        simcache_sfm::SfmConfig::default(),
        metrics.sfm.clone(),
    )?;
    let sfm_tasks = sfm_service.spawn_background(stores.pg.as_ref().map(|p| p.config().clone()));
    let run_ctl = run_controller(&client, &scope, &ctl_cfg, stop());
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
    let run_store = run_ctl.store();
    let sims = drive(sim_ctl, "simulation", simulation::reconcile, ctx.clone());
    let policies = drive(
        policy_ctl,
        "cachepolicy",
        cachepolicy::reconcile,
        ctx.clone(),
    );
    let devices = drive(sfm_ctl, "sfmdevice", sfmdevice::reconcile, ctx.clone());
    let sors = drive(
        sor_ctl,
        "systemofrecord",
        system_of_record::reconcile,
        ctx.clone(),
    );
    // A sweep counts its runs from a store its own controller feeds, so it
    // cannot wait for that store before it runs (the reconcile waits
    // instead); it waits for the Simulations' store.
    let sweeps = {
        let sims_listed = ctx.simulations.clone();
        let work = drive(
            sweep_ctl,
            "simulationsweep",
            simulation_sweep::reconcile,
            ctx.clone(),
        );
        async move {
            let _ = sims_listed.wait_until_ready().await;
            work.await
        }
    };
    // Runs are judged against Simulations and policies: start them only
    // once those watches have listed everything.
    let runs = {
        let (sims_listed, policies_listed) = (ctx.simulations.clone(), ctx.policies.clone());
        let work = drive(
            run_ctl,
            "simulationrun",
            simulation_run::reconcile,
            ctx.clone(),
        );
        async move {
            let _ = sims_listed.wait_until_ready().await;
            let _ = policies_listed.wait_until_ready().await;
            work.await
        }
    };
    let gauges = forget_deleted_policies(ctx.clone(), stop());
    let sfm_gauges = count_sfm_devices(ctx.clone(), sfm_store, stop());
    let run_gauges = count_runs(ctx.clone(), run_store, stop());
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

/// Runs the controllers while this replica holds the leader lease (at
/// once when there is no election). Losing the lease stops everything with
/// an error, so that a restart rejoins the election.
pub async fn run_when_leader(
    elector: Option<LeaderElector>,
    client: Client,
    stores: Stores,
    cfg: ControllerConfig,
    metrics: ControllerMetrics,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(elector) = elector else {
        metrics.leader.set(1);
        return run(client, stores, cfg, metrics, stop).await;
    };
    tokio::select! {
        _ = elector.acquire() => {}
        _ = stop.cancelled() => return Ok(()),
    }
    metrics.leader.set(1);
    let lost = tokio::select! {
        r = run(client, stores, cfg, metrics.clone(), stop.clone()) => { r?; false }
        _ = elector.hold() => true,
    };
    metrics.leader.set(0);
    if lost {
        stop.cancel();
        anyhow::bail!("lost the leader lease; exiting so that a restart rejoins the election");
    }
    elector.release().await;
    Ok(())
}

/// The Kubernetes client (in-cluster service account or KUBECONFIG),
/// counting its requests by verb (`simcache_operator_kube_requests_total`).
pub async fn counted_client(metrics: &ControllerMetrics) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let config = kube::Config::infer().await.context(
        "no Kubernetes configuration (in-cluster service account or KUBECONFIG); \
         give --no-controllers to serve the API only",
    )?;
    let counter = metrics.kube_requests.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let verb = metrics::kube_verb(req.method(), req.uri().query(), req.uri().path());
        counter.with_label_values(&[verb]).inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// The SimulationSweep controller, woken by its runs' changes, and the
/// store of those runs it reads them from (only runs a sweep made carry
/// its label).
fn sweep_controller(
    client: &Client,
    scope: &Scope,
    settings: &kube::runtime::controller::Config,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> (Controller<SimulationSweep>, reflector::Store<SimulationRun>) {
    let (sweep_runs, sweep_runs_writer) = reflector::store();
    let sweep_run_events = scope::watch::<SimulationRun>(
        client,
        scope,
        watcher::Config::default().labels(LABEL_SWEEP),
    )
    .modify(trim_run)
    .reflect(sweep_runs_writer)
    .touched_objects();
    let ctl = controller_for::<SimulationSweep>(client, scope, settings, stop)
        .owns_stream(sweep_run_events);
    (ctl, sweep_runs)
}

/// The SimulationRun controller, woken by the pods it made. Runs are the
/// objects there are tens of thousands of: the cache keeps them without
/// what the controller never reads (managed fields, kubectl's last-applied
/// copy of the spec), which is most of a small run's bytes.
fn run_controller(
    client: &Client,
    scope: &Scope,
    settings: &kube::runtime::controller::Config,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) -> Controller<SimulationRun> {
    let (runs_cache, runs_writer) = reflector::store();
    let runs = scope::watch::<SimulationRun>(client, scope, watcher::Config::default())
        .modify(trim_run)
        .reflect(runs_writer)
        .touched_objects();
    Controller::for_stream(runs, runs_cache)
        .owns_stream(
            scope::watch::<Pod>(
                client,
                scope,
                watcher::Config::default().labels("app.kubernetes.io/managed-by=simcache-operator"),
            )
            .touched_objects(),
        )
        .with_config(settings.clone())
        .graceful_shutdown_on(stop)
}

/// Drops from a watched run what no controller reads (managed fields,
/// kubectl's last-applied copy of the spec).
fn trim_run(r: &mut SimulationRun) {
    r.managed_fields_mut().clear();
    r.annotations_mut().remove(LAST_APPLIED);
}

/// One controller driven to its end: each reconciliation measured, each
/// failure retried after the object's backoff, each outcome logged.
fn drive<K, F, Fut>(
    ctl: Controller<K>,
    name: &'static str,
    reconcile: F,
    ctx: Arc<Context>,
) -> impl Future<Output = ()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    ctl.run(
        move |o, c| {
            let (obj, ctx2) = (o.clone(), c.clone());
            let work = reconcile(o, c);
            async move { measured(&ctx2, name, &*obj, work).await }
        },
        move |o, e, c| error_policy(name, &*o, e, &c),
        ctx,
    )
    .for_each(move |r| log_outcome(name, r))
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
                            .and_then(|s| simcache_core::conditions::find(&s.conditions, c))
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
    use simcache_core::lifecycle::{PHASES, phase_name};
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

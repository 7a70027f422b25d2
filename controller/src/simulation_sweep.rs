//! The SimulationSweep controller: gathers the facts (the Simulation, the
//! sweep's runs, which points are cached), asks `sweeps::plan` what to do,
//! creates the runs it names, and writes the status.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use simcache_crds::{
    CacheMode, Simulation, SimulationRun, SimulationRunSpec, SimulationSweep,
    SimulationSweepStatus, SweepPhase,
};
use simcache_store::cache::ListQuery;

use crate::status::patch_sweep;
use crate::{Context, Error, Result};
use simcache_core::cache_key::identify;
use simcache_core::conditions;
use simcache_core::pod::label_value;
use simcache_core::sweep::plan::{Facts, Plan, RunFacts, plan};
use simcache_core::sweep::points::{Point, expand, run_name};

pub use simcache_core::sweep::LABEL_SWEEP;
/// maxParallel when the sweep does not say.
const DEFAULT_MAX_PARALLEL: usize = 10;
/// A safety net: run changes wake the sweep, this catches a missed one.
const RECHECK: Duration = Duration::from_secs(30);
/// Waiting for a Simulation that does not exist yet.
const WAIT_FOR_SIMULATION: Duration = Duration::from_secs(10);

pub async fn reconcile(sweep: Arc<SimulationSweep>, ctx: Arc<Context>) -> Result<Action> {
    // Counting runs before their store has listed them all would make runs
    // that exist and overrun maxParallel.
    if ctx.sweep_runs.wait_until_ready().now_or_never().is_none() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let ns = sweep.namespace().unwrap_or_default();
    let name = sweep.name_any();
    let previous = sweep.status.clone().unwrap_or_default();
    let generation = sweep.metadata.generation;
    let Some(sim) = ctx.simulation(&ns, &sweep.spec.simulation.name) else {
        let message = format!(
            "Simulation {:?} not found in namespace {ns}; waiting for it",
            sweep.spec.simulation.name
        );
        let status = invalid(&previous, "SimulationNotFound", &message, generation, false);
        patch_sweep(&ctx, &sweep, &previous, &status).await?;
        return Ok(Action::requeue(WAIT_FOR_SIMULATION));
    };
    // Every point is made and checked before any run is: a bad value fails
    // the sweep whole.
    let points = match points_checked(&sweep, &sim) {
        Ok(p) => p,
        Err(e) => {
            let message = e.to_string();
            if previous.phase != SweepPhase::Failed || previous.message.as_deref() != Some(&message)
            {
                ctx.event(&*sweep, true, "InvalidSweep", message.clone())
                    .await;
            }
            let status = invalid(&previous, "InvalidSweep", &message, generation, true);
            patch_sweep(&ctx, &sweep, &previous, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let names: Vec<String> = points.iter().map(|(p, _)| run_name(&name, p)).collect();
    let runs = runs_of(&ctx, &sweep);
    let template = sweep.spec.run_template.clone().unwrap_or_default();
    let max_parallel = sweep
        .spec
        .max_parallel
        .map_or(DEFAULT_MAX_PARALLEL, |n| n as usize)
        .max(1);
    let missing = names.iter().filter(|n| !runs.contains_key(*n)).count();
    // Only worth a look at the cache when points wait for a slot.
    let cached = if template.cache_mode == CacheMode::Use && missing > 0 {
        cached_points(&ctx, &points, &names, &runs).await?
    } else {
        BTreeSet::new()
    };
    let decided = plan(&Facts {
        names: &names,
        runs: &runs,
        cached: &cached,
        max_parallel,
        failure_policy: sweep.spec.failure_policy,
    });
    for &i in &decided.create {
        create_run(&ctx, &sweep, &names[i], &points[i].0).await?;
    }
    let now = Timestamp::now();
    let started = !runs.is_empty() || !decided.create.is_empty();
    let (status, reason) = status_after(&previous, &decided, started, names.len(), generation, now);
    if decided.completed && !previous_completed(&previous) {
        ctx.event(
            &*sweep,
            decided.phase != SweepPhase::Succeeded,
            reason,
            decided.message.clone(),
        )
        .await;
    }
    patch_sweep(&ctx, &sweep, &previous, &status).await?;
    Ok(if decided.completed {
        Action::await_change()
    } else if !decided.create.is_empty() && missing > decided.create.len() {
        // More to make than one pass makes: come back at once.
        Action::requeue(Duration::from_millis(200))
    } else {
        Action::requeue(RECHECK)
    })
}

/// The sweep's status after `decided` (and the Completed reason), from
/// the previous one. Pure.
fn status_after(
    previous: &SimulationSweepStatus,
    decided: &Plan,
    started: bool,
    points: usize,
    generation: Option<i64>,
    now: Timestamp,
) -> (SimulationSweepStatus, &'static str) {
    let mut status = SimulationSweepStatus {
        phase: decided.phase,
        total: decided.counts.total,
        pending: decided.counts.pending,
        running: decided.counts.running,
        succeeded: decided.counts.succeeded,
        cached: decided.counts.cached,
        failed: decided.counts.failed,
        progress: Some(format!(
            "{}/{}",
            decided.counts.succeeded + decided.counts.cached + decided.counts.failed,
            decided.counts.total
        )),
        compute_seconds_saved: (decided.counts.compute_seconds_saved * 1000.0).round() / 1000.0,
        start_time: previous
            .start_time
            .clone()
            .or_else(|| started.then_some(Time(now))),
        completion_time: if decided.completed {
            previous.completion_time.clone().or(Some(Time(now)))
        } else {
            None
        },
        message: Some(decided.message.clone()),
        observed_generation: generation,
        conditions: previous.conditions.clone(),
    };
    conditions::set(
        &mut status.conditions,
        "Valid",
        true,
        "PointsChecked",
        format!("{points} points, every one valid for the Simulation"),
        generation,
        now,
    );
    let reason = match (decided.completed, decided.phase) {
        (false, _) => "Running",
        (true, SweepPhase::Succeeded) => "Succeeded",
        (true, SweepPhase::PartiallyFailed) => "PartiallyFailed",
        (true, _) => "Failed",
    };
    conditions::set(
        &mut status.conditions,
        "Completed",
        decided.completed,
        reason,
        decided.message.clone(),
        generation,
        now,
    );
    (status, reason)
}

fn previous_completed(s: &SimulationSweepStatus) -> bool {
    conditions::find(&s.conditions, "Completed").is_some_and(|c| c.status == "True")
}

/// Why a sweep's points cannot be made.
#[derive(Debug, thiserror::Error)]
enum PointsError {
    #[error("spec.{0}")]
    Spec(#[from] simcache_core::sweep::points::SweepError),
    /// One point's values; `at` names them (`temperature=500, …`).
    #[error("point ({at}): {refusal}")]
    Point {
        at: String,
        refusal: simcache_core::cache_key::Refusal,
    },
}

/// The sweep's points with their cache keys, or the first problem, named.
fn points_checked(
    sweep: &SimulationSweep,
    sim: &Simulation,
) -> std::result::Result<Vec<(Point, String)>, PointsError> {
    let points = expand(&sweep.spec)?;
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        let spec = SimulationRunSpec {
            simulation: sweep.spec.simulation.clone(),
            inputs: p,
            cache_mode: CacheMode::Use,
            timeout_seconds: None,
            retry_limit: None,
            ttl_seconds_after_finished: None,
            pod: None,
        };
        match identify(sim, &spec) {
            Ok(id) => out.push((spec.inputs, id.key)),
            Err(refusal) => {
                let at: Vec<String> = sweep
                    .spec
                    .parameters
                    .keys()
                    .filter_map(|k| spec.inputs.get(k).map(|v| format!("{k}={v}")))
                    .collect();
                return Err(PointsError::Point {
                    at: at.join(", "),
                    refusal,
                });
            }
        }
    }
    Ok(out)
}

/// The sweep's status when it can't make its points.
fn invalid(
    previous: &SimulationSweepStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    fatal: bool,
) -> SimulationSweepStatus {
    let now = Timestamp::now();
    let mut s = SimulationSweepStatus {
        phase: if fatal {
            SweepPhase::Failed
        } else {
            SweepPhase::Pending
        },
        message: Some(message.to_string()),
        observed_generation: generation,
        completion_time: if fatal {
            previous.completion_time.clone().or(Some(Time(now)))
        } else {
            None
        },
        ..previous.clone()
    };
    conditions::set(
        &mut s.conditions,
        "Valid",
        false,
        reason,
        message,
        generation,
        now,
    );
    conditions::set(
        &mut s.conditions,
        "Completed",
        fatal,
        reason,
        message,
        generation,
        now,
    );
    s
}

/// The sweep's runs (labelled with it and owned by it), by name.
fn runs_of(ctx: &Context, sweep: &SimulationSweep) -> HashMap<String, RunFacts> {
    let ns = sweep.namespace();
    let uid = sweep.uid();
    ctx.sweep_runs
        .state()
        .iter()
        .filter(|r| r.namespace() == ns)
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .map(|r| {
            let s = r.status.clone().unwrap_or_default();
            (
                r.name_any(),
                RunFacts {
                    phase: s.phase,
                    duration_seconds: s.duration_seconds,
                },
            )
        })
        .collect()
}

/// The points not made yet whose result is in the cache: one paged listing
/// of the Simulation's live entries, not a lookup per point.
async fn cached_points(
    ctx: &Context,
    points: &[(Point, String)],
    names: &[String],
    runs: &HashMap<String, RunFacts>,
) -> Result<BTreeSet<usize>> {
    let wanted: HashSet<&str> = points
        .iter()
        .zip(names)
        .filter(|(_, n)| !runs.contains_key(*n))
        .map(|((_, key), _)| key.as_str())
        .collect();
    let Some(simulation) = points
        .first()
        .and_then(|(_, k)| k.split('/').next())
        .map(str::to_string)
    else {
        return Ok(BTreeSet::new());
    };
    let now_ms = Timestamp::now().as_millisecond();
    let mut live = HashSet::new();
    let page = 5000;
    let mut offset = 0;
    loop {
        let (entries, _) = ctx
            .stores
            .cache
            .list(&ListQuery {
                limit: page,
                offset,
                simulation_id: None,
                simulation_name: Some(simulation.clone()),
                status: None,
            })
            .await?;
        let n = entries.len() as i64;
        live.extend(
            entries
                .into_iter()
                .filter(|e| e.is_live(now_ms) && wanted.contains(e.cache_key.as_str()))
                .map(|e| e.cache_key),
        );
        if n < page {
            break;
        }
        offset += page;
    }
    Ok(points
        .iter()
        .enumerate()
        .filter(|(_, (_, key))| live.contains(key))
        .map(|(i, _)| i)
        .collect())
}

async fn create_run(
    ctx: &Context,
    sweep: &SimulationSweep,
    name: &str,
    inputs: &Point,
) -> Result<()> {
    let ns = sweep.namespace().unwrap_or_default();
    let uid = sweep.uid().ok_or_else(|| Error::MissingUid {
        kind: "SimulationSweep",
        name: sweep.name_any(),
    })?;
    let t = sweep.spec.run_template.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = t.labels.clone();
    labels.insert(LABEL_SWEEP.into(), label_value(&sweep.name_any()));
    let run = SimulationRun {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "simcache.io/v1alpha1".into(),
                kind: "SimulationSweep".into(),
                name: sweep.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: SimulationRunSpec {
            simulation: sweep.spec.simulation.clone(),
            inputs: inputs.clone(),
            cache_mode: t.cache_mode,
            timeout_seconds: t.timeout_seconds,
            retry_limit: t.retry_limit,
            ttl_seconds_after_finished: t.ttl_seconds_after_finished,
            pod: None,
        },
        status: None,
    };
    match ctx
        .api::<SimulationRun>(&ns)
        .create(&PostParams::default(), &run)
        .await
    {
        Ok(_) => Ok(()),
        // Made by an earlier pass (re-applying the sweep makes nothing new).
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

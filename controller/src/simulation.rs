//! The Simulation controller: registers each Simulation version in the
//! catalog, reports it in the status, and — when the governing CachePolicy
//! says so — invalidates the cached results of the other versions once a new
//! version appears. Deleting a Simulation marks its catalog entry deprecated;
//! its runs and results stay.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use simcache_crds::{Simulation, SimulationStatus};
use simcache_store::StoreError;
use simcache_store::cache::{InvalidationFilter, InvalidationRecord};
use simcache_store::catalog::Registration;

use crate::status::patch_simulation;
use crate::{Context, Error, Result};
use simcache_core::conditions;
use simcache_core::pod::template::check_simulation;

pub const FINALIZER: &str = "simcache.io/catalog";

/// The `Ready` reason while the pod settings can't make a pod.
const POD_REFUSED: &str = "PodSettingsRefused";

/// How often the run statistics in the status are refreshed.
const STATS_REFRESH: Duration = Duration::from_secs(30);

pub async fn reconcile(sim: Arc<Simulation>, ctx: Arc<Context>) -> Result<Action> {
    let ns = sim.namespace().unwrap_or_default();
    let api = ctx.api::<Simulation>(&ns);
    finalizer(&api, FINALIZER, sim, |ev| async {
        match ev {
            Finalizer::Apply(s) => apply(&s, &ctx).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })
}

async fn apply(sim: &Simulation, ctx: &Context) -> Result<Action> {
    let spec = simcache_core::cache_key::catalog_spec(sim);
    let previous = sim.status.clone().unwrap_or_default();
    let generation = sim.metadata.generation;
    let (registered, id) = match ctx
        .stores
        .catalog
        .register(&spec, Some("simcache-operator"))
        .await
    {
        Ok(Registration::Created(id)) => (true, id),
        Ok(Registration::Unchanged(id)) => (false, id),
        Err(StoreError::Conflict(m)) => {
            let was = previous
                .conditions
                .iter()
                .any(|c| c.type_ == "Registered" && c.reason == "VersionConflict");
            if !was {
                ctx.event(sim, true, "VersionConflict", m.clone()).await;
            }
            let message = format!("{m} (bump spec.version to change a registered simulation)");
            let status = SimulationStatus {
                observed_generation: generation,
                conditions: simulation_conditions(
                    &previous,
                    false,
                    "VersionConflict",
                    &message,
                    generation,
                    None,
                ),
                ..previous.clone()
            };
            patch_simulation(ctx, sim, &previous, &status).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    if registered {
        ctx.event(
            sim,
            false,
            "Registered",
            format!(
                "registered {} {} in the catalog (id {id})",
                spec.name, spec.version
            ),
        )
        .await;
        invalidate_other_versions(sim, &spec.name, &spec.version, ctx).await?;
    }
    let stats = ctx.stores.catalog.stats(id).await?;
    // Registered either way (the catalog needs no pod), but runs can't
    // start while the pod settings reach for what simcache owns.
    let refused = check_simulation(&sim.spec, &ctx.cfg.sidecar)
        .err()
        .map(|r| r.to_string());
    if let Some(message) = &refused {
        let was = previous
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == POD_REFUSED && &c.message == message);
        if !was {
            ctx.event(sim, true, POD_REFUSED, message.clone()).await;
        }
    }
    let conditions = simulation_conditions(
        &previous,
        true,
        "Registered",
        &format!("catalog id {id}"),
        generation,
        refused.as_deref(),
    );
    let status = SimulationStatus {
        catalog_id: Some(id),
        observed_generation: generation,
        runs: stats.total_executions,
        success_rate: stats.success_rate.map(|r| format!("{:.0}%", r * 100.0)),
        conditions,
    };
    patch_simulation(ctx, sim, &previous, &status).await?;
    Ok(Action::requeue(STATS_REFRESH))
}

async fn invalidate_other_versions(
    sim: &Simulation,
    name: &str,
    version: &str,
    ctx: &Context,
) -> Result<()> {
    let Some(policy) = ctx.policy_of(sim) else {
        return Ok(());
    };
    if !policy.spec.invalidate_on_new_version {
        return Ok(());
    }
    let mut total = 0;
    for other in ctx.stores.catalog.versions(name).await? {
        if other.spec.version == version {
            continue;
        }
        let filter = InvalidationFilter {
            simulation_name: Some(name.into()),
            simulation_version: Some(other.spec.version.clone()),
            ..Default::default()
        };
        total += ctx
            .stores
            .cache
            .invalidate(
                &filter,
                None,
                &InvalidationRecord {
                    requested_by: Some("simcache-operator".into()),
                    reason: Some(format!(
                        "version {version} registered; policy {} invalidates older versions",
                        policy.name_any()
                    )),
                },
            )
            .await?;
    }
    if total > 0 {
        ctx.event(
            sim,
            false,
            "CacheInvalidated",
            format!("invalidated {total} cached results of other versions of {name}"),
        )
        .await;
    }
    Ok(())
}

async fn cleanup(sim: &Simulation, ctx: &Context) -> Result<Action> {
    if let Some(id) = sim.status.as_ref().and_then(|s| s.catalog_id) {
        ctx.stores.catalog.set_status(id, "deprecated").await?;
    }
    Ok(Action::await_change())
}

/// `Registered` (in the catalog) and `Ready` (runs can use it): a
/// Simulation is ready when its version is registered and its pod settings
/// are not `refused`.
fn simulation_conditions(
    previous: &SimulationStatus,
    registered: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    refused: Option<&str>,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut c = previous.conditions.clone();
    conditions::set(
        &mut c,
        "Registered",
        registered,
        reason,
        message,
        generation,
        now,
    );
    let (ready, ready_reason, ready_message) = match (registered, refused) {
        (true, Some(why)) => (false, POD_REFUSED, why),
        (true, None) => (true, reason, "registered; runs can use it"),
        (false, _) => (false, reason, message),
    };
    conditions::set(
        &mut c,
        "Ready",
        ready,
        ready_reason,
        ready_message,
        generation,
        now,
    );
    c
}

//! Writing statuses: one merge patch of the status subresource, skipped when
//! nothing changed.

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use simcache_crds::{
    Simulation, SimulationRun, SimulationRunStatus, SimulationStatus, SimulationSweep,
    SimulationSweepStatus,
};

use crate::{Context, Result};

/// Every optional field of a run's status that a phase may clear (a merge
/// patch removes only what it names as null).
const CLEARABLE: &[&str] = &[
    "cacheStatus",
    "inputHash",
    "cacheKey",
    "executionId",
    "podName",
    "cachedFrom",
    "waitingFor",
    "startTime",
    "completionTime",
    "durationSeconds",
    "outputs",
    "resultId",
    "message",
    "nextAttemptTime",
    "cleanupTime",
];

/// Every optional field of a sweep's status that may be cleared.
const SWEEP_CLEARABLE: &[&str] = &["progress", "startTime", "completionTime", "message"];

/// The merge patch that makes a status `s`, naming each of `clearable` it
/// lacks as null (a merge patch removes only what it names).
fn status_patch(s: &impl serde::Serialize, clearable: &[&str]) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        for k in clearable {
            m.entry(k.to_string()).or_insert(Value::Null);
        }
    }
    json!({ "status": v })
}

/// The merge patch that makes a run's status `s`.
pub fn run_status_patch(s: &SimulationRunStatus) -> Value {
    status_patch(s, CLEARABLE)
}

/// Writes the sweep's status when it differs from `before`.
pub async fn patch_sweep(
    ctx: &Context,
    sweep: &SimulationSweep,
    before: &SimulationSweepStatus,
    after: &SimulationSweepStatus,
) -> Result<()> {
    if before == after && sweep.status.is_some() {
        return Ok(());
    }
    let ns = sweep.namespace().unwrap_or_default();
    ctx.api::<SimulationSweep>(&ns)
        .patch_status(
            &sweep.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status_patch(after, SWEEP_CLEARABLE)),
        )
        .await?;
    Ok(())
}

/// Writes the run's status when it differs from `before`.
pub async fn patch_run(
    ctx: &Context,
    run: &SimulationRun,
    before: &SimulationRunStatus,
    after: &SimulationRunStatus,
) -> Result<()> {
    if before == after && run.status.is_some() {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    ctx.api::<SimulationRun>(&ns)
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(run_status_patch(after)),
        )
        .await?;
    Ok(())
}

/// Writes the Simulation's status when it differs from `before`.
pub async fn patch_simulation(
    ctx: &Context,
    sim: &Simulation,
    before: &SimulationStatus,
    after: &SimulationStatus,
) -> Result<()> {
    if before == after {
        return Ok(());
    }
    let ns = sim.namespace().unwrap_or_default();
    ctx.api::<Simulation>(&ns)
        .patch_status(
            &sim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": after })),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_crds::Phase;

    #[test]
    fn a_status_patch_clears_what_the_status_no_longer_has() {
        let s = SimulationRunStatus {
            phase: Phase::Running,
            pod_name: Some("p".into()),
            ..Default::default()
        };
        let p = run_status_patch(&s);
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["podName"], "p");
        for k in CLEARABLE.iter().filter(|k| **k != "podName") {
            assert!(p["status"][k].is_null(), "{k}");
            assert!(p["status"].as_object().unwrap().contains_key(*k), "{k}");
        }
        // Every optional field of the status is clearable.
        let full = serde_json::to_value(SimulationRunStatus {
            next_attempt_time: Some(time()),
            cleanup_time: Some(time()),
            ..Default::default()
        })
        .unwrap();
        for k in full.as_object().unwrap().keys() {
            assert!(
                ["phase", "attempts"].contains(&k.as_str()) || CLEARABLE.contains(&k.as_str()),
                "{k} is not clearable"
            );
        }
    }

    fn time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        )
    }
}

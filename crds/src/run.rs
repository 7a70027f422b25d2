//! `SimulationRun`: one execution of a Simulation with concrete inputs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which Simulation (and version) to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationRef {
    /// metadata.name of the Simulation in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Expected version; the run fails if the Simulation has another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How a run uses the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CacheMode {
    /// Use a cached result when there is one; cache the result otherwise.
    #[default]
    Use,
    /// Run again and overwrite the cached result.
    Refresh,
    /// Neither read nor write the cache.
    Bypass,
}

/// One execution of a Simulation with concrete inputs.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "simcache.io",
    version = "v1alpha1",
    kind = "SimulationRun",
    namespaced,
    status = "SimulationRunStatus",
    shortname = "simrun",
    category = "simcache",
    doc = "One run of a Simulation with concrete inputs. Identical runs are served from the cache without starting a pod.",
    printcolumn(
        name = "Simulation",
        type_ = "string",
        json_path = ".spec.simulation.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Cache", type_ = "string", json_path = ".status.cacheStatus"),
    printcolumn(
        name = "Duration",
        type_ = "number",
        json_path = ".status.durationSeconds",
        description = "seconds the simulation ran"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1,
        description = "why the run is in its phase"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SimulationRunSpec {
    /// The Simulation to run.
    pub simulation: SimulationRef,
    /// Input values by name; checked against the Simulation's declared inputs, defaults applied.
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::any_value_map")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// Use (default), Refresh or Bypass.
    #[serde(default)]
    pub cache_mode: CacheMode,
    /// Fail the run after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<i64>,
    /// Retries after a failure (with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retry_limit: Option<i32>,
    /// Seconds after the run finishes until its pod and token Secret are deleted (0: at once). The run's status, results and run database stay. Default: the Simulation's ttlSecondsAfterFinished, else the operator's --run-ttl-seconds-after-finished (1 hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Labels, annotations, tolerations and node selector for this run's pods only, over the Simulation's podTemplate. They don't change the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::pod_template::RunPodSettings>,
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    /// An identical run is computing the result; this one waits for it.
    WaitingForCache,
    Running,
    Succeeded,
    Failed,
    /// Served from the cache; no pod ran.
    Cached,
}

/// What the cache did for a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// The run's result was written to the cache.
    Populated,
    /// The cache was not used (Bypass).
    Skipped,
    LookupFailure,
    PutFailure,
}

/// What the operator observed about a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationRunStatus {
    /// Pending, WaitingForCache, Running, Succeeded, Failed or Cached.
    #[serde(default)]
    pub phase: Phase,
    /// Hit, Miss, Populated, Skipped, LookupFailure or PutFailure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_status: Option<CacheStatus>,
    /// SHA-256 of the canonical inputs with the simulation name, version and image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_hash: Option<String>,
    /// Key of the result in the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// Execution id of the run (its run database is named after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The pod that runs (or ran) the simulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// For Cached runs and waiters: the execution that produced the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<String>,
    /// For WaitingForCache: the run this one waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// When the simulation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Seconds the simulation ran (for Cached runs: the original run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Output values by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::any_value_map")]
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// Id of the result in the results store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_id: Option<i64>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: i32,
    /// While a failed attempt backs off: when the next attempt may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// When the finished run's pod and token Secret were deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_time: Option<Time>,
    /// Why the run is in its phase, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: InputsValid, CacheChecked, Completed, Ready (and SpecChanged when a finished run's spec was edited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

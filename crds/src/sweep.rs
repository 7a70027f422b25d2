//! `SimulationSweep`: a parameter sweep over one Simulation, made into one
//! SimulationRun per point by the operator.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::run::{CacheMode, SimulationRef};

fn exactly_one_kind(s: &mut Schema) {
    s.insert(
        "oneOf".into(),
        serde_json::json!([
            { "required": ["values"] },
            { "required": ["range"] },
            { "required": ["linspace"] },
            { "required": ["logspace"] }
        ]),
    );
}

fn one_to_sixteen_entries(s: &mut Schema) {
    s.insert("minProperties".into(), 1.into());
    s.insert("maxProperties".into(), 16.into());
}

/// The values one input takes: exactly one of `values`, `range`, `linspace`
/// or `logspace`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = exactly_one_kind)]
pub struct ParameterValues {
    /// The values themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::any_value_list", length(min = 1))]
    pub values: Option<Vec<serde_json::Value>>,
    /// from, from + step, … up to and including `to` (within rounding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<StepRange>,
    /// `count` values evenly spaced from `from` to `to`, both included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linspace: Option<CountRange>,
    /// `count` values evenly spaced on a log scale from `from` to `to`, both included and both > 0 (numpy's geomspace; the endpoints are values, not exponents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logspace: Option<CountRange>,
}

/// from, from + step, … to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRange {
    /// First value.
    pub from: f64,
    /// Last value (included when a step lands on it).
    pub to: f64,
    /// Distance between values; its sign must lead from `from` to `to`.
    pub step: f64,
}

/// `count` values from `from` to `to`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountRange {
    /// First value.
    pub from: f64,
    /// Last value.
    pub to: f64,
    /// How many values.
    #[schemars(range(min = 1, max = 100000))]
    pub count: u32,
}

/// How the parameters' values make points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Every combination (a grid).
    #[default]
    Product,
    /// The i-th value of each parameter together (all lists equally long).
    Zip,
}

/// What a failed run does to the sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    /// Run every point; the sweep ends PartiallyFailed if some failed.
    #[default]
    Continue,
    /// Start no new run after the first failure; the sweep ends Failed.
    StopOnFirstFailure,
}

/// Settings of every run the sweep makes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTemplate {
    /// Use (default), Refresh or Bypass.
    #[serde(default)]
    pub cache_mode: CacheMode,
    /// Fail a run after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<i64>,
    /// Retries after a run's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retry_limit: Option<i32>,
    /// Seconds after a run finishes until its pod is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Labels on each run (beside simcache.io/sweep).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A parameter sweep: one SimulationRun per point, at most maxParallel computing at once; points already cached become Cached at once.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "simcache.io",
    version = "v1alpha1",
    kind = "SimulationSweep",
    namespaced,
    status = "SimulationSweepStatus",
    shortname = "simsweep",
    category = "simcache",
    doc = "A parameter sweep over a Simulation: one SimulationRun per point, at most maxParallel computing at once; points already cached become Cached at once.",
    printcolumn(
        name = "Simulation",
        type_ = "string",
        json_path = ".spec.simulation.name"
    ),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress",
        description = "finished/total"
    ),
    printcolumn(name = "Cached", type_ = "integer", json_path = ".status.cached"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SimulationSweepSpec {
    /// The Simulation (and version) every point runs.
    pub simulation: SimulationRef,
    /// Inputs every point shares.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::any_value_map")]
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The swept inputs (1 to 16) and their values.
    #[schemars(transform = one_to_sixteen_entries)]
    pub parameters: BTreeMap<String, ParameterValues>,
    /// product (every combination, the default) or zip (the i-th values together).
    #[serde(default)]
    pub combine: Combine,
    /// Settings of every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_template: Option<RunTemplate>,
    /// Runs computing at once (cached points do not count). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_parallel: Option<u32>,
    /// Continue (default) or StopOnFirstFailure.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// Where a sweep is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SweepPhase {
    #[default]
    Pending,
    Running,
    /// Every point Succeeded or Cached.
    Succeeded,
    /// No point succeeded, the sweep is invalid, or it stopped on a failure.
    Failed,
    /// Some points failed, others did not.
    PartiallyFailed,
}

/// What the operator observed about a sweep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationSweepStatus {
    /// Pending, Running, Succeeded, Failed or PartiallyFailed.
    #[serde(default)]
    pub phase: SweepPhase,
    /// Points in the sweep.
    #[serde(default)]
    pub total: i64,
    /// Points whose run is not made or not started yet.
    #[serde(default)]
    pub pending: i64,
    /// Points computing now.
    #[serde(default)]
    pub running: i64,
    /// Points computed.
    #[serde(default)]
    pub succeeded: i64,
    /// Points served from the cache.
    #[serde(default)]
    pub cached: i64,
    /// Points that failed.
    #[serde(default)]
    pub failed: i64,
    /// Finished points over the total, e.g. "35/40".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Seconds of computing the cache saved: the producing runs' durations of the Cached points.
    #[serde(default)]
    pub compute_seconds_saved: f64,
    /// When the first run was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the last point finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why the sweep is in its phase, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: Valid, Completed (True once every point finished or the sweep stopped; `kubectl wait --for=condition=Completed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

//! `Simulation`: a tool, its version, its container and its declared inputs
//! and outputs. Registered in the catalog by the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The type of an input or output value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    Number,
    Integer,
    Boolean,
    String,
    Array,
    Object,
    /// A path or URI.
    File,
}

/// What a simulation declares about one input or output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterSpec {
    /// Value type: number, integer, boolean, string, array, object or file.
    #[serde(rename = "type")]
    pub value_type: ParameterType,
    /// Units of the value, e.g. K, Pa, m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub units: Option<String>,
    /// What the value means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Smallest allowed value (numbers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (numbers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Value used when a run does not give one (inputs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::any_value")]
    pub default: Option<serde_json::Value>,
}

/// A tool, one version of it, and how to run it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "simcache.io",
    version = "v1alpha1",
    kind = "Simulation",
    namespaced,
    status = "SimulationStatus",
    shortname = "sim",
    category = "simcache",
    doc = "A simulation tool at one version: its container image, command, and declared inputs and outputs. The operator registers it in the catalog.",
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.version",
        description = "version of the tool"
    ),
    printcolumn(
        name = "Registered",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Registered\")].status",
        description = "registered in the catalog"
    ),
    printcolumn(
        name = "Runs",
        type_ = "integer",
        json_path = ".status.runs",
        description = "runs recorded"
    ),
    printcolumn(
        name = "Success",
        type_ = "string",
        json_path = ".status.successRate",
        description = "share of finished runs that succeeded"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SimulationSpec {
    /// Name in the catalog; defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    )]
    pub tool: Option<String>,
    /// Version of the tool, e.g. 1.2.0.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    )]
    pub version: String,
    /// What the simulation computes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// Search tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tags: Vec<String>,
    /// Container image; pin it by digest (image@sha256:...) so cache keys follow the exact build.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Declared inputs by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, ParameterSpec>,
    /// Declared outputs by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, ParameterSpec>,
    /// CPU and memory for the simulation container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub resources: Option<ResourceRequirements>,
    /// Security settings for the simulation container only, set over simcache's Pod Security `restricted` defaults (non-root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault). A namespace that enforces `restricted` refuses a pod whose settings relax them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
    /// CPU and memory for simcache's sidecar in this Simulation's pods, in place of the operator's `--sidecar-resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub sidecar_resources: Option<ResourceRequirements>,
    /// Name of the CachePolicy that applies to this simulation's results by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_policy_ref: Option<String>,
    /// Default for its runs: seconds after a run finishes until its pod and token Secret are deleted (0: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// SFMDevices (in this namespace) its pods may read through the sidecar's SFM proxy at $SIMCACHE_SFM_URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253), regex(pattern = crate::fields::OBJECT_NAME)))]
    pub sfm_devices: Vec<String>,
    /// Of its sfmDevices, those its pods may also write to (config, erase, monitor start/stop); each must be listed in sfmDevices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253), regex(pattern = crate::fields::OBJECT_NAME)))]
    pub sfm_control: Vec<String>,
    /// SystemsOfRecord (in this namespace) its pods read through the sidecar's cache at $SIMCACHE_URL/sor/{name}/objects/{path}.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = crate::fields::OBJECT_NAME)))]
    pub systems_of_record: Vec<String>,
    /// A partial pod template merged into its runs' pods: labels, annotations, scheduling, pull secrets, service account, volumes, and env/mounts/resources/securityContext of the `simulation` container. What simcache owns (the sidecar, the run volume, the variables it injects, its labels) can't be overridden; an attempt is refused naming the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<crate::pod_template::PodTemplate>,
}

/// What the operator observed about a Simulation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimulationStatus {
    /// Id of the catalog entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_id: Option<i64>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Runs recorded in the catalog.
    #[serde(default)]
    pub runs: i64,
    /// Share of finished runs that succeeded, e.g. "95%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<String>,
    /// Conditions: Registered, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

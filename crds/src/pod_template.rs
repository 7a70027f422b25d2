//! The parts of a simulation pod its users may shape: a partial pod template
//! on the Simulation, and a few scheduling settings on each SimulationRun.
//! The operator merges them into the pod it generates (rules in
//! docs/pod-template.md); what simcache owns — the sidecar, the shared run
//! volume, the environment it injects, its labels and the owner reference —
//! can't be overridden, and an attempt is refused naming the field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A partial pod template merged into every pod of the Simulation's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels and annotations added to the pod (keys under `simcache.io/` and the ones simcache sets are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PodTemplateMetadata>,
    /// Pod settings merged into the generated pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodTemplateSpec>,
}

/// Labels and annotations for the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMetadata {
    /// Labels added to the pod (e.g. kueue.x-k8s.io/queue-name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The pod settings a Simulation may set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Node labels the pod must match, added to the operator's `--pod-node-selector` (whose keys can't be changed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations, added to the generated pod's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub affinity: Option<Affinity>,
    /// How the pods spread over zones and nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Secrets for pulling the simulation's image (and the sidecar's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The pod's service account. Its token is still not mounted (automountServiceAccountToken stays false); mount a projected token volume if the simulation needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Priority class (e.g. for preemption in shared clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Scheduler, e.g. volcano; for Kueue set its queue-name label in metadata.labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Runtime class (e.g. gVisor, Kata, a GPU runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Pod-level security settings, each field over simcache's (runAsNonRoot, seccomp RuntimeDefault). The sidecar sets its own, so these don't relax it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub security_context: Option<PodSecurityContext>,
    /// Volumes, added to simcache's (whose names can't be reused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub volumes: Vec<Volume>,
    /// Settings for the simulation container; the only name allowed is `simulation` (the sidecar is simcache's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub containers: Vec<ContainerTemplate>,
}

/// What may be set on the simulation container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplate {
    /// Must be `simulation`.
    pub name: String,
    /// Variables added to the container (names simcache injects are refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub env: Vec<EnvVar>,
    /// ConfigMaps and Secrets whose keys become variables; simcache's own variables take precedence over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub env_from: Vec<EnvFromSource>,
    /// Mounts of the template's volumes (not at or under /simcache).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub volume_mounts: Vec<VolumeMount>,
    /// Requests and limits, each entry over the Simulation's spec.resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub resources: Option<ResourceRequirements>,
    /// Security settings, each field over the Simulation's spec.securityContext and simcache's restricted defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub security_context: Option<SecurityContext>,
}

/// What one SimulationRun may add to its own pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPodSettings {
    /// Labels added to this run's pods (over the Simulation's template).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to this run's pods (over the Simulation's template).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Tolerations added to this run's pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = crate::schema::nested_descriptions_dropped)]
    pub tolerations: Vec<Toleration>,
    /// Node labels this run's pods must match (over the Simulation's; the operator's keys can't be changed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

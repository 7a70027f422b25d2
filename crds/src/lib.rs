//! simcache's custom resources (group `simcache.io`, version `v1alpha1`):
//! `Simulation`, `SimulationRun`, `CachePolicy`, `SFMDevice`, `SystemOfRecord`,
//! `SimulationSweep`. The YAML files beside this
//! crate are generated from these types (`cargo run -p simcache-crds --bin
//! gen-crds`); a test fails when they drift.

// kube's `printcolumn(type_ = ...)` repeats keys clippy reads as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod chart_readme;
pub mod fields;
mod pod_template;
mod policy;
pub mod reference;
pub mod run;
mod schema;
pub mod sfm;
mod simulation;
pub mod sor;
pub mod sweep;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use pod_template::{
    ContainerTemplate, PodTemplate, PodTemplateMetadata, PodTemplateSpec, RunPodSettings,
};
pub use policy::{CachePolicy, CachePolicySpec, CachePolicyStatus};
pub use run::{
    CacheMode, CacheStatus, Phase, SimulationRun, SimulationRunSpec, SimulationRunStatus,
};
pub use sfm::{SFMDevice, SFMDeviceSpec, SFMDeviceStatus};
pub use simulation::{ParameterSpec, ParameterType, Simulation, SimulationSpec, SimulationStatus};
pub use sor::{SystemOfRecord, SystemOfRecordSpec, SystemOfRecordStatus};
pub use sweep::{
    Combine, FailurePolicy, ParameterValues, SimulationSweep, SimulationSweepSpec,
    SimulationSweepStatus, SweepPhase,
};

/// Every CRD with the file name it is written to.
pub fn all() -> Vec<(String, CustomResourceDefinition)> {
    [
        Simulation::crd(),
        SimulationRun::crd(),
        CachePolicy::crd(),
        SFMDevice::crd(),
        SystemOfRecord::crd(),
        SimulationSweep::crd(),
    ]
    .into_iter()
    .map(|c| {
        let name = c.metadata.name.clone().unwrap_or_default();
        (format!("{name}.yaml"), c)
    })
    .collect()
}

/// The YAML a CRD is written as (with a header saying it is generated).
/// The chart's template for `crd`: installed when `crds.install`, kept on
/// uninstall when `crds.keep` (Helm never upgrades a chart's `crds/`
/// folder, but does upgrade templates).
pub fn to_chart_template(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    let body = serde_yaml::to_string(crd)?;
    anyhow::ensure!(
        !body.contains("{{"),
        "the CRD text holds `{{{{`, which Helm would read as a template"
    );
    let name = crd.metadata.name.clone().unwrap_or_default();
    let meta = format!("metadata:\n  name: {name}\n");
    anyhow::ensure!(body.contains(&meta), "no metadata.name line in {name}");
    let body = body.replacen(
        &meta,
        &format!(
            "{meta}  labels:\n    {{{{- include \"simcache.labels\" . | nindent 4 }}}}\n  {{{{- if .Values.crds.keep }}}}\n  annotations:\n    # Deleting a CRD deletes every object of its kind.\n    helm.sh/resource-policy: keep\n  {{{{- end }}}}\n"
        ),
        1,
    );
    Ok(format!(
        "{{{{- if .Values.crds.install }}}}\n# Generated from the Rust types in crds/src by `cargo run -p simcache-crds --bin gen-crds`.\n# Do not edit: a test fails when this file and the types disagree.\n{body}{{{{- end }}}}\n"
    ))
}

pub fn to_yaml(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    Ok(format!(
        "# Generated from the Rust types in crds/src by `cargo run -p simcache-crds --bin gen-crds`.\n# Do not edit: a test fails when this file and the types disagree.\n{}",
        serde_yaml::to_string(crd)?
    ))
}

//! simcache's custom resources (group `simcache.io`, version `v1alpha1`):
//! `Simulation`, `SimulationRun`, `CachePolicy`, `SFMDevice`, `SystemOfRecord`. The YAML files beside this
//! crate are generated from these types (`cargo run -p simcache-crds --bin
//! gen-crds`); a test fails when they drift.

// kube's `printcolumn(type_ = ...)` repeats keys clippy reads as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod policy;
pub mod reference;
pub mod run;
mod schema;
pub mod sfm;
pub mod simulation;
pub mod sor;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use policy::{CachePolicy, CachePolicySpec, CachePolicyStatus};
pub use run::{
    CacheMode, CacheStatus, Phase, SimulationRun, SimulationRunSpec, SimulationRunStatus,
};
pub use sfm::{SFMDevice, SFMDeviceSpec, SFMDeviceStatus};
pub use simulation::{ParameterSpec, ParameterType, Simulation, SimulationSpec, SimulationStatus};
pub use sor::{SystemOfRecord, SystemOfRecordSpec, SystemOfRecordStatus};

/// Every CRD with the file name it is written to.
pub fn all() -> Vec<(String, CustomResourceDefinition)> {
    [
        Simulation::crd(),
        SimulationRun::crd(),
        CachePolicy::crd(),
        SFMDevice::crd(),
        SystemOfRecord::crd(),
    ]
    .into_iter()
    .map(|c| {
        let name = c.metadata.name.clone().unwrap_or_default();
        (format!("{name}.yaml"), c)
    })
    .collect()
}

/// The YAML a CRD is written as (with a header saying it is generated).
pub fn to_yaml(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    Ok(format!(
        "# Generated from the Rust types in crds/src by `cargo run -p simcache-crds --bin gen-crds`.\n# Do not edit: a test fails when this file and the types disagree.\n{}",
        serde_yaml::to_string(crd)?
    ))
}

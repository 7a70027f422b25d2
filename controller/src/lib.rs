//! simcache's Kubernetes controllers, one module per custom resource:
//! Simulation (catalog registration), SimulationRun (cache, lease, pod,
//! ingest → status), SimulationSweep (points → runs), CachePolicy (TTL and
//! size limits), SFMDevice and SystemOfRecord (probes and registration).
//! Each reconciler is a function of one object and a small shared
//! [`Context`] that gathers facts, asks `simcache_core` what to do and
//! applies it; errors become requeues with backoff. `manager` registers
//! them all.

mod backoff;
mod cachepolicy;
mod context;
mod error;
pub mod leader;
mod manager;
mod metrics;
pub mod scope;
mod sfmdevice;
mod simulation;
mod simulation_run;
mod simulation_sweep;
mod status;
mod system_of_record;
mod tokens;
pub mod version;

use std::path::PathBuf;
use std::time::Duration;

pub use context::Context;
pub use error::{Error, Result};
pub use manager::{counted_client, run, run_when_leader};
pub use metrics::ControllerMetrics;

pub use scope::Scope;
use simcache_core::pod::SidecarSettings;

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub sidecar: SidecarSettings,
    /// Where ingested run databases are kept (the ingest route writes here).
    pub runs_base: PathBuf,
    /// How long a cache-key lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// How often a CachePolicy is swept.
    pub sweep_interval: Duration,
    /// Names this replica in leases and events.
    pub identity: String,
    /// The namespaces watched.
    pub scope: Scope,
    /// Parallel reconciliations per controller.
    pub concurrency: u16,
    /// How long a finished run keeps its pod and token Secret, unless the
    /// run or its Simulation says otherwise.
    pub run_ttl_after_finished: Duration,
}

/// kubectl's copy of the last applied spec, kept on every applied object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

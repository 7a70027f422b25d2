//! The environment contract between the operator's simulation pods, the
//! sidecar and the simulation: every variable's name, once. The operator
//! sets them (`pod::build_pod`), the sidecar's flags read them
//! (config.rs), and `exec` and local mode hand the same ones to a program.

// What the sidecar reads.
pub const CACHE_BACKEND: &str = "SIMCACHE_CACHE_BACKEND";
pub const CACHE_DB_PATH: &str = "SIMCACHE_CACHE_DB_PATH";
pub const CACHE_DB_URL: &str = "SIMCACHE_CACHE_DB_URL";
pub const DB_POOL_SIZE: &str = "SIMCACHE_DB_POOL_SIZE";
pub const CACHE_HOST: &str = "SIMCACHE_CACHE_HOST";
pub const CACHE_PORT: &str = "SIMCACHE_CACHE_PORT";
/// Where the sidecar serves health and metrics alone (reachable from
/// outside the pod; the API itself is on loopback).
pub const PROBE_LISTEN: &str = "SIMCACHE_PROBE_LISTEN";
pub const SIMULATION_NAME: &str = "SIMCACHE_SIMULATION_NAME";
pub const SIMULATION_VERSION: &str = "SIMCACHE_SIMULATION_VERSION";
pub const RUN_DB_PATH: &str = "SIMCACHE_RUN_DB_PATH";
pub const SCHEMA: &str = "SIMCACHE_SCHEMA";
pub const INPUT_VALUES: &str = "SIMCACHE_INPUT_VALUES";
pub const CACHE_KEY: &str = "SIMCACHE_CACHE_KEY";
pub const INPUT_HASH: &str = "SIMCACHE_INPUT_HASH";
pub const IMAGE: &str = "SIMCACHE_IMAGE";
pub const IMAGE_DIGEST: &str = "SIMCACHE_IMAGE_DIGEST";
pub const INGEST_URL: &str = "SIMCACHE_INGEST_URL";
pub const INGEST_TOKEN: &str = "SIMCACHE_INGEST_TOKEN";

// What both the sidecar and the simulation read.
pub const EXECUTION_ID: &str = "SIMCACHE_EXECUTION_ID";
pub const RUN_TOKEN: &str = "SIMCACHE_RUN_TOKEN";
pub const INPUTS: &str = "SIMCACHE_INPUTS";
pub const OUTPUTS: &str = "SIMCACHE_OUTPUTS";

// What the simulation reads.
/// The sidecar's run API.
pub const URL: &str = "SIMCACHE_URL";
/// The run's own session at its sidecar (`X-Session-ID`, as sim2l's
/// CacheClient sends it): the cache, its systems of record, its devices.
pub const SESSION_ID: &str = "SIMCACHE_SESSION_ID";
/// The same credential, as the sidecar is told it: it admits the
/// simulation, and the sidecar presents it to the shared tier.
pub const POD_SESSION: &str = "SIMCACHE_POD_SESSION";
/// The shared tier the sidecar keeps the cache in (the chart's
/// `simcache-sidecar shared` Service); pods hold no database credential.
pub const SHARED_TIER_URL: &str = "SIMCACHE_SHARED_TIER_URL";
/// The pod-local SFM proxy (set when the Simulation lists `sfmDevices`).
pub const SFM_URL: &str = "SIMCACHE_SFM_URL";

/// What the operator tells the sidecar about the custom resources it
/// serves (systems of record, SFM devices): one JSON document
/// ([`crate::pod_settings::PodSettings`]), never delimited strings.
pub const POD_SETTINGS: &str = "SIMCACHE_POD_SETTINGS";

// SFM proxy settings the operator sets on the sidecar.
/// Address of the pod-local SFM listener (`127.0.0.1:8200`).
pub const SFM_LISTEN: &str = "SIMCACHE_SFM_LISTEN";
/// Serve only these SFMDevices (`namespace/name`, comma-separated): for a
/// proxy started by hand; the operator uses [`POD_SETTINGS`].
pub const SFM_DEVICES: &str = "SIMCACHE_SFM_DEVICES";

/// The systems of record the sidecar caches (`NAME=URL`, comma-separated):
/// for a sidecar started by hand; the operator uses [`POD_SETTINGS`].
pub const SOR: &str = "SIMCACHE_SOR";
/// The S3 endpoint of those systems of record.
pub const SOR_ENDPOINT: &str = "SIMCACHE_SOR_ENDPOINT";
/// Where the SOR disk tier lives (an emptyDir).
pub const SOR_CACHE_DIR: &str = "SIMCACHE_SOR_CACHE_DIR";
/// Declared SOR functions (a file).
pub const SOR_FUNCTIONS: &str = "SIMCACHE_SOR_FUNCTIONS";

/// The environment variable holding a device's upstream `Authorization`
/// header: `SIMCACHE_SFM_AUTHORIZATION_<NAMESPACE>_<NAME>`, upper case,
/// other characters as `_`. The operator sets it from the Secret the
/// SFMDevice names.
pub fn sfm_authorization_env(namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "SIMCACHE_SFM_AUTHORIZATION_{}_{}",
        clean(namespace),
        clean(name)
    )
}

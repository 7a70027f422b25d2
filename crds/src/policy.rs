//! `CachePolicy`: how long cached results live and how many are kept.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which simulations a policy applies to (any of the ways matches).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySelector {
    /// Simulation names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Globs over simulation names (`*`, `?`, `[...]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Labels a Simulation must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// How entries are chosen for eviction when a limit is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Eviction {
    /// Least recently used first.
    #[default]
    #[serde(rename = "LRU")]
    Lru,
}

/// Cache lifetime and size limits for the selected simulations.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "simcache.io",
    version = "v1alpha1",
    kind = "CachePolicy",
    namespaced,
    status = "CachePolicyStatus",
    shortname = "simcp",
    category = "simcache",
    doc = "Lifetime and size limits of cached simulation results, and when they are invalidated.",
    printcolumn(
        name = "TTL",
        type_ = "integer",
        json_path = ".spec.ttlSeconds",
        description = "seconds a result stays valid"
    ),
    printcolumn(name = "Entries", type_ = "integer", json_path = ".status.entries"),
    printcolumn(name = "Hit rate", type_ = "string", json_path = ".status.hitRate"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicySpec {
    /// The simulations this policy governs.
    #[serde(default)]
    pub selector: PolicySelector,
    /// Seconds a cached result stays valid; absent = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl_seconds: Option<i64>,
    /// Most entries kept; the least recently used go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entries: Option<i64>,
    /// Most bytes of run databases kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<i64>,
    /// Eviction order (LRU).
    #[serde(default)]
    pub eviction: Eviction,
    /// Invalidate a simulation's cached results when a new version of it is registered.
    #[serde(default)]
    pub invalidate_on_new_version: bool,
}

/// What the operator observed about the cache under this policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicyStatus {
    /// Cached results governed by this policy.
    #[serde(default)]
    pub entries: i64,
    /// Bytes of their run databases.
    #[serde(default)]
    pub bytes: i64,
    /// Lookups that found a valid result.
    #[serde(default)]
    pub hits: i64,
    /// Lookups that found none.
    #[serde(default)]
    pub misses: i64,
    /// Entries removed to stay within the limits.
    #[serde(default)]
    pub evictions: i64,
    /// Hits over lookups, e.g. "87.5%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<String>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

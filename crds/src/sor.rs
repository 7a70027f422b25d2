//! `SystemOfRecord`: an S3 bucket (and prefix) or a directory on a volume,
//! whose objects the sidecars of Simulations that name it read through
//! their cache.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

/// Exactly one of `s3` or `directory`.
fn exactly_one_location(s: &mut Schema) {
    s.insert(
        "oneOf".into(),
        serde_json::json!([{ "required": ["s3"] }, { "required": ["directory"] }]),
    );
}

/// Where the data lives on S3 (or an S3-compatible store).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9.\-]+$"))]
    pub bucket: String,
    /// Key prefix the SOR is confined to (`inputs/2026/`); empty for the whole bucket. A clean relative path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024), regex(pattern = crate::fields::RELATIVE_PATH))]
    pub prefix: String,
    /// The S3 endpoint, e.g. https://s3.eu-west-1.amazonaws.com or an on-premises store (https; plain http to a loopback address only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 2048),
        regex(
            pattern = r"^(https://[^\s]+|http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/[^\s]*)?)$"
        )
    )]
    pub endpoint: Option<String>,
    /// Region (default us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// The Secret holding the access key; its values reach the sidecar by
    /// `secretKeyRef` only and are never copied anywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecret>,
    /// A public bucket: unsigned requests, no credentials.
    #[serde(default)]
    pub anonymous: bool,
}

/// Keys of a Secret in the SystemOfRecord's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecret {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the access key id (default `AWS_ACCESS_KEY_ID`).
    #[serde(default = "default_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default = "default_secret_key")]
    pub secret_access_key_key: String,
    /// Key of a session token, if the credentials are temporary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_key: Option<String>,
}

fn default_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// A directory on a PersistentVolumeClaim, mounted read-only into each pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryLocation {
    /// The claim (in the SystemOfRecord's namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::fields::OBJECT_NAME))]
    pub claim_name: String,
    /// A directory inside the volume: a clean relative path (no `..`, no leading `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024), regex(pattern = crate::fields::RELATIVE_PATH))]
    pub sub_path: String,
}

/// Validation modes: `ttl`, `always` or `never`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    /// Fresh for `ttlSeconds`, then a conditional GET.
    #[default]
    Ttl,
    /// A conditional GET on every read.
    Always,
    /// Immutable data: never asked again.
    Never,
}

/// The cache's limits in each pod. Unset fields take the sidecar's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SorCache {
    /// Bytes of the pod's disk tier (an emptyDir of this size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub disk_bytes: Option<i64>,
    /// Bytes of the memory tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub memory_bytes: Option<i64>,
    /// Objects up to this size are kept in memory too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub memory_object_bytes: Option<i64>,
    /// Larger objects are never filled: reads and ranges pass through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_object_bytes: Option<i64>,
    #[serde(default)]
    pub validation: ValidationMode,
    /// Seconds a copy is fresh under `ttl` validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds: Option<i64>,
    /// Seconds past freshness a copy is still served (marked stale) while the SOR fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub stale_if_error_seconds: Option<i64>,
    /// Seconds one request to the SOR may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub fetch_timeout_seconds: Option<i64>,
    /// Functions running at once in one pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub function_concurrency: Option<i64>,
    /// Seconds one function call may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub function_timeout_seconds: Option<i64>,
    /// Memory one function call may need, estimated before it reads data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub function_memory_bytes: Option<i64>,
}

/// A command bound to one built-in function with fixed arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeclaredFunction {
    /// The command's name (lowercase letters, digits, '-', '_').
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z][a-z0-9_\-]*$"))]
    pub name: String,
    /// The built-in it runs, e.g. parquet.column_stats (GET /sor/functions lists them).
    #[schemars(length(min = 1, max = 63))]
    pub builtin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Arguments the caller cannot change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::any_value_map")]
    pub fixed: BTreeMap<String, serde_json::Value>,
    /// JSON Schema of the caller's parameters (type, properties, required,
    /// additionalProperties, items, enum, minimum, maximum, lengths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::any_value")]
    pub parameters: Option<serde_json::Value>,
}

/// A system of record simcache's sidecars read through their cache.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "simcache.io",
    version = "v1alpha1",
    kind = "SystemOfRecord",
    plural = "systemsofrecord",
    namespaced,
    status = "SystemOfRecordStatus",
    shortname = "sor",
    category = "simcache",
    doc = "An S3 bucket or a directory that simcache's sidecars read through a local cache.",
    printcolumn(name = "Location", type_ = "string", json_path = ".status.location"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = exactly_one_location)]
pub struct SystemOfRecordSpec {
    /// An S3 location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// A directory on a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryLocation>,
    /// The cache in each pod.
    #[serde(default)]
    pub cache: SorCache,
    /// Commands bound to built-in functions, validated when the sidecar starts and by the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<DeclaredFunction>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemOfRecordStatus {
    /// `Ready`: the spec is valid and a probe with the Secret's credentials
    /// listed the location (S3), or the claim is bound (directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `s3://bucket/prefix` or `pvc://claim/subPath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the location was last probed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
}

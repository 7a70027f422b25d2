//! `SFMDevice`: a field seismograph reached through its SFM REST service, whose
//! data simcache's sidecars cache and share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

/// The SFM service that talks to the unit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Base URL of the SFM REST service, e.g. http://sfm.field.svc:8200.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// A Secret key whose value is sent as the `Authorization` header upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretKeyRef>,
    /// Seconds one upstream call may take (a waveform takes about 35 s on a real unit).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i64,
}

fn default_timeout() -> i64 {
    120
}

/// A key of a Secret in the SFMDevice's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret (default `authorization`).
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "authorization".into()
}

/// How the SFM service reaches the unit: exactly one of `tcp` or `serial`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = exactly_one_address)]
pub struct Address {
    /// A cellular modem or other TCP pass-through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpAddress>,
    /// A serial port on the SFM host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialAddress>,
}

/// `oneOf` over `required` is structural (no types in the branches), so the
/// API server itself refuses a spec with both or neither address.
fn exactly_one_address(s: &mut Schema) {
    s.insert(
        "oneOf".into(),
        serde_json::json!([{ "required": ["tcp"] }, { "required": ["serial"] }]),
    );
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpAddress {
    /// Modem IP address or host name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9.:\-\[\]]+$"))]
    pub host: String,
    /// TCP port of the modem's pass-through.
    #[serde(default = "default_tcp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i64,
}

fn default_tcp_port() -> i64 {
    12345
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SerialAddress {
    /// Serial port on the SFM host, e.g. /dev/ttyUSB0 or COM5.
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9/._\-]+$"))]
    pub port: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    #[schemars(range(min = 300, max = 921600))]
    pub baud: i64,
}

fn default_baud() -> i64 {
    38400
}

/// How long each kind of data is trusted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfmCacheSpec {
    /// Seconds a monitor status is served before it is read again.
    #[serde(default = "default_status_ttl")]
    #[schemars(range(min = 0, max = 86400))]
    pub monitor_status_ttl_seconds: i64,
    /// Seconds an event list is served before it is revalidated (0: every read revalidates).
    #[serde(default)]
    #[schemars(range(min = 0, max = 31536000))]
    pub events_fresh_seconds: i64,
    /// Seconds past its freshness a copy may still be served when the unit cannot be reached.
    #[serde(default = "default_stale_if_error")]
    #[schemars(range(min = 0, max = 31536000))]
    pub stale_if_error_seconds: i64,
    /// Seconds a reader that holds a copy waits for a slow fetch before it is given the copy (the fetch goes on).
    #[serde(default = "default_stale_after")]
    #[schemars(range(min = 0, max = 3600))]
    pub stale_after_seconds: i64,
    /// First wait after the unit could not be reached; doubles on each failure up to 32 times it.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1, max = 3600))]
    pub unreachable_backoff_seconds: i64,
    /// Delete the device's cached data when the SFMDevice is deleted.
    #[serde(default)]
    pub purge_on_delete: bool,
}

impl Default for SfmCacheSpec {
    fn default() -> Self {
        SfmCacheSpec {
            monitor_status_ttl_seconds: default_status_ttl(),
            events_fresh_seconds: 0,
            stale_if_error_seconds: default_stale_if_error(),
            stale_after_seconds: default_stale_after(),
            unreachable_backoff_seconds: default_backoff(),
            purge_on_delete: false,
        }
    }
}

fn default_status_ttl() -> i64 {
    30
}
fn default_stale_if_error() -> i64 {
    7 * 86400
}
fn default_stale_after() -> i64 {
    10
}
fn default_backoff() -> i64 {
    15
}

/// Periodic refresh of info and monitor status through the cache.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Seconds between probes (0: no probe).
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub interval_seconds: i64,
}

/// A seismograph reached through the SFM REST service; its data is cached
/// and shared by every simcache sidecar.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "simcache.io",
    version = "v1alpha1",
    kind = "SFMDevice",
    plural = "sfmdevices",
    namespaced,
    status = "SFMDeviceStatus",
    shortname = "sfmd",
    category = "simcache",
    doc = "A field seismograph reached through its SFM REST service; simcache caches and shares its data.",
    printcolumn(name = "Address", type_ = "string", json_path = ".status.connKey"),
    printcolumn(name = "Serial", type_ = "string", json_path = ".status.serial"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(name = "Events", type_ = "integer", json_path = ".status.eventCount"),
    printcolumn(name = "Hit rate", type_ = "string", json_path = ".status.hitRate"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SFMDeviceSpec {
    /// The SFM service in front of the unit.
    pub upstream: Upstream,
    /// How the SFM service reaches the unit.
    pub address: Address,
    /// Sessions with the unit at once, across the whole cluster (a unit serves one).
    #[serde(default = "default_sessions")]
    #[schemars(range(min = 1, max = 16))]
    pub max_concurrent_sessions: i64,
    /// Serve from the cache only; never contact the unit.
    #[serde(default)]
    pub suspend: bool,
    /// Freshness of each kind of data.
    #[serde(default)]
    pub cache: SfmCacheSpec,
    /// Periodic refresh of info and monitor status.
    #[serde(default)]
    pub probe: Probe,
}

fn default_sessions() -> i64 {
    1
}

/// What the operator and the sidecars observed about the device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SFMDeviceStatus {
    /// The connection key, as the SFM service forms it (tcp:host:port or serial:port:baud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_key: Option<String>,
    /// The unit's serial number, from its info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Firmware version, from its info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Events on the unit, from its info or event list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_count: Option<i64>,
    /// Events whose headers are cached.
    #[serde(default)]
    pub cached_events: i64,
    /// Waveforms cached.
    #[serde(default)]
    pub cached_waveforms: i64,
    /// Bytes of cached bodies.
    #[serde(default)]
    pub cached_bytes: i64,
    /// Reads answered from the cache.
    #[serde(default)]
    pub hits: i64,
    /// Reads that needed the unit.
    #[serde(default)]
    pub misses: i64,
    /// Calls made to the SFM service.
    #[serde(default)]
    pub upstream_calls: i64,
    /// Reads that joined a fetch already in flight.
    #[serde(default)]
    pub coalesced: i64,
    /// Copies served stale because the unit could not be reached.
    #[serde(default)]
    pub stale_served: i64,
    /// Hits over reads, e.g. "87.5%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<String>,
    /// Last time the unit was contacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_time: Option<String>,
    /// Last time a call to the unit succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<String>,
    /// The last upstream error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reachable, Conflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl SFMDeviceSpec {
    /// The connection key exactly as the SFM service forms it. `None` when
    /// the address is not exactly one of tcp or serial.
    pub fn conn_key(&self) -> Option<String> {
        match (&self.address.tcp, &self.address.serial) {
            (Some(t), None) => Some(format!("tcp:{}:{}", t.host, t.port)),
            (None, Some(s)) => Some(format!("serial:{}:{}", s.port, s.baud)),
            _ => None,
        }
    }
}

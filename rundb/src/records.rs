//! The records a run database holds, as callers write and read them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::params::ValueType;

/// A name that is none of a string enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {given:?} (expected one of {expected})")]
pub struct UnknownName {
    /// The enum, e.g. `LogLevel`.
    pub kind: &'static str,
    pub given: String,
    /// Its values, comma-separated.
    pub expected: String,
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                let l = s.to_ascii_lowercase();
                $(if l.eq_ignore_ascii_case($text) $(|| l == $alias)* { return Ok($name::$variant); })+
                Err(UnknownName {
                    kind: stringify!($name),
                    given: s.to_string(),
                    expected: [$($text),+].join(", "),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// Severity of a log line (sim2l's five levels).
    LogLevel {
        Debug => "DEBUG",
        Info => "INFO",
        Warning => "WARNING" | "warn",
        Error => "ERROR",
        Critical => "CRITICAL" | "fatal",
    }
);

string_enum!(
    /// What a metric measures.
    MetricCategory {
        Performance => "performance",
        Resource => "resource",
        Custom => "custom",
    }
);

string_enum!(
    /// What an artifact is for.
    ArtifactCategory {
        Input => "input",
        Output => "output",
        Intermediate => "intermediate",
        Notebook => "notebook",
        Plot => "plot",
        Data => "data",
    }
);

string_enum!(
    /// The state of a run (sim2l's `run_metadata.status`).
    RunStatus {
        Running => "running",
        Completed => "completed" | "succeeded",
        Failed => "failed",
        Cached => "cached",
    }
);

/// One log line. `timestamp` is Unix seconds; absent means now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    #[serde(default = "default_level")]
    pub level: LogLevel,
    pub message: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "logger_name"
    )]
    pub logger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
}

fn default_level() -> LogLevel {
    LogLevel::Info
}

impl LogLine {
    pub fn new(level: LogLevel, message: impl Into<String>) -> Self {
        LogLine {
            level,
            message: message.into(),
            logger: None,
            context: None,
            exception_type: None,
            exception_message: None,
            stack_trace: None,
            timestamp: None,
        }
    }
}

/// One metric point. `timestamp` is Unix seconds; absent means now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    #[serde(alias = "metric_name")]
    pub name: String,
    #[serde(alias = "metric_value")]
    pub value: f64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "metric_unit"
    )]
    pub unit: Option<String>,
    #[serde(default = "default_category")]
    pub category: MetricCategory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

fn default_category() -> MetricCategory {
    MetricCategory::Custom
}

impl Metric {
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Metric {
            name: name.into(),
            value,
            unit: None,
            category: MetricCategory::Custom,
            step: None,
            timestamp: None,
            metadata: None,
        }
    }
}

/// What `initialize_run` records about a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInit {
    pub simulation_name: String,
    pub simulation_version: String,
    pub simulation_id: Option<i64>,
    pub squid_id: Option<String>,
    /// `local`, `kubernetes`, … (default `local`).
    pub executor_type: Option<String>,
    pub executor_config: Option<Value>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub environment: Option<Value>,
    pub cache_key: Option<String>,
    pub cache_hit: bool,
    pub notes: Option<String>,
}

impl RunInit {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        RunInit {
            simulation_name: name.into(),
            simulation_version: version.into(),
            ..Default::default()
        }
    }
}

/// Where a run came from and what it ran, for reproducing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub host: Option<String>,
    pub image: Option<String>,
    pub image_digest: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    /// Only variables on the allow-list (see [`capture_environment`]).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub parent_execution_ids: Vec<String>,
    pub input_hash: Option<String>,
}

/// Variables recorded by default: the ones that change numerical results.
pub const DEFAULT_ENV_ALLOW_LIST: &[&str] = &[
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "PYTHONHASHSEED",
    "LANG",
    "LC_ALL",
    "TZ",
    "SIMCACHE_SIMULATION_*",
];

/// Name fragments that are never recorded, even when the allow-list matches.
const SECRET_MARKERS: &[&str] = &["TOKEN", "PASSWORD", "SECRET", "KEY", "CREDENTIAL"];

/// Picks the allowed variables out of `vars`. An allow-list entry ending in
/// `*` matches by prefix; names that look like secrets are always dropped.
pub fn capture_environment(
    allow: &[&str],
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| {
            let upper = k.to_ascii_uppercase();
            !SECRET_MARKERS.iter().any(|m| upper.contains(m))
                && allow.iter().any(|a| match a.strip_suffix('*') {
                    Some(prefix) => k.starts_with(prefix),
                    None => k == a,
                })
        })
        .collect()
}

/// An input or output as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredValue {
    pub value: Value,
    #[serde(rename = "type")]
    pub value_type: String,
    pub units: Option<String>,
    pub description: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub default: Option<Value>,
    pub file_reference: Option<String>,
    pub metadata: Option<Value>,
}

impl StoredValue {
    /// The declared type when it is one simcache knows.
    pub fn known_type(&self) -> Option<ValueType> {
        ValueType::parse(&self.value_type).ok()
    }
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredLog {
    pub id: i64,
    pub timestamp: String,
    pub level: String,
    pub logger: Option<String>,
    pub message: String,
    pub context: Option<Value>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    pub stack_trace: Option<String>,
}

/// A stored metric point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMetric {
    pub id: i64,
    pub timestamp: String,
    pub name: String,
    pub value: f64,
    pub unit: Option<String>,
    pub category: Option<String>,
    pub step: Option<i64>,
    pub metadata: Option<Value>,
}

/// An artifact's description (its bytes are read with `export_artifact`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactInfo {
    pub id: i64,
    pub name: String,
    pub path: Option<String>,
    pub content_type: Option<String>,
    pub category: Option<String>,
    pub size_bytes: i64,
    pub sha256: Option<String>,
    pub external_path: Option<String>,
    pub description: Option<String>,
    pub created_at: Option<String>,
}

/// One row of the `run_summary` view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub execution_id: String,
    pub squid_id: Option<String>,
    pub simulation_name: String,
    pub simulation_version: String,
    pub simulation_id: Option<i64>,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub duration_seconds: Option<f64>,
    pub status: String,
    pub executor_type: String,
    pub cache_key: Option<String>,
    pub cache_hit: bool,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub error_message: Option<String>,
    pub error_traceback: Option<String>,
    pub input_count: i64,
    pub output_count: i64,
    pub artifact_count: i64,
    pub log_count: i64,
    pub error_count: i64,
    pub warning_count: i64,
    pub metric_count: i64,
    pub artifact_bytes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_leniently_and_refuse_unknown() {
        assert_eq!("warn".parse::<LogLevel>().unwrap(), LogLevel::Warning);
        assert_eq!("error".parse::<LogLevel>().unwrap(), LogLevel::Error);
        let e = "loud".parse::<LogLevel>().unwrap_err();
        assert_eq!((e.kind, e.given.as_str()), ("LogLevel", "loud"));
        assert!(e.to_string().contains("unknown LogLevel \"loud\""), "{e}");
        assert_eq!(
            "succeeded".parse::<RunStatus>().unwrap(),
            RunStatus::Completed
        );
    }

    #[test]
    fn environment_allow_list_never_leaks_secrets() {
        let vars = [
            ("OMP_NUM_THREADS", "4"),
            ("HOME", "/root"),
            ("SIMCACHE_SIMULATION_NAME", "thermal"),
            ("SIMCACHE_SIMULATION_TOKEN", "s3cret"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = capture_environment(&[DEFAULT_ENV_ALLOW_LIST, &["AWS_*"]].concat(), vars);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["OMP_NUM_THREADS", "SIMCACHE_SIMULATION_NAME"]
        );
    }
}

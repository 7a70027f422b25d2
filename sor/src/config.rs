//! What a sidecar is told about its systems of record: where each one is,
//! how to reach it, and the limits of its cache. Parsing only — no I/O.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where one system of record lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Dir { root: PathBuf },
}

/// One configured SOR, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SorSpec {
    pub name: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--sor {0:?}: expected NAME=URL, e.g. data=s3://bucket/prefix or data=file:///srv/data"
    )]
    Shape(String),
    #[error("--sor name {0:?}: use 1-63 lowercase letters, digits and '-', starting with a letter")]
    Name(String),
    #[error("--sor {name}: {why}")]
    Url { name: String, why: LocationError },
    #[error("two systems of record are named {0:?}")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why a location (`s3://…`, `file://…`) or a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?} is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')")]
    Bucket(String),
    #[error("file URLs name an absolute directory (file:///abs/dir), got {0:?}")]
    RelativeDirectory(String),
    #[error("the directory may not contain '..'")]
    ParentDirectory,
    #[error("{0:?} is neither s3://bucket/prefix nor file:///abs/dir")]
    Scheme(String),
    #[error("prefix {prefix:?}: {why}")]
    Prefix {
        prefix: String,
        why: crate::key::KeyError,
    },
}

/// A `validation` mode other than ttl, always or never.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("validation mode {0:?}: expected ttl, always or never")]
pub struct UnknownValidation(pub String);

pub use simcache_crds::fields::{is_bucket_name as valid_bucket, is_sor_name as valid_name};

/// Parses `NAME=URL`.
pub fn parse_sor(arg: &str) -> Result<SorSpec, ConfigError> {
    let (name, url) = arg
        .split_once('=')
        .ok_or_else(|| ConfigError::Shape(arg.into()))?;
    let name = name.trim();
    if !valid_name(name) {
        return Err(ConfigError::Name(name.into()));
    }
    let location = parse_location(url.trim()).map_err(|why| ConfigError::Url {
        name: name.into(),
        why,
    })?;
    Ok(SorSpec {
        name: name.into(),
        location,
    })
}

pub fn parse_location(url: &str) -> Result<Location, LocationError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(LocationError::Bucket(bucket.into()));
        }
        return Ok(Location::S3 {
            bucket: bucket.into(),
            prefix: normalise_prefix(prefix)?,
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(LocationError::RelativeDirectory(url.into()));
        }
        if path.split('/').any(|s| s == "..") {
            return Err(LocationError::ParentDirectory);
        }
        return Ok(Location::Dir {
            root: PathBuf::from(path),
        });
    }
    Err(LocationError::Scheme(url.into()))
}

/// `"a/b/"`, `"/a/b"` and `"a/b"` all mean the prefix `a/b/`; empty is the bucket's root.
pub fn normalise_prefix(p: &str) -> Result<String, LocationError> {
    let t = p.trim_matches('/');
    if t.is_empty() {
        return Ok(String::new());
    }
    crate::key::Key::parse(t).map_err(|why| LocationError::Prefix {
        prefix: p.into(),
        why,
    })?;
    Ok(format!("{t}/"))
}

/// cache_api's environment: `AWS_BUCKET_NAME` + `AWS_DATA_DIR` name an S3
/// SOR, `LOCAL_DATA_DIR` a directory one. Used only when no `--sor` is given.
pub fn from_cache_api_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<SorSpec>, ConfigError> {
    let mut out = Vec::new();
    if let Some(bucket) = get("AWS_BUCKET_NAME").filter(|b| !b.is_empty()) {
        let prefix = get("AWS_DATA_DIR").unwrap_or_default();
        out.push(parse_sor(&format!(
            "s3=s3://{bucket}/{}",
            prefix.trim_matches('/')
        ))?);
    }
    if let Some(dir) = get("LOCAL_DATA_DIR").filter(|d| !d.is_empty()) {
        out.push(parse_sor(&format!("sd=file://{dir}"))?);
    }
    Ok(out)
}

/// How a cached copy is checked against the SOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// Fresh for `ttl`, then a conditional GET.
    Ttl,
    /// A conditional GET on every read.
    Always,
    /// The data is immutable: never asked again.
    Never,
}

impl std::str::FromStr for Validation {
    type Err = UnknownValidation;
    fn from_str(s: &str) -> Result<Self, UnknownValidation> {
        match s {
            "ttl" => Ok(Validation::Ttl),
            "always" => Ok(Validation::Always),
            "never" => Ok(Validation::Never),
            _ => Err(UnknownValidation(s.into())),
        }
    }
}

impl Validation {
    pub fn as_str(self) -> &'static str {
        match self {
            Validation::Ttl => "ttl",
            Validation::Always => "always",
            Validation::Never => "never",
        }
    }
}

/// Every bound of the cache and its functions.
#[derive(Debug, Clone)]
pub struct Limits {
    pub cache_dir: PathBuf,
    pub disk_bytes: u64,
    pub memory_bytes: u64,
    /// Objects up to this size are also kept in memory.
    pub memory_object_bytes: u64,
    /// Larger objects are never filled: they stream through (ranges too).
    pub max_object_bytes: u64,
    pub validation: Validation,
    pub ttl: Duration,
    /// How long past freshness a copy may still be served when the SOR fails.
    pub stale_if_error: Duration,
    pub fetch_concurrency: usize,
    pub fetch_timeout: Duration,
    pub function_concurrency: usize,
    pub function_queue: usize,
    pub function_timeout: Duration,
    pub function_memory_bytes: u64,
    /// Largest JSON answer a function may give.
    pub function_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cache_dir: std::env::temp_dir().join("simcache-sor"),
            disk_bytes: 10 << 30,
            memory_bytes: 256 << 20,
            memory_object_bytes: 1 << 20,
            max_object_bytes: 2 << 30,
            validation: Validation::Ttl,
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(300),
            fetch_concurrency: 16,
            fetch_timeout: Duration::from_secs(60),
            function_concurrency: 2,
            function_queue: 64,
            function_timeout: Duration::from_secs(10),
            function_memory_bytes: 256 << 20,
            function_output_bytes: 4 << 20,
        }
    }
}

impl Limits {
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.memory_object_bytes > self.memory_bytes {
            return bad("--sor-memory-object-bytes is larger than --sor-memory-bytes");
        }
        if self.fetch_concurrency == 0 || self.function_concurrency == 0 {
            return bad("fetch and function concurrency must be at least 1");
        }
        if self.fetch_timeout.is_zero() || self.function_timeout.is_zero() {
            return bad("timeouts must be longer than zero");
        }
        Ok(())
    }
}

/// The S3 endpoint and how to talk to it (shared by every S3 SOR of a sidecar).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Plain HTTP, allowed only to a loopback endpoint.
    pub allow_http: bool,
    /// No credentials: unsigned requests (a public bucket).
    pub anonymous: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sor_arguments_parse() {
        let s = parse_sor("data=s3://my-bucket/runs/inputs/").unwrap();
        assert_eq!(s.name, "data");
        assert_eq!(
            s.location,
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "runs/inputs/".into()
            }
        );
        let s = parse_sor("raw=s3://my-bucket").unwrap();
        assert_eq!(
            s.location,
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
        let d = parse_sor("local=file:///srv/data").unwrap();
        assert_eq!(
            d.location,
            Location::Dir {
                root: "/srv/data".into()
            }
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let e = |s: &str| parse_sor(s).unwrap_err().to_string();
        assert!(e("s3://b").contains("NAME=URL"));
        assert!(e("Data=s3://bucket").contains("lowercase"));
        assert!(e("d=s3://B").contains("bucket name"));
        assert!(e("d=file://rel/dir").contains("absolute"));
        assert!(e("d=file:///a/../etc").contains(".."));
        assert!(e("d=http://x").contains("neither"));
        assert!(e("d=s3://bucket/../x").contains("prefix"));
        // The variant says which rule, for callers that decide on it.
        let why = |s: &str| match parse_sor(s) {
            Err(ConfigError::Url { why, .. }) => why,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(why("d=s3://B"), LocationError::Bucket("B".into()));
        assert_eq!(why("d=file:///a/../etc"), LocationError::ParentDirectory);
        assert!(matches!(
            why("d=s3://bucket/../x"),
            LocationError::Prefix { .. }
        ));
    }

    #[test]
    fn validation_modes_parse_and_others_are_named() {
        assert_eq!("never".parse::<Validation>(), Ok(Validation::Never));
        let e = "sometimes".parse::<Validation>().unwrap_err();
        assert_eq!(e, UnknownValidation("sometimes".into()));
        assert!(e.to_string().contains("expected ttl, always or never"));
    }

    #[test]
    fn cache_api_environment_is_honoured() {
        let env = |k: &str| match k {
            "AWS_BUCKET_NAME" => Some("legacy-bucket".to_string()),
            "AWS_DATA_DIR" => Some("/data/v1/".to_string()),
            "LOCAL_DATA_DIR" => Some("/cache".to_string()),
            _ => None,
        };
        let specs = from_cache_api_env(env).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].name, "s3");
        assert_eq!(
            specs[0].location,
            Location::S3 {
                bucket: "legacy-bucket".into(),
                prefix: "data/v1/".into()
            }
        );
        assert_eq!(specs[1].name, "sd");
        assert!(from_cache_api_env(|_| None).unwrap().is_empty());
    }

    #[test]
    fn limits_are_checked() {
        assert!(Limits::default().check().is_ok());
        let l = Limits {
            memory_object_bytes: 10,
            memory_bytes: 5,
            ..Limits::default()
        };
        assert!(l.check().is_err());
    }
}

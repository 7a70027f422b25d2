//! What a pod needs to read its Simulation's systems of record through the
//! sidecar: the `SIMCACHE_SOR_*` settings, the AWS credentials by
//! `secretKeyRef` (never their values), an emptyDir for the disk tier, and
//! each directory SOR's claim mounted read-only. Pure.

use std::collections::BTreeMap;

use crate::pod_env;
use crate::pod_settings::{DirectoryPlace, S3Place, SOR_DIRECTORY_ROOT, SorSetting};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use simcache_crds::fields::is_sor_name;
use simcache_crds::sor::{SystemOfRecordSpec, ValidationMode};

use super::{env, secret_env};

/// Where the disk tier lives in the sidecar.
pub const CACHE_DIR: &str = "/var/cache/simcache-sor";
/// Not of the `simcache-sor-{name}` shape, so no SOR's volume can take it.
const CACHE_VOLUME: &str = "simcache-sorcache";

/// `simcache-sor-{name}`, kept a DNS label (at most 63 characters, and a
/// dot in an object name is not allowed in a volume name) by a hash suffix.
fn volume_name(sor: &str) -> String {
    let plain = format!("simcache-sor-{sor}");
    if plain.len() <= 63 && !plain.contains('.') {
        return plain;
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(sor.as_bytes()));
    let mut head: String = plain
        .chars()
        .take(50)
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}-{}", &hash[..12])
}
/// Where directory SORs are mounted: `/sor/<name>`.
const DIR_ROOT: &str = SOR_DIRECTORY_ROOT;

/// A SystemOfRecord a pod reads.
#[derive(Debug, Clone, PartialEq)]
pub struct SorRef {
    pub name: String,
    pub spec: SystemOfRecordSpec,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SorWiring {
    /// The systems of record, for the sidecar's settings document.
    pub settings: Vec<SorSetting>,
    pub sidecar_env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub sidecar_mounts: Vec<VolumeMount>,
}

/// The S3 connection every S3 SOR of one pod must share (the sidecar has one).
#[derive(Debug, Clone, PartialEq)]
struct Connection {
    endpoint: Option<String>,
    region: Option<String>,
    secret: Option<(String, String, String, Option<String>)>,
    anonymous: bool,
}

/// The sidecar's settings, volumes and mounts for the pod's systems of
/// record: one S3 connection at most, each directory SOR's claim mounted
/// read-only, one disk tier sized by the combined limits.
/// Why a Simulation's systems of record cannot be wired into one pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WiringError {
    #[error(
        "SystemsOfRecord {first:?} and {second:?} use different S3 endpoints or credentials; one pod's sidecar reaches one"
    )]
    TwoS3Connections { first: String, second: String },
    #[error("SystemOfRecord {0:?} must set exactly one of s3 or directory")]
    NotOneLocation(String),
    #[error("SystemOfRecord {0:?} names no credentialsSecret and is not anonymous")]
    NoCredentials(String),
    #[error(
        "SystemOfRecord {0:?}: spec.directory.subPath must be a clean relative path (no '..', no leading '/', only letters, digits, '_', '-' and '.')"
    )]
    SubPathEscapes(String),
    #[error(
        "SystemOfRecord {0:?}: spec.s3.prefix must be a clean relative path (no '..', no leading '/', only letters, digits, '_', '-' and '.')"
    )]
    BadPrefix(String),
    #[error(
        "SystemOfRecord {0:?}: a pod reads it as /sor/{0}/..., so its name must be 1-63 lowercase letters, digits and '-', starting with a letter"
    )]
    BadName(String),
    #[error("SystemOfRecord {0:?}: spec.s3.region must be lowercase letters, digits and '-'")]
    BadRegion(String),
    #[error("two of the Simulation's SystemsOfRecord declare a function named {0:?}")]
    DuplicateFunction(String),
    #[error("the SystemsOfRecord's functions cannot be encoded: {0}")]
    Encode(String),
}

pub fn wire(sors: &[SorRef]) -> Result<SorWiring, WiringError> {
    if sors.is_empty() {
        return Ok(SorWiring::default());
    }
    let mut w = SorWiring::default();
    let mut conn: Option<(String, Connection)> = None;
    for s in sors {
        if !is_sor_name(&s.name) {
            return Err(WiringError::BadName(s.name.clone()));
        }
        match (&s.spec.s3, &s.spec.directory) {
            (Some(loc), None) => {
                if !simcache_crds::fields::is_relative_path(&loc.prefix) {
                    return Err(WiringError::BadPrefix(s.name.clone()));
                }
                w.settings.push(SorSetting {
                    name: s.name.clone(),
                    s3: Some(S3Place {
                        bucket: loc.bucket.clone(),
                        prefix: loc.prefix.clone(),
                    }),
                    directory: None,
                });
                let c = s3_connection(&s.name, loc)?;
                match &conn {
                    Some((first, other)) if *other != c => {
                        return Err(WiringError::TwoS3Connections {
                            first: first.clone(),
                            second: s.name.clone(),
                        });
                    }
                    Some(_) => {}
                    None => conn = Some((s.name.clone(), c)),
                }
            }
            (None, Some(dir)) => {
                let path = mount_directory(&mut w, &s.name, dir)?;
                w.settings.push(SorSetting {
                    name: s.name.clone(),
                    s3: None,
                    directory: Some(DirectoryPlace { path }),
                });
            }
            _ => {
                return Err(WiringError::NotOneLocation(s.name.clone()));
            }
        }
    }
    w.sidecar_env.push(env(pod_env::SOR_CACHE_DIR, CACHE_DIR));
    if let Some((_, c)) = conn {
        w.sidecar_env.extend(connection_env(&c));
    }
    let limits = combine(sors);
    for (k, v) in &limits {
        w.sidecar_env.push(env(k, v));
    }
    w.sidecar_env.extend(functions_env(sors)?);
    let size_limit = limits
        .get("SIMCACHE_SOR_DISK_BYTES")
        .map(|b| Quantity(b.clone()));
    w.volumes.push(Volume {
        name: CACHE_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit,
            ..Default::default()
        }),
        ..Default::default()
    });
    w.sidecar_mounts.push(VolumeMount {
        name: CACHE_VOLUME.into(),
        mount_path: CACHE_DIR.into(),
        ..Default::default()
    });
    Ok(w)
}

/// The S3 connection an S3 SOR names (credentials, or explicitly anonymous).
fn s3_connection(
    name: &str,
    loc: &simcache_crds::sor::S3Location,
) -> Result<Connection, WiringError> {
    let c = Connection {
        endpoint: loc.endpoint.clone(),
        region: loc.region.clone(),
        secret: loc.credentials_secret.as_ref().map(|c| {
            (
                c.name.clone(),
                c.access_key_id_key.clone(),
                c.secret_access_key_key.clone(),
                c.session_token_key.clone(),
            )
        }),
        anonymous: loc.anonymous,
    };
    let region_ok = |r: &str| {
        !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if c.region.as_deref().is_some_and(|r| !region_ok(r)) {
        return Err(WiringError::BadRegion(name.to_string()));
    }
    if !c.anonymous && c.secret.is_none() {
        return Err(WiringError::NoCredentials(name.to_string()));
    }
    Ok(c)
}

/// Mounts a directory SOR's claim read-only under `/sor/<name>`; returns
/// the directory the sidecar serves.
fn mount_directory(
    w: &mut SorWiring,
    name: &str,
    dir: &simcache_crds::sor::DirectoryLocation,
) -> Result<String, WiringError> {
    let volume = volume_name(name);
    let mount = format!("{DIR_ROOT}/{name}");
    if !simcache_crds::fields::is_relative_path(&dir.sub_path) {
        return Err(WiringError::SubPathEscapes(name.to_string()));
    }
    let sub = dir.sub_path.trim_end_matches('/');
    let path = if sub.is_empty() {
        mount.clone()
    } else {
        format!("{mount}/{sub}")
    };
    w.volumes.push(Volume {
        name: volume.clone(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: dir.claim_name.clone(),
            read_only: Some(true),
        }),
        ..Default::default()
    });
    w.sidecar_mounts.push(VolumeMount {
        name: volume,
        mount_path: mount,
        read_only: Some(true),
        ..Default::default()
    });
    Ok(path)
}

/// The sidecar's S3 settings and credentials (from the Secret, by key).
fn connection_env(c: &Connection) -> Vec<EnvVar> {
    let mut out = Vec::new();
    if let Some(ep) = &c.endpoint {
        out.push(env(pod_env::SOR_ENDPOINT, ep));
        if ep.starts_with("http://") {
            // The schema admits plain http to loopback only; the sidecar checks again.
            out.push(env("SIMCACHE_SOR_ALLOW_HTTP", "true"));
        }
    }
    if let Some(r) = &c.region {
        out.push(env("SIMCACHE_SOR_REGION", r));
    }
    if c.anonymous {
        out.push(env("SIMCACHE_SOR_ANONYMOUS", "true"));
    }
    if let Some((secret, id, key, token)) = &c.secret {
        out.push(secret_env("AWS_ACCESS_KEY_ID", secret, id));
        out.push(secret_env("AWS_SECRET_ACCESS_KEY", secret, key));
        if let Some(t) = token {
            out.push(secret_env("AWS_SESSION_TOKEN", secret, t));
        }
    }
    out
}

/// Every SOR's declared functions, as one setting; a name declared twice
/// is refused.
fn functions_env(sors: &[SorRef]) -> Result<Option<EnvVar>, WiringError> {
    let functions: Vec<_> = sors.iter().flat_map(|s| s.spec.functions.iter()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for f in &functions {
        if !seen.insert(f.name.as_str()) {
            return Err(WiringError::DuplicateFunction(f.name.clone()));
        }
    }
    if functions.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_string(&functions).map_err(|e| WiringError::Encode(e.to_string()))?;
    Ok(Some(env(pod_env::SOR_FUNCTIONS, json)))
}

/// One sidecar serves every SOR of the pod with one set of limits: byte
/// budgets add up, validation takes the strictest mode and the shortest
/// times, concurrency the largest. Unset everywhere: the sidecar's default.
fn combine(sors: &[SorRef]) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let caches: Vec<_> = sors.iter().map(|s| &s.spec.cache).collect();
    let sum = |f: fn(&simcache_crds::sor::SorCache) -> Option<i64>| {
        let v: Vec<i64> = caches.iter().filter_map(|c| f(c)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<i64>())
    };
    let min = |f: fn(&simcache_crds::sor::SorCache) -> Option<i64>| {
        caches.iter().filter_map(|c| f(c)).min()
    };
    let max = |f: fn(&simcache_crds::sor::SorCache) -> Option<i64>| {
        caches.iter().filter_map(|c| f(c)).max()
    };
    let mut put = |k: &'static str, v: Option<i64>| {
        if let Some(v) = v {
            out.insert(k, v.to_string());
        }
    };
    put("SIMCACHE_SOR_DISK_BYTES", sum(|c| c.disk_bytes));
    put("SIMCACHE_SOR_MEMORY_BYTES", sum(|c| c.memory_bytes));
    put(
        "SIMCACHE_SOR_MEMORY_OBJECT_BYTES",
        min(|c| c.memory_object_bytes),
    );
    put("SIMCACHE_SOR_MAX_OBJECT_BYTES", max(|c| c.max_object_bytes));
    put("SIMCACHE_SOR_TTL_SECS", min(|c| c.ttl_seconds));
    put(
        "SIMCACHE_SOR_STALE_IF_ERROR_SECS",
        min(|c| c.stale_if_error_seconds),
    );
    put(
        "SIMCACHE_SOR_FETCH_TIMEOUT_SECS",
        max(|c| c.fetch_timeout_seconds),
    );
    put(
        "SIMCACHE_SOR_FUNCTION_CONCURRENCY",
        max(|c| c.function_concurrency),
    );
    put(
        "SIMCACHE_SOR_FUNCTION_TIMEOUT_SECS",
        max(|c| c.function_timeout_seconds),
    );
    put(
        "SIMCACHE_SOR_FUNCTION_MEMORY_BYTES",
        max(|c| c.function_memory_bytes),
    );
    let strictest = caches
        .iter()
        .map(|c| c.validation)
        .max_by_key(|v| match v {
            ValidationMode::Never => 0,
            ValidationMode::Ttl => 1,
            ValidationMode::Always => 2,
        })
        .unwrap_or_default();
    out.insert(
        "SIMCACHE_SOR_VALIDATION",
        match strictest {
            ValidationMode::Ttl => "ttl",
            ValidationMode::Always => "always",
            ValidationMode::Never => "never",
        }
        .into(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_crds::sor::{CredentialsSecret, DirectoryLocation, S3Location, SorCache};

    fn s3(name: &str, bucket: &str, secret: Option<&str>) -> SorRef {
        SorRef {
            name: name.into(),
            spec: SystemOfRecordSpec {
                s3: Some(S3Location {
                    bucket: bucket.into(),
                    prefix: "inputs/".into(),
                    endpoint: Some("https://s3.example".into()),
                    region: Some("eu-west-1".into()),
                    credentials_secret: secret.map(|n| CredentialsSecret {
                        name: n.into(),
                        access_key_id_key: "AWS_ACCESS_KEY_ID".into(),
                        secret_access_key_key: "AWS_SECRET_ACCESS_KEY".into(),
                        session_token_key: None,
                    }),
                    anonymous: false,
                }),
                directory: None,
                cache: SorCache::default(),
                functions: vec![],
            },
        }
    }

    fn val<'a>(w: &'a SorWiring, k: &str) -> Option<&'a EnvVar> {
        w.sidecar_env.iter().find(|e| e.name == k)
    }

    #[test]
    fn s3_credentials_travel_by_reference_only() {
        let w = wire(&[s3("data", "bucket-a", Some("s3-creds"))]).unwrap();
        assert_eq!(
            w.settings,
            [SorSetting {
                name: "data".into(),
                s3: Some(S3Place {
                    bucket: "bucket-a".into(),
                    prefix: "inputs/".into()
                }),
                directory: None
            }]
        );
        assert!(val(&w, pod_env::SOR).is_none(), "no delimited list");
        let id = val(&w, "AWS_ACCESS_KEY_ID").unwrap();
        assert!(id.value.is_none(), "never a value");
        let r = id
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("s3-creds", "AWS_ACCESS_KEY_ID")
        );
        assert!(val(&w, "AWS_SECRET_ACCESS_KEY").unwrap().value.is_none());
        assert_eq!(
            val(&w, "SIMCACHE_SOR_ENDPOINT").unwrap().value.as_deref(),
            Some("https://s3.example")
        );
        assert_eq!(
            val(&w, "SIMCACHE_SOR_CACHE_DIR").unwrap().value.as_deref(),
            Some(CACHE_DIR)
        );
        assert!(
            w.volumes
                .iter()
                .any(|v| v.name == CACHE_VOLUME && v.empty_dir.is_some())
        );
        assert!(w.sidecar_mounts.iter().any(|m| m.mount_path == CACHE_DIR));
    }

    #[test]
    fn directories_mount_read_only_and_limits_combine() {
        let mut a = s3("data", "b", Some("creds"));
        a.spec.cache = SorCache {
            disk_bytes: Some(1000),
            ttl_seconds: Some(60),
            validation: ValidationMode::Ttl,
            ..Default::default()
        };
        let dir = SorRef {
            name: "meshes".into(),
            spec: SystemOfRecordSpec {
                s3: None,
                directory: Some(DirectoryLocation {
                    claim_name: "mesh-pvc".into(),
                    sub_path: "v2".into(),
                }),
                cache: SorCache {
                    disk_bytes: Some(500),
                    ttl_seconds: Some(10),
                    validation: ValidationMode::Always,
                    ..Default::default()
                },
                functions: vec![],
            },
        };
        let w = wire(&[a, dir]).unwrap();
        assert_eq!(w.settings.len(), 2);
        assert_eq!(
            w.settings[1].directory,
            Some(DirectoryPlace {
                path: "/sor/meshes/v2".into()
            })
        );
        let pvc = w
            .volumes
            .iter()
            .find(|v| v.name == "simcache-sor-meshes")
            .unwrap();
        assert_eq!(
            pvc.persistent_volume_claim.as_ref().unwrap().read_only,
            Some(true)
        );
        assert!(
            w.sidecar_mounts
                .iter()
                .any(|m| m.name == "simcache-sor-meshes" && m.read_only == Some(true))
        );
        assert_eq!(
            val(&w, "SIMCACHE_SOR_DISK_BYTES").unwrap().value.as_deref(),
            Some("1500")
        );
        assert_eq!(
            val(&w, "SIMCACHE_SOR_TTL_SECS").unwrap().value.as_deref(),
            Some("10")
        );
        assert_eq!(
            val(&w, "SIMCACHE_SOR_VALIDATION").unwrap().value.as_deref(),
            Some("always")
        );
        let cache = w.volumes.iter().find(|v| v.name == CACHE_VOLUME).unwrap();
        assert_eq!(
            cache.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity("1500".into()))
        );
    }

    #[test]
    fn unwirable_combinations_are_refused_with_a_reason() {
        let e = wire(&[s3("a", "b1", Some("one")), s3("b", "b2", Some("two"))]).unwrap_err();
        assert_eq!(
            e,
            WiringError::TwoS3Connections {
                first: "a".into(),
                second: "b".into()
            }
        );
        assert!(
            e.to_string()
                .contains("different S3 endpoints or credentials"),
            "{e}"
        );
        let e = wire(&[s3("a", "b1", None)]).unwrap_err();
        assert_eq!(e, WiringError::NoCredentials("a".into()));
        assert!(e.to_string().contains("no credentialsSecret"), "{e}");
        // A value that would have smuggled a second setting into a
        // delimited list is refused outright.
        let mut a = s3("a", "b1", Some("one"));
        a.spec.s3.as_mut().unwrap().prefix = "x,db=file:///etc".into();
        assert_eq!(wire(&[a]).unwrap_err(), WiringError::BadPrefix("a".into()));
        let dir = |sub: &str| SorRef {
            name: "meshes".into(),
            spec: SystemOfRecordSpec {
                s3: None,
                directory: Some(DirectoryLocation {
                    claim_name: "pvc".into(),
                    sub_path: sub.into(),
                }),
                cache: SorCache::default(),
                functions: vec![],
            },
        };
        for bad in ["v2,db=file:///etc", "../etc", "/abs", "a/../../b"] {
            assert_eq!(
                wire(&[dir(bad)]).unwrap_err(),
                WiringError::SubPathEscapes("meshes".into()),
                "{bad}"
            );
        }
        let mut dotted = dir("v2");
        dotted.name = "meshes.v2".into();
        assert_eq!(
            wire(&[dotted]).unwrap_err(),
            WiringError::BadName("meshes.v2".into())
        );
        assert_eq!(wire(&[]).unwrap(), SorWiring::default());
    }
}

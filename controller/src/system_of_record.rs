//! The SystemOfRecord controller: checks the spec (location, prefix,
//! declared functions) and probes it — an S3 location is listed with the
//! credentials from its Secret, a directory's claim must be bound — then
//! sets `Ready`. The Secret's values stay in this function's memory: they
//! are never written to the status, an event or a log.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use simcache_crds::fields::is_relative_path;
use simcache_crds::sor::{S3Location, SystemOfRecord, SystemOfRecordSpec, SystemOfRecordStatus};
use simcache_sor::config::{Location, S3Options, SorSpec, normalise_prefix, valid_bucket};
use simcache_sor::source::{Credentials, Source, SourceError};

use crate::{Context, Result};
use simcache_core::conditions;

const REPROBE_READY: Duration = Duration::from_secs(600);
const REPROBE_FAILED: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What is wrong with a SystemOfRecord's spec (the `InvalidSpec` message).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "spec.s3.prefix must be a clean relative path (no '..', no leading '/', only letters, digits, '_', '-' and '.')"
    )]
    Prefix,
    #[error("spec.s3: {0}")]
    PrefixKey(simcache_sor::config::LocationError),
    #[error(
        "spec.s3.bucket {0:?} is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')"
    )]
    Bucket(String),
    #[error(
        "spec.directory.subPath must be a clean relative path (no '..', no leading '/', only letters, digits, '_', '-' and '.')"
    )]
    SubPath,
    #[error("set exactly one of spec.s3 or spec.directory")]
    NotExactlyOneLocation,
    #[error("spec.functions: {0}")]
    FunctionsShape(serde_json::Error),
    #[error("spec.functions: {0}")]
    Functions(simcache_sor::functions::DeclareError),
    #[error("the name {0:?} cannot name a system of record: use lowercase letters, digits and '-'")]
    Name(String),
}

/// Checks what can be checked without I/O. Pure.
pub fn validate(
    name: &str,
    spec: &SystemOfRecordSpec,
) -> std::result::Result<(SorSpec, String), SpecError> {
    let (location, display) = match (&spec.s3, &spec.directory) {
        (Some(s3), None) => {
            // Checked field by field: never joined into a URL and parsed again.
            if !is_relative_path(&s3.prefix) {
                return Err(SpecError::Prefix);
            }
            let prefix = normalise_prefix(&s3.prefix).map_err(SpecError::PrefixKey)?;
            if !valid_bucket(&s3.bucket) {
                return Err(SpecError::Bucket(s3.bucket.clone()));
            }
            let display = format!("s3://{}/{}", s3.bucket, prefix.trim_end_matches('/'));
            (
                Location::S3 {
                    bucket: s3.bucket.clone(),
                    prefix,
                },
                display,
            )
        }
        (None, Some(d)) => {
            if !is_relative_path(&d.sub_path) {
                return Err(SpecError::SubPath);
            }
            (
                Location::Dir {
                    root: format!("/sor/{name}").into(),
                },
                format!("pvc://{}/{}", d.claim_name, d.sub_path),
            )
        }
        _ => return Err(SpecError::NotExactlyOneLocation),
    };
    let decls: Vec<simcache_sor::functions::Declared> = serde_json::to_value(&spec.functions)
        .and_then(serde_json::from_value)
        .map_err(SpecError::FunctionsShape)?;
    simcache_sor::functions::Catalog::load(decls).map_err(SpecError::Functions)?;
    if !simcache_sor::config::valid_name(name) {
        return Err(SpecError::Name(name.into()));
    }
    Ok((
        SorSpec {
            name: name.to_string(),
            location,
        },
        display,
    ))
}

/// The condition a failed S3 probe sets. Pure.
pub fn probe_failure(e: &SourceError) -> (&'static str, String) {
    match e {
        SourceError::Denied(m) => (
            "CredentialsRefused",
            format!("the S3 service refused the credentials: {m}"),
        ),
        SourceError::NotFound => ("BucketNotFound", "the bucket does not exist".into()),
        other => ("Unreachable", other.to_string()),
    }
}

async fn credentials(
    ctx: &Context,
    ns: &str,
    s3: &S3Location,
) -> Result<Credentials, (&'static str, String)> {
    let Some(cs) = &s3.credentials_secret else {
        return Ok(Credentials::default());
    };
    let secret = ctx
        .api::<Secret>(ns)
        .get_opt(&cs.name)
        .await
        .map_err(|e| {
            (
                "SecretUnreadable",
                format!("reading Secret {}: {e}", cs.name),
            )
        })?
        .ok_or_else(|| {
            (
                "SecretNotFound",
                format!("Secret {:?} does not exist", cs.name),
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| -> Result<String, (&'static str, String)> {
        data.get(k)
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                (
                    "SecretKeyMissing",
                    format!("Secret {:?} has no key {k:?}", cs.name),
                )
            })
    };
    Ok(Credentials {
        access_key_id: Some(get(&cs.access_key_id_key)?),
        secret_access_key: Some(get(&cs.secret_access_key_key)?),
        session_token: match &cs.session_token_key {
            Some(k) => Some(get(k)?),
            None => None,
        },
    })
}

async fn probe(
    ctx: &Context,
    ns: &str,
    spec: &SorSpec,
    sor: &SystemOfRecordSpec,
) -> (bool, &'static str, String) {
    if let Some(s3) = &sor.s3 {
        let creds = match credentials(ctx, ns, s3).await {
            Ok(c) => c,
            Err((reason, msg)) => return (false, reason, msg),
        };
        let opts = S3Options {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            allow_http: s3
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
            anonymous: s3.anonymous,
        };
        let source = match Source::open(spec, &opts, &creds, PROBE_TIMEOUT) {
            Ok(s) => s,
            Err(e) => return (false, "InvalidSpec", e.to_string()),
        };
        return match tokio::time::timeout(PROBE_TIMEOUT, source.list("", None, 1)).await {
            Ok(Ok(_)) => (
                true,
                "Probed",
                "listed the location with the Secret's credentials".into(),
            ),
            Ok(Err(e)) => {
                let (reason, msg) = probe_failure(&e);
                (false, reason, msg)
            }
            Err(_) => (
                false,
                "Unreachable",
                format!("no answer within {PROBE_TIMEOUT:?}"),
            ),
        };
    }
    let Some(dir) = &sor.directory else {
        return (false, "InvalidSpec", "no location".into());
    };
    match ctx
        .api::<PersistentVolumeClaim>(ns)
        .get_opt(&dir.claim_name)
        .await
    {
        Ok(Some(pvc)) => match pvc.status.and_then(|s| s.phase).as_deref() {
            Some("Bound") => (
                true,
                "ClaimBound",
                format!("claim {} is bound", dir.claim_name),
            ),
            phase => (
                false,
                "ClaimPending",
                format!(
                    "claim {} is {}",
                    dir.claim_name,
                    phase.unwrap_or("not bound yet")
                ),
            ),
        },
        Ok(None) => (
            false,
            "ClaimNotFound",
            format!("claim {:?} does not exist", dir.claim_name),
        ),
        Err(e) => (false, "ClaimUnreadable", e.to_string()),
    }
}

pub async fn reconcile(sor: Arc<SystemOfRecord>, ctx: Arc<Context>) -> Result<Action> {
    let ns = sor.namespace().unwrap_or_default();
    let name = sor.name_any();
    let previous = sor.status.clone().unwrap_or_default();
    let mut status = SystemOfRecordStatus {
        conditions: previous.conditions.clone(),
        ..Default::default()
    };
    let (ok, reason, message) = match validate(&name, &sor.spec) {
        Err(why) => (false, "InvalidSpec", why.to_string()),
        Ok((spec, display)) => {
            status.location = Some(display);
            status.last_probe_time = Some(k8s_openapi::jiff::Timestamp::now().to_string());
            probe(&ctx, &ns, &spec, &sor.spec).await
        }
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let generation = sor.metadata.generation;
    let mut c: Vec<Condition> = status.conditions.clone();
    conditions::set(&mut c, "Ready", ok, reason, message, generation, now);
    status.conditions = c;
    status.observed_generation = generation;
    ctx.api::<SystemOfRecord>(&ns)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(Action::requeue(if ok {
        REPROBE_READY
    } else {
        REPROBE_FAILED
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_crds::sor::{DeclaredFunction, DirectoryLocation};

    fn s3_spec(bucket: &str, prefix: &str) -> SystemOfRecordSpec {
        SystemOfRecordSpec {
            s3: Some(S3Location {
                bucket: bucket.into(),
                prefix: prefix.into(),
                ..Default::default()
            }),
            directory: None,
            cache: Default::default(),
            functions: vec![],
        }
    }

    #[test]
    fn specs_are_checked_before_any_probe() {
        let (s, display) = validate("data", &s3_spec("bucket-a", "in/")).unwrap();
        assert_eq!(display, "s3://bucket-a/in");
        assert_eq!(s.name, "data");
        for bad in ["a/../b", "/in/", "x,db=file:///etc"] {
            let e = validate("data", &s3_spec("bucket-a", bad)).unwrap_err();
            assert!(matches!(e, SpecError::Prefix), "{bad}: {e}");
            assert!(e.to_string().contains("spec.s3.prefix"), "{e}");
        }
        let e = validate("data", &s3_spec("Bucket_A", "")).unwrap_err();
        assert!(matches!(&e, SpecError::Bucket(b) if b == "Bucket_A"), "{e}");
        assert!(e.to_string().contains("spec.s3.bucket"), "{e}");
        let mut both = s3_spec("bucket-a", "");
        both.directory = Some(DirectoryLocation {
            claim_name: "c".into(),
            sub_path: String::new(),
        });
        assert!(matches!(
            validate("data", &both),
            Err(SpecError::NotExactlyOneLocation)
        ));
        let mut bad_fn = s3_spec("bucket-a", "");
        bad_fn.functions = vec![DeclaredFunction {
            name: "x".into(),
            builtin: "os.system".into(),
            ..Default::default()
        }];
        let e = validate("data", &bad_fn).unwrap_err();
        assert!(matches!(e, SpecError::Functions(_)), "{e}");
        assert!(e.to_string().contains("unknown builtin"), "{e}");
        let dir = SystemOfRecordSpec {
            s3: None,
            directory: Some(DirectoryLocation {
                claim_name: "c".into(),
                sub_path: "../x".into(),
            }),
            cache: Default::default(),
            functions: vec![],
        };
        assert!(matches!(validate("meshes", &dir), Err(SpecError::SubPath)));
        assert!(matches!(
            validate("Bad_Name", &s3_spec("bucket-a", "")),
            Err(SpecError::Name(_))
        ));
    }

    #[test]
    fn probe_failures_have_readable_reasons() {
        assert_eq!(
            probe_failure(&SourceError::Denied("403".into())).0,
            "CredentialsRefused"
        );
        assert_eq!(probe_failure(&SourceError::NotFound).0, "BucketNotFound");
        assert_eq!(
            probe_failure(&SourceError::Unavailable("x".into())).0,
            "Unreachable"
        );
    }
}

//! One system of record, opened: an S3 bucket and prefix or a directory,
//! behind `object_store`. Read-only by construction: this module has no
//! call that writes, copies or deletes in the SOR.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};

use crate::config::{Location, S3Options, SorSpec};
use crate::key::Key;

/// What the SOR says about an object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    /// The ETag exactly as the SOR sent it (conditional requests send it back).
    pub etag: String,
    pub last_modified_ms: i64,
    pub size: u64,
}

impl ObjectInfo {
    /// The ETag as an HTTP header value: always quoted.
    pub fn http_etag(&self) -> String {
        quote_etag(&self.etag)
    }

    /// The MD5 the ETag states, when it is one (a single-part S3 upload).
    pub fn md5(&self) -> Option<[u8; 16]> {
        let bare = self.etag.trim_matches('"');
        if bare.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(bare, &mut out).ok()?;
        Some(out)
    }
}

pub fn quote_etag(raw: &str) -> String {
    if raw.starts_with('"') || raw.starts_with("W/") {
        raw.to_string()
    } else {
        format!("\"{raw}\"")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("no such object in the system of record")]
    NotFound,
    #[error("not modified")]
    NotModified,
    #[error("the object changed while it was read")]
    Changed,
    /// The SOR refused our credentials: a configuration fault (502).
    #[error("the system of record refused the request: {0}")]
    Denied(String),
    /// The path resolves outside the SOR (a symlink): 403, nothing read.
    #[error("the path leads outside the system of record")]
    Outside,
    #[error("the system of record is unavailable: {0}")]
    Unavailable(String),
    #[error("the object is {size} bytes, more than the {limit} a fill may hold")]
    TooLarge { size: u64, limit: u64 },
    #[error("the object's bytes did not match what the SOR stated: {0}")]
    Corrupt(String),
}

impl From<object_store::Error> for SourceError {
    fn from(e: object_store::Error) -> Self {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => SourceError::NotFound,
            E::NotModified { .. } => SourceError::NotModified,
            E::Precondition { .. } => SourceError::Changed,
            E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
                SourceError::Denied(first_line(&source.to_string()))
            }
            // Listing wraps the HTTP status in a generic error.
            other => {
                let m = first_line(&other.to_string());
                if m.contains("403 Forbidden") || m.contains("401 Unauthorized") {
                    SourceError::Denied(m)
                } else if m.contains("404 Not Found") {
                    SourceError::NotFound
                } else {
                    SourceError::Unavailable(m)
                }
            }
        }
    }
}

/// Errors from object_store can quote a whole response; the first line says enough.
fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    l.chars().take(300).collect()
}

/// What a GET brings: the object's identity and its bytes.
pub struct Fetched {
    pub info: ObjectInfo,
    /// The range it holds (the whole object when none was asked).
    pub range: std::ops::Range<u64>,
    pub body: BoxStream<'static, Result<Bytes, SourceError>>,
}

/// One entry of a listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified_ms: i64,
}

#[derive(Debug, Default, Clone)]
pub struct Conditions {
    pub if_none_match: Option<String>,
    pub if_match: Option<String>,
    pub range: Option<std::ops::Range<u64>>,
}

pub struct Source {
    pub name: String,
    store: Arc<dyn ObjectStore>,
    /// The key prefix inside the bucket (`""` or ending with `/`).
    prefix: String,
    /// A directory SOR's canonical root, to refuse symlinks leading out.
    dir_root: Option<PathBuf>,
    /// `s3://bucket/prefix` or `file:///dir`: safe to show.
    pub display: String,
    pub kind: &'static str,
}

/// The AWS variables a sidecar reads, and only these: there is no fallback
/// to the instance-metadata address.
#[derive(Clone, Default)]
pub struct Credentials {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Credentials {
        let v = |k: &str| get(k).filter(|s| !s.is_empty());
        Credentials {
            access_key_id: v("AWS_ACCESS_KEY_ID"),
            secret_access_key: v("AWS_SECRET_ACCESS_KEY"),
            session_token: v("AWS_SESSION_TOKEN"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "system of record {0:?} is on S3 but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set; set them (from a Secret), or pass --sor-anonymous for a public bucket"
    )]
    NoCredentials(String),
    #[error("system of record {name:?}: {why}")]
    Invalid { name: String, why: String },
}

impl Source {
    pub fn open(
        spec: &SorSpec,
        s3: &S3Options,
        creds: &Credentials,
        fetch_timeout: Duration,
    ) -> Result<Source, OpenError> {
        let invalid = |why: String| OpenError::Invalid {
            name: spec.name.clone(),
            why,
        };
        match &spec.location {
            Location::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                    // Never the instance-metadata address, even by accident.
                    .with_metadata_endpoint("http://127.0.0.1:1")
                    .with_retry(RetryConfig {
                        max_retries: 1,
                        retry_timeout: fetch_timeout,
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(fetch_timeout)
                            .with_connect_timeout(Duration::from_secs(5)),
                    );
                if let Some(ep) = &s3.endpoint {
                    let url = url_host(ep).map_err(|e| invalid(e.to_string()))?;
                    if ep.starts_with("http://") {
                        if !s3.allow_http {
                            return Err(invalid(format!(
                                "endpoint {ep} is plain HTTP; pass --sor-allow-http (loopback only) or use https"
                            )));
                        }
                        if !is_loopback_host(&url) {
                            return Err(invalid(format!(
                                "--sor-allow-http is for a loopback endpoint only, not {url}"
                            )));
                        }
                        b = b.with_allow_http(true);
                    }
                    b = b.with_endpoint(ep.trim_end_matches('/'));
                }
                match (&creds.access_key_id, &creds.secret_access_key) {
                    (Some(id), Some(secret)) if !s3.anonymous => {
                        b = b.with_access_key_id(id).with_secret_access_key(secret);
                        if let Some(t) = &creds.session_token {
                            b = b.with_token(t);
                        }
                    }
                    _ if s3.anonymous => b = b.with_skip_signature(true),
                    _ => return Err(OpenError::NoCredentials(spec.name.clone())),
                }
                let store = b.build().map_err(|e| invalid(first_line(&e.to_string())))?;
                Ok(Source {
                    name: spec.name.clone(),
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                    dir_root: None,
                    display: format!("s3://{bucket}/{prefix}"),
                    kind: "s3",
                })
            }
            Location::Dir { root } => {
                let canonical = std::fs::canonicalize(root)
                    .map_err(|e| invalid(format!("directory {}: {e}", root.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&canonical)
                    .map_err(|e| invalid(first_line(&e.to_string())))?;
                Ok(Source {
                    name: spec.name.clone(),
                    store: Arc::new(store),
                    prefix: String::new(),
                    dir_root: Some(canonical),
                    display: format!("file://{}", root.display()),
                    kind: "dir",
                })
            }
        }
    }

    fn path(&self, key: &Key) -> Path {
        Path::from(format!("{}{}", self.prefix, key.as_str()))
    }

    /// A directory SOR follows no symlink out of its root.
    async fn confine(&self, key: &Key) -> Result<(), SourceError> {
        let Some(root) = &self.dir_root else {
            return Ok(());
        };
        let joined = root.join(key.as_str());
        match tokio::fs::canonicalize(&joined).await {
            Ok(real) if real.starts_with(root) => Ok(()),
            Ok(_) => Err(SourceError::Outside),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::NotFound),
            Err(e) => Err(SourceError::Unavailable(e.to_string())),
        }
    }

    pub async fn head(&self, key: &Key) -> Result<ObjectInfo, SourceError> {
        self.confine(key).await?;
        let m = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| self.scrub(e))?;
        Ok(info_of(&m))
    }

    pub async fn get(&self, key: &Key, c: Conditions) -> Result<Fetched, SourceError> {
        self.confine(key).await?;
        let opts = GetOptions {
            if_match: c.if_match,
            if_none_match: c.if_none_match,
            range: c.range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let r = self
            .store
            .get_opts(&self.path(key), opts)
            .await
            .map_err(|e| self.scrub(e))?;
        let info = info_of(&r.meta);
        let range = r.range.clone();
        let root = self.dir_root.clone();
        let name = self.name.clone();
        let body = r
            .into_stream()
            .map_err(move |e| scrub_with(root.as_deref(), &name, e))
            .boxed();
        Ok(Fetched { info, range, body })
    }

    /// Objects under `prefix` (logical), after `start_after`, at most `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, SourceError> {
        let full = format!("{}{}", self.prefix, prefix);
        // object_store lists by whole path segments; filter the rest here.
        let (dir, _) = full.rsplit_once('/').unwrap_or(("", &full));
        let dir_path = (!dir.is_empty()).then(|| Path::from(dir));
        let mut stream = match start_after {
            Some(s) => self.store.list_with_offset(
                dir_path.as_ref(),
                &Path::from(format!("{}{s}", self.prefix)),
            ),
            None => self.store.list(dir_path.as_ref()),
        };
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            let m = m.map_err(|e| self.scrub(e))?;
            let loc = m.location.as_ref();
            let Some(rel) = loc.strip_prefix(self.prefix.as_str()) else {
                continue;
            };
            if !rel.starts_with(prefix) {
                continue;
            }
            out.push(Listed {
                key: rel.to_string(),
                size: m.size,
                etag: m.e_tag.as_deref().map(quote_etag),
                last_modified_ms: m.last_modified.timestamp_millis(),
            });
        }
        // Stores list in no promised order; callers page by key.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(limit);
        Ok(out)
    }

    /// An error as callers may see it: a directory SOR's local path is
    /// replaced by the SOR's name (answers never show local paths).
    fn scrub(&self, e: object_store::Error) -> SourceError {
        scrub_with(self.dir_root.as_deref(), &self.name, e)
    }

    /// Where a directory SOR keeps `key` (for tests and the symlink check).
    pub fn dir_root(&self) -> Option<&FsPath> {
        self.dir_root.as_deref()
    }
}

fn scrub_with(root: Option<&FsPath>, name: &str, e: object_store::Error) -> SourceError {
    let mut err = SourceError::from(e);
    if let Some(root) = root {
        let r = root.display().to_string();
        let fix = |m: &mut String| *m = m.replace(&r, &format!("<sor {name}>"));
        match &mut err {
            SourceError::Unavailable(m) | SourceError::Denied(m) | SourceError::Corrupt(m) => {
                fix(m)
            }
            _ => {}
        }
    }
    err
}

fn info_of(m: &object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        etag: m
            .e_tag
            .clone()
            .unwrap_or_else(|| format!("{:x}-{:x}", m.last_modified.timestamp_millis(), m.size)),
        last_modified_ms: m.last_modified.timestamp_millis(),
        size: m.size,
    }
}

/// An S3 endpoint we cannot take a host from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum EndpointError {
    #[error("endpoint {0:?} must start with http:// or https://")]
    Scheme(String),
    #[error("endpoint {0:?} names no host")]
    NoHost(String),
}

fn url_host(ep: &str) -> Result<String, EndpointError> {
    let rest = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .ok_or_else(|| EndpointError::Scheme(ep.into()))?;
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = authority.strip_prefix('[') {
        h.split(']').next().unwrap_or("").to_string()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if host.is_empty() {
        return Err(EndpointError::NoHost(ep.into()));
    }
    Ok(host)
}

fn is_loopback_host(h: &str) -> bool {
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_sor;

    #[test]
    fn an_endpoint_yields_its_host_or_says_what_is_missing() {
        assert_eq!(
            url_host("http://127.0.0.1:8333/").as_deref(),
            Ok("127.0.0.1")
        );
        assert_eq!(url_host("https://[::1]:9000").as_deref(), Ok("::1"));
        assert_eq!(
            url_host("ftp://x"),
            Err(EndpointError::Scheme("ftp://x".into()))
        );
        assert_eq!(
            url_host("http:///path"),
            Err(EndpointError::NoHost("http:///path".into()))
        );
    }

    fn open(
        ep: &str,
        allow_http: bool,
        creds: Credentials,
        anonymous: bool,
    ) -> Result<Source, OpenError> {
        Source::open(
            &parse_sor("d=s3://bucket/p").unwrap(),
            &S3Options {
                endpoint: Some(ep.into()),
                region: None,
                allow_http,
                anonymous,
            },
            &creds,
            Duration::from_secs(1),
        )
    }

    fn creds() -> Credentials {
        Credentials {
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            session_token: None,
        }
    }

    #[test]
    fn s3_needs_credentials_or_an_explicit_anonymous() {
        let e = open("https://s3.example", false, Credentials::default(), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--sor-anonymous"), "{e}");
        assert!(open("https://s3.example", false, Credentials::default(), true).is_ok());
        assert!(open("https://s3.example", false, creds(), false).is_ok());
    }

    #[test]
    fn plain_http_only_with_the_flag_and_only_to_loopback() {
        let e = open("http://127.0.0.1:9000", false, creds(), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--sor-allow-http"), "{e}");
        let e = open("http://10.0.0.1:9000", true, creds(), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(open("http://127.0.0.1:9000", true, creds(), false).is_ok());
        assert!(open("http://localhost:9000", true, creds(), false).is_ok());
        assert!(open("http://[::1]:9000", true, creds(), false).is_ok());
    }

    #[test]
    fn credentials_never_print() {
        let c = format!("{:?}", creds());
        assert!(
            !c.contains("secret") || c.contains("secret_access_key"),
            "{c}"
        );
        assert!(!c.contains("\"secret\""), "{c}");
    }

    #[test]
    fn etags_quote_and_name_their_md5() {
        let i = ObjectInfo {
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            last_modified_ms: 0,
            size: 1,
        };
        assert!(i.md5().is_some());
        assert_eq!(i.http_etag(), i.etag);
        let multi = ObjectInfo {
            etag: "\"0123456789abcdef0123456789abcdef-2\"".into(),
            ..i.clone()
        };
        assert!(multi.md5().is_none());
        assert_eq!(quote_etag("abc"), "\"abc\"");
    }
}

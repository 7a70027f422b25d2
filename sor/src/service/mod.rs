//! The read-through cache: memory tier, disk tier, one fill per object at a
//! time, revalidation by the freshness rules, stale copies on SOR errors,
//! and invalidations shared with every sidecar on the same PostgreSQL.

mod compute;
mod fill;
mod invalidate;
mod inventory;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use simcache_store::sql::{Sql, SqlValue};
use tokio::sync::Semaphore;

use crate::config::{Limits, S3Options, SorSpec};
use crate::disk::{DiskTier, Growing, Meta, id_of};
use crate::freshness::{OnError, OnRead, Rules};
use crate::functions::runner::{FnError, Input, Runner, envelope};
use crate::functions::{Call, CallError, Catalog, Declared};
use crate::key::Key;
use crate::metrics::SorMetrics;
use crate::source::{Conditions, Credentials, Fetched, ObjectInfo, OpenError, Source, SourceError};

pub const CHANNEL: &str = "simcache_sor_events";

/// Where an answer came from (the `X-Simcache-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    HitMemory,
    HitDisk,
    Miss,
    Revalidated,
    Stale,
}

impl Served {
    pub fn as_str(self) -> &'static str {
        match self {
            Served::HitMemory => "hit-memory",
            Served::HitDisk => "hit-disk",
            Served::Miss => "miss",
            Served::Revalidated => "revalidated",
            Served::Stale => "stale",
        }
    }

    /// True when the answer came from the cache without the SOR's bytes.
    pub fn cached(self) -> bool {
        !matches!(self, Served::Miss)
    }
}

/// Where the bytes of a resolved object are.
pub enum Place {
    Memory(Bytes),
    Disk(std::fs::File),
    /// Not cached (larger than a fill may hold): read from the SOR, pinned
    /// to the resolved ETag.
    Remote,
    /// Being filled by this request's own fill: readable as it lands, its
    /// end known only once verified.
    Growing(Growing),
}

pub struct Resolved {
    pub meta: Meta,
    pub served: Served,
    pub place: Place,
}

impl Resolved {
    /// Seconds since the SOR last confirmed this copy.
    pub fn age_secs(&self) -> u64 {
        now_ms().saturating_sub(self.meta.validated_at_ms) / 1000
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no system of record named {0:?} is configured here")]
    UnknownSor(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

#[derive(Clone)]
enum MemValue {
    Object(Arc<(Meta, Bytes)>),
    Result(Bytes),
    /// A parsed Parquet footer, keyed by object and ETag.
    Footer(Arc<parquet::file::metadata::ParquetMetaData>),
}

impl MemValue {
    fn weight(&self) -> u32 {
        let n = match self {
            MemValue::Object(o) => o.1.len() + 256,
            MemValue::Result(b) => b.len() + 64,
            MemValue::Footer(m) => m.memory_size() + 64,
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[derive(Clone)]
enum Filled {
    /// New bytes, cached; `Some` when they are also in memory.
    Cached(Meta, Option<Bytes>),
    /// The SOR confirmed the copy we hold.
    NotModified(Meta),
    /// Too large to fill (or no room): read through.
    Uncacheable(ObjectInfo),
}

type Flight = simcache_store::flight::Flight<Result<Filled, SourceError>>;

/// Tells the request that started a fill where to follow it.
type Begun = tokio::sync::oneshot::Sender<(Meta, Growing)>;

/// What a request gets from a fill: its end, or (for the request that
/// started it) the growing file.
enum Landed {
    Filled(Filled),
    Growing(Meta, Growing),
}

/// What travels between sidecars on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invalidation {
    pub origin: String,
    pub sor: String,
    /// Every key starting with this (a whole key evicts that key and its
    /// longer siblings, which is harmless).
    pub prefix: String,
}

pub struct SorService {
    sources: BTreeMap<String, Arc<Source>>,
    default_sor: String,
    limits: Limits,
    rules: Rules,
    disk: Arc<DiskTier>,
    memory: moka::sync::Cache<String, MemValue>,
    flights: Arc<simcache_store::flight::Flights<String, Result<Filled, SourceError>>>,
    fetch_slots: Arc<Semaphore>,
    metrics: SorMetrics,
    notify: Option<Sql>,
    origin: String,
    functions: Catalog,
    runner: Runner,
}

pub fn now_ms() -> u64 {
    u64::try_from(simcache_store::clock::now_ms()).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no system of record is configured (--sor NAME=URL)")]
    NoneConfigured,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("--sor-functions: {0}")]
    Functions(#[from] crate::functions::DeclareError),
    #[error("the SOR cache directory {dir}: {err}")]
    CacheDir { dir: String, err: std::io::Error },
}

/// Everything a sidecar needs to start its SOR cache.
#[derive(Debug, Clone)]
pub struct SorConfig {
    pub sors: Vec<SorSpec>,
    pub s3: S3Options,
    pub credentials: Credentials,
    pub limits: Limits,
    /// Declared commands (from the CRD or `--sor-functions`).
    pub functions: Vec<Declared>,
}

impl SorService {
    /// Opens every SOR and the disk tier (start-up: blocking I/O). `notify`
    /// is the PostgreSQL connection invalidations are announced on.
    pub fn start(
        cfg: SorConfig,
        metrics: SorMetrics,
        notify: Option<Sql>,
        origin: &str,
    ) -> Result<Arc<SorService>, StartError> {
        cfg.limits.check()?;
        let functions = Catalog::load(cfg.functions.clone())?;
        let runner = Runner::new(
            cfg.limits.function_concurrency,
            cfg.limits.function_queue,
            cfg.limits.function_timeout,
            cfg.limits.function_memory_bytes,
            cfg.limits.function_output_bytes,
        );
        let first = cfg.sors.first().ok_or(StartError::NoneConfigured)?;
        let default_sor = first.name.clone();
        let mut sources = BTreeMap::new();
        for spec in &cfg.sors {
            let src = Source::open(spec, &cfg.s3, &cfg.credentials, cfg.limits.fetch_timeout)?;
            if sources.insert(spec.name.clone(), Arc::new(src)).is_some() {
                return Err(crate::config::ConfigError::Duplicate(spec.name.clone()).into());
            }
        }
        let (disk, rec) =
            DiskTier::open(&cfg.limits.cache_dir, cfg.limits.disk_bytes).map_err(|err| {
                StartError::CacheDir {
                    dir: cfg.limits.cache_dir.display().to_string(),
                    err,
                }
            })?;
        tracing::info!(
            entries = rec.entries,
            bytes = rec.bytes,
            removed = rec.removed,
            "SOR disk cache opened"
        );
        let memory = moka::sync::Cache::builder()
            .max_capacity(cfg.limits.memory_bytes)
            .weigher(|_k: &String, v: &MemValue| v.weight())
            .support_invalidation_closures()
            .build();
        let rules = Rules {
            validation: cfg.limits.validation,
            ttl: cfg.limits.ttl,
            stale_if_error: cfg.limits.stale_if_error,
        };
        Ok(Arc::new(SorService {
            sources,
            default_sor,
            fetch_slots: Arc::new(Semaphore::new(cfg.limits.fetch_concurrency)),
            limits: cfg.limits,
            rules,
            disk,
            memory,
            flights: Arc::default(),
            metrics,
            notify,
            origin: origin.to_string(),
            functions,
            runner,
        }))
    }

    pub fn metrics(&self) -> &SorMetrics {
        &self.metrics
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn default_sor(&self) -> &str {
        &self.default_sor
    }

    pub fn sor_names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    pub fn source(&self, sor: &str) -> Result<&Arc<Source>, ReadError> {
        self.sources
            .get(sor)
            .ok_or_else(|| ReadError::UnknownSor(sor.to_string()))
    }

    /// Finds an object's bytes: from memory, from disk, or by a fill, as the
    /// freshness rules say.
    pub async fn resolve(self: &Arc<Self>, sor: &str, key: &Key) -> Result<Resolved, ReadError> {
        self.resolve_as(sor, key, false).await
    }

    /// As [`Self::resolve`], but a request that starts a fill to disk gets
    /// [`Place::Growing`] and streams the object as it lands. Requests that
    /// join the fill wait for the verified blob: a fill's pace is the SOR's,
    /// and many readers of the growing file would only slow it.
    pub async fn resolve_following(
        self: &Arc<Self>,
        sor: &str,
        key: &Key,
    ) -> Result<Resolved, ReadError> {
        self.resolve_as(sor, key, true).await
    }

    async fn resolve_as(
        self: &Arc<Self>,
        sor: &str,
        key: &Key,
        follow: bool,
    ) -> Result<Resolved, ReadError> {
        let src = self.source(sor)?.clone();
        let id = id_of(sor, key.as_str());
        let now = now_ms();
        if let Some((meta, place, served)) = self.local(&id).await {
            if self.rules.on_read(meta.validated_at_ms, now) == OnRead::Serve {
                return Ok(Resolved {
                    meta,
                    served,
                    place,
                });
            }
            return match self.flight(&src, key, &id, Some(meta.clone())).await {
                Ok(Filled::NotModified(m)) => Ok(Resolved {
                    meta: m,
                    served: Served::Revalidated,
                    place,
                }),
                Ok(other) => Ok(self.place_of(other, Served::Miss).await),
                Err(e @ (SourceError::Unavailable(_) | SourceError::Corrupt(_))) => {
                    match self.rules.on_error(meta.validated_at_ms, now) {
                        OnError::ServeStale => {
                            self.metrics.stale_served.with_label_values(&[sor]).inc();
                            Ok(Resolved {
                                meta,
                                served: Served::Stale,
                                place,
                            })
                        }
                        OnError::Unavailable => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            };
        }
        let landed = if follow {
            self.flight_following(&src, key, &id).await?
        } else {
            Landed::Filled(self.flight(&src, key, &id, None).await?)
        };
        match landed {
            Landed::Filled(filled) => Ok(self.place_of(filled, Served::Miss).await),
            Landed::Growing(meta, growing) => Ok(Resolved {
                meta,
                served: Served::Miss,
                place: Place::Growing(growing),
            }),
        }
    }

    /// The object's identity only (from the cache when fresh).
    pub async fn meta(self: &Arc<Self>, sor: &str, key: &Key) -> Result<Resolved, ReadError> {
        self.resolve(sor, key).await
    }

    /// The metadata of a copy held here that the freshness rules let us
    /// serve without asking the SOR.
    fn fresh_meta(&self, id: &str) -> Option<Meta> {
        let meta = match self.memory.get(id) {
            Some(MemValue::Object(o)) => o.0.clone(),
            _ => self.disk.lookup(id)?,
        };
        (self.rules.on_read(meta.validated_at_ms, now_ms()) == OnRead::Serve).then_some(meta)
    }

    /// What this process holds of `id`, memory first.
    async fn local(&self, id: &str) -> Option<(Meta, Place, Served)> {
        if let Some(MemValue::Object(o)) = self.memory.get(id) {
            return Some((o.0.clone(), Place::Memory(o.1.clone()), Served::HitMemory));
        }
        let meta = self.disk.lookup(id)?;
        let path = self.disk.blob_path(id);
        if meta.info.size <= self.limits.memory_object_bytes {
            // Small: promote to memory (after a restart or a memory eviction).
            let body = Bytes::from(tokio::fs::read(&path).await.ok()?);
            if body.len() as u64 != meta.info.size {
                return None;
            }
            self.memory.insert(
                id.to_string(),
                MemValue::Object(Arc::new((meta.clone(), body.clone()))),
            );
            return Some((meta, Place::Memory(body), Served::HitDisk));
        }
        let file = std::fs::File::open(&path).ok()?;
        Some((meta, Place::Disk(file), Served::HitDisk))
    }

    async fn place_of(&self, filled: Filled, served: Served) -> Resolved {
        match filled {
            Filled::Cached(meta, Some(body)) => Resolved {
                meta,
                served,
                place: Place::Memory(body),
            },
            Filled::Cached(meta, None) => {
                let id = id_of(&meta.sor, &meta.key);
                let place = match std::fs::File::open(self.disk.blob_path(&id)) {
                    Ok(f) => Place::Disk(f),
                    // Evicted already by a fill storm: read through.
                    Err(_) => Place::Remote,
                };
                Resolved {
                    meta,
                    served,
                    place,
                }
            }
            Filled::NotModified(meta) => {
                let id = id_of(&meta.sor, &meta.key);
                match self.local(&id).await {
                    Some((m, place, _)) => Resolved {
                        meta: m,
                        served: Served::Revalidated,
                        place,
                    },
                    None => Resolved {
                        meta,
                        served,
                        place: Place::Remote,
                    },
                }
            }
            Filled::Uncacheable(info) => Resolved {
                meta: Meta {
                    sor: String::new(),
                    key: String::new(),
                    info,
                    fetched_at_ms: now_ms(),
                    validated_at_ms: now_ms(),
                },
                served,
                place: Place::Remote,
            },
        }
    }

    /// Reads `range` of an object too large to cache, pinned to `etag` so
    /// the bytes cannot come from another version.
    pub async fn read_through(
        &self,
        sor: &str,
        key: &Key,
        etag: &str,
        range: Option<Range<u64>>,
    ) -> Result<Fetched, ReadError> {
        let src = self.source(sor)?;
        let started = Instant::now();
        let r = src
            .get(
                key,
                Conditions {
                    if_match: Some(etag.to_string()),
                    range,
                    ..Conditions::default()
                },
            )
            .await;
        self.record_fetch(sor, "range", started, r.as_ref().map(|_| ()));
        Ok(r?)
    }

    /// Asks the SOR what the object is now (after a 412 on a pinned read).
    pub async fn head(&self, sor: &str, key: &Key) -> Result<ObjectInfo, ReadError> {
        let src = self.source(sor)?;
        let started = Instant::now();
        let r = src.head(key).await;
        self.record_fetch(sor, "head", started, r.as_ref().map(|_| ()));
        Ok(r?)
    }

    pub async fn list(
        &self,
        sor: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::source::Listed>, ReadError> {
        let src = self.source(sor)?;
        let started = Instant::now();
        let r = src.list(prefix, start_after, limit).await;
        self.record_fetch(sor, "list", started, r.as_ref().map(|_| ()));
        Ok(r?)
    }

    /// Asks the SOR about `key` now, whatever the freshness rules say
    /// (cache_api's `update`).
    pub async fn revalidate_now(
        self: &Arc<Self>,
        sor: &str,
        key: &Key,
    ) -> Result<Resolved, ReadError> {
        let src = self.source(sor)?.clone();
        let id = id_of(sor, key.as_str());
        let existing = self.disk.peek(&id).or_else(|| match self.memory.get(&id) {
            Some(MemValue::Object(o)) => Some(o.0.clone()),
            _ => None,
        });
        let filled = self.flight(&src, key, &id, existing).await?;
        Ok(self.place_of(filled, Served::Miss).await)
    }
}

/// One object version's slot for its parsed Parquet footer in the memory tier.
struct FooterSlot {
    memory: moka::sync::Cache<String, MemValue>,
    key: String,
}

impl crate::functions::parquet_fns::Footers for FooterSlot {
    fn get(&self) -> Option<Arc<parquet::file::metadata::ParquetMetaData>> {
        match self.memory.get(&self.key) {
            Some(MemValue::Footer(m)) => Some(m),
            _ => None,
        }
    }
    fn put(&self, md: Arc<parquet::file::metadata::ParquetMetaData>) {
        self.memory.insert(self.key.clone(), MemValue::Footer(md));
    }
}

/// A function's answer.
pub struct FnAnswer {
    /// The JSON envelope the REST routes send.
    pub body: Bytes,
    /// The bare result (cache_api's compatibility route wraps it itself).
    pub result: Bytes,
    pub object_etag: String,
    /// Derived from function, canonical arguments and object ETag.
    pub etag: String,
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FnFailure {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Function(#[from] FnError),
    #[error(
        "the object is {size} bytes, more than the {limit} a fill may hold; functions run on cached objects only"
    )]
    TooLarge { size: u64, limit: u64 },
}

/// One cached object, as `GET /sor/{sor}/cache/entries` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    pub fetched_at_ms: u64,
    pub validated_at_ms: u64,
    /// When it is next checked against the SOR (none: never).
    pub fresh_until_ms: Option<u64>,
    pub tiers: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_miss_carries_the_sors_own_bytes() {
        for s in [
            Served::HitMemory,
            Served::HitDisk,
            Served::Revalidated,
            Served::Stale,
        ] {
            assert!(s.cached(), "{}", s.as_str());
        }
        assert!(!Served::Miss.cached());
        // The header values clients (and cache_api's tests) read.
        assert_eq!(Served::HitMemory.as_str(), "hit-memory");
        assert_eq!(Served::Revalidated.as_str(), "revalidated");
    }

    #[test]
    fn memory_weighs_an_entry_by_its_bytes_plus_its_bookkeeping() {
        let meta = Meta {
            sor: "d".into(),
            key: "k".into(),
            info: ObjectInfo {
                etag: "e".into(),
                last_modified_ms: 0,
                size: 1000,
            },
            fetched_at_ms: 0,
            validated_at_ms: 0,
        };
        let object = MemValue::Object(Arc::new((meta, Bytes::from(vec![0u8; 1000]))));
        assert_eq!(object.weight(), 1256);
        assert_eq!(MemValue::Result(Bytes::from_static(b"abc")).weight(), 67);
    }
}

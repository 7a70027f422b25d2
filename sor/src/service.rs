//! The read-through cache: memory tier, disk tier, one fill per object at a
//! time, revalidation by the freshness rules, stale copies on SOR errors,
//! and invalidations shared with every sidecar on the same PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
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

type Flight = Shared<BoxFuture<'static, Result<Filled, SourceError>>>;

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
    flights: Mutex<HashMap<String, Flight>>,
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
    Functions(String),
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
        let functions = Catalog::load(cfg.functions.clone()).map_err(StartError::Functions)?;
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
            flights: Mutex::new(HashMap::new()),
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

    /// Joins the fill of `id` in flight, or starts one.
    async fn flight(
        self: &Arc<Self>,
        src: &Arc<Source>,
        key: &Key,
        id: &str,
        existing: Option<Meta>,
    ) -> Result<Filled, SourceError> {
        self.join_or_start(src, key, id, existing, None).0.await
    }

    /// As [`Self::flight`], but the request that starts the fill is answered
    /// as soon as the fill begins on disk, with the growing file.
    async fn flight_following(
        self: &Arc<Self>,
        src: &Arc<Source>,
        key: &Key,
        id: &str,
    ) -> Result<Landed, SourceError> {
        let (tell, begun) = tokio::sync::oneshot::channel();
        let (fut, started) = self.join_or_start(src, key, id, None, Some(tell));
        if !started {
            return fut.await.map(Landed::Filled);
        }
        // Whichever comes first: the fill's end, or its start on disk (a
        // fill that never reaches disk drops the sender).
        tokio::select! {
            Ok((meta, growing)) = begun => Ok(Landed::Growing(meta, growing)),
            r = fut => r.map(Landed::Filled),
        }
    }

    /// The fill of `id` in flight, or a new one (`true`) running in its own
    /// task, so that a reader going away does not stop it.
    fn join_or_start(
        self: &Arc<Self>,
        src: &Arc<Source>,
        key: &Key,
        id: &str,
        existing: Option<Meta>,
        tell: Option<Begun>,
    ) -> (Flight, bool) {
        let mut flights = self.flights.lock();
        if let Some(f) = flights.get(id) {
            self.metrics
                .coalesced
                .with_label_values(&[src.name.as_str()])
                .inc();
            return (f.clone(), false);
        }
        let this = self.clone();
        let (src, key, id2) = (src.clone(), key.clone(), id.to_string());
        let task = tokio::spawn(async move {
            let r = this.fill(&src, &key, &id2, existing, tell).await;
            this.flights.lock().remove(&id2);
            r
        });
        let f: Flight = async move {
            task.await
                .unwrap_or_else(|e| Err(SourceError::Unavailable(format!("fill task: {e}"))))
        }
        .boxed()
        .shared();
        flights.insert(id.to_string(), f.clone());
        (f, true)
    }

    fn record_fetch(&self, sor: &str, kind: &str, started: Instant, r: Result<(), &SourceError>) {
        let status = match r {
            Ok(()) => "ok",
            Err(SourceError::NotModified) => "not-modified",
            Err(SourceError::NotFound) => "not-found",
            Err(SourceError::Changed) => "changed",
            Err(SourceError::Denied(_)) => "denied",
            Err(SourceError::Outside) => "outside",
            Err(SourceError::Corrupt(_)) => "corrupt",
            Err(SourceError::TooLarge { .. }) => "too-large",
            Err(SourceError::Unavailable(_)) => "unavailable",
        };
        self.metrics
            .fetches
            .with_label_values(&[sor, kind, status])
            .inc();
        self.metrics
            .fetch_duration
            .with_label_values(&[sor, kind])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn fill(
        &self,
        src: &Source,
        key: &Key,
        id: &str,
        existing: Option<Meta>,
        tell: Option<Begun>,
    ) -> Result<Filled, SourceError> {
        let _slot = self
            .fetch_slots
            .acquire()
            .await
            .map_err(|_| SourceError::Unavailable("shutting down".into()))?;
        let sor = src.name.as_str();
        let kind = if existing.is_some() {
            "revalidate"
        } else {
            "get"
        };
        let started = Instant::now();
        let cond = Conditions {
            if_none_match: existing.as_ref().map(|m| m.info.etag.clone()),
            ..Conditions::default()
        };
        let fetched = src.get(key, cond).await;
        self.record_fetch(sor, kind, started, fetched.as_ref().map(|_| ()));
        let fetched = match (fetched, existing) {
            (Err(SourceError::NotModified), Some(mut m)) => {
                m.validated_at_ms = now_ms();
                self.disk.set_validated(id, m.validated_at_ms);
                if let Some(MemValue::Object(o)) = self.memory.get(id) {
                    self.memory.insert(
                        id.to_string(),
                        MemValue::Object(Arc::new((m.clone(), o.1.clone()))),
                    );
                }
                return Ok(Filled::NotModified(m));
            }
            (Err(SourceError::NotFound), Some(_)) => {
                self.evict_id(id, "deleted");
                return Err(SourceError::NotFound);
            }
            (Err(e), _) => return Err(e),
            (Ok(f), existing) => {
                if existing.is_some() {
                    self.evict_id(id, "changed");
                }
                f
            }
        };
        self.fill_from(sor, key, id, fetched, tell).await
    }

    async fn fill_from(
        &self,
        sor: &str,
        key: &Key,
        id: &str,
        fetched: Fetched,
        tell: Option<Begun>,
    ) -> Result<Filled, SourceError> {
        let Fetched { info, mut body, .. } = fetched;
        if info.size > self.limits.max_object_bytes {
            return Ok(Filled::Uncacheable(info));
        }
        let in_memory = info.size <= self.limits.memory_object_bytes;
        let (mut disk_fill, evicted) = match self.disk.begin(info.size).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "SOR disk cache unusable; filling memory only");
                (None, 0)
            }
        };
        if evicted > 0 {
            self.metrics
                .evictions
                .with_label_values(&["disk", "capacity"])
                .inc_by(evicted as u64);
        }
        if disk_fill.is_none() && !in_memory {
            return Ok(Filled::Uncacheable(info));
        }
        let meta_of = |info: ObjectInfo| {
            let now = now_ms();
            Meta {
                sor: sor.to_string(),
                key: key.as_str().to_string(),
                info,
                fetched_at_ms: now,
                validated_at_ms: now,
            }
        };
        if let (Some(tell), Some(f), false) = (tell, disk_fill.as_ref(), in_memory) {
            let _ = tell.send((meta_of(info.clone()), f.follow()));
        }
        let mut buf = in_memory.then(|| BytesMut::with_capacity(info.size as usize));
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            if received > info.size {
                return Err(SourceError::Corrupt(
                    "more bytes than the SOR stated".into(),
                ));
            }
            if let Some(b) = buf.as_mut() {
                b.extend_from_slice(&chunk);
            }
            if let Some(f) = disk_fill.as_mut() {
                f.write(chunk)
                    .await
                    .map_err(|e| SourceError::Unavailable(format!("cache disk: {e}")))?;
            }
        }
        self.metrics
            .fetch_bytes
            .with_label_values(&[sor])
            .inc_by(received);
        let meta = meta_of(info);
        match disk_fill {
            Some(f) => f.commit(meta.clone()).await?,
            None if received != meta.info.size => {
                return Err(SourceError::Corrupt(format!(
                    "received {received} bytes, the SOR stated {}",
                    meta.info.size
                )));
            }
            None => {}
        }
        let body = buf.map(BytesMut::freeze);
        if let Some(b) = &body {
            self.memory.insert(
                id.to_string(),
                MemValue::Object(Arc::new((meta.clone(), b.clone()))),
            );
        }
        Ok(Filled::Cached(meta, body))
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

    fn evict_id(&self, id: &str, reason: &str) {
        if self.memory.contains_key(id) {
            self.memory.invalidate(id);
            self.metrics
                .evictions
                .with_label_values(&["memory", reason])
                .inc();
        }
        if self.disk.evict(id) {
            self.metrics
                .evictions
                .with_label_values(&["disk", reason])
                .inc();
        }
    }

    /// Evicts one key from this process's tiers only.
    pub fn evict_key(&self, sor: &str, key: &Key) -> bool {
        let id = id_of(sor, key.as_str());
        let had = self.memory.contains_key(&id) || self.disk.peek(&id).is_some();
        self.evict_id(&id, "evicted");
        had
    }

    /// Evicts every key of `sor` under `prefix` from this process's tiers.
    pub fn evict_prefix(&self, sor: &str, prefix: &str, reason: &str) -> usize {
        let (s, p) = (sor.to_string(), prefix.to_string());
        let in_memory = self
            .memory
            .iter()
            .filter(|(_, v)| matches!(v, MemValue::Object(o) if o.0.sor == s && o.0.key.starts_with(&p)))
            .count();
        let _ = self.memory.invalidate_entries_if(
            move |_, v| matches!(v, MemValue::Object(o) if o.0.sor == s && o.0.key.starts_with(&p)),
        );
        if in_memory > 0 {
            self.metrics
                .evictions
                .with_label_values(&["memory", reason])
                .inc_by(in_memory as u64);
        }
        let on_disk = self.disk.evict_prefix(sor, prefix);
        if on_disk > 0 {
            self.metrics
                .evictions
                .with_label_values(&["disk", reason])
                .inc_by(on_disk as u64);
        }
        in_memory.max(on_disk)
    }

    /// Evicts here and announces it to every sidecar on the same PostgreSQL.
    /// Returns how many objects this process dropped and whether the
    /// announcement went out (`false` without PostgreSQL: nobody to tell).
    pub async fn invalidate(&self, sor: &str, prefix: &str) -> Result<(usize, bool), ReadError> {
        self.source(sor)?;
        let n = self.evict_prefix(sor, prefix, "invalidated");
        let Some(sql) = &self.notify else {
            return Ok((n, false));
        };
        let payload = serde_json::to_string(&Invalidation {
            origin: self.origin.clone(),
            sor: sor.to_string(),
            prefix: prefix.to_string(),
        })
        .unwrap_or_default();
        sql.query(
            "SELECT 1 FROM pg_notify($1, $2)",
            vec![SqlValue::Text(CHANNEL.into()), SqlValue::Text(payload)],
        )
        .await
        .map_err(|e| SourceError::Unavailable(format!("announcing the invalidation: {e}")))?;
        Ok((n, true))
    }

    /// Applies what the channel says. A lost channel drops nothing: the
    /// SOR is the truth and the freshness rules still hold.
    pub fn apply(&self, signal: simcache_store::events::Signal<Invalidation>) {
        if let simcache_store::events::Signal::Event(inv) = signal
            && inv.origin != self.origin
            && self.sources.contains_key(&inv.sor)
        {
            let n = self.evict_prefix(&inv.sor, &inv.prefix, "invalidated");
            tracing::debug!(sor = %inv.sor, prefix = %inv.prefix, evicted = n, "invalidation from another sidecar");
        }
    }

    /// Listens for other sidecars' invalidations for as long as the task lives.
    pub fn spawn_listener(
        self: &Arc<Self>,
        pg: simcache_store::postgres::PgConfig,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let listen = simcache_store::events::listen_on::<Invalidation>(pg, CHANNEL, tx);
        let this = self.clone();
        let apply = tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                this.apply(s);
            }
        });
        vec![listen, apply]
    }

    pub fn functions(&self) -> &Catalog {
        &self.functions
    }

    /// Decides a call from a function name and the caller's arguments.
    pub fn call_for(
        &self,
        name: &str,
        args: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Call, CallError> {
        self.functions.call(name, args)
    }

    /// Runs `call` on the object at `key`: the result from memory when the
    /// same call ran on the same version, else computed within bounds.
    pub async fn run_function(
        self: &Arc<Self>,
        sor: &str,
        key: &Key,
        call: &Call,
    ) -> Result<FnAnswer, FnFailure> {
        // A fresh copy and a result for its version: answer without
        // touching the object at all.
        let id = id_of(sor, key.as_str());
        if let Some(meta) = self.fresh_meta(&id) {
            let object_etag = meta.info.http_etag();
            let fingerprint = call.fingerprint(sor, key.as_str(), &object_etag);
            if let Some(MemValue::Result(b)) = self.memory.get(&fingerprint) {
                return Ok(FnAnswer {
                    body: envelope(call, sor, key.as_str(), &object_etag, true, &b),
                    result: b,
                    etag: call.etag(sor, key.as_str(), &object_etag),
                    object_etag,
                    cached: true,
                });
            }
        }
        let resolved = self.resolve(sor, key).await?;
        let object_etag = resolved.meta.info.http_etag();
        let fingerprint = call.fingerprint(sor, key.as_str(), &object_etag);
        let etag = call.etag(sor, key.as_str(), &object_etag);
        if let Some(MemValue::Result(b)) = self.memory.get(&fingerprint) {
            return Ok(FnAnswer {
                body: envelope(call, sor, key.as_str(), &object_etag, true, &b),
                result: b,
                object_etag,
                etag,
                cached: true,
            });
        }
        let input = match resolved.place {
            Place::Memory(b) => Input::Bytes(b),
            Place::Disk(f) => Input::File(f),
            Place::Growing(g) => {
                let f = g.verified().await.map_err(ReadError::Source)?;
                Input::File(f.try_clone().map_err(|e| {
                    ReadError::Source(SourceError::Unavailable(format!("cache disk: {e}")))
                })?)
            }
            Place::Remote => {
                return Err(FnFailure::TooLarge {
                    size: resolved.meta.info.size,
                    limit: self.limits.max_object_bytes,
                });
            }
        };
        let started = Instant::now();
        let footers = Arc::new(FooterSlot {
            memory: self.memory.clone(),
            key: format!("footer\0{id}\0{object_etag}"),
        });
        let r = self
            .runner
            .run(call, key.as_str(), &resolved.meta.info, input, footers)
            .await;
        let name = call.builtin.name();
        match r {
            Ok(result) => {
                self.metrics
                    .function_duration
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
                self.memory
                    .insert(fingerprint, MemValue::Result(result.clone()));
                Ok(FnAnswer {
                    body: envelope(call, sor, key.as_str(), &object_etag, false, &result),
                    result,
                    object_etag,
                    etag,
                    cached: false,
                })
            }
            Err(e) => {
                self.metrics
                    .function_rejections
                    .with_label_values(&[name, e.reason()])
                    .inc();
                Err(FnFailure::Function(e))
            }
        }
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

    /// What this process holds for `sor`.
    pub fn entries(&self, sor: &str) -> Vec<Entry> {
        self.memory.run_pending_tasks();
        let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
        for m in self.disk.entries(sor) {
            by_key.insert(m.key.clone(), self.entry(&m, false, true));
        }
        for (_, v) in self.memory.iter() {
            if let MemValue::Object(o) = v
                && o.0.sor == sor
            {
                let e = by_key
                    .entry(o.0.key.clone())
                    .or_insert_with(|| self.entry(&o.0, true, false));
                e.tiers = if e.tiers.contains(&"disk") {
                    vec!["memory", "disk"]
                } else {
                    vec!["memory"]
                };
            }
        }
        by_key.into_values().collect()
    }

    fn entry(&self, m: &Meta, memory: bool, disk: bool) -> Entry {
        let fresh_until = match self.rules.validation {
            crate::config::Validation::Never => None,
            crate::config::Validation::Always => Some(m.validated_at_ms),
            crate::config::Validation::Ttl => {
                Some(m.validated_at_ms + self.rules.ttl.as_millis() as u64)
            }
        };
        let mut tiers = Vec::new();
        if memory {
            tiers.push("memory");
        }
        if disk {
            tiers.push("disk");
        }
        Entry {
            key: m.key.clone(),
            size: m.info.size,
            etag: m.info.http_etag(),
            last_modified_ms: m.info.last_modified_ms,
            fetched_at_ms: m.fetched_at_ms,
            validated_at_ms: m.validated_at_ms,
            fresh_until_ms: fresh_until,
            tiers,
        }
    }

    pub fn stats(&self, sor: &str) -> Result<serde_json::Value, ReadError> {
        let src = self.source(sor)?;
        self.memory.run_pending_tasks();
        let (disk_bytes, disk_objects) = self.disk.amounts(sor);
        let (mut mem_bytes, mut mem_objects) = (0u64, 0usize);
        for (_, v) in self.memory.iter() {
            if let MemValue::Object(o) = v
                && o.0.sor == sor
            {
                mem_bytes += o.1.len() as u64;
                mem_objects += 1;
            }
        }
        let r = |route: &str, result: &str| -> u64 {
            self.metrics
                .requests
                .with_label_values(&[sor, route, result])
                .get()
        };
        let hits = r("object", "hit-memory") + r("object", "hit-disk") + r("object", "revalidated");
        let misses = r("object", "miss");
        let (used, reserved, _) = self.disk.totals();
        Ok(serde_json::json!({
            "sor": sor,
            "location": src.display,
            "validation": self.rules.validation.as_str(),
            "ttl_seconds": self.rules.ttl.as_secs(),
            "stale_if_error_seconds": self.rules.stale_if_error.as_secs(),
            "memory": { "objects": mem_objects, "bytes": mem_bytes, "capacity_bytes": self.limits.memory_bytes },
            "disk": { "objects": disk_objects, "bytes": disk_bytes, "capacity_bytes": self.limits.disk_bytes,
                      "used_bytes_all_sors": used, "reserved_bytes": reserved },
            "hits": hits,
            "misses": misses,
            "stale_served": self.metrics.stale_served.with_label_values(&[sor]).get(),
            "coalesced": self.metrics.coalesced.with_label_values(&[sor]).get(),
            "hit_rate": if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 },
        }))
    }

    /// Registers the tier gauges, sampled at each scrape.
    pub fn register_gauges(
        self: &Arc<Self>,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<()> {
        let weak = Arc::downgrade(self);
        registry.register(Box::new(crate::metrics::TierGauges {
            bytes: self.metrics.cache_bytes.clone(),
            objects: self.metrics.cache_objects.clone(),
            sample: Box::new(move || {
                if let Some(s) = weak.upgrade() {
                    s.sample_gauges();
                }
            }),
        }))
    }

    /// Sets the tier gauges.
    pub fn sample_gauges(&self) {
        self.memory.run_pending_tasks();
        let (used, _, n) = self.disk.totals();
        self.metrics
            .cache_bytes
            .with_label_values(&["disk"])
            .set(used as i64);
        self.metrics
            .cache_objects
            .with_label_values(&["disk"])
            .set(n as i64);
        self.metrics
            .cache_bytes
            .with_label_values(&["memory"])
            .set(self.memory.weighted_size() as i64);
        self.metrics
            .cache_objects
            .with_label_values(&["memory"])
            .set(self.memory.entry_count() as i64);
    }

    /// (bytes used, bytes reserved, objects) of the disk tier.
    pub fn disk_totals(&self) -> (u64, u64, usize) {
        self.disk.totals()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory.run_pending_tasks();
        self.memory.weighted_size()
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

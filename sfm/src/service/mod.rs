//! The proxy's core, shared by the pod-local listener, the `sfm-proxy`
//! Deployment and the operator's probe: serve a read from memory or the
//! shared store when the freshness rules allow, else join or start **one**
//! fetch for the whole cluster, holding one of the unit's session slots.
//!
//! A fetch runs in its own task, so a reader that gives up (or is served a
//! stale copy after `staleAfterSeconds`) does not stop it: it still
//! refreshes the cache for everyone.

mod background;
mod fill;
mod flight;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use parking_lot::Mutex;
use serde_json::json;
use sha2::{Digest, Sha256};
use simcache_store::clock;
use simcache_store::events::Signal;
use simcache_store::flight::{Round, Wakers, heartbeat};
use simcache_store::sfm::{
    Counters, LeaseState, NewBody, SfmEnvelope, SfmEvent, SfmStore, StoredBody,
};

use crate::freshness::{self, Copy, Decision, Facts, Kind, Reach};
use crate::identity;
use crate::metrics::SfmMetrics;
use crate::registry::{Device, Registry};
use crate::route::{Flags, Op};
use crate::upstream::{Upstream, UpstreamError, UpstreamReply};

/// Where an answer came from (`X-Simcache-SFM-Source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Device,
    Stale,
    Bypass,
    /// Our own error (no upstream answer).
    Proxy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Device => "device",
            Source::Stale => "stale",
            Source::Bypass => "bypass",
            Source::Proxy => "proxy",
        }
    }
}

/// One answer of the proxy.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    pub source: Source,
    pub etag: Option<String>,
    pub age_secs: Option<i64>,
    /// Why a stale copy was served (the upstream error), for a header.
    pub upstream_error: Option<String>,
    /// Seconds until the unit is tried again (503s while backing off).
    pub retry_after_secs: Option<i64>,
    pub content_type: Option<http::HeaderValue>,
}

impl Answer {
    pub fn detail(status: StatusCode, detail: impl Into<String>) -> Answer {
        Answer {
            status,
            body: Bytes::from(json!({ "detail": detail.into() }).to_string()),
            source: Source::Proxy,
            etag: None,
            age_secs: None,
            upstream_error: None,
            retry_after_secs: None,
            content_type: None,
        }
    }

    fn from_body(b: &StoredBody, source: Source, now_ms: i64) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: b.body.clone(),
            source,
            etag: Some(b.etag.clone()),
            age_secs: Some(((now_ms - b.fetched_at_ms).max(0)) / 1000),
            upstream_error: None,
            retry_after_secs: None,
            content_type: None,
        }
    }
}

/// The strong ETag of a body: its SHA-256.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(body)))
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct SfmConfig {
    /// `namespace/name` of the only devices served (a pod's list).
    pub allow: Option<Vec<simcache_core::pod_settings::DeviceRef>>,
    /// Bytes of bodies kept in memory.
    pub memory_bytes: u64,
    /// Bodies larger than this are read from the store each time.
    pub memory_max_object_bytes: u64,
    pub lease_ttl: Duration,
    pub slot_ttl: Duration,
    /// How often counters are written to the store.
    pub flush_interval: Duration,
    /// How often the registry is reloaded in full (events cover the rest).
    pub registry_refresh: Duration,
    /// Largest upstream body accepted.
    pub max_upstream_body_bytes: usize,
}

impl Default for SfmConfig {
    fn default() -> Self {
        SfmConfig {
            allow: None,
            memory_bytes: 256 << 20,
            memory_max_object_bytes: 64 << 20,
            lease_ttl: Duration::from_secs(30),
            slot_ttl: Duration::from_secs(30),
            flush_interval: Duration::from_secs(1),
            registry_refresh: Duration::from_secs(10),
            max_upstream_body_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BodyKey {
    conn_key: String,
    kind: Kind,
    id: String,
}

/// What a fetch ended with, for everyone who waited on it.
#[derive(Debug, Clone)]
enum Outcome {
    Fetched(Arc<StoredBody>),
    Failed(Failure),
}

#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    body: Bytes,
    /// The unit (or the SFM service) could not be reached: stale copies may be served.
    unreachable: bool,
    message: String,
    /// The body is upstream's own answer (else ours, in FastAPI's shape).
    from_upstream: bool,
}

/// A fetch in flight in this process, and its outcome once it ends.
type Flight = simcache_store::flight::Flight<Outcome>;

type FlightKey = (String, String);

pub struct SfmService {
    store: SfmStore,
    registry: Registry,
    upstream: Upstream,
    memory: moka::sync::Cache<BodyKey, Arc<StoredBody>>,
    /// Index → identity per device, dropped on change events.
    index: Mutex<HashMap<String, Arc<HashMap<i64, String>>>>,
    flights: Arc<simcache_store::flight::Flights<FlightKey, Outcome>>,
    /// Readers waiting on another process's fetch, by (device, fetch key).
    lease_wakers: Wakers<FlightKey>,
    /// Readers waiting for one of a device's session slots.
    slot_wakers: Wakers<String>,
    counters: Mutex<HashMap<String, Counters>>,
    /// False while change events may be missed: memory is bypassed.
    coherent: std::sync::atomic::AtomicBool,
    metrics: SfmMetrics,
    cfg: SfmConfig,
    holder: String,
}

/// The fetch key of an operation: what one flight (and one lease) covers.
fn fetch_key(op: Op, flags: Flags) -> String {
    match op {
        Op::Info => "info".into(),
        Op::Events if flags.debug => "events:debug".into(),
        Op::Events => "events".into(),
        Op::Event(i) => format!("event:{i}"),
        Op::Waveform(i) => format!("waveform:{i}"),
        Op::Status => "status".into(),
        _ => "write".into(),
    }
}

fn kind_of(op: Op) -> Option<Kind> {
    Some(match op {
        Op::Info => Kind::Info,
        Op::Events => Kind::Events,
        Op::Event(_) => Kind::Event,
        Op::Waveform(_) => Kind::Waveform,
        Op::Status => Kind::Status,
        _ => return None,
    })
}

fn copy_of(b: &StoredBody) -> Copy {
    Copy {
        fetched_at_ms: b.fetched_at_ms,
        fetch_started_ms: b.fetch_started_ms,
        stale: b.stale,
    }
}

impl SfmService {
    pub fn new(
        store: SfmStore,
        cfg: SfmConfig,
        metrics: SfmMetrics,
    ) -> anyhow::Result<Arc<SfmService>> {
        let memory = moka::sync::Cache::builder()
            .max_capacity(cfg.memory_bytes)
            .weigher(|_k: &BodyKey, v: &Arc<StoredBody>| {
                u32::try_from(v.body.len() + 128).unwrap_or(u32::MAX)
            })
            .support_invalidation_closures()
            .build();
        let holder = format!(
            "{}-{}",
            store.origin(),
            simcache_store::random::hex_id::<4>()?
        );
        Ok(Arc::new(SfmService {
            registry: Registry::new(store.clone(), cfg.allow.clone()),
            store,
            upstream: Upstream::new()?,
            memory,
            index: Mutex::new(HashMap::new()),
            flights: Arc::default(),
            lease_wakers: Wakers::default(),
            slot_wakers: Wakers::default(),
            counters: Mutex::new(HashMap::new()),
            coherent: std::sync::atomic::AtomicBool::new(true),
            metrics,
            cfg,
            holder,
        }))
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn store(&self) -> &SfmStore {
        &self.store
    }

    pub fn metrics(&self) -> &SfmMetrics {
        &self.metrics
    }

    fn count(&self, dev: &Device, f: impl FnOnce(&mut Counters)) {
        f(self
            .counters
            .lock()
            .entry(dev.conn_key.clone())
            .or_default());
    }

    // ------------------------------------------------------------- reads

    /// Answers a cached read (`op.is_cached_read()`).
    pub async fn read(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
    ) -> Answer {
        let arrived_ms = clock::now_ms();
        let Some(kind) = kind_of(op) else {
            return Answer::detail(StatusCode::INTERNAL_SERVER_ERROR, "not a cached read");
        };
        let copy = match self.cached(dev, op, flags).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(device = %dev.label, error = %e, "cache store unavailable; asking the unit");
                None
            }
        };
        let facts = Facts {
            kind,
            copy: copy.as_deref().map(copy_of),
            force: flags.force,
            arrived_ms,
            now_ms: arrived_ms,
            reach: dev.reach(arrived_ms),
            rules: dev.rules,
        };
        let wait_ms = match freshness::decide(&facts) {
            Decision::Serve => {
                self.count(dev, |c| c.hits += 1);
                let Some(b) = copy else {
                    return Answer::detail(StatusCode::INTERNAL_SERVER_ERROR, "no copy");
                };
                return Answer::from_body(&b, Source::Cache, arrived_ms);
            }
            Decision::ServeStale => return self.stale_or_unavailable(dev, copy.as_deref(), None),
            Decision::Unavailable => return self.stale_or_unavailable(dev, None, None),
            Decision::Probe { wait_ms } => {
                let hold = dev.backoff_ms();
                match self
                    .store
                    .claim_probe(&dev.conn_key, hold, arrived_ms)
                    .await
                {
                    Ok(true) => wait_ms,
                    _ => {
                        let usable = copy.as_deref().filter(|b| {
                            freshness::usable_when_unreachable(
                                kind,
                                &copy_of(b),
                                &dev.rules,
                                arrived_ms,
                            )
                        });
                        return self.stale_or_unavailable(dev, usable, None);
                    }
                }
            }
            Decision::Fetch { wait_ms } => wait_ms,
        };
        self.count(dev, |c| c.misses += 1);
        self.fetch_and_wait(dev, op, kind, flags, query, arrived_ms, copy, wait_ms)
            .await
    }

    /// A stale copy when there is one, else 503 saying why.
    fn stale_or_unavailable(
        &self,
        dev: &Device,
        copy: Option<&StoredBody>,
        error: Option<&str>,
    ) -> Answer {
        let now = clock::now_ms();
        let why = error
            .map(str::to_string)
            .or_else(|| dev.last_error.clone())
            .unwrap_or_else(|| "unit not reachable".into());
        if let Some(b) = copy {
            self.count(dev, |c| c.stale_served += 1);
            self.metrics
                .stale_served
                .with_label_values(&[&dev.label])
                .inc();
            let mut a = Answer::from_body(b, Source::Stale, now);
            a.upstream_error = Some(if dev.spec.suspend {
                "device suspended".into()
            } else {
                why
            });
            return a;
        }
        if dev.spec.suspend {
            return Answer::detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "device suspended: serving from the cache only, and nothing is cached for this request",
            );
        }
        let mut a = Answer::detail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("device unreachable ({why}); nothing cached for this request"),
        );
        a.retry_after_secs = Some(((dev.unreachable_until_ms - now) / 1000).max(1));
        a
    }

    /// The cached body a read would be answered with, if any.
    async fn cached(
        &self,
        dev: &Device,
        op: Op,
        flags: Flags,
    ) -> simcache_store::Result<Option<Arc<StoredBody>>> {
        let Some(key) = self.body_key(dev, op, flags).await? else {
            return Ok(None);
        };
        self.load(&key).await
    }

    async fn body_key(
        &self,
        dev: &Device,
        op: Op,
        flags: Flags,
    ) -> simcache_store::Result<Option<BodyKey>> {
        let (kind, id) = match op {
            Op::Info => (Kind::Info, String::new()),
            Op::Events => (Kind::Events, if flags.debug { "debug" } else { "" }.into()),
            Op::Status => (Kind::Status, String::new()),
            Op::Event(i) | Op::Waveform(i) => {
                let Some(id) = self.identity_at(&dev.conn_key, i).await? else {
                    return Ok(None);
                };
                let kind = if matches!(op, Op::Event(_)) {
                    Kind::Event
                } else {
                    Kind::Waveform
                };
                (kind, id)
            }
            _ => return Ok(None),
        };
        Ok(Some(BodyKey {
            conn_key: dev.conn_key.clone(),
            kind,
            id,
        }))
    }

    async fn identity_at(
        &self,
        conn_key: &str,
        idx: i64,
    ) -> simcache_store::Result<Option<String>> {
        if self.is_coherent()
            && let Some(m) = self.index.lock().get(conn_key).cloned()
        {
            return Ok(m.get(&idx).cloned());
        }
        let all = self.store.index(conn_key).await?;
        let map: Arc<HashMap<i64, String>> = Arc::new(all.into_iter().collect());
        let id = map.get(&idx).cloned();
        if self.is_coherent() {
            self.index.lock().insert(conn_key.to_string(), map);
        }
        Ok(id)
    }

    fn is_coherent(&self) -> bool {
        self.coherent.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn load(&self, key: &BodyKey) -> simcache_store::Result<Option<Arc<StoredBody>>> {
        let coherent = self.is_coherent();
        if coherent && let Some(b) = self.memory.get(key) {
            return Ok(Some(b));
        }
        let Some(b) = self
            .store
            .body(&key.conn_key, key.kind.as_str(), &key.id)
            .await?
        else {
            return Ok(None);
        };
        let b = Arc::new(b);
        if coherent && b.body.len() as u64 <= self.cfg.memory_max_object_bytes {
            self.memory.insert(key.clone(), b.clone());
        }
        Ok(Some(b))
    }

    fn forget_device_memory(&self, conn_key: &str) {
        let c = conn_key.to_string();
        let _ = self
            .memory
            .invalidate_entries_if(move |k, _| k.conn_key == c);
        self.index.lock().remove(conn_key);
    }

    // ------------------------------------------------------------ writes

    /// Passes a write or an uncached route to the unit (in a session slot)
    /// and applies what it invalidates.
    #[allow(clippy::too_many_arguments)]
    pub async fn pass_through(
        &self,
        dev: &Device,
        op: Op,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Answer {
        let now = clock::now_ms();
        match dev.reach(now) {
            Reach::Suspended => {
                return Answer::detail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "device suspended: the unit is never contacted",
                );
            }
            Reach::BackingOff => return self.stale_or_unavailable(dev, None, None),
            Reach::ProbeDue => {
                if !matches!(
                    self.store
                        .claim_probe(&dev.conn_key, dev.backoff_ms(), now)
                        .await,
                    Ok(true)
                ) {
                    return self.stale_or_unavailable(dev, None, None);
                }
            }
            Reach::Ok => {}
        }
        let reply = match self
            .call_upstream(dev, op, method, path, query, headers, body)
            .await
        {
            Ok(r) => r,
            Err(f) => {
                let mut a = Answer::detail(f.status, f.message);
                a.body = f.body;
                if f.from_upstream {
                    a.source = Source::Device;
                }
                return a;
            }
        };
        if reply.status.is_success() {
            let conn = dev.conn_key.as_str();
            let applied = match op {
                Op::Monitor => self.store.drop_kind(conn, Kind::Status.as_str()).await,
                Op::Config => {
                    self.store
                        .mark_stale(conn, &[Kind::Info.as_str(), Kind::Events.as_str()])
                        .await
                }
                Op::Erase => self.store.unlink_all(conn).await.map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = applied {
                tracing::error!(device = %dev.label, error = %e, "the unit changed but the cache could not be invalidated");
            }
            if op.is_write() {
                self.forget_device_memory(conn);
            }
        }
        Answer {
            status: reply.status,
            body: reply.body,
            source: Source::Bypass,
            etag: None,
            age_secs: None,
            upstream_error: None,
            retry_after_secs: None,
            content_type: reply.content_type,
        }
    }

    // ----------------------------------------------------------- housekeeping

    /// Deletes what is cached about one device (`DELETE /cache/device`).
    pub async fn flush_device(
        &self,
        dev: &Device,
    ) -> simcache_store::Result<simcache_store::sfm::Amounts> {
        let a = self.store.flush_device(&dev.conn_key).await?;
        self.forget_device_memory(&dev.conn_key);
        Ok(a)
    }
}

fn store_failure(e: &simcache_store::StoreError) -> Failure {
    Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: Bytes::from(json!({ "detail": format!("cache store unavailable: {e}") }).to_string()),
        unreachable: false,
        message: e.to_string(),
        from_upstream: false,
    }
}

/// The upstream path of a cached read.
fn upstream_path(op: Op) -> String {
    match op {
        Op::Info => "/device/info".into(),
        Op::Events => "/device/events".into(),
        Op::Event(i) => format!("/device/event/{i}"),
        Op::Waveform(i) => format!("/device/event/{i}/waveform"),
        _ => "/device/monitor/status".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flight_covers_one_piece_of_data_and_writes_share_one() {
        let plain = Flags::default();
        let debug = Flags {
            debug: true,
            ..Flags::default()
        };
        assert_eq!(fetch_key(Op::Info, plain), "info");
        assert_eq!(fetch_key(Op::Events, plain), "events");
        assert_eq!(fetch_key(Op::Events, debug), "events:debug");
        assert_eq!(fetch_key(Op::Event(7), plain), "event:7");
        assert_eq!(fetch_key(Op::Waveform(7), plain), "waveform:7");
        assert_ne!(
            fetch_key(Op::Event(7), plain),
            fetch_key(Op::Event(8), plain)
        );
        for write in [Op::Monitor, Op::Config, Op::Erase, Op::PassThrough] {
            assert_eq!(fetch_key(write, plain), "write");
            assert_eq!(kind_of(write), None, "writes are never stored");
        }
        assert_eq!(kind_of(Op::Waveform(1)), Some(Kind::Waveform));
        assert_eq!(kind_of(Op::Status), Some(Kind::Status));
    }

    #[test]
    fn an_answer_from_a_stored_body_carries_its_etag_and_age() {
        let b = StoredBody {
            body: Bytes::from_static(b"{}"),
            etag: etag_of(b"{}"),
            fetched_at_ms: 10_000,
            fetch_started_ms: 9_000,
            stale: false,
        };
        let a = Answer::from_body(&b, Source::Cache, 12_999);
        assert_eq!(a.age_secs, Some(2), "whole seconds since the fetch");
        assert_eq!(a.etag.as_deref(), Some(b.etag.as_str()));
        assert_eq!(a.status, StatusCode::OK);
        // A clock behind the fetch's (another proxy's) says age 0, not negative.
        assert_eq!(
            Answer::from_body(&b, Source::Cache, 5_000).age_secs,
            Some(0)
        );
        assert!(etag_of(b"{}").starts_with("\"") && etag_of(b"{}") != etag_of(b"[]"));
    }
}

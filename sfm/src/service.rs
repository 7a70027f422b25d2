//! The proxy's core, shared by the pod-local listener, the `sfm-proxy`
//! Deployment and the operator's probe: serve a read from memory or the
//! shared store when the freshness rules allow, else join or start **one**
//! fetch for the whole cluster, holding one of the unit's session slots.
//!
//! A fetch runs in its own task, so a reader that gives up (or is served a
//! stale copy after `staleAfterSeconds`) does not stop it: it still
//! refreshes the cache for everyone.

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
use simcache_store::sfm::{
    Counters, LeaseState, NewBody, SfmEnvelope, SfmEvent, SfmStore, StoredBody,
};
use tokio::sync::{Notify, watch};

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
    pub allow: Option<Vec<String>>,
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

struct Flight {
    started_ms: i64,
    done: watch::Receiver<Option<Outcome>>,
}

type FlightKey = (String, String);

pub struct SfmService {
    store: SfmStore,
    registry: Registry,
    upstream: Upstream,
    memory: moka::sync::Cache<BodyKey, Arc<StoredBody>>,
    /// Index → identity per device, dropped on change events.
    index: Mutex<HashMap<String, Arc<HashMap<i64, String>>>>,
    flights: Mutex<HashMap<FlightKey, Arc<Flight>>>,
    lease_wakers: Mutex<HashMap<FlightKey, Arc<Notify>>>,
    slot_wakers: Mutex<HashMap<String, Arc<Notify>>>,
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
            flights: Mutex::new(HashMap::new()),
            lease_wakers: Mutex::new(HashMap::new()),
            slot_wakers: Mutex::new(HashMap::new()),
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

    #[allow(clippy::too_many_arguments)]
    async fn fetch_and_wait(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        kind: Kind,
        flags: Flags,
        query: &str,
        arrived_ms: i64,
        copy: Option<Arc<StoredBody>>,
        wait_ms: Option<i64>,
    ) -> Answer {
        let deadline = wait_ms.map(|w| Instant::now() + Duration::from_millis(w.max(0) as u64));
        loop {
            let (flight, joined) = self.join_or_start(dev, op, flags, query, arrived_ms);
            if joined {
                self.count(dev, |c| c.coalesced += 1);
                self.metrics
                    .coalesced
                    .with_label_values(&[&dev.label])
                    .inc();
            }
            let mut rx = flight.done.clone();
            let outcome = async {
                loop {
                    if let Some(o) = rx.borrow_and_update().clone() {
                        return Some(o);
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            };
            let outcome = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), outcome).await {
                    Ok(o) => o,
                    Err(_) => {
                        // A slow fetch: the reader takes its copy; the fetch goes on.
                        return self.stale_or_unavailable(
                            dev,
                            copy.as_deref(),
                            Some("fetch still in progress after staleAfterSeconds"),
                        );
                    }
                },
                None => outcome.await,
            };
            // A forced read needs a fetch that began after it arrived; one
            // that began earlier is waited out, then the next one is joined.
            let fresh_enough = !flags.force
                || match &outcome {
                    Some(Outcome::Fetched(b)) => b.fetch_started_ms >= arrived_ms,
                    _ => flight.started_ms >= arrived_ms,
                };
            if !fresh_enough {
                continue;
            }
            let now = clock::now_ms();
            return match outcome {
                Some(Outcome::Fetched(b)) => Answer::from_body(&b, Source::Device, now),
                Some(Outcome::Failed(f)) => {
                    let usable = copy.as_deref().filter(|b| {
                        freshness::usable_when_unreachable(kind, &copy_of(b), &dev.rules, now)
                    });
                    match (f.unreachable, usable) {
                        (true, Some(b)) => {
                            self.stale_or_unavailable(dev, Some(b), Some(&f.message))
                        }
                        _ => Answer {
                            status: f.status,
                            body: f.body,
                            source: if f.from_upstream {
                                Source::Device
                            } else {
                                Source::Proxy
                            },
                            etag: None,
                            age_secs: None,
                            upstream_error: None,
                            retry_after_secs: None,
                            content_type: None,
                        },
                    }
                }
                None => Answer::detail(StatusCode::INTERNAL_SERVER_ERROR, "fetch task ended"),
            };
        }
    }

    /// Joins the flight in this process for the same data, or starts one.
    /// Returns the flight and whether it was joined.
    fn join_or_start(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
        arrived_ms: i64,
    ) -> (Arc<Flight>, bool) {
        let key = (dev.conn_key.clone(), fetch_key(op, flags));
        let mut flights = self.flights.lock();
        if let Some(f) = flights.get(&key)
            && f.done.borrow().is_none()
        {
            return (f.clone(), true);
        }
        let started_ms = clock::now_ms();
        let (tx, rx) = watch::channel(None);
        let flight = Arc::new(Flight {
            started_ms,
            done: rx,
        });
        flights.insert(key.clone(), flight.clone());
        drop(flights);
        let svc = self.clone();
        let dev = dev.clone();
        let query = query.to_string();
        let need_after = flags.force.then_some(arrived_ms.min(started_ms));
        tokio::spawn(async move {
            let outcome = svc
                .fetch_through_cluster(&dev, op, flags, &query, &key.1, started_ms, need_after)
                .await;
            let _ = tx.send(Some(outcome));
            let mut flights = svc.flights.lock();
            if flights
                .get(&key)
                .is_some_and(|f| f.started_ms == started_ms && f.done.borrow().is_some())
            {
                flights.remove(&key);
            }
        });
        (flight, false)
    }

    fn waker(&self, conn_key: &str, fetch_key: &str) -> Arc<Notify> {
        self.lease_wakers
            .lock()
            .entry((conn_key.to_string(), fetch_key.to_string()))
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    fn slot_waker(&self, conn_key: &str) -> Arc<Notify> {
        self.slot_wakers
            .lock()
            .entry(conn_key.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// The cluster-wide half of a fetch: if another process committed what
    /// we need meanwhile, take it; else take the fetch lease and fetch, or
    /// wait for the holder's commit (taking over an expired lease).
    #[allow(clippy::too_many_arguments)]
    async fn fetch_through_cluster(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
        fetch_key: &str,
        started_ms: i64,
        need_after: Option<i64>,
    ) -> Outcome {
        let conn = dev.conn_key.as_str();
        let mut saw_held = false;
        loop {
            let waker = self.waker(conn, fetch_key);
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(b) = self
                .committed_by_others(dev, op, flags, need_after, started_ms)
                .await
            {
                return Outcome::Fetched(b);
            }
            let now = clock::now_ms();
            match self
                .store
                .try_lease(
                    conn,
                    fetch_key,
                    &self.holder,
                    self.cfg.lease_ttl.as_millis() as i64,
                    now,
                )
                .await
            {
                // The fetch starts now: a forced read that arrived before
                // this moment is answered by it, wherever it waits.
                Ok(true) => {
                    return self
                        .fetch_holding_lease(dev, op, flags, query, fetch_key, now)
                        .await;
                }
                Ok(false) => {}
                Err(e) => return Outcome::Failed(store_failure(&e)),
            }
            let wait = match self.store.lease(conn, fetch_key).await {
                Ok(LeaseState::Failed { status, body, .. }) if saw_held => {
                    return Outcome::Failed(Failure {
                        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        unreachable: status >= 502,
                        message: format!("upstream answered {status}"),
                        body,
                        from_upstream: true,
                    });
                }
                Ok(LeaseState::Held { expires_at_ms }) => {
                    saw_held = true;
                    (expires_at_ms - now).clamp(10, 1000)
                }
                Ok(_) => 10,
                Err(e) => return Outcome::Failed(store_failure(&e)),
            };
            let _ = tokio::time::timeout(Duration::from_millis(wait as u64), notified).await;
        }
    }

    /// What another process committed that satisfies this fetch, if anything.
    async fn committed_by_others(
        &self,
        dev: &Device,
        op: Op,
        flags: Flags,
        need_after: Option<i64>,
        flight_started_ms: i64,
    ) -> Option<Arc<StoredBody>> {
        let kind = kind_of(op)?;
        let key = match op {
            Op::Event(i) | Op::Waveform(i) => {
                let id = self.store.identity_at(&dev.conn_key, i).await.ok()??;
                BodyKey {
                    conn_key: dev.conn_key.clone(),
                    kind,
                    id,
                }
            }
            _ => self.body_key(dev, op, flags).await.ok()??,
        };
        let b = self
            .store
            .body(&key.conn_key, kind.as_str(), &key.id)
            .await
            .ok()??;
        let now = clock::now_ms();
        let ok = match need_after {
            Some(t) => b.fetch_started_ms >= t,
            // Fresh by the rules, or committed after this flight began: as
            // fresh as a fetch of our own could be (eventsFreshSeconds 0).
            None => {
                freshness::is_fresh(kind, &copy_of(&b), &dev.rules, now)
                    || b.fetched_at_ms >= flight_started_ms
            }
        };
        ok.then(|| Arc::new(b))
    }

    /// Takes one of the unit's session slots, waiting for one to free up.
    async fn take_slot(&self, dev: &Device) -> Result<SlotGuard, Failure> {
        let t0 = Instant::now();
        let ttl = self.cfg.slot_ttl.as_millis() as i64;
        loop {
            let waker = self.slot_waker(&dev.conn_key);
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self
                .store
                .try_slot(
                    &dev.conn_key,
                    dev.spec.max_concurrent_sessions,
                    &self.holder,
                    ttl,
                    clock::now_ms(),
                )
                .await
            {
                Ok(Some(slot)) => {
                    self.metrics
                        .session_wait
                        .observe(t0.elapsed().as_secs_f64());
                    let (store, conn, holder) = (
                        self.store.clone(),
                        dev.conn_key.clone(),
                        self.holder.clone(),
                    );
                    let beat = heartbeat(ttl, move || {
                        let (store, conn, holder) = (store.clone(), conn.clone(), holder.clone());
                        async move {
                            let _ = store
                                .renew_slot(&conn, slot, &holder, ttl, clock::now_ms())
                                .await;
                        }
                    });
                    return Ok(SlotGuard { slot, beat });
                }
                Ok(None) => {}
                Err(e) => return Err(store_failure(&e)),
            }
            let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
        }
    }

    async fn release_slot(&self, dev: &Device, g: SlotGuard) {
        g.beat.abort();
        if let Err(e) = self
            .store
            .release_slot(&dev.conn_key, g.slot, &self.holder)
            .await
        {
            tracing::warn!(device = %dev.label, error = %e, "could not release a session slot; it expires");
        }
        self.slot_waker(&dev.conn_key).notify_waiters();
    }

    /// Calls upstream once, in a session slot, and records the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn call_upstream(
        &self,
        dev: &Device,
        op: Op,
        method: Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamReply, Failure> {
        let slot = self.take_slot(dev).await?;
        self.count(dev, |c| c.upstream_calls += 1);
        let t0 = Instant::now();
        let reply = self
            .upstream
            .call(
                dev,
                method,
                path,
                query,
                headers,
                body,
                self.cfg.max_upstream_body_bytes,
            )
            .await;
        self.release_slot(dev, slot).await;
        self.metrics
            .upstream_duration
            .with_label_values(&[op.route()])
            .observe(t0.elapsed().as_secs_f64());
        let now = clock::now_ms();
        let outcome = match &reply {
            Ok(r) if r.status.is_success() => "ok",
            Ok(r) if r.status.as_u16() >= 502 => "unreachable",
            Ok(_) => "error",
            Err(UpstreamError::Timeout(_)) => "timeout",
            Err(_) => "unreachable",
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[&dev.label, op.route(), outcome])
            .inc();
        let failed = match &reply {
            Ok(r) if r.status.as_u16() >= 502 => Some((
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    "ConnectRefused"
                } else {
                    "ProtocolError"
                },
                format!("SFM service answered {}", r.status.as_u16()),
            )),
            Ok(_) => None,
            Err(e) => Some((e.reason(), e.to_string())),
        };
        let recorded = match &failed {
            Some((reason, msg)) => self
                .store
                .record_failure(&dev.conn_key, reason, msg, dev.backoff_ms(), now)
                .await
                .map(|_| ()),
            None => self.store.record_success(&dev.conn_key, now).await,
        };
        if let Err(e) = recorded {
            tracing::warn!(device = %dev.label, error = %e, "could not record the unit's reachability");
        }
        self.metrics
            .reachable
            .with_label_values(&[&dev.label])
            .set(i64::from(failed.is_none()));
        let _ = self.registry.reload_one(&dev.conn_key).await;
        match reply {
            Ok(r) => Ok(r),
            Err(e) => {
                let status = match e {
                    UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                Err(Failure {
                    status,
                    body: Bytes::from(json!({ "detail": e.to_string() }).to_string()),
                    unreachable: true,
                    message: e.to_string(),
                    from_upstream: false,
                })
            }
        }
    }

    async fn fetch_holding_lease(
        self: &Arc<Self>,
        dev: &Arc<Device>,
        op: Op,
        flags: Flags,
        query: &str,
        fetch_key: &str,
        started_ms: i64,
    ) -> Outcome {
        let conn = dev.conn_key.clone();
        let ttl = self.cfg.lease_ttl.as_millis() as i64;
        let beat = {
            let (store, conn, key, holder) = (
                self.store.clone(),
                conn.clone(),
                fetch_key.to_string(),
                self.holder.clone(),
            );
            heartbeat(ttl, move || {
                let (store, conn, key, holder) =
                    (store.clone(), conn.clone(), key.clone(), holder.clone());
                async move {
                    let _ = store
                        .renew_lease(&conn, &key, &holder, ttl, clock::now_ms())
                        .await;
                }
            })
        };
        let path = upstream_path(op);
        let reply = self
            .call_upstream(
                dev,
                op,
                Method::GET,
                &path,
                query,
                &HeaderMap::new(),
                Bytes::new(),
            )
            .await;
        let outcome = match reply {
            Ok(r) if r.status.is_success() => match self
                .commit(dev, op, flags, fetch_key, r.body, started_ms)
                .await
            {
                Ok(b) => Outcome::Fetched(b),
                Err(e) => Outcome::Failed(store_failure(&e)),
            },
            Ok(r) => Outcome::Failed(Failure {
                unreachable: r.status.as_u16() >= 502,
                message: format!("SFM service answered {}", r.status.as_u16()),
                status: r.status,
                body: r.body,
                from_upstream: true,
            }),
            Err(f) => Outcome::Failed(f),
        };
        beat.abort();
        if let Outcome::Failed(f) = &outcome {
            let _ = self
                .store
                .fail_lease(
                    &conn,
                    fetch_key,
                    &self.holder,
                    f.status.as_u16(),
                    f.body.clone(),
                    2000,
                    clock::now_ms(),
                )
                .await;
        }
        self.waker(&conn, fetch_key).notify_waiters();
        outcome
    }

    /// Stores what a successful fetch returned, with its index links, and
    /// releases the lease (one transaction).
    async fn commit(
        &self,
        dev: &Device,
        op: Op,
        flags: Flags,
        fetch_key: &str,
        body: Bytes,
        started_ms: i64,
    ) -> simcache_store::Result<Arc<StoredBody>> {
        let conn = dev.conn_key.as_str();
        let now = clock::now_ms();
        let mut links = Vec::new();
        let mut unlink = Vec::new();
        let (kind, id, body) = match op {
            Op::Info | Op::Events => {
                let facts = identity::unit_facts(&body);
                if let (Some(new), Some(old)) = (&facts.serial, &dev.serial)
                    && new != old
                {
                    tracing::warn!(device = %dev.label, old = %old, new = %new, "another unit answers at this address; flushing its cache");
                    self.store.flush_device(conn).await?;
                    self.forget_device_memory(conn);
                }
                self.store
                    .record_identity(
                        conn,
                        facts.serial.as_deref(),
                        facts.firmware.as_deref(),
                        facts.event_count,
                    )
                    .await?;
                if op == Op::Info {
                    (Kind::Info, String::new(), body)
                } else {
                    let id = if flags.debug { "debug" } else { "" }.to_string();
                    let cached = self.store.body(conn, Kind::Events.as_str(), &id).await?;
                    let merged =
                        identity::merge_lists(cached.as_ref().map(|c| c.body.as_ref()), &body);
                    if let Some(listed) = identity::listed_events(&merged) {
                        let known = self.store.index(conn).await?;
                        let change = identity::reconcile(&known, &listed);
                        links = change.links;
                        unlink = change.unlink;
                    }
                    (Kind::Events, id, merged)
                }
            }
            Op::Event(i) | Op::Waveform(i) => {
                let known = self.store.identity_at(conn, i).await?;
                let id = identity::body_identity(&body)
                    .or(known.clone())
                    .unwrap_or_else(|| format!("idx:{i}@{now}"));
                if known.as_ref().is_some_and(|k| *k != id) {
                    unlink.push(i);
                }
                links.push((i, id.clone()));
                let kind = if matches!(op, Op::Event(_)) {
                    Kind::Event
                } else {
                    Kind::Waveform
                };
                (kind, id, body)
            }
            _ => (Kind::Status, String::new(), body),
        };
        let etag = etag_of(&body);
        let new = NewBody {
            kind: kind.as_str().into(),
            id: id.clone(),
            body: body.clone(),
            etag: etag.clone(),
            fetch_started_ms: started_ms,
        };
        self.store
            .commit_fetch(conn, fetch_key, &[new], &links, &unlink, now)
            .await?;
        let stored = Arc::new(StoredBody {
            body,
            etag,
            fetched_at_ms: now,
            fetch_started_ms: started_ms,
            stale: false,
        });
        if !links.is_empty() || !unlink.is_empty() {
            self.index.lock().remove(conn);
        }
        let key = BodyKey {
            conn_key: conn.to_string(),
            kind,
            id,
        };
        if stored.body.len() as u64 <= self.cfg.memory_max_object_bytes {
            self.memory.insert(key, stored.clone());
        } else {
            self.memory.invalidate(&key);
        }
        Ok(stored)
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

    /// Writes the counters gathered since the last flush.
    pub async fn flush_counters(&self) {
        let pending: Vec<(String, Counters)> = self.counters.lock().drain().collect();
        for (conn, c) in pending {
            if c.is_zero() {
                continue;
            }
            if let Err(e) = self.store.add_counters(&conn, c).await {
                tracing::warn!(error = %e, "could not write SFM counters; keeping them for the next flush");
                let mut map = self.counters.lock();
                let e = map.entry(conn).or_default();
                e.hits += c.hits;
                e.misses += c.misses;
                e.upstream_calls += c.upstream_calls;
                e.coalesced += c.coalesced;
                e.stale_served += c.stale_served;
            }
        }
    }

    /// Refreshes the cached-amount and reachability gauges.
    pub async fn sample_gauges(&self) {
        for d in self.registry.all() {
            // Every device's counters exist from the first scrape, at zero.
            self.metrics.coalesced.with_label_values(&[&d.label]);
            self.metrics.stale_served.with_label_values(&[&d.label]);
            self.metrics
                .reachable
                .with_label_values(&[&d.label])
                .set(i64::from(d.failures == 0));
            if let Ok(kinds) = self.store.by_kind(Some(&d.conn_key)).await {
                for k in Kind::ALL {
                    let (n, bytes) = kinds
                        .iter()
                        .find(|(name, _, _)| name == k.as_str())
                        .map_or((0, 0), |(_, n, b)| (*n, *b));
                    self.metrics
                        .cached_objects
                        .with_label_values(&[&d.label, k.as_str()])
                        .set(n);
                    self.metrics
                        .cached_bytes
                        .with_label_values(&[&d.label, k.as_str()])
                        .set(bytes);
                }
            }
        }
    }

    /// Applies another process's change event.
    pub async fn apply(&self, sig: Signal<SfmEnvelope>) {
        match sig {
            Signal::Connected => {
                self.memory.invalidate_all();
                self.index.lock().clear();
                self.coherent
                    .store(true, std::sync::atomic::Ordering::Release);
                let _ = self.registry.reload().await;
            }
            Signal::Lost => {
                self.coherent
                    .store(false, std::sync::atomic::Ordering::Release);
                self.memory.invalidate_all();
                self.index.lock().clear();
            }
            Signal::Event(env) => {
                let own = env.origin == self.store.origin();
                match env.event {
                    SfmEvent::Body { conn_key, kind, id } if !own => {
                        if let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind) {
                            self.memory.invalidate(&BodyKey { conn_key, kind, id });
                        }
                    }
                    SfmEvent::Body { .. } => {}
                    SfmEvent::Lease {
                        conn_key,
                        fetch_key,
                    } => {
                        self.waker(&conn_key, &fetch_key).notify_waiters();
                    }
                    SfmEvent::Slot { conn_key } => self.slot_waker(&conn_key).notify_waiters(),
                    SfmEvent::Device { conn_key } => {
                        if !own {
                            self.forget_device_memory(&conn_key);
                        }
                        match self.registry.reload_one(&conn_key).await {
                            Ok(Some(gone)) => self.metrics.forget(&gone),
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "could not reload a device registration")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Starts the background work: change events (PostgreSQL), counter
    /// flushing, registry reloads and gauge sampling. Abort the handles to stop.
    pub fn spawn_background(
        self: &Arc<Self>,
        pg: Option<simcache_store::postgres::PgConfig>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(config) = pg {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let listener = simcache_store::events::listen_on::<SfmEnvelope>(
                config,
                simcache_store::sfm::CHANNEL,
                tx,
            );
            let svc = self.clone();
            // Until LISTEN is in place, memory is bypassed.
            self.coherent
                .store(false, std::sync::atomic::Ordering::Release);
            tasks.push(tokio::spawn(async move {
                while let Some(sig) = rx.recv().await {
                    svc.apply(sig).await;
                }
                listener.abort();
            }));
        }
        let svc = self.clone();
        let every = self.cfg.flush_interval;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                svc.flush_counters().await;
            }
        }));
        let svc = self.clone();
        let every = self.cfg.registry_refresh;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match svc.registry.reload().await {
                    Ok(gone) => gone.iter().for_each(|g| svc.metrics.forget(g)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reload SFM device registrations")
                    }
                }
                svc.sample_gauges().await;
            }
        }));
        tasks
    }
}

/// Runs `renew` every third of `ttl_ms` until the handle is aborted: what
/// keeps a lease or a session slot ours while its holder works.
fn heartbeat<F, Fut>(ttl_ms: i64, renew: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let every = Duration::from_millis((ttl_ms / 3).max(50) as u64);
        loop {
            tokio::time::sleep(every).await;
            renew().await;
        }
    })
}

struct SlotGuard {
    slot: i64,
    beat: tokio::task::JoinHandle<()>,
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

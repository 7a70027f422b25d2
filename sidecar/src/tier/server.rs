//! The shared service's side of the tier: the cache store behind HTTP for
//! the pods' sidecars (each call checked against the caller's session), and
//! the change stream that tells every subscriber what changed.
//!
//! Changes come from PostgreSQL's NOTIFY, so a subscriber hears the writes
//! of every replica and of the operator; with SQLite (one process, local
//! use) the routes publish their own writes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use simcache_auth::{Authenticator, Privilege};
use simcache_store::cache::{CacheEntry, CacheStore, KeyPattern, ListQuery};
use simcache_store::clock::now_ms;
use simcache_store::events::{CacheEvent, Envelope, Signal};
use simcache_web::{ApiError, JsonBody};
use tokio::sync::{broadcast, watch};

use super::{AccessesRequest, Count, Existed, HEARTBEAT, InvalidateRequest, Page, StreamLine};
use crate::cache::key;
use crate::cache::request::as_written_at_the_tier;

/// Changes waiting for a slow subscriber before it is cut off (it then
/// reconnects with an empty memory tier, which is always safe).
const FEED_CAPACITY: usize = 4096;

/// The change feed every subscriber reads.
#[derive(Clone)]
pub struct ChangeFeed {
    tx: broadcast::Sender<Signal>,
    /// Whether every change is being heard (PostgreSQL's LISTEN is in place).
    listening: watch::Receiver<bool>,
    /// Publish our own writes (no NOTIFY to hear them from), as `origin`.
    local: Option<String>,
    /// Ends every stream: a shutdown cannot wait for subscribers to leave.
    stopping: tokio_util::sync::CancellationToken,
}

impl ChangeFeed {
    /// Changes heard on PostgreSQL's cache channel.
    pub fn from_postgres(
        config: simcache_store::postgres::PgConfig,
    ) -> (ChangeFeed, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        let (set_listening, listening) = watch::channel(false);
        let (signals_tx, mut signals) = tokio::sync::mpsc::channel(FEED_CAPACITY);
        let listener = simcache_store::events::listen(config, signals_tx);
        let feed_tx = tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(sig) = signals.recv().await {
                match &sig {
                    Signal::Connected => set_listening.send_replace(true),
                    Signal::Lost => set_listening.send_replace(false),
                    Signal::Event(_) => true,
                };
                // No subscriber is not an error.
                let _ = feed_tx.send(sig);
            }
        });
        (
            ChangeFeed {
                tx,
                listening,
                local: None,
                stopping: Default::default(),
            },
            vec![listener, forward],
        )
    }

    /// A feed of this process's own writes (a single-process store).
    pub fn local(origin: String) -> ChangeFeed {
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        let (_, listening) = watch::channel(true);
        ChangeFeed {
            tx,
            listening,
            local: Some(origin),
            stopping: Default::default(),
        }
    }

    /// Ends every open stream (at shutdown); subscribers reconnect elsewhere.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    fn publish(&self, event: CacheEvent) {
        if let Some(origin) = &self.local {
            let _ = self.tx.send(Signal::Event(Envelope {
                origin: origin.clone(),
                event,
            }));
        }
    }
}

#[derive(Clone)]
pub struct TierState {
    pub store: Arc<dyn CacheStore>,
    pub auth: Arc<Authenticator>,
    pub feed: ChangeFeed,
}

/// The tier routes, under [`super::PREFIX`].
pub fn routes(state: TierState) -> Router {
    let cache = Router::new()
        .route("/entry", get(get_entry).put(put_entry).delete(delete_entry))
        .route("/entries", delete(delete_all))
        .route("/invalidate", post(invalidate))
        .route("/stats", get(stats))
        .route("/list", post(list))
        .route("/accesses", post(accesses))
        .route("/events", get(events));
    Router::new()
        .nest(&format!("{}/cache", super::PREFIX), cache)
        .route(&format!("{}/ping", super::PREFIX), get(ping))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    key: String,
}

fn checked_key(
    q: Result<Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<String, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    key::validate(&q.key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(q.key)
}

async fn get_entry(
    State(s): State<TierState>,
    headers: HeaderMap,
    q: Result<Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CacheEntry>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let key = checked_key(q)?;
    match s.store.get(&key, now_ms()).await? {
        Some(e) => Ok(Json(e)),
        None => Err(ApiError::not_found("Not found")),
    }
}

async fn put_entry(
    State(s): State<TierState>,
    headers: HeaderMap,
    JsonBody(entry): JsonBody<CacheEntry>,
) -> Result<StatusCode, ApiError> {
    let session = s.auth.authorize(&headers, Privilege::WriteCache).await?;
    let entry = as_written_at_the_tier(entry, now_ms(), session.user_id)
        .map_err(|e| ApiError::unprocessable(e.0))?;
    let key = entry.cache_key.clone();
    s.store.put(entry).await?;
    s.feed.publish(CacheEvent::Put { key });
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_entry(
    State(s): State<TierState>,
    headers: HeaderMap,
    q: Result<Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Existed>, ApiError> {
    s.auth
        .authorize(&headers, Privilege::InvalidateCache)
        .await?;
    let key = checked_key(q)?;
    let existed = s.store.delete(&key).await?;
    s.feed.publish(CacheEvent::Delete { key });
    Ok(Json(Existed { existed }))
}

async fn delete_all(
    State(s): State<TierState>,
    headers: HeaderMap,
) -> Result<Json<Count>, ApiError> {
    s.auth.authorize(&headers, Privilege::Admin).await?;
    let count = s.store.delete_all().await?;
    s.feed.publish(CacheEvent::Clear);
    Ok(Json(Count { count }))
}

async fn invalidate(
    State(s): State<TierState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InvalidateRequest>,
) -> Result<Json<Count>, ApiError> {
    s.auth
        .authorize(&headers, Privilege::InvalidateCache)
        .await?;
    let pattern = req
        .pattern
        .as_deref()
        .map(KeyPattern::parse)
        .transpose()
        .map_err(|e| ApiError::unprocessable(format!("pattern: {e}")))?;
    let count = s
        .store
        .invalidate(&req.filter, pattern.as_ref(), &req.record)
        .await?;
    s.feed
        .publish(CacheEvent::Invalidate { filter: req.filter });
    Ok(Json(Count { count }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    simulation_id: Option<i64>,
}

async fn stats(
    State(s): State<TierState>,
    headers: HeaderMap,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let stats = s.store.stats(q.simulation_id, now_ms()).await?;
    Ok(Json(stats).into_response())
}

/// Pages are bounded here whatever the pod asks.
const MAX_PAGE: i64 = 1000;

async fn list(
    State(s): State<TierState>,
    headers: HeaderMap,
    JsonBody(mut q): JsonBody<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    q.limit = q.limit.clamp(0, MAX_PAGE);
    q.offset = q.offset.max(0);
    let (entries, total) = s.store.list(&q).await?;
    Ok(Json(Page { entries, total }))
}

/// Hit counts a pod gathered: a side effect of reading, so reading suffices.
async fn accesses(
    State(s): State<TierState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<AccessesRequest>,
) -> Result<StatusCode, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    let mut req = req;
    accesses_checked(&mut req, now_ms()).map_err(ApiError::unprocessable)?;
    s.store.record_accesses(&req.hits, req.misses).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Most keys, and most hits or misses per count, one report may carry: a
/// pod flushes every second, far below this; a forged count cannot push a
/// counter out of range for everyone.
const MAX_REPORTED_KEYS: usize = 100_000;
const MAX_REPORTED_COUNT: i64 = 1_000_000;

/// Checks a pod's hit report; access times later than now become now.
fn accesses_checked(req: &mut AccessesRequest, now_ms: i64) -> Result<(), String> {
    let in_range = |n: i64| (0..=MAX_REPORTED_COUNT).contains(&n);
    if req.hits.len() > MAX_REPORTED_KEYS
        || !in_range(req.misses)
        || req.hits.iter().any(|h| !in_range(h.hits))
    {
        return Err(format!(
            "accesses: at most {MAX_REPORTED_KEYS} keys, counts from 0 to {MAX_REPORTED_COUNT}"
        ));
    }
    for h in &mut req.hits {
        h.last_accessed_ms = h.last_accessed_ms.min(now_ms);
    }
    Ok(())
}

async fn ping(State(s): State<TierState>) -> Result<StatusCode, ApiError> {
    s.store.ping().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The change stream: `connected`, then every change and a heartbeat each
/// [`HEARTBEAT`], one JSON object per line. It ends when this process stops
/// hearing every change (the subscriber then serves nothing from memory).
async fn events(State(s): State<TierState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.auth.authorize(&headers, Privilege::ReadCache).await?;
    // Subscribe first: a change after this is in the receiver, so nothing
    // falls between the check below and the stream.
    let rx = s.feed.tx.subscribe();
    if !*s.feed.listening.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the shared tier is not hearing changes yet; retry",
        ));
    }
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.reset();
    let stopping = s.feed.stopping.clone();
    let auth = s.auth.clone();
    let stream = futures_util::stream::unfold(
        (rx, tick, true),
        move |(mut rx, mut tick, first)| {
            let (stopping, auth, headers) = (stopping.clone(), auth.clone(), headers.clone());
            async move {
                if first {
                    return Some((line(&StreamLine::Connected), (rx, tick, false)));
                }
                loop {
                    tokio::select! {
                        _ = stopping.cancelled() => return None,
                        r = rx.recv() => match r {
                            Ok(Signal::Event(change)) => {
                                return Some((line(&StreamLine::Change { change }), (rx, tick, false)));
                            }
                            Ok(Signal::Connected) => continue,
                            // Lost, or too far behind: end the stream.
                            Ok(Signal::Lost) | Err(_) => return None,
                        },
                        _ = tick.tick() => {
                            // A session revoked or expired since ends its stream.
                            auth.authorize(&headers, Privilege::ReadCache).await.ok()?;
                            return Some((line(&StreamLine::Heartbeat), (rx, tick, false)));
                        }
                    }
                }
            }
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn line(l: &StreamLine) -> Result<bytes::Bytes, Infallible> {
    let mut v = serde_json::to_vec(l).unwrap_or_else(|_| b"{\"kind\":\"heartbeat\"}".to_vec());
    v.push(b'\n');
    Ok(bytes::Bytes::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcache_store::cache::HitDelta;

    fn report(hits: i64, misses: i64, at: i64) -> AccessesRequest {
        AccessesRequest {
            hits: vec![HitDelta {
                cache_key: "k".into(),
                hits,
                last_accessed_ms: at,
            }],
            misses,
        }
    }

    #[test]
    fn a_hit_report_is_bounded_and_cannot_date_accesses_in_the_future() {
        let mut ok = report(3, 1, 5_000);
        assert!(accesses_checked(&mut ok, 1_000).is_ok());
        assert_eq!(ok.hits[0].last_accessed_ms, 1_000, "clamped to now");
        for mut bad in [
            report(-1, 0, 0),
            report(0, -1, 0),
            report(MAX_REPORTED_COUNT + 1, 0, 0),
            report(0, i64::MAX, 0),
        ] {
            let e = accesses_checked(&mut bad, 1_000).unwrap_err();
            assert!(e.contains("counts from 0"), "{e}");
        }
    }
}

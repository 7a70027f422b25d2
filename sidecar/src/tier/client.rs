//! The pod's side of the shared tier: the cache store over HTTP, with the
//! pod's own session, and the change stream that keeps the pod's memory
//! tier coherent without a database connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use simcache_store::StoreError;
use simcache_store::cache::{
    CacheEntry, CacheStore, HitDelta, InvalidationFilter, InvalidationRecord, KeyPattern,
    ListQuery, StoreStats,
};
use simcache_store::events::Signal;

use super::{
    AccessesRequest, Count, Existed, InvalidateRequest, MAX_LINE_BYTES, PREFIX, Page,
    SILENCE_LIMIT, STALE_BOUND, StreamLine,
};
use crate::cache::{CacheService, coherence};

/// What the shared tier answered that is not what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("the shared tier answered {status}: {message}")]
    Answered { status: u16, message: String },
    #[error("the shared tier refused this pod's session ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("a change-stream line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

/// The longest a call to the tier may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared tier at `base`, asked with the pod's session.
#[derive(Clone)]
pub struct TierClient {
    http: reqwest::Client,
    base: String,
    session: String,
}

impl std::fmt::Debug for TierClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierClient")
            .field("base", &self.base)
            .field("session", &"<redacted>")
            .finish()
    }
}

impl TierClient {
    /// `base` is the shared tier's URL (`http://host:port`), `session` the
    /// pod's own credential.
    pub fn new(base: &str, session: String) -> reqwest::Result<TierClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(TierClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            session,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.at(method, &format!("{PREFIX}{path}"))
    }

    /// A request to `path_and_query` at the tier (under [`PREFIX`]) with the
    /// pod's session.
    pub(crate) fn at(&self, method: Method, path_and_query: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path_and_query}", self.base))
            .header("X-Session-ID", &self.session)
    }

    /// Sends a request with an overall deadline and reads a JSON answer;
    /// `Ok(None)` for a 404.
    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<T>, StoreError> {
        let again = req.try_clone();
        let resp = match req.timeout(CALL_TIMEOUT).send().await {
            Ok(r) => r,
            // A replica that went away (killed, rolled): once more, on a
            // new connection the Service sends elsewhere. Every call is
            // idempotent but the hit report, whose counts may then be
            // counted twice; a timeout is not retried (it took 10 s).
            Err(e) if !e.is_timeout() => match again {
                Some(again) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    again
                        .timeout(CALL_TIMEOUT)
                        .send()
                        .await
                        .map_err(unavailable)?
                }
                None => return Err(unavailable(e)),
            },
            Err(e) => return Err(unavailable(e)),
        };
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_str("null").map(Some).map_err(corrupt);
        }
        if !status.is_success() {
            let message = resp.text().await.unwrap_or_default();
            return Err(answered(status, message));
        }
        let bytes = resp.bytes().await.map_err(unavailable)?;
        serde_json::from_slice(&bytes).map(Some).map_err(corrupt)
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, StoreError> {
        self.call(self.request(method, path).json(body)).await
    }

    /// Opens the change stream (the caller reads it line by line).
    async fn subscribe(&self) -> Result<reqwest::Response, StoreError> {
        let resp = self
            .request(Method::GET, "/cache/events")
            .send()
            .await
            .map_err(unavailable)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let message = resp.text().await.unwrap_or_default();
            return Err(answered(status, message));
        }
        Ok(resp)
    }
}

fn unavailable(e: reqwest::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("the shared tier's answer: {e}"))
}

/// Maps the tier's status to what a store would have said: its outages
/// are ours (503 and a retry), a refused session a misconfiguration.
fn answered(status: StatusCode, message: String) -> StoreError {
    let code = status.as_u16();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Misconfigured(
            TierError::Refused {
                status: code,
                message,
            }
            .to_string(),
        ),
        StatusCode::INSUFFICIENT_STORAGE => StoreError::Full(Box::new(TierError::Answered {
            status: code,
            message,
        })),
        StatusCode::CONFLICT => StoreError::Conflict(message),
        s if s.is_client_error() => StoreError::Invalid(message),
        _ => StoreError::Unavailable(Box::new(TierError::Answered {
            status: code,
            message,
        })),
    }
}

fn key_query(key: &str) -> [(&'static str, &str); 1] {
    [("key", key)]
}

#[async_trait]
impl CacheStore for TierClient {
    fn backend(&self) -> &'static str {
        "shared-tier"
    }

    async fn get(&self, key: &str, _now_ms: i64) -> simcache_store::Result<Option<CacheEntry>> {
        self.call(
            self.request(Method::GET, "/cache/entry")
                .query(&key_query(key)),
        )
        .await
    }

    async fn put(&self, entry: CacheEntry) -> simcache_store::Result<()> {
        self.send::<_, ()>(Method::PUT, "/cache/entry", &entry)
            .await
            .map(drop)
    }

    async fn delete(&self, key: &str) -> simcache_store::Result<bool> {
        let e: Option<Existed> = self
            .call(
                self.request(Method::DELETE, "/cache/entry")
                    .query(&key_query(key)),
            )
            .await?;
        Ok(e.is_some_and(|e| e.existed))
    }

    async fn delete_all(&self) -> simcache_store::Result<u64> {
        let c: Option<Count> = self
            .call(self.request(Method::DELETE, "/cache/entries"))
            .await?;
        Ok(c.map_or(0, |c| c.count))
    }

    async fn invalidate(
        &self,
        filter: &InvalidationFilter,
        pattern: Option<&KeyPattern>,
        record: &InvalidationRecord,
    ) -> simcache_store::Result<u64> {
        let body = InvalidateRequest {
            filter: filter.clone(),
            pattern: pattern.map(|p| p.as_str().to_string()),
            record: record.clone(),
        };
        let c: Option<Count> = self.send(Method::POST, "/cache/invalidate", &body).await?;
        Ok(c.map_or(0, |c| c.count))
    }

    async fn stats(
        &self,
        simulation_id: Option<i64>,
        _now_ms: i64,
    ) -> simcache_store::Result<StoreStats> {
        let mut req = self.request(Method::GET, "/cache/stats");
        if let Some(id) = simulation_id {
            req = req.query(&[("simulation_id", id)]);
        }
        Ok(self.call(req).await?.unwrap_or_default())
    }

    async fn list(&self, q: &ListQuery) -> simcache_store::Result<(Vec<CacheEntry>, i64)> {
        let page: Option<Page> = self.send(Method::POST, "/cache/list", q).await?;
        Ok(page.map_or((Vec::new(), 0), |p| (p.entries, p.total)))
    }

    async fn record_accesses(&self, hits: &[HitDelta], misses: i64) -> simcache_store::Result<()> {
        let body = AccessesRequest {
            hits: hits.to_vec(),
            misses,
        };
        self.send::<_, ()>(Method::POST, "/cache/accesses", &body)
            .await
            .map(drop)
    }

    /// The shared tier sweeps its own store.
    async fn sweep_expired(&self, _now_ms: i64) -> simcache_store::Result<u64> {
        Ok(0)
    }

    async fn ping(&self) -> simcache_store::Result<()> {
        self.call::<()>(self.request(Method::GET, "/ping"))
            .await
            .map(drop)
    }
}

/// Splits a byte stream into lines, refusing one longer than the limit.
#[derive(Default)]
struct Lines {
    buf: BytesMut,
}

impl Lines {
    fn push(&mut self, chunk: &[u8]) -> Result<(), TierError> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > MAX_LINE_BYTES && !self.buf.contains(&b'\n') {
            return Err(TierError::LineTooLong);
        }
        Ok(())
    }

    fn next_line(&mut self) -> Option<BytesMut> {
        let at = self.buf.iter().position(|b| *b == b'\n')?;
        let mut line = self.buf.split_to(at + 1);
        line.truncate(at);
        Some(line)
    }
}

/// Whether the memory tier may serve, and when the tier was last heard.
struct Link {
    serving: bool,
    heard_at: Instant,
}

/// What to do with the memory tier while the stream is down: it serves
/// until [`STALE_BOUND`] after the tier was last heard. Pure.
fn memory_may_serve(serving: bool, since_heard: Duration) -> bool {
    serving && since_heard < STALE_BOUND
}

/// Keeps `cache`'s memory tier coherent with the shared tier's changes for
/// as long as the task lives. While the stream is down, hits are served
/// for at most [`STALE_BOUND`] after the tier was last heard; once it is
/// back, the memory tier starts empty.
pub fn spawn_coherence(cache: Arc<CacheService>, tier: TierClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut link = Link {
            serving: false,
            heard_at: Instant::now(),
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match tier.subscribe().await {
                Ok(resp) => {
                    if follow(&cache, resp, &mut link).await {
                        backoff = Duration::from_millis(100);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "shared tier change stream unavailable"),
            }
            let since = link.heard_at.elapsed();
            if link.serving && !memory_may_serve(link.serving, since) {
                tracing::warn!("shared tier unheard for {STALE_BOUND:?}; memory tier off");
                coherence::apply(&cache, Signal::Lost);
                link.serving = false;
            }
            // Wake for the deadline too, so the bound holds between retries.
            let until_bound = STALE_BOUND
                .saturating_sub(since)
                .max(Duration::from_millis(10));
            let wait = if link.serving {
                backoff.min(until_bound)
            } else {
                backoff
            };
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    })
}

/// Applies one open stream until it ends, fails or falls silent; true when
/// it had connected.
async fn follow(cache: &CacheService, resp: reqwest::Response, link: &mut Link) -> bool {
    let mut body = resp.bytes_stream();
    let mut lines = Lines::default();
    let mut connected = false;
    loop {
        while let Some(line) = lines.next_line() {
            match serde_json::from_slice::<StreamLine>(line.chunk()) {
                Ok(StreamLine::Connected) => {
                    // Starts empty: changes made while unheard were missed.
                    connected = true;
                    link.serving = true;
                    link.heard_at = Instant::now();
                    coherence::apply(cache, Signal::Connected);
                }
                Ok(StreamLine::Heartbeat) if connected => link.heard_at = Instant::now(),
                Ok(StreamLine::Change { change }) if connected => {
                    link.heard_at = Instant::now();
                    coherence::apply(cache, Signal::Event(change));
                }
                Ok(_) => return false,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable change-stream line; reconnecting");
                    return connected;
                }
            }
        }
        match tokio::time::timeout(SILENCE_LIMIT, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                if let Err(e) = lines.push(&chunk) {
                    tracing::warn!(error = %e, "reconnecting");
                    return connected;
                }
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "shared tier change stream broke; reconnecting");
                return connected;
            }
            Ok(None) => return connected,
            Err(_) => {
                tracing::warn!(
                    "shared tier change stream silent; memory tier off until it is back"
                );
                return connected;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_and_overlong_ones_are_refused() {
        let mut l = Lines::default();
        l.push(b"{\"kind\":\"heart").unwrap();
        assert!(l.next_line().is_none(), "no line until its newline");
        l.push(b"beat\"}\n{\"kind\":\"connected\"}\n").unwrap();
        let first = l.next_line().unwrap();
        assert_eq!(
            serde_json::from_slice::<StreamLine>(&first).unwrap(),
            StreamLine::Heartbeat
        );
        assert_eq!(&l.next_line().unwrap()[..], b"{\"kind\":\"connected\"}");
        assert!(l.next_line().is_none());
        let mut l = Lines::default();
        assert!(matches!(
            l.push(&vec![b'x'; MAX_LINE_BYTES + 1]),
            Err(TierError::LineTooLong)
        ));
    }

    #[test]
    fn the_tiers_statuses_map_to_what_a_store_would_say() {
        let e = |s: u16| answered(StatusCode::from_u16(s).unwrap(), "why".into());
        assert!(matches!(e(503), StoreError::Unavailable(_)), "retry later");
        assert!(matches!(e(500), StoreError::Unavailable(_)));
        assert!(matches!(e(507), StoreError::Full(_)));
        assert!(matches!(e(401), StoreError::Misconfigured(_)));
        assert!(matches!(e(403), StoreError::Misconfigured(_)));
        assert!(matches!(e(409), StoreError::Conflict(_)));
        assert!(matches!(e(422), StoreError::Invalid(m) if m == "why"));
    }

    #[test]
    fn memory_serves_until_the_stale_bound_after_the_tier_was_last_heard() {
        assert!(memory_may_serve(true, Duration::ZERO));
        assert!(memory_may_serve(
            true,
            STALE_BOUND - Duration::from_millis(1)
        ));
        assert!(!memory_may_serve(true, STALE_BOUND));
        assert!(
            !memory_may_serve(false, Duration::ZERO),
            "never before connecting"
        );
    }

    #[test]
    fn the_session_is_never_printed() {
        let c = TierClient::new("http://tier:8080/", "secret-token".into()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert_eq!(c.base, "http://tier:8080");
    }
}

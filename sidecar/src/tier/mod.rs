//! The shared tier: one service that owns PostgreSQL for the cache, which
//! run pods' sidecars reach over HTTP instead of holding a database
//! credential. `server` is the shared service's side (routes and the change
//! stream), `client` the pod's (a [`CacheStore`] over HTTP and the
//! subscription that keeps the pod's memory tier coherent). Both speak the
//! wire below.
//!
//! [`CacheStore`]: simcache_store::cache::CacheStore

pub mod client;
pub mod server;
pub mod sfm_forward;

use serde::{Deserialize, Serialize};
use simcache_store::cache::{HitDelta, InvalidationFilter, InvalidationRecord};
use simcache_store::events::Envelope;
use std::time::Duration;

/// Every tier route lives under this prefix.
pub const PREFIX: &str = "/tier/v1";

/// The SFM proxy's routes at the tier (`/device/*`, `/cache/stats`, …
/// below it): pods' proxies forward here.
pub const SFM_PREFIX: &str = "/tier/v1/sfm";

/// How often the change stream says it is alive when nothing changes.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A subscriber that hears nothing (no change, no heartbeat) for this long
/// takes the stream for lost and reconnects.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(3);

/// How long a pod goes on serving hits from memory after it last heard
/// from the shared tier: the bound on how stale a hit can be. A short
/// outage of the tier leaves hits served (misses and writes get 503); a
/// longer one empties the memory tier, and reconnecting empties it again
/// (changes made meanwhile were not heard).
pub const STALE_BOUND: Duration = Duration::from_secs(30);

/// Longest line the change stream may carry (an invalidation filter).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// One line of the change stream (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamLine {
    /// The first line: from here on every change is sent.
    Connected,
    Heartbeat,
    Change {
        change: Envelope,
    },
}

/// `POST /tier/v1/cache/invalidate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    pub filter: InvalidationFilter,
    /// A key glob, as `KeyPattern::parse` reads it.
    pub pattern: Option<String>,
    pub record: InvalidationRecord,
}

/// `POST /tier/v1/cache/accesses`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessesRequest {
    pub hits: Vec<HitDelta>,
    pub misses: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Existed {
    pub existed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub entries: Vec<simcache_store::cache::CacheEntry>,
    pub total: i64,
}

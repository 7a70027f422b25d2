//! Cache entries: the model, the store interface and its two backends.

mod pattern;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use pattern::{KeyPattern, PatternError};

use crate::error::Result;

/// One cache entry as stored (and as the shared tier sends it to pods).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub cache_key: String,
    pub simulation_id: i64,
    pub simulation_name: String,
    pub simulation_version: String,
    pub execution_id: String,
    pub squid_id: String,
    pub input_hash: String,
    pub run_db_path: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub user_id: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_accessed_ms: i64,
    pub access_count: i64,
    pub hit_count: i64,
    pub size_bytes: i64,
    pub status: EntryStatus,
}

impl CacheEntry {
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.status == EntryStatus::Valid && self.expires_at_ms.is_none_or(|e| e > now_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    Valid,
    Invalidated,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Valid => "valid",
            EntryStatus::Invalidated => "invalidated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "valid" => Some(EntryStatus::Valid),
            "invalidated" => Some(EntryStatus::Invalidated),
            _ => None,
        }
    }
}

/// Which entries an invalidation touches. All given filters must match; none
/// given means every entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvalidationFilter {
    pub simulation_id: Option<i64>,
    pub simulation_name: Option<String>,
    pub simulation_version: Option<String>,
    pub pattern: Option<String>,
}

impl InvalidationFilter {
    pub fn is_everything(&self) -> bool {
        self.simulation_id.is_none()
            && self.simulation_name.is_none()
            && self.simulation_version.is_none()
            && self.pattern.is_none()
    }

    /// The kind recorded in the invalidation log (sim2l's `invalidation_type`).
    pub fn kind(&self) -> &'static str {
        if self.pattern.is_some() {
            "pattern"
        } else if self.simulation_version.is_some() {
            "version"
        } else if self.simulation_id.is_some() || self.simulation_name.is_some() {
            "simulation"
        } else {
            "all"
        }
    }

    /// Pure check of one entry against the filter (the memory tier uses it).
    pub fn matches(&self, pattern: Option<&KeyPattern>, e: &CacheEntry) -> bool {
        self.simulation_id.is_none_or(|id| id == e.simulation_id)
            && self
                .simulation_name
                .as_deref()
                .is_none_or(|n| n == e.simulation_name)
            && self
                .simulation_version
                .as_deref()
                .is_none_or(|v| v == e.simulation_version)
            && pattern.is_none_or(|p| p.matches(&e.cache_key))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    pub limit: i64,
    pub offset: i64,
    pub simulation_id: Option<i64>,
    pub simulation_name: Option<String>,
    pub status: Option<EntryStatus>,
}

/// Figures over live entries, plus the miss counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    pub total_entries: i64,
    pub total_hits: i64,
    pub total_accesses: i64,
    pub total_size_bytes: i64,
    pub total_misses: i64,
    pub invalidation_count: i64,
    pub evictions: i64,
}

/// Hit counts gathered in memory and written in one go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitDelta {
    pub cache_key: String,
    pub hits: i64,
    pub last_accessed_ms: i64,
}

/// Who asked for an invalidation, and why (recorded, never used for access).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InvalidationRecord {
    pub requested_by: Option<String>,
    pub reason: Option<String>,
}

#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// The backend's name as `/health` reports it (`sqlite`, `postgresql`).
    fn backend(&self) -> &'static str;

    /// A live (valid, unexpired) entry, or None.
    async fn get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>>;

    /// Inserts or replaces the entry; replacing resets its counters and status.
    async fn put(&self, entry: CacheEntry) -> Result<()>;

    /// Hard-deletes one entry; true when it existed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Hard-deletes every entry; returns how many.
    async fn delete_all(&self) -> Result<u64>;

    /// Marks matching valid entries invalidated and logs the invalidation.
    async fn invalidate(
        &self,
        filter: &InvalidationFilter,
        pattern: Option<&KeyPattern>,
        record: &InvalidationRecord,
    ) -> Result<u64>;

    async fn stats(&self, simulation_id: Option<i64>, now_ms: i64) -> Result<StoreStats>;

    /// A page of entries (newest first) and the total matching the filters.
    async fn list(&self, q: &ListQuery) -> Result<(Vec<CacheEntry>, i64)>;

    /// Adds batched hit counts and misses.
    async fn record_accesses(&self, hits: &[HitDelta], misses: i64) -> Result<()>;

    /// Deletes entries expired at `now_ms`; returns how many.
    async fn sweep_expired(&self, now_ms: i64) -> Result<u64>;

    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> Result<()>;
}

/// Writes an entry over any entry of its key, with fresh counters. Both
/// backends run it (SQLite with `?n` placeholders); 14 parameters in column
/// order: cache_key … last_accessed_ms, then size_bytes.
pub(crate) const UPSERT_ENTRY: &str =
    "INSERT INTO cache_entries (cache_key, simulation_id, simulation_name,
        simulation_version, execution_id, squid_id, input_hash, run_db_path,
        metadata, user_id, created_at_ms, expires_at_ms, last_accessed_ms,
        access_count, hit_count, size_bytes, status, invalidation_reason)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, 0, $14, 'valid', NULL)
     ON CONFLICT (cache_key) DO UPDATE SET
        simulation_id = EXCLUDED.simulation_id,
        simulation_name = EXCLUDED.simulation_name,
        simulation_version = EXCLUDED.simulation_version,
        execution_id = EXCLUDED.execution_id, squid_id = EXCLUDED.squid_id,
        input_hash = EXCLUDED.input_hash, run_db_path = EXCLUDED.run_db_path,
        metadata = EXCLUDED.metadata, user_id = EXCLUDED.user_id,
        created_at_ms = EXCLUDED.created_at_ms, expires_at_ms = EXCLUDED.expires_at_ms,
        last_accessed_ms = EXCLUDED.last_accessed_ms,
        access_count = 0, hit_count = 0, size_bytes = EXCLUDED.size_bytes,
        status = 'valid', invalidation_reason = NULL";
